//go:build !smelter_contract

// TEMPORARY, REMOVED AT MERGE: the CONTRACT.md Modbus Source built on
// today's modbus.Device.Read, so this branch compiles and its tests run
// before internal/modbus provides Pool.Source. wire.go holds the real
// wiring (build tag smelter_contract).

package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

func (g *Gateway) modbusSource(d *device, drv *gwconfig.ModbusDevice) (Source, error) {
	s := &compatModbus{dev: g.pool.Device(d.cfg.ID, drv.Config)}
	for _, gr := range drv.Groups {
		plan, err := modbus.NewPlan(gr.Points, drv.Config)
		if err != nil {
			return nil, err
		}
		s.groups = append(s.groups, compatGroup{plan: plan, cfg: gr})
	}
	return s, nil
}

type compatModbus struct {
	dev    *modbus.Device
	groups []compatGroup
	mu     sync.Mutex // serialises emit
}

type compatGroup struct {
	plan *modbus.Plan
	cfg  gwconfig.ModbusGroup
}

func (s *compatModbus) Run(ctx context.Context, emit func(*sample.Cycle)) error {
	eg, ctx := errgroup.WithContext(ctx)
	for _, gr := range s.groups {
		eg.Go(func() error { s.poll(ctx, gr, emit); return nil })
	}
	return eg.Wait()
}

func (s *compatModbus) poll(ctx context.Context, gr compatGroup, emit func(*sample.Cycle)) {
	values := make([]modbus.Value, len(gr.cfg.Points))
	c := sample.Cycle{Samples: make([]sample.Sample, len(values)), Interval: gr.cfg.Interval}
	t := time.NewTicker(gr.cfg.Interval)
	defer t.Stop()
	for {
		c.Start = time.Now()
		s.dev.Read(ctx, gr.plan, values)
		if ctx.Err() != nil {
			return
		}
		c.Duration = time.Since(c.Start)
		c.Replied, c.Err = false, nil
		for j, v := range values {
			sm := sample.Sample{Index: gr.cfg.Index[j], Num: v.Num, Str: v.Str, IsStr: v.IsStr, Status: v.Status}
			switch {
			case v.Err == nil:
				c.Replied = true
			case v.Status < 0x100 || v.Status == modbus.StatusQuarantined:
				c.Replied = true // an exception is an answer
				sm.Quality = telemetry.QualityBad
			default:
				sm.Quality = telemetry.QualityBad
				sm.Silent = v.Status == modbus.StatusTimeout || v.Status == modbus.StatusConnection
			}
			if v.Err != nil && c.Err == nil && !errors.Is(v.Err, context.Canceled) {
				c.Err = v.Err
			}
			c.Samples[j] = sm
		}
		s.mu.Lock()
		emit(&c)
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

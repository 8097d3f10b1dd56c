//go:build !smelter_contract

// TEMPORARY, REMOVED AT MERGE: the CONTRACT.md OPC UA Source (Run emitting
// sample.Cycle, OnUnits, heartbeat) built on today's opcua.Client, so this
// branch compiles and its tests run before internal/opcua provides them.
// wire.go holds the real wiring (build tag smelter_contract).

package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

func (g *Gateway) opcuaSource(d *device, drv *gwconfig.OPCUADevice) (Source, error) {
	c, err := opcua.New(d.cfg.ID, drv.Config, drv.Points, d.log, g.uaMetrics)
	if err != nil {
		return nil, err
	}
	s := &compatUA{c: c, drv: drv, hb: d.cfg.Heartbeat, iv: drv.Config.PublishInterval, now: g.now}
	s.onUnits = d.applyUnits
	return s, nil
}

type compatUA struct {
	c       *opcua.Client
	drv     *gwconfig.OPCUADevice
	hb, iv  time.Duration
	now     func() time.Time
	onUnits func([]opcua.NodeUnit)

	mu     sync.Mutex // serialises emit; guards last, lastAt
	last   []opcua.Update
	lastAt []time.Time
}

func (s *compatUA) Run(ctx context.Context, emit func(*sample.Cycle)) error {
	need := false
	for _, u := range s.drv.UnitFromNode {
		need = need || u
	}
	bo := backoff.Backoff{Min: s.drv.Config.BackoffMin, Max: s.drv.Config.BackoffMax}
	for need {
		nus, err := s.c.NodeUnits(ctx)
		if err == nil {
			s.onUnits(nus)
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		// nothing can be read meanwhile: stale readings and the death
		c := sample.Cycle{Start: time.Now(), Interval: s.iv, Lost: true, Err: fmt.Errorf("opcua: reading engineering units: %w", err)}
		for i := range s.drv.Points {
			c.Samples = append(c.Samples, sample.Sample{Index: i, Quality: telemetry.QualityStale})
		}
		emit(&c)
		if !backoff.Sleep(ctx, bo.Next()) {
			return nil
		}
	}
	n := len(s.drv.Points)
	s.last, s.lastAt = make([]opcua.Update, n), make([]time.Time, n)
	var c sample.Cycle
	process := func(ups []opcua.Update, at time.Time) {
		c = sample.Cycle{Samples: c.Samples[:0], Start: at, Interval: s.iv}
		stale := 0
		for _, u := range ups {
			sm := sample.Sample{Index: u.Index, Num: u.Num, Str: u.Str, IsStr: u.IsStr, Quality: u.Quality, Status: u.Status, TS: u.SourceTS}
			switch {
			case u.Quality == telemetry.QualityStale:
				stale++
			case !u.Quality.HasValue() && c.Err == nil:
				c.Err = fmt.Errorf("opcua: status 0x%08X", u.Status)
			}
			c.Samples = append(c.Samples, sm)
		}
		c.Replied = stale < len(ups)
		if stale == len(ups) {
			c.Err = errors.New("opcua: session or subscription lost")
			c.Lost = len(ups) == n
		}
		emit(&c)
	}
	hbCtx, stop := context.WithCancel(ctx)
	defer stop()
	go s.heartbeat(hbCtx, process)
	return s.c.Run(ctx, func(ups []opcua.Update) {
		s.mu.Lock()
		defer s.mu.Unlock()
		now := time.Now()
		for _, u := range ups {
			s.last[u.Index], s.lastAt[u.Index] = u, now
		}
		process(ups, now)
	})
}

// heartbeat re-reports unchanged subscribed values every heartbeat.
func (s *compatUA) heartbeat(ctx context.Context, process func([]opcua.Update, time.Time)) {
	t := time.NewTicker(min(s.hb/4, time.Minute))
	defer t.Stop()
	var due []opcua.Update
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		due = due[:0]
		now := time.Now()
		for i, p := range s.drv.Points {
			if p.Mode == opcua.ModeSubscribe && !s.lastAt[i].IsZero() && s.last[i].Quality.HasValue() && now.Sub(s.lastAt[i]) >= s.hb {
				u := s.last[i]
				u.SourceTS = s.now().UnixMilli()
				due = append(due, u)
				s.lastAt[i] = now
			}
		}
		if len(due) > 0 {
			process(due, now)
		}
		s.mu.Unlock()
	}
}

package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// staleMultiple is DOMAIN.md's "no good read in 3 x interval".
const staleMultiple = 3

type device struct {
	g      *Gateway
	cfg    *gwconfig.Device
	dev    *modbus.Device
	log    *slog.Logger
	groups []*group
	subj   string // data subject

	mu sync.Mutex
	st deviceState
}

type group struct {
	cfg  *gwconfig.Group
	plan *modbus.Plan
	norm *normalize.Normalizer
}

type deviceState struct {
	LastPoll    time.Time `json:"last_poll,omitzero"`
	LastGood    time.Time `json:"last_good,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Polls       uint64    `json:"polls"`
	FailedPolls uint64    `json:"failed_polls"`
	Dead        bool      `json:"dead"`
}

func newDevice(g *Gateway, d *gwconfig.Device) *device {
	dv := &device{g: g, cfg: d, log: g.log.With("device", d.ID),
		dev: g.pool.Device(d.ID, d.Modbus), subj: telemetry.AssetSubject(d.Asset, telemetry.KindData)}
	for _, gc := range d.Groups {
		plan, err := modbus.NewPlan(gc.Points, d.Modbus)
		if err != nil {
			// gwconfig already built every plan once; this cannot fail for a loaded config
			panic(fmt.Sprintf("device %s: %v", d.ID, err))
		}
		dv.groups = append(dv.groups, &group{cfg: gc, plan: plan,
			norm: normalize.New(gc.Norm, gc.Interval.Milliseconds(), staleMultiple, gc.Heartbeat.Milliseconds())})
	}
	return dv
}

// birth appends the asset's birth notice to the spool.
func (d *device) birth(ctx context.Context, sp *spool.Spool) error {
	signals := d.cfg.Signals
	if d.g.rate != 1 {
		signals = append([]telemetry.SignalInfo(nil), signals...)
		for i := range signals {
			signals[i].IntervalMS = int64(float64(signals[i].IntervalMS) * d.g.rate)
		}
	}
	b := &telemetry.Birth{Gateway: d.g.cfg.ID, Asset: d.cfg.Asset.ToJSON(), TSGW: d.g.now().UnixMilli(),
		Signals: signals, Nameplate: d.cfg.Nameplate, Protocol: "modbus"}
	_, err := sp.Append(ctx, telemetry.AssetSubject(d.cfg.Asset, telemetry.KindBirth), func(seq uint64, dst []byte) []byte {
		b.Seq = seq
		data, _ := telemetry.MarshalBirth(b) // plain struct: cannot fail
		return append(dst, data...)
	})
	if err != nil {
		return fmt.Errorf("device %s: spooling birth: %w", d.cfg.ID, err)
	}
	return nil
}

func (d *device) death(ctx context.Context, sp *spool.Spool, reason string) {
	msg := &telemetry.Death{Gateway: d.g.cfg.ID, Asset: d.cfg.Asset.ToJSON(), TSGW: d.g.now().UnixMilli(), Reason: reason}
	_, err := sp.Append(ctx, telemetry.AssetSubject(d.cfg.Asset, telemetry.KindDeath), func(seq uint64, dst []byte) []byte {
		msg.Seq = seq
		data, _ := telemetry.MarshalDeath(msg)
		return append(dst, data...)
	})
	if err != nil && ctx.Err() == nil {
		d.log.Error("spooling death notice", "err", err)
	}
}

// poll runs one acquisition group until ctx ends.
func (d *device) poll(ctx context.Context, sp *spool.Spool, grp *group) error {
	n := len(grp.cfg.Points)
	values := make([]modbus.Value, n)
	raws := make([]normalize.Raw, n)
	batch := telemetry.Batch{Gateway: d.g.cfg.ID, Asset: d.cfg.Asset, Readings: make([]telemetry.Reading, 0, n)}
	encode := func(seq uint64, dst []byte) []byte {
		batch.Seq = seq
		return batch.AppendJSON(dst)
	}
	iv := grp.cfg.Interval
	ticker := time.NewTicker(iv)
	defer ticker.Stop()
	m := d.g.m
	pollDur := m.pollDuration.WithLabelValues(d.cfg.ID)
	polls := map[string]interface{ Inc() }{
		"ok": m.polls.WithLabelValues(d.cfg.ID, "ok"), "partial": m.polls.WithLabelValues(d.cfg.ID, "partial"),
		"failed": m.polls.WithLabelValues(d.cfg.ID, "failed")}
	overruns := m.overruns.WithLabelValues(d.cfg.ID)
	up := m.deviceUp.WithLabelValues(d.cfg.ID)
	byQuality := [4]interface{ Add(float64) }{}
	for q := telemetry.QualityGood; q <= telemetry.QualityStale; q++ {
		byQuality[q] = m.readings.WithLabelValues(q.String())
	}
	for {
		start := time.Now()              // wall clock: durations, staleness, status
		stampMS := d.g.now().UnixMilli() // data clock: the readings' timestamps
		d.dev.Read(ctx, grp.plan, values)
		if ctx.Err() != nil {
			return nil
		}
		elapsed := time.Since(start)
		pollDur.Observe(elapsed.Seconds())
		if elapsed > iv {
			overruns.Inc()
		}
		good := 0
		var firstErr error
		for i := range values {
			v := &values[i]
			r := &raws[i]
			*r = normalize.Raw{Num: v.Num, Str: v.Str, IsStr: v.IsStr, Status: v.Status, TS: stampMS}
			if v.Err != nil {
				r.Quality = telemetry.QualityBad
				if firstErr == nil {
					firstErr = v.Err
				}
			} else {
				good++
			}
		}
		batch.Readings = grp.norm.Apply(batch.Readings[:0], raws, start.UnixMilli())
		result := "ok"
		switch {
		case good == 0:
			result = "failed"
		case good < n:
			result = "partial"
		}
		polls[result].Inc()
		if good > 0 {
			up.Set(1)
		} else {
			up.Set(0)
		}
		d.track(ctx, sp, start, good > 0, firstErr)
		if len(batch.Readings) > 0 {
			batch.TSGW = d.g.now().UnixMilli()
			for i := range batch.Readings {
				byQuality[batch.Readings[i].Quality].Add(1)
			}
			seq, err := sp.Append(ctx, d.subj, encode)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				m.spoolErrors.Inc()
				d.log.Error("spooling batch", "err", err)
			} else {
				m.batches.Inc()
				m.seq.Set(float64(seq))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// track keeps the device's state and emits death and rebirth notices.
func (d *device) track(ctx context.Context, sp *spool.Spool, at time.Time, anyGood bool, err error) {
	d.mu.Lock()
	st := &d.st
	st.LastPoll = at
	st.Polls++
	var announceDeath, announceBirth bool
	if anyGood {
		if st.Dead {
			st.Dead = false
			announceBirth = true
		}
		st.LastGood = at
		st.LastError = ""
	} else {
		st.FailedPolls++
		if err != nil {
			if st.LastError != err.Error() {
				d.log.Warn("device not answering", "err", err)
			}
			st.LastError = err.Error()
		}
		if st.LastGood.IsZero() {
			st.LastGood = at // the stale clock starts at the first attempt
		}
		staleAfter := time.Duration(staleMultiple) * d.cfg.Interval
		if !st.Dead && at.Sub(st.LastGood) >= staleAfter {
			st.Dead = true
			announceDeath = true
		}
	}
	reason := st.LastError
	d.mu.Unlock()
	if announceDeath {
		d.log.Warn("device stale: publishing death notice", "reason", reason)
		d.death(ctx, sp, "no good read for "+(time.Duration(staleMultiple)*d.cfg.Interval).String()+": "+reason)
	}
	if announceBirth {
		d.log.Info("device answering again: publishing birth")
		if err := d.birth(ctx, sp); err != nil && ctx.Err() == nil {
			d.log.Error("spooling birth", "err", err)
		}
	}
}

func (d *device) state() deviceState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}

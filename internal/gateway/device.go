package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// staleMultiple is DOMAIN.md's "no good read in 3 x interval".
const staleMultiple = 3

type device struct {
	g      *Gateway
	cfg    *gwconfig.Device
	dev    *modbus.Device        // Modbus devices
	ua     *opcua.Client         // OPC UA devices
	uaNorm *normalize.Normalizer // OPC UA devices
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

func newDevice(g *Gateway, d *gwconfig.Device) (*device, error) {
	dv := &device{g: g, cfg: d, log: g.log.With("device", d.ID), subj: telemetry.AssetSubject(d.Asset, telemetry.KindData)}
	if d.Protocol == gwconfig.ProtocolOPCUA {
		c, err := opcua.New(d.ID, d.OPCUA, d.UAPoints, dv.log, g.uaMetrics)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.ID, err)
		}
		dv.ua = c
		dv.uaNorm = normalize.New(d.UANorm, d.Interval.Milliseconds(), staleMultiple, d.Heartbeat.Milliseconds())
		return dv, nil
	}
	dv.dev = g.pool.Device(d.ID, d.Modbus)
	for _, gc := range d.Groups {
		plan, err := modbus.NewPlan(gc.Points, d.Modbus)
		if err != nil {
			// gwconfig already built every plan once; this cannot fail for a loaded config
			panic(fmt.Sprintf("device %s: %v", d.ID, err))
		}
		dv.groups = append(dv.groups, &group{cfg: gc, plan: plan,
			norm: normalize.New(gc.Norm, gc.Interval.Milliseconds(), staleMultiple, gc.Heartbeat.Milliseconds())})
	}
	return dv, nil
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
		Signals: signals, Nameplate: d.cfg.Nameplate, Protocol: d.cfg.Protocol}
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
	dm := d.metrics()
	for {
		start := time.Now()              // wall clock: durations, staleness, status
		stampMS := d.g.now().UnixMilli() // data clock: the readings' timestamps
		d.dev.Read(ctx, grp.plan, values)
		if ctx.Err() != nil {
			return nil
		}
		elapsed := time.Since(start)
		dm.pollDur.Observe(elapsed.Seconds())
		if elapsed > iv {
			dm.overruns.Inc()
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
		dm.poll(good, n)
		d.track(ctx, sp, start, good > 0, false, firstErr)
		if len(batch.Readings) > 0 {
			batch.TSGW = d.g.now().UnixMilli()
			for i := range batch.Readings {
				dm.byQuality[batch.Readings[i].Quality].Inc()
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

// runUA runs an OPC UA device: it resolves device units from the nodes'
// EngineeringUnits where the configuration gives none, then turns every
// publish response (or poll cycle) into one batch.
func (d *device) runUA(ctx context.Context, sp *spool.Spool) error {
	if err := d.resolveUnits(ctx); err != nil {
		return nil //nolint:nilerr // only ctx ends resolveUnits with an error
	}
	batch := telemetry.Batch{Gateway: d.g.cfg.ID, Asset: d.cfg.Asset, Readings: make([]telemetry.Reading, 0, len(d.cfg.UAPoints))}
	encode := func(seq uint64, dst []byte) []byte {
		batch.Seq = seq
		return batch.AppendJSON(dst)
	}
	m := d.g.m
	dm := d.metrics()
	// Subscriptions report changes only. The last value of every subscribed
	// point is kept and re-reported (stamped now) once it has been silent for
	// a heartbeat, so consumers can tell "unchanged" from "gone" (births
	// give the heartbeat as the signal's interval).
	var mu sync.Mutex
	n := len(d.cfg.UAPoints)
	last := make([]opcua.Update, n)
	lastAt := make([]time.Time, n)
	process := func(ups []opcua.Update) {
		now := time.Now()
		for i := range ups {
			last[ups[i].Index] = ups[i]
			lastAt[ups[i].Index] = now
		}
		batch.Readings = batch.Readings[:0]
		good, stale := 0, 0
		var firstBad uint32
		for i := range ups {
			u := &ups[i]
			raw := normalize.Raw{Num: u.Num, Str: u.Str, IsStr: u.IsStr, Quality: u.Quality, Status: u.Status, TS: u.SourceTS}
			switch {
			case u.Quality.HasValue():
				good++
			case u.Quality == telemetry.QualityStale:
				stale++
			case firstBad == 0:
				firstBad = u.Status
			}
			batch.Readings = d.uaNorm.ApplyOne(batch.Readings, u.Index, &raw, now.UnixMilli())
		}
		dm.poll(good, len(ups))
		var err error
		if good == 0 && stale == len(ups) {
			err = errors.New("opcua: session or subscription lost")
		} else if good == 0 && firstBad != 0 {
			err = fmt.Errorf("opcua: status 0x%08X", firstBad)
		}
		d.track(ctx, sp, now, good > 0, stale == len(ups) && len(ups) == len(d.cfg.UAPoints), err)
		if len(batch.Readings) == 0 {
			return
		}
		batch.TSGW = d.g.now().UnixMilli()
		for i := range batch.Readings {
			dm.byQuality[batch.Readings[i].Quality].Inc()
		}
		seq, err := sp.Append(ctx, d.subj, encode)
		if err != nil {
			if ctx.Err() == nil {
				m.spoolErrors.Inc()
				d.log.Error("spooling batch", "err", err)
			}
			return
		}
		m.batches.Inc()
		m.seq.Set(float64(seq))
	}
	emit := func(ups []opcua.Update) {
		mu.Lock()
		defer mu.Unlock()
		process(ups)
	}
	hb := d.cfg.Heartbeat // > 0: gwconfig defaults it
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go func() {
		t := time.NewTicker(min(hb/4, time.Minute))
		defer t.Stop()
		var due []opcua.Update
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
			}
			mu.Lock()
			due = due[:0]
			now := time.Now()
			for i, p := range d.cfg.UAPoints {
				if p.Mode == opcua.ModeSubscribe && !lastAt[i].IsZero() && last[i].Quality.HasValue() && now.Sub(lastAt[i]) >= hb {
					u := last[i]
					u.SourceTS = d.g.now().UnixMilli()
					due = append(due, u)
				}
			}
			if len(due) > 0 {
				process(due)
			}
			mu.Unlock()
		}
	}()
	return d.ua.Run(ctx, emit)
}

// resolveUnits reads EngineeringUnits and EURange of the points whose unit
// the configuration does not give, and converts from them. It retries until
// the server answers: publishing values in a guessed unit would be worse
// than publishing nothing.
func (d *device) resolveUnits(ctx context.Context) error {
	need := false
	for _, set := range d.cfg.UAUnitSet {
		need = need || !set
	}
	if !need {
		return nil
	}
	backoff := time.Second
	for {
		nus, err := d.ua.NodeUnits(ctx)
		if err == nil {
			d.applyUnits(nus)
			return nil
		}
		d.log.Warn("reading engineering units; will retry", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (d *device) applyUnits(nus []opcua.NodeUnit) {
	for _, nu := range nus {
		i := nu.Index
		if i < 0 || i >= len(d.cfg.UANorm) || d.cfg.UAUnitSet[i] {
			continue
		}
		p := d.cfg.UANorm[i]
		if nu.Err != nil || nu.UnitID < 0 || p.Unit == "" {
			d.log.Info("no engineering units on the node; values taken as the catalog unit", "signal", p.Signal, "unit", p.Unit)
			continue
		}
		if nu.UCUM == "" {
			d.log.Error("node's engineering unit has no UCUM equivalent; set the point's unit", "signal", p.Signal,
				"unece", nu.UNECE, "display", nu.Display)
			continue
		}
		conv, err := units.Convert(nu.UCUM, p.Unit)
		if err != nil {
			d.log.Error("node's engineering unit does not convert to the catalog unit; set the point's unit", "signal", p.Signal,
				"node_unit", nu.UCUM, "catalog_unit", p.Unit, "err", err)
			continue
		}
		var lo, hi *float64
		if nu.HasRange && p.Min == nil && p.Max == nil {
			a, b := conv.Apply(nu.Min), conv.Apply(nu.Max)
			lo, hi = &a, &b
		}
		d.uaNorm.SetConversion(i, conv, lo, hi)
	}
}

// track keeps the device's state and emits death and rebirth notices. lost
// says the source lost its session (OPC UA): a device that had answered is
// dead at once instead of after 3 intervals, since a change-reporting source
// sends nothing more until it is back.
func (d *device) track(ctx context.Context, sp *spool.Spool, at time.Time, anyGood, lost bool, err error) {
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
		hadGood := !st.LastGood.IsZero()
		if !hadGood {
			st.LastGood = at // the stale clock starts at the first attempt
		}
		staleAfter := time.Duration(staleMultiple) * d.cfg.Interval
		if !st.Dead && ((lost && hadGood) || at.Sub(st.LastGood) >= staleAfter) {
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

// deviceMetrics are a device's metric children, resolved once so the poll
// and notification paths do no label lookups.
type deviceMetrics struct {
	pollDur             interface{ Observe(float64) }
	ok, partial, failed interface{ Inc() }
	overruns            interface{ Inc() }
	up                  interface{ Set(float64) }
	byQuality           [telemetry.QualityStale + 1]interface{ Inc() }
}

func (d *device) metrics() *deviceMetrics {
	m, id := d.g.m, d.cfg.ID
	dm := &deviceMetrics{pollDur: m.pollDuration.WithLabelValues(id), ok: m.polls.WithLabelValues(id, "ok"),
		partial: m.polls.WithLabelValues(id, "partial"), failed: m.polls.WithLabelValues(id, "failed"),
		overruns: m.overruns.WithLabelValues(id), up: m.deviceUp.WithLabelValues(id)}
	for q := telemetry.QualityGood; q <= telemetry.QualityStale; q++ {
		dm.byQuality[q] = m.readings.WithLabelValues(q.String())
	}
	return dm
}

// poll counts one cycle (or notification) in which good of n points read good.
func (dm *deviceMetrics) poll(good, n int) {
	switch {
	case good == 0:
		dm.failed.Inc()
		dm.up.Set(0)
		return
	case good < n:
		dm.partial.Inc()
	default:
		dm.ok.Inc()
	}
	dm.up.Set(1)
}

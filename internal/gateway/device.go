package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// Source is what the gateway needs of an acquisition driver (Modbus,
// OPC UA, and the drivers to come): one device's cycles of samples. It is
// declared in the gateway's driver contract (driver.Source) so drivers
// need not import the gateway.
type Source = driver.Source

// staleMultiple is DOMAIN.md's k = 3: a device silent for k x its interval
// is dead, a silent point stale.
const staleMultiple = 3

// newSource returns the acquisition source of a device, built by the
// driver of its protocol.
func (g *Gateway) newSource(d *device) (Source, error) {
	srcs, ok := g.sources[d.cfg.Protocol]
	if !ok {
		return nil, fmt.Errorf("no driver for protocol %s", d.cfg.Protocol)
	}
	return srcs.Source(driver.Device{Config: d.cfg, Log: d.log, Units: d.applyUnits})
}

// device is one configured device: its source and the state the
// acquisition loop keeps for it.
type device struct {
	g    *Gateway
	a    *asset // the asset it feeds (alone or with other sources)
	cfg  *gwconfig.Device
	src  Source
	log  *slog.Logger
	subj string // data subject

	// normMu guards norm: the loop normalizes under it, births read its
	// units, and a driver may report device units (OnUnits) from its own
	// goroutine.
	normMu sync.Mutex
	norm   *normalize.Normalizer
	// unitsChanged: applyUnits changed a signal's unit; the loop announces
	// a new birth of the asset before the next batch.
	unitsChanged atomic.Bool
	// unitLogs bound what applyUnits logs per point (normMu held): the
	// first report at once, then one line a minute with a count, so a
	// server that flips a unit does not flood the log.
	unitLogs map[int]*logging.Limiter

	mu sync.Mutex
	st deviceState
}

// deviceState is a device's line in /status.
type deviceState struct {
	LastPoll    time.Time `json:"last_poll,omitzero"`
	LastGood    time.Time `json:"last_good,omitzero"`  // last cycle with a good or uncertain value
	LastReply   time.Time `json:"last_reply,omitzero"` // end of the last cycle the device answered (even with an exception)
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Polls       uint64    `json:"polls"`
	FailedPolls uint64    `json:"failed_polls"`
	Dead        bool      `json:"dead"`

	silentSince time.Time // start of the current silence (first cycle when the device never answered)
	logs        healthLog // what was last logged of the device's health (acquire.go, logHealth)
}

func newDevice(g *Gateway, a *asset, d *gwconfig.Device) (*device, error) {
	dv := &device{g: g, a: a, cfg: d, log: g.log.With("device", d.ID), subj: telemetry.AssetSubject(d.Asset, telemetry.KindData),
		norm: normalize.NewFromTable(d.Norm, staleMultiple, d.Heartbeat.Milliseconds())}
	src, err := g.newSource(dv)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.ID, err)
	}
	dv.src = src
	return dv, nil
}

// applyUnits converts from the units the device reports for the points
// whose configuration gives none (OPC UA EngineeringUnits, delivered
// through driver.Device.Units), on every session (a unit may change
// between sessions, or within one: the driver reports it again). A point
// of a class without catalog unit takes the node's unit as its own (the
// birth is re-announced); one whose node gives no usable unit is NoUnit,
// published bad with normalize.StatusNoUnit. A catalog point whose node
// gives no unit at all (driver.Unit.Absent) is taken in the catalog unit;
// one whose node gives a unit the gateway cannot use (Err: unreadable or
// malformed; no UCUM equivalent; not convertible to the catalog unit) is
// published bad with normalize.StatusNoUnit: never in a guessed unit. What
// an earlier report set is dropped first, so a unit that became unusable
// never leaves the previous one in force. A changed unit is announced in a
// birth before the next batch. It is the device's driver.Device.Units.
func (d *device) applyUnits(nus []driver.Unit) {
	d.normMu.Lock()
	defer d.normMu.Unlock()
	for _, nu := range nus {
		i := nu.Index
		if i < 0 || i >= d.cfg.Norm.Len() {
			continue
		}
		before := d.norm.Unit(i)
		d.applyUnit(nu)
		if d.norm.Unit(i) != before {
			d.unitsChanged.Store(true)
		}
	}
}

// logUnit logs what applyUnit decided for point i, at most once a minute
// per point after the first (normMu held).
func (d *device) logUnit(i int, lvl slog.Level, msg string, args ...any) {
	lm := d.unitLogs[i]
	if lm == nil {
		if d.unitLogs == nil {
			d.unitLogs = map[int]*logging.Limiter{}
		}
		lm = &logging.Limiter{Every: time.Minute}
		d.unitLogs[i] = lm
	}
	lm.Log(context.Background(), d.log, lvl, msg, args...)
}

// applyUnit is applyUnits for one point (normMu held).
func (d *device) applyUnit(nu driver.Unit) {
	i := nu.Index
	p := d.cfg.Norm.Point(i)
	noCatalogUnit := p.NoUnit
	status := fmt.Sprintf("0x%08X", normalize.StatusNoUnit)
	switch {
	case nu.Absent && nu.Err == nil && noCatalogUnit:
		d.logUnit(i, slog.LevelError, "no unit for a numeric point: neither the configuration, the catalog nor the node gives one; its readings are published bad; set the point's unit",
			"signal", p.Signal, "node_unit", nu.UnitText(), "status", status)
		d.norm.ResetUnits(i)
		return
	case nu.Absent && nu.Err == nil:
		d.logUnit(i, slog.LevelInfo, "no engineering units on the node; values taken as the catalog unit", "signal", p.Signal, "unit", p.Unit, "node_unit", nu.UnitText())
		d.norm.ResetUnits(i)
		return
	case nu.Err != nil || nu.UCUM == "":
		d.logUnit(i, slog.LevelError, "node's engineering units cannot be used; its readings are published bad; set the point's unit", "signal", p.Signal,
			"node_unit", nu.UnitText(), "unit", p.Unit, "status", status)
		d.norm.ResetUnits(i)
		if !noCatalogUnit {
			d.norm.SetNoUnit(i)
		}
		return
	}
	to := p.Unit
	if noCatalogUnit {
		canon, ok := units.Canonical(nu.UCUM)
		if !ok {
			d.logUnit(i, slog.LevelError, "node's engineering unit is not a known unit; its readings are published bad; set the point's unit", "signal", p.Signal,
				"node_unit", nu.UnitText(), "status", status)
			d.norm.ResetUnits(i)
			return
		}
		to = canon
	}
	conv, err := units.Convert(nu.UCUM, to)
	if err != nil {
		d.logUnit(i, slog.LevelError, "node's engineering unit does not convert to the catalog unit; its readings are published bad; set the point's unit", "signal", p.Signal,
			"node_unit", nu.UnitText(), "catalog_unit", p.Unit, "err", err, "status", status)
		d.norm.ResetUnits(i)
		d.norm.SetNoUnit(i)
		return
	}
	var lo, hi *float64
	if nu.HasRange && p.Min == nil && p.Max == nil {
		a, b := conv.Apply(nu.Min), conv.Apply(nu.Max)
		lo, hi = &a, &b
	} else if nu.RangeErr != "" && p.Min == nil && p.Max == nil {
		d.logUnit(i, slog.LevelWarn, "node's EURange cannot be used; its values are published without the node's plausible range", "signal", p.Signal,
			"node_unit", nu.UnitText(), "range", nu.RangeText())
	}
	if nu.UCUM != to || (nu.HasRange && (math.IsNaN(nu.Min) || math.IsNaN(nu.Max) || math.IsInf(nu.Min, 0) || math.IsInf(nu.Max, 0))) {
		// what a reader of the log needs to trust the values: the node's
		// unit when it is not the published one, a range that rules out nothing
		d.logUnit(i, slog.LevelInfo, "node's engineering units applied", "signal", p.Signal,
			"node_unit", nu.UnitText(), "unit", to, "range", nu.RangeText())
	}
	d.norm.ResetUnits(i) // an earlier session's range does not carry over
	d.norm.SetConversion(i, conv, lo, hi)
	if noCatalogUnit {
		d.norm.SetUnit(i, to)
	}
}

// appendSignals appends the device's points' birth entries to dst: the
// configuration's, with the unit the device reported for a point of a
// class without catalog unit.
func (d *device) appendSignals(dst []telemetry.SignalInfo) []telemetry.SignalInfo {
	d.normMu.Lock()
	defer d.normMu.Unlock()
	for i := range d.cfg.Norm.Len() {
		info := d.cfg.Signal(i)
		info.Unit = d.norm.Unit(i)
		dst = append(dst, info)
	}
	return dst
}

func (d *device) state() deviceState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}

// deviceMetrics are a device's metric children, resolved once so the
// acquisition loop does no label lookups. The children of rare events of
// normal operation (overruns) and of ok polls are created when first
// counted: at 100 devices, series that stay at zero cost ~1.5 KB each of
// live heap. Those of failures (partial and failed polls, stalls) exist
// from the start (metrics.configure).
type deviceMetrics struct {
	m               *metrics
	id              string
	pollDur         prometheus.Observer
	ok              lazyCounter
	partial, failed prometheus.Counter
	overruns        lazyCounter
	delayed         map[string]prometheus.Counter // by device: created when first counted; emits never overlap
	up              prometheus.Gauge
	byQuality       [telemetry.QualityStale + 1]prometheus.Counter
}

// lazyCounter is a counter child created on its first use.
type lazyCounter struct {
	once sync.Once
	c    prometheus.Counter
}

// inc adds one to vec's child with label values device (and result, unless
// "").
func (l *lazyCounter) inc(vec *prometheus.CounterVec, device, result string) {
	l.once.Do(func() {
		if result == "" {
			l.c = vec.WithLabelValues(device)
		} else {
			l.c = vec.WithLabelValues(device, result)
		}
	})
	l.c.Inc()
}

func (d *device) metrics() *deviceMetrics { return newDeviceMetrics(d.g.m, d.cfg.ID) }

func newDeviceMetrics(m *metrics, id string) *deviceMetrics {
	dm := &deviceMetrics{m: m, id: id, pollDur: m.pollDuration.WithLabelValues(id), up: m.deviceUp.WithLabelValues(id),
		partial: m.polls.WithLabelValues(id, "partial"), failed: m.polls.WithLabelValues(id, "failed")}
	for q := telemetry.QualityGood; q <= telemetry.QualityStale; q++ {
		dm.byQuality[q] = m.readings.WithLabelValues(q.String())
	}
	return dm
}

// poll counts one cycle in which good of n points read good.
func (dm *deviceMetrics) poll(good, n int) {
	switch {
	case good == 0:
		dm.failed.Inc()
	case good < n:
		dm.partial.Inc()
	default:
		dm.ok.inc(dm.m.polls, dm.id, "ok")
	}
}

// overrun counts a cycle longer than its interval that the device caused.
func (dm *deviceMetrics) overrun() { dm.overruns.inc(dm.m.overruns, dm.id, "") }

// delayedBy counts a cycle longer than its interval because device by used
// the shared link for most of it. Called from the acquisition loop only.
func (dm *deviceMetrics) delayedBy(by string) {
	c, ok := dm.delayed[by]
	if !ok {
		if dm.delayed == nil {
			dm.delayed = map[string]prometheus.Counter{}
		}
		c = dm.m.delayed.WithLabelValues(dm.id, by)
		dm.delayed[by] = c
	}
	c.Inc()
}

// count counts a batch's readings by quality: one addition per quality
// present, not one per reading.
func (dm *deviceMetrics) count(rs []telemetry.Reading) {
	var n [telemetry.QualityStale + 1]int
	for i := range rs {
		if q := rs[i].Quality; int(q) < len(n) {
			n[q]++
		}
	}
	for q, k := range n {
		if k > 0 {
			dm.byQuality[q].Add(float64(k))
		}
	}
}

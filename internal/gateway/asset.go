package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// asset is one asset the gateway publishes: its births and deaths, and
// the one data subject its sources' batches go to. It is fed by one
// device, or by the several sources of a device entry with sources
// (gwconfig.DeviceFile.Sources: navigation over NMEA 0183, the engine
// over Modbus), each a *device with its own acquisition loop, health and
// signals (docs/architecture.md, "One asset, several sources").
//
// The asset's birth lists the union of its sources' signals. A silent
// source's points go bad, then stale, in its own batches; the asset dies
// (one death notice) only when every source is dead, and a birth follows
// when any answers again.
type asset struct {
	g         *Gateway
	id        telemetry.Asset
	nameplate map[string]float64
	protocol  string // the sources' protocols: "modbus", "modbus+nmea"
	devs      []*device

	// birthDue: the asset's birth is not spooled yet (at start, after a
	// unit change or a rebirth, or because the spool failed); the loops
	// spool it before their next batch.
	birthDue atomic.Bool
	// birthMu serialises spooling the birth across the sources' loops, so
	// no source's batch overtakes a due birth.
	birthMu sync.Mutex

	mu   sync.Mutex
	dead bool // every source dead: the death notice is out
}

// newAssets groups the compiled devices by asset, in file order.
func newAssets(g *Gateway, cfgs []*gwconfig.Device) []*asset {
	var out []*asset
	byID := map[string]*asset{}
	for _, c := range cfgs {
		a := byID[c.Asset.ID]
		if a == nil {
			a = &asset{g: g, id: c.Asset, nameplate: c.Nameplate}
			byID[c.Asset.ID] = a
			out = append(out, a)
		}
		if !slices.Contains(strings.Split(a.protocol, "+"), c.Protocol) {
			if a.protocol != "" {
				a.protocol += "+"
			}
			a.protocol += c.Protocol
		}
	}
	return out
}

// errBirthEncode marks a birth that cannot be encoded as JSON.
var errBirthEncode = errors.New("birth cannot be encoded")

// birth appends the asset's birth notice to the spool. Errors: errBirthEncode
// (wrapped with the JSON error) when the birth cannot be encoded, nothing
// spooled; the spool's error otherwise.
func (a *asset) birth(ctx context.Context, sp *spool.Spool) error {
	var signals []telemetry.SignalInfo
	for _, d := range a.devs {
		signals = d.appendSignals(signals)
	}
	if a.g.rate != 1 {
		for i := range signals {
			signals[i].IntervalMS = int64(float64(signals[i].IntervalMS) * a.g.rate)
		}
	}
	b := &telemetry.Birth{Gateway: a.g.cfg.ID, Asset: a.id.ToJSON(), TSGW: a.g.now().UnixMilli(),
		Signals: signals, Nameplate: a.nameplate, Protocol: a.protocol}
	// a birth that cannot be encoded (a non-finite nameplate value slipped
	// past the config checks) is an error, never an empty message
	if _, err := telemetry.MarshalBirth(b); err != nil {
		return fmt.Errorf("asset %s: %w: %w", a.id.ID, errBirthEncode, err)
	}
	_, err := sp.Append(ctx, telemetry.AssetSubject(a.id, telemetry.KindBirth), func(seq uint64, dst []byte) []byte {
		b.Seq = seq
		data, _ := telemetry.MarshalBirth(b) // encoded above: only Seq changed
		return append(dst, data...)
	})
	if err != nil {
		return fmt.Errorf("asset %s: spooling birth: %w", a.id.ID, err)
	}
	return nil
}

// spoolBirth spools the asset's birth when it is due and reports whether
// none is due any more; on failure the birth stays due, is counted and
// retried before the next batch.
func (a *asset) spoolBirth(ctx context.Context, sp *spool.Spool) bool {
	if !a.birthDue.Load() {
		return true
	}
	a.birthMu.Lock()
	defer a.birthMu.Unlock()
	if !a.birthDue.Load() { // another source's loop spooled it
		return true
	}
	if err := a.birth(ctx, sp); err != nil {
		if errors.Is(err, errBirthEncode) {
			a.g.m.notices.WithLabelValues("birth").Inc()
			a.devs[0].log.Error("birth not published: it cannot be encoded; fix the device's nameplate", "err", err)
			return false
		}
		if ctx.Err() == nil {
			a.g.m.notices.WithLabelValues("birth").Inc()
			a.g.spoolFailed(ctx, a.devs[0].log, "spooling birth; retried before the next batch", err)
		}
		return false
	}
	a.birthDue.Store(false)
	return true
}

// sourceDead is told that source d turned dead for reason; the asset's
// death is spooled when every source is dead.
func (a *asset) sourceDead(ctx context.Context, sp *spool.Spool, d *device, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dead {
		return
	}
	for _, o := range a.devs {
		if !o.state().Dead {
			d.log.Warn("source silent: its points go stale; the asset lives on its other sources", "reason", reason)
			return
		}
	}
	a.dead = true
	if len(a.devs) > 1 {
		reason = "every source silent; last " + d.cfg.Source + ": " + reason
	}
	d.log.Warn("device silent: publishing death notice", "reason", reason)
	msg := &telemetry.Death{Gateway: a.g.cfg.ID, Asset: a.id.ToJSON(), TSGW: a.g.now().UnixMilli(), Reason: reason}
	_, err := sp.Append(ctx, telemetry.AssetSubject(a.id, telemetry.KindDeath), func(seq uint64, dst []byte) []byte {
		msg.Seq = seq
		data, _ := telemetry.MarshalDeath(msg)
		return append(dst, data...)
	})
	if err != nil {
		a.g.spoolFailed(ctx, d.log, "spooling death notice", err)
	}
}

// sourceAlive is told that source d answers again: after the asset's
// death a birth is due.
func (a *asset) sourceAlive(d *device) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dead {
		a.dead = false
		d.log.Info("device answering again: publishing birth")
		a.birthDue.Store(true) // spooled by the loop before the next batch
	}
}

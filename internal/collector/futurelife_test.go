package collector

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// TestFutureBirthAndDeathClamped (review4 F6): a birth or death whose ts_gw
// lies beyond max_future gets the arrival time, as a batch's does, and is
// counted in future_timestamps_total. Before, a death dated 2100 (of
// another gateway, or of the asset's own in seq order) kept the live asset
// dead: the real births and data after it were older and ended nothing;
// a birth of another gateway dated 2100 kept its signal list and ranges in
// force (the real gateway's births were refused as older, and its data
// raised false plausibility alerts).
func TestFutureBirthAndDeathClamped(t *testing.T) {
	year2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for _, c := range []struct {
		name   string
		future func(t *testing.T, now int64) spanMsg
		// birth: the future message is a birth with discharge_pressure's
		// max at 0.5 (the real data carries 0.7)
		birth bool
	}{
		{"death of another gateway dated 2100", func(t *testing.T, _ int64) spanMsg {
			return fromGateway(t, spanDeath(t, 1, year2100), "gw-2")
		}, false},
		{"death of the asset's gateway in seq order dated 10 min ahead", func(t *testing.T, now int64) spanMsg {
			return spanDeath(t, 3, now+10*60_000)
		}, false},
		{"death of seq 0 dated 2100", func(t *testing.T, _ int64) spanMsg { return spanDeath(t, 0, year2100) }, false},
		{"birth of another gateway dated 2100", func(t *testing.T, _ int64) spanMsg {
			return fromGateway(t, spanBirth(t, 1, year2100, 0.5, "discharge_temp", "discharge_pressure"), "gw-2")
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			col, send := liveAC1(t)
			send(c.future(t, time.Now().UnixMilli()))
			if got := testutil.ToFloat64(col.m.future); got != 1 {
				t.Errorf("future timestamps %v, want 1", got)
			}
			if !c.birth {
				if av, _ := col.Asset("site1", "ac-1"); av.Dead == "" {
					t.Fatal("the death was not applied")
				}
				if a, ok := deathAlert(col); !ok || a.RaisedAt > time.Now().UnixMilli() {
					t.Errorf("the death's alert: active %v, raised at %d (in the future)", ok, a.RaisedAt)
				}
			}
			// the asset's own gateway: a rebirth and data, now
			later := time.Now().UnixMilli() + 1
			send(spanBirth(t, 4, later, 1.6, "discharge_temp", "discharge_pressure"))
			send(lifeBatch(5, later+1, telemetry.QualityGood))
			av, _ := col.Asset("site1", "ac-1")
			if av.Dead != "" {
				t.Errorf("the asset stays dead after its rebirth and data: %q", av.Dead)
			}
			if a, ok := deathAlert(col); ok {
				t.Errorf("the death's alert still active: %+v", a)
			}
			for _, a := range col.Alerts(true) {
				if a.Kind == "plausibility" {
					t.Errorf("false plausibility alert (the future birth's range in force): %+v", a)
				}
			}
			for _, s := range av.Signals {
				if s.Signal == "discharge_pressure" && (!s.Valid || s.Value != 0.7) {
					t.Errorf("discharge_pressure %+v, want 0.7 valid", s)
				}
			}
		})
	}
}

// liveAC1 returns a collector with default settings where ac-1 is live on
// gw-1 (its birth and a batch, seqs 1 and 2, dated a few seconds ago), and
// a function that hands it one message of ac-1.
func liveAC1(t *testing.T) (*Collector, func(spanMsg)) {
	t.Helper()
	return liveAC1Config(t, Defaults())
}

// liveAC1Config is liveAC1 with the collector's configuration cfg.
func liveAC1Config(t *testing.T, cfg Config) (*Collector, func(spanMsg)) {
	t.Helper()
	col := newCollector(t, cfg)
	send := func(m spanMsg) {
		t.Helper()
		if err := col.Handle(context.Background(), telemetry.Subject("site1", "air_compressor", "ac-1", m.kind), m.data); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	send(spanBirth(t, 1, now-5000, 1.6, "discharge_temp", "discharge_pressure"))
	send(lifeBatch(2, now-4000, telemetry.QualityGood))
	return col, send
}

// deathAlert returns ac-1's asset-level stale alert (silence or death)
// when it is active.
func deathAlert(c *Collector) (a alert.Alert, ok bool) {
	for _, a := range c.Alerts(true) {
		if a.Asset == "ac-1" && a.Signal == "" && a.Kind == "stale" {
			return a, true
		}
	}
	return a, false
}

// TestRestoredFutureLifeBounded (review4 F6): a record a release before
// the clamp wrote, with a death of another gateway dated 2100 (made here
// by a collector with max_future 0s, which takes it as dated), does not
// hold the asset dead after a restore: the shard's engine restores a
// newest ts_gw beyond now + max_future as now, and the asset's own
// rebirth and data revive it and clear the restored "reported dead" alert.
func TestRestoredFutureLifeBounded(t *testing.T) {
	year2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	ctx := context.Background()
	send := func(c *Collector, m spanMsg) {
		t.Helper()
		if err := c.Handle(ctx, telemetry.Subject("site1", "air_compressor", "ac-1", m.kind), m.data); err != nil {
			t.Fatal(err)
		}
	}
	old := Defaults()
	old.MaxFuture = 0
	c0 := newCollector(t, old)
	now := time.Now().UnixMilli()
	send(c0, spanBirth(t, 1, now-5000, 1.6, "discharge_temp", "discharge_pressure"))
	send(c0, lifeBatch(2, now-4000, telemetry.QualityGood))
	send(c0, fromGateway(t, spanDeath(t, 1, year2100), "gw-2"))
	rec := assetRecord(t, c0.shard(0), "site1", "ac-1")

	c := newCollector(t, Defaults())
	sh := c.shard(0)
	sh.mu.Lock()
	err := sh.restore(rec, 1, now-3000)
	got, _ := sh.engine.Snapshot("site1", "ac-1")
	sh.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got.LifeTSGW > time.Now().UnixMilli() || got.LifeTSGW < now {
		t.Errorf("restored life ts_gw %d, want the restore time (about %d)", got.LifeTSGW, now)
	}
	if av, _ := c.Asset("site1", "ac-1"); av.Dead == "" {
		t.Fatal("the restored asset is not dead")
	}
	if _, ok := deathAlert(c); !ok {
		t.Fatal("the restored death's alert is not active")
	}
	later := time.Now().UnixMilli() + 1
	send(c, spanBirth(t, 4, later, 1.6, "discharge_temp", "discharge_pressure"))
	send(c, lifeBatch(5, later+1, telemetry.QualityGood))
	if av, _ := c.Asset("site1", "ac-1"); av.Dead != "" {
		t.Errorf("the restored asset stays dead after its rebirth and data: %q", av.Dead)
	}
	if a, ok := deathAlert(c); ok {
		t.Errorf("the restored death's alert still active: %+v", a)
	}
}

// TestForeignFutureInsideTheTolerance (review5 F13 and the F6 residual):
// a message of another gateway of the site dated inside max_future (not
// clamped) ranks nothing after it as older than the collector's clock: the
// times the engine records for ordering are bounded by its clock. Before,
// a batch of gw-2 dated +290 s made the real gateway's batches late for
// 290 s (not evaluated: the forged 0.7 MPa shown, status ok, no range
// alert for its 5.0 MPa) and refused its death as older; a death of gw-2
// dated +295 s kept the live asset dead through its rebirth and data; a
// birth of gw-2 dated +295 s kept its range (max 0.5 MPa) in force over
// the real gateway's rebirth (a false plausibility alert for 0.7 MPa).
func TestForeignFutureInsideTheTolerance(t *testing.T) {
	pressure := func(seq uint64, ts int64, v float64) spanMsg {
		b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: spanAsset,
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts},
				{Signal: "discharge_pressure", Value: v, Unit: "MPa", TS: ts}}}
		return spanMsg{telemetry.KindData, b.AppendJSON(nil)}
	}
	pressureShown := func(t *testing.T, col *Collector) (v float64, implausible bool) {
		t.Helper()
		av, _ := col.Asset("site1", "ac-1")
		for _, s := range av.Signals {
			if s.Signal == "discharge_pressure" {
				return s.Value, s.Implausible
			}
		}
		t.Fatal("discharge_pressure not shown")
		return 0, false
	}
	plausibility := func(col *Collector) bool {
		for _, a := range col.Alerts(true) {
			if a.Asset == "ac-1" && a.Kind == "plausibility" {
				return true
			}
		}
		return false
	}

	t.Run("batch of another gateway dated 290 s ahead", func(t *testing.T) {
		col, send := liveAC1(t)
		for round, seq := range []uint64{3, 5} {
			send(fromGateway(t, pressure(uint64(round+1), time.Now().UnixMilli()+290_000, 0.7), "gw-2"))
			send(pressure(seq, time.Now().UnixMilli(), 5.0)) // the real gateway: 5.0 MPa, range 0..1.6
			if v, implausible := pressureShown(t, col); v != 5.0 || !implausible {
				t.Errorf("round %d: discharge_pressure %v (implausible %v), want the real gateway's 5.0, implausible", round, v, implausible)
			}
			if !plausibility(col) {
				t.Errorf("round %d: no plausibility alert for the real gateway's 5.0 MPa", round)
			}
			if av, _ := col.Asset("site1", "ac-1"); av.Gateway != "gw-1" {
				t.Errorf("round %d: gateway %q, want gw-1", round, av.Gateway)
			}
		}
		send(spanDeath(t, 6, time.Now().UnixMilli()))
		if av, _ := col.Asset("site1", "ac-1"); av.Dead == "" {
			t.Error("the real gateway's death was refused as older")
		}
		if got := testutil.ToFloat64(col.m.future); got != 0 {
			t.Errorf("future timestamps %v, want 0 (inside the tolerance)", got)
		}
	})
	t.Run("death of another gateway dated 295 s ahead", func(t *testing.T) {
		col, send := liveAC1(t)
		send(fromGateway(t, spanDeath(t, 1, time.Now().UnixMilli()+295_000), "gw-2"))
		if av, _ := col.Asset("site1", "ac-1"); av.Dead == "" {
			t.Fatal("the death was not applied")
		}
		later := time.Now().UnixMilli() + 1
		send(spanBirth(t, 3, later, 1.6, "discharge_temp", "discharge_pressure"))
		send(lifeBatch(4, later+1, telemetry.QualityGood))
		if av, _ := col.Asset("site1", "ac-1"); av.Dead != "" {
			t.Errorf("the asset stays dead after its rebirth and data: %q", av.Dead)
		}
		if a, ok := deathAlert(col); ok {
			t.Errorf("the death's alert still active: %+v", a)
		}
	})
	t.Run("birth of another gateway dated 295 s ahead", func(t *testing.T) {
		col, send := liveAC1(t)
		send(fromGateway(t, spanBirth(t, 1, time.Now().UnixMilli()+295_000, 0.5, "discharge_temp", "discharge_pressure"), "gw-2"))
		later := time.Now().UnixMilli() + 1
		send(spanBirth(t, 3, later, 1.6, "discharge_temp", "discharge_pressure"))
		send(lifeBatch(4, later+1, telemetry.QualityGood))
		if plausibility(col) {
			t.Error("false plausibility alert: the foreign birth's range stays in force")
		}
		if v, implausible := pressureShown(t, col); v != 0.7 || implausible {
			t.Errorf("discharge_pressure %v (implausible %v), want 0.7", v, implausible)
		}
	})
}

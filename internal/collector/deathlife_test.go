package collector

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// lifeRig is a collector on a real nats-server with its own consumer;
// publish hands it gateway messages and returns once it evaluated and
// acknowledged them.
type lifeRig struct {
	t   *testing.T
	js  jetstream.JetStream
	r   *running
	n   int
	cfg Config
}

func newLifeRig(t *testing.T) *lifeRig {
	js, cfg := replicaRig(t)
	r := startCfg(t, cfg)
	t.Cleanup(r.stop)
	wait.For(t, 10*time.Second, "collector ready", r.c.Ready)
	return &lifeRig{t: t, js: js, r: r, cfg: cfg}
}

func (l *lifeRig) publish(msgs ...spanMsg) {
	l.t.Helper()
	ctx := context.Background()
	var last uint64
	for _, m := range msgs {
		l.n++
		ack, err := l.js.Publish(ctx, telemetry.Subject("site1", "air_compressor", "ac-1", m.kind), m.data,
			jetstream.WithMsgID("life-"+strconv.Itoa(l.n)))
		if err != nil {
			l.t.Fatal(err)
		}
		last = ack.Sequence
	}
	wait.For(l.t, 20*time.Second, "the messages evaluated and acknowledged", func() bool {
		cons, err := l.js.Consumer(ctx, "SMELTER", "smelter-collector")
		if err != nil {
			return false // not created yet
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream >= last
	})
}

// assetAlert returns the asset-level stale alert (silence or death) of
// ac-1 when it is active.
func (l *lifeRig) assetAlert() (alert.Alert, bool) {
	for _, a := range l.r.c.Alerts(true) {
		if a.Asset == "ac-1" && a.Signal == "" && a.Kind == "stale" {
			return a, true
		}
	}
	return alert.Alert{}, false
}

// lifeBatch is a batch of ac-1 whose two readings have quality q (with a
// value when q has one, else status 256, a timeout).
func lifeBatch(seq uint64, ts int64, q telemetry.Quality) spanMsg {
	b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: spanAsset}
	for _, s := range []struct{ sig, unit string }{{"discharge_temp", "Cel"}, {"discharge_pressure", "MPa"}} {
		r := telemetry.Reading{Signal: s.sig, Unit: s.unit, Quality: q, TS: ts - 5000}
		if q.HasValue() {
			r.Value, r.TS = 0.7, ts
		} else {
			r.Status = 256
		}
		b.Readings = append(b.Readings, r)
	}
	return spanMsg{telemetry.KindData, b.AppendJSON(nil)}
}

// TestDeathStaysUntilTheAssetAnswers (review2 F0): after a death notice the
// gateway keeps publishing the dead device's points, stale (and a slower
// group's, bad with a timeout status, until they turn stale). Neither may
// clear the death: the asset stays dead, with its "reported dead" alert
// active, until a birth or a reading with a value. Before, the first stale
// batch after the death cleared it ("sends data again") in the same
// instant it was raised, and the dashboard never showed the asset dead.
func TestDeathStaysUntilTheAssetAnswers(t *testing.T) {
	t0 := time.Now().UnixMilli() - 60_000
	at := func(i int) int64 { return t0 + int64(i)*1000 }
	birth := spanBirth(t, 1, at(1), 1.6, "discharge_temp", "discharge_pressure")
	for _, end := range []string{"good batch", "birth in force again", "new birth"} {
		t.Run(end, func(t *testing.T) {
			l := newLifeRig(t)
			l.publish(birth, lifeBatch(2, at(2), telemetry.QualityGood), spanDeath(t, 3, at(5)))
			dead := func(when string) {
				t.Helper()
				av, ok := l.r.c.Asset("site1", "ac-1")
				if !ok || av.Dead == "" {
					t.Fatalf("%s: asset not dead (tracked %v, dead %q)", when, ok, av.Dead)
				}
				if a, ok := l.assetAlert(); !ok {
					t.Fatalf("%s: no active asset-level stale alert", when)
				} else if a.RaisedAt != at(5) {
					t.Errorf("%s: the death's alert raised at %d, want %d (raised again)", when, a.RaisedAt, at(5))
				}
			}
			dead("after the death")
			l.publish(lifeBatch(4, at(6), telemetry.QualityStale), lifeBatch(5, at(7), telemetry.QualityBad), lifeBatch(6, at(8), telemetry.QualityStale))
			dead("after stale and bad batches")
			switch end {
			case "good batch":
				l.publish(lifeBatch(7, at(9), telemetry.QualityGood))
			case "birth in force again":
				b := spanBirth(t, 7, at(9), 1.6, "discharge_temp", "discharge_pressure")
				l.publish(b)
			case "new birth":
				l.publish(spanBirth(t, 7, at(9), 1.6, "discharge_temp", "discharge_pressure", "load_state"))
			}
			if av, _ := l.r.c.Asset("site1", "ac-1"); av.Dead != "" {
				t.Errorf("after a %s the asset is still dead: %q", end, av.Dead)
			}
			if a, ok := l.assetAlert(); ok {
				t.Errorf("after a %s the asset alert is still active: %+v", end, a)
			}
		})
	}
}

// TestOldDeathAndBirthBeyondWindow (review2 F1): a death or birth of the
// asset's gateway replayed more than dedup_window seqs behind the recorded
// seq (a live_first backlog after a long outage) and older in ts_gw than
// the asset's newest batch is not applied; one that is newer in ts_gw (a
// gateway that started over) is, without moving the recorded seq back.
func TestOldDeathAndBirthBeyondWindow(t *testing.T) {
	t0 := time.Now().UnixMilli() - 3_600_000
	at := func(i int) int64 { return t0 + int64(i)*1000 }
	l := newLifeRig(t)
	w := uint64(l.cfg.DedupWindow)
	l.publish(spanBirth(t, 3*w, at(1000), 1.6, "discharge_temp", "discharge_pressure"), lifeBatch(3*w+1, at(1001), telemetry.QualityGood))
	seq := func() uint64 {
		sh := l.r.c.shard(0)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		st, _ := sh.engine.Snapshot("site1", "ac-1")
		return st.Seq
	}
	// 2 windows behind, 10 min older: a death and a birth listing one
	// signal of two
	l.publish(spanDeath(t, w, at(400)), spanBirth(t, w+1, at(401), 1.6, "discharge_temp"))
	av, _ := l.r.c.Asset("site1", "ac-1")
	if av.Dead != "" {
		t.Errorf("an old death beyond the window marked the live asset dead: %q", av.Dead)
	}
	if len(av.Signals) != 2 {
		t.Errorf("an old birth beyond the window put its signal list in force: %d signals", len(av.Signals))
	}
	if _, ok := l.assetAlert(); ok {
		t.Error("an old death raised the asset's stale alert")
	}
	if s := seq(); s != 3*w+1 {
		t.Errorf("recorded seq %d, want %d", s, 3*w+1)
	}
	// a gateway that started over: beyond the window but newer in ts_gw
	l.publish(spanDeath(t, 5, at(1005)))
	if av, _ := l.r.c.Asset("site1", "ac-1"); av.Dead == "" {
		t.Error("a newer death of a gateway that started over not applied")
	}
	if s := seq(); s != 3*w+1 {
		t.Errorf("an applied death beyond the window moved the recorded seq to %d, want %d", s, 3*w+1)
	}
}

// fromGateway returns m as gateway gw sends it.
func fromGateway(t *testing.T, m spanMsg, gw string) spanMsg {
	t.Helper()
	var f map[string]json.RawMessage
	if err := json.Unmarshal(m.data, &f); err != nil {
		t.Fatal(err)
	}
	f["gateway"] = mustJSON(t, gw)
	return spanMsg{m.kind, mustJSON(t, f)}
}

// TestOldBirthDoesNotReviveTheDead (the reviewer's case): ac-1 moved from
// gateway gw-1 to gw-2, which sent its birth (a wider discharge_pressure
// range and load_state), a batch and its death. Then gw-1 replays its
// live_first backlog with an hour-old birth of ac-1; or a birth of seq 0
// identical to the one in force, older than the death, arrives. None of
// them is applied: the asset stays dead with its "reported dead" alert
// (raised at the death), gw-2's signal list and ranges stay in force. A
// birth newer than the death revives it. Before, each of them ended the
// death and cleared its alert (at a cleared_at before its raised_at), and
// gw-1's old birth put its signal list and range in force.
func TestOldBirthDoesNotReviveTheDead(t *testing.T) {
	t0 := time.Now().UnixMilli() - 3_600_000
	at := func(i int) int64 { return t0 + int64(i)*1000 }
	moved := func(seq uint64, ts int64) spanMsg {
		return fromGateway(t, spanBirth(t, seq, ts, 2.0, "discharge_temp", "discharge_pressure", "load_state"), "gw-2")
	}
	for _, c := range []struct {
		name string
		old  spanMsg
	}{
		{"the old gateway's old birth", spanBirth(t, 12, at(3), 1.6, "discharge_temp", "discharge_pressure")},
		{"the old gateway's old birth, identical to the one in force", fromGateway(t, moved(12, at(3)), "gw-1")},
		{"a birth of seq 0 identical to the one in force, older than the death", moved(0, at(105))},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLifeRig(t)
			l.publish(spanBirth(t, 10, at(1), 1.6, "discharge_temp", "discharge_pressure"), lifeBatch(11, at(2), telemetry.QualityGood),
				moved(5, at(100)), fromGateway(t, lifeBatch(6, at(101), telemetry.QualityGood), "gw-2"),
				fromGateway(t, spanDeath(t, 7, at(110)), "gw-2"))
			l.publish(c.old)
			av, _ := l.r.c.Asset("site1", "ac-1")
			if av.Dead == "" {
				t.Error("the old birth revived the dead asset")
			}
			if a, ok := l.assetAlert(); !ok || a.RaisedAt != at(110) {
				t.Errorf("the death's alert: active %v, raised at %d, want %d", ok, a.RaisedAt, at(110))
			}
			sh := l.r.c.shard(0)
			sh.mu.Lock()
			st, _ := sh.engine.Snapshot("site1", "ac-1")
			sh.mu.Unlock()
			var pmax float64
			for _, si := range st.Birth {
				if si.Signal == "discharge_pressure" && si.Max != nil {
					pmax = *si.Max
				}
			}
			if len(st.Birth) != 3 || pmax != 2.0 {
				t.Errorf("birth in force: %d signals, discharge_pressure max %v; want gw-2's: 3, 2", len(st.Birth), pmax)
			}
			// the asset's own rebirth after the death ends it
			l.publish(moved(8, at(120)))
			if av, _ := l.r.c.Asset("site1", "ac-1"); av.Dead != "" {
				t.Errorf("a birth newer than the death did not revive the asset: %q", av.Dead)
			}
			if a, ok := l.assetAlert(); ok {
				t.Errorf("the death's alert still active after the rebirth: %+v", a)
			}
		})
	}
}

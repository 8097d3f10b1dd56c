package collector

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

const shipSubj = "smelter.v1.site1.ship.ship-1."

// shipLegBatch is batch seq of a ship at sea, one every 30 s from t0:
// speed, fuel flow, power and cargo vary with seq so the leg's sums are no
// round numbers.
func shipLegBatch(seq int, t0 int64) []byte {
	ts := t0 + int64(seq)*30_000
	f := float64(seq % 11)
	b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(seq), TSGW: ts,
		Asset: telemetry.Asset{ID: "ship-1", Class: "ship", Path: []string{"acme", "site1", "_", "_", "_"}},
		Readings: []telemetry.Reading{
			{Signal: "sog", Value: 12.3 + 0.07*f, Unit: "[kn_i]", TS: ts},
			{Signal: "me_fuel_flow", Value: 1180 + 3.3*f, Unit: "kg/h", TS: ts},
			{Signal: "me_fuel_type", Value: 3, Unit: "1", TS: ts}, // HFO
			{Signal: "ae_fuel_flow", Value: 95 + 0.9*f, Unit: "kg/h", TS: ts},
			{Signal: "ae_fuel_type", Value: 5, Unit: "1", TS: ts}, // MDO/MGO
			{Signal: "shaft_power", Value: 6400 + 17*f, Unit: "kW", TS: ts},
			{Signal: "cargo", Value: 58100.5, Unit: "t", TS: ts},
		}}
	return b.AppendJSON(nil)
}

// kpiLog records the ship's KPI results from the stream, the last one per
// window end.
type kpiLog struct {
	mu    sync.Mutex
	byEnd map[int64]kpi.Result
}

func (l *kpiLog) subscribe(t *testing.T, nc *nats.Conn) {
	t.Helper()
	l.byEnd = map[int64]kpi.Result{}
	sub, err := nc.Subscribe(shipSubj+"kpi", func(m *nats.Msg) {
		var r kpi.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("kpi json: %v", err)
			return
		}
		l.mu.Lock()
		l.byEnd[r.End] = r
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// value returns a KPI of the window ending at end.
func (l *kpiLog) value(end int64, name string) (kpi.Value, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.byEnd[end]
	if !ok {
		return kpi.Value{}, false
	}
	for _, v := range r.KPIs {
		if v.Name == name {
			return v, true
		}
	}
	return kpi.Value{}, false
}

// How shipLegRun kills its first collector.
const (
	killEvaluated = iota // once batch killAt was evaluated, wherever the collector is
	// after the checkpoint of one cycle that evaluated the birth and batches
	// 1..killAt, before their acknowledgement: the checkpoint holds them
	// all, and all are redelivered to the next collector
	killBeforeAck
)

// shipLegRun feeds one ship's voyage leg (birth, then batches 1..n) to a
// collector on a new NATS server and returns the KPI results; with killAt
// > 0 the collector is killed (-9, as kill says) after batch killAt was
// evaluated and a new one continues from its checkpoint.
func shipLegRun(t *testing.T, n, killAt int, t0 int64, kill int) *kpiLog {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	dir := t.TempDir()
	startOne := func(setup func(*Collector)) *running {
		cfg := Defaults()
		cfg.NATS.URL = ns.URL()
		cfg.HTTP.Listen = ""
		cfg.DataDir = dir
		cfg.Cluster.AckWait = Duration(2 * time.Second)
		return startWith(t, cfg, setup)
	}
	// killBeforeAck: the first fetch waits until the birth and batches
	// 1..killAt are stored (one cycle takes them all), and the commit hook,
	// after the cycle's checkpoint, closes the connection before the
	// acknowledgement
	published, killed := make(chan struct{}), make(chan struct{})
	var gateOnce, killOnce sync.Once
	first := func(c *Collector) {
		if kill != killBeforeAck || killAt == 0 {
			return
		}
		c.beforeFetch = func(int) { <-published }
		c.onCommit = func(_ int, bs []BatchRef) {
			for _, b := range bs {
				if b.Seq == uint64(killAt) {
					killOnce.Do(func() {
						c.js.Load().nc.Close()
						if bs[0].Seq != 1 { // an earlier checkpoint acknowledged the birth
							t.Errorf("the checkpoint of batch %d holds batches %d.., not the whole first part", killAt, bs[0].Seq)
						}
						close(killed)
					})
				}
			}
		}
	}
	open := func() { gateOnce.Do(func() { close(published) }) }
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var log kpiLog
	log.subscribe(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	r := startOne(first)
	t.Cleanup(open) // before the collector's stop, should the test end early
	birth := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: 0, TSGW: t0,
		Asset: telemetry.AssetJSON{ID: "ship-1", Class: "ship", Path: []string{"acme", "site1", "_", "_", "_"}},
		Signals: []telemetry.SignalInfo{{Signal: "sog", Unit: "[kn_i]", IntervalMS: 30_000}, {Signal: "me_fuel_flow", Unit: "kg/h", IntervalMS: 30_000},
			{Signal: "shaft_power", Unit: "kW", IntervalMS: 30_000}, {Signal: "cargo", Unit: "t", IntervalMS: 30_000}},
		Nameplate: map[string]float64{"rated_power": 8600, "rated_speed": 117, "rated_sfoc": 167, "capacity": 63500, "ship_type": 1}}
	if _, err := js.Publish(ctx, shipSubj+"birth", mustJSON(t, birth), jetstream.WithMsgID("gw-1-0")); err != nil {
		t.Fatal(err)
	}
	pub := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := js.Publish(ctx, shipSubj+"data", shipLegBatch(i, t0), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	evaluated := func(c *Collector, seq int) func() bool {
		return func() bool {
			av, ok := c.Asset("site1", "ship-1")
			return ok && av.LastTS >= t0+int64(seq)*30_000
		}
	}
	switch {
	case killAt > 0 && kill == killBeforeAck:
		pub(1, killAt)
		open()
		select {
		case <-killed:
		case <-time.After(15 * time.Second):
			t.Fatal("the first collector did not checkpoint the leg's first part")
		}
		r.kill()
		r = startOne(nil)
		pub(killAt+1, n)
	case killAt > 0:
		pub(1, killAt)
		wait.For(t, 15*time.Second, "the first collector evaluated the leg's first part", evaluated(r.c, killAt))
		r.kill()
		r = startOne(nil)
		pub(killAt+1, n)
	default:
		pub(1, n)
	}
	wait.For(t, 30*time.Second, "the leg evaluated", evaluated(r.c, n))
	// the asset view follows the data as it arrives; the rule engine of a
	// restarted collector first waits for the unacknowledged messages of
	// its predecessor (ack_wait): wait for the last finished window's KPIs
	win := int64(15 * 60_000)
	last := t0 + int64(n)*30_000
	last -= last % win
	wait.For(t, 60*time.Second, "the last finished window's KPIs", func() bool {
		_, ok := log.value(last, "leg_distance")
		return ok
	})
	return &log
}

// TestShipLegSurvivesKill9: a collector killed (-9) in the middle of a
// ship's voyage leg continues the leg from its checkpoint in the state
// bucket: the leg's distance, EEOI and CII after the restart are exactly
// those of a run without restart.
func TestShipLegSurvivesKill9(t *testing.T) {
	// 15 min windows from a window boundary; 430 batches of 30 s is 215
	// min (some 45 nm: the CII is judged from 20 nm on); the kill falls in
	// the middle of a window, after the CII first appeared
	t0 := time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC).UnixMilli()
	const n, killAt = 430, 251
	want := shipLegRun(t, n, 0, t0, killEvaluated)
	got := shipLegRun(t, n, killAt, t0, killEvaluated)
	compareShipLegs(t, want, got, n, killAt, t0)
}

// TestShipLegBirthRedeliveredAfterCheckpoint: a collector killed after the
// checkpoint of the cycle that evaluated the birth and the first part of
// the leg, before it acknowledged them, leaves them all to be redelivered
// to its successor. The batches are skipped as already checkpointed; the
// birth, the one in force, is not applied again: applied after the restored
// state, its signal list (which does not list the fuel types, sent in every
// batch) dropped the held fuel types, the next batch integrated fuel of no
// known type, and the leg's EEOI and CII were n/a to its end (and the CO2
// of that window), while a run without the restart had them.
func TestShipLegBirthRedeliveredAfterCheckpoint(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC).UnixMilli()
	const n, killAt = 430, 251
	want := shipLegRun(t, n, 0, t0, killEvaluated)
	got := shipLegRun(t, n, killAt, t0, killBeforeAck)
	compareShipLegs(t, want, got, n, killAt, t0)
}

// compareShipLegs checks that every finished window of got has the
// distance, EEOI, CII and CO2 of want, and that CIIs after the kill were
// compared.
func compareShipLegs(t *testing.T, want, got *kpiLog, n, killAt int, t0 int64) {
	t.Helper()
	win := int64(15 * 60_000)
	last := t0 + int64(n)*30_000
	last -= last % win // the last window finished
	checked := 0
	for end := t0 + win; end <= last; end += win {
		for _, name := range []string{"leg_distance", "eeoi", "cii", "co2"} {
			w, okW := want.value(end, name)
			g, okG := got.value(end, name)
			if !okW || !okG {
				t.Fatalf("window ending %s: %s missing (no restart %v, restart %v)", time.UnixMilli(end).UTC(), name, okW, okG)
			}
			if w.Value != g.Value || w.Status != g.Status {
				t.Errorf("window ending %s: %s = %v %s after the restart, %v %s without", time.UnixMilli(end).UTC(), name, g.Value, g.Status, w.Value, w.Status)
			}
			if name == "cii" && w.Status != kpi.StatusNA && end > t0+int64(killAt)*30_000 {
				checked++
			}
		}
	}
	if checked < 2 {
		t.Fatalf("only %d windows with a CII after the kill: the test checks nothing", checked)
	}
}

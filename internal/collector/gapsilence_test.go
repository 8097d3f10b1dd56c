package collector

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// gapRig is an embedded NATS server with the collector's stream, a client
// publishing ac-1's batches (ts_gw every gapIV ms) and reading the alert
// messages the stream holds (what its consumers see: a message published
// again with the same Nats-Msg-Id, as after a restart that replays a
// cycle, is stored once), and the configuration of a collector replica
// (the same data directory every start: one replica restarting).
type gapRig struct {
	cfg    Config
	js     jetstream.JetStream
	alerts jetstream.Consumer
	seen   []alert.Alert
	seq    uint64
}

// gapIV is the ts_gw interval of the rig's batches: the asset's silence
// interval, so k x it (3 x 200 ms) of stream time is quick to make.
const gapIV = 200

// silenceKey is ac-1's asset-silence alert.
const silenceKey = "site1.ac-1.stale"

func newGapRig(t *testing.T) *gapRig {
	t.Helper()
	return newGapRigWith(t, nil)
}

// newGapRigWith is newGapRig with edit (when not nil) applied to the
// configuration before the stream is made.
func newGapRigWith(t *testing.T, edit func(*Config)) *gapRig {
	t.Helper()
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.AckWait = Duration(2 * time.Second)
	cfg.Cluster.CheckpointInterval = Duration(200 * time.Millisecond)
	if edit != nil {
		edit(&cfg)
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	g := &gapRig{cfg: cfg}
	g.js, _ = jetstream.New(nc)
	// the stream exists before any collector ran: what is published
	// before the first start is a backlog
	ctx := context.Background()
	if _, _, err := newCollector(t, cfg).ensureStream(ctx, g.js, true); err != nil {
		t.Fatal(err)
	}
	filter := "smelter.v1.*.*.*.alert"
	if cfg.Cluster.Partitions > 0 {
		filter += ".*" // the stream's partition token
	}
	g.alerts, err = g.js.OrderedConsumer(ctx, cfg.NATS.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// kv is the collector's state bucket.
func (g *gapRig) kv(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := g.js.KeyValue(context.Background(), g.cfg.Group+"_state")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// silence returns ac-1's silence events the stream holds so far.
func (g *gapRig) silence(t *testing.T) []alert.Alert {
	t.Helper()
	got, _ := fetchAlerts(t, g.alerts)
	g.seen = append(g.seen, got...)
	var out []alert.Alert
	for _, a := range g.seen {
		if a.Key == silenceKey {
			out = append(out, a)
		}
	}
	return out
}

// publish sends ac-1's batches dated ts, ts+gapIV, ... (n of them) at once.
func (g *gapRig) publish(t *testing.T, ts int64, n int) {
	t.Helper()
	asset := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	for i := range n {
		g.seq++
		at := ts + int64(i)*gapIV
		b := &telemetry.Batch{Gateway: "gw-1", Seq: g.seq, TSGW: at, Asset: asset,
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80 + float64(g.seq%5)*0.1, Unit: "Cel", TS: at}, {Signal: "load_state", Value: 2, TS: at},
				{Signal: "discharge_pressure", Value: 0.7 + float64(g.seq%7)*0.001, Unit: "MPa", TS: at}}}
		if _, err := g.js.Publish(context.Background(), subj, b.AppendJSON(nil), jetstream.WithMsgID("gw-1-"+strconv.FormatUint(g.seq, 10))); err != nil {
			t.Fatal(err)
		}
	}
}

// first waits for ac-1's first silence event in state st and returns it.
func (g *gapRig) first(t *testing.T, st alert.State, what string) alert.Alert {
	t.Helper()
	var got alert.Alert
	wait.For(t, 30*time.Second, what, func() bool {
		for _, a := range g.silence(t) {
			if a.State == st {
				got = a
				return true
			}
		}
		return false
	})
	return got
}

// evaluated waits until r evaluated ac-1's batch dated ts.
func evaluated(t *testing.T, r *running, ts int64) {
	t.Helper()
	wait.For(t, 30*time.Second, "the collector evaluated ac-1's batches", func() bool {
		av, ok := r.c.Asset("site1", "ac-1")
		return ok && av.LastTS >= ts
	})
}

// occurrences returns ac-1's silence events raised at or before until
// (Unix ms), grouped by occurrence id in the order first seen.
func (g *gapRig) occurrences(t *testing.T, until int64) (ids []string, events map[string][]alert.Alert) {
	t.Helper()
	events = map[string][]alert.Alert{}
	for _, a := range g.silence(t) {
		if a.RaisedAt > until {
			continue
		}
		if _, ok := events[a.ID]; !ok {
			ids = append(ids, a.ID)
		}
		events[a.ID] = append(events[a.ID], a)
	}
	return ids, events
}

// F1 through a real stream: the collector is down while ac-1 reports
// every 200 ms, is silent for 5 s of its gateway's time (2 s of the
// stream's: more than 3 x 200 ms + 1 s on both clocks), and reports again. The
// collector starts and reads it all as a backlog: the silence is raised
// once, dated 3 x 200 ms after the last batch before it, and cleared at the
// first batch after it; killed (-9) and started again, the collector
// raises nothing more for it (the records and the stream's Nats-Msg-Id
// hold across the restart). Before, Tick, judging the collector's clock,
// never saw the silence and nothing was raised. Only events raised within
// the backlog's data time count: once the test stops publishing, the asset
// is silent for real and a live silence (dated on the collector's clock,
// later) may follow.
func TestSilenceInsideBacklogRaisedOnce(t *testing.T) {
	g := newGapRig(t)
	t0 := time.Now().UnixMilli() - 600_000
	g.publish(t, t0, 10) // up to t0 + 1.8 s
	before := t0 + 9*gapIV
	time.Sleep(2 * time.Second) // the silence, in the stream's time (more than 3 x 200 ms + rules.TickPeriod)
	after := before + 5000
	g.publish(t, after, 10)
	last := after + 9*gapIV

	r := startCfg(t, g.cfg)
	evaluated(t, r, last)
	var ids []string
	var events map[string][]alert.Alert
	wait.For(t, 30*time.Second, "the silence inside the backlog raised and cleared", func() bool {
		ids, events = g.occurrences(t, last)
		return len(ids) > 0 && len(events[ids[0]]) >= 2
	})
	r.kill()
	r2 := startCfg(t, g.cfg)
	g.publish(t, last+gapIV, 5)
	evaluated(t, r2, last+5*gapIV)
	ids, events = g.occurrences(t, last)
	if len(ids) != 1 {
		t.Fatalf("want one silence inside the backlog, got %d occurrences: %+v", len(ids), events)
	}
	ev := events[ids[0]]
	if len(ev) != 2 || ev[0].State != alert.Raised || ev[1].State != alert.Cleared {
		t.Fatalf("want the silence raised and cleared once, got %+v", ev)
	}
	if ev[0].RaisedAt != before+3*gapIV || ev[1].ClearedAt != after {
		t.Fatalf("raised at %d cleared at %d, want %d and %d", ev[0].RaisedAt, ev[1].ClearedAt, before+3*gapIV, after)
	}
}

// A silence raised live (Tick: the stream drained, the asset sent nothing
// for 3 x 200 ms of the collector's clock) is not raised again by the gap
// the batches after it show when they are read after a restart: the
// collector is killed (-9) while the alert is active, the asset reports
// again while it is down, and the restarted collector clears the restored
// occurrence, raising none of its own for the gap. Once the test stops
// publishing the asset is silent again and a new live occurrence may be
// raised after the clear: only events raised up to the clear count.
func TestSilenceRaisedLiveNotAgainAfterRestart(t *testing.T) {
	g := newGapRig(t)
	t0 := time.Now().UnixMilli() - 10*gapIV
	r := startCfg(t, g.cfg)
	g.publish(t, t0, 10)
	last := t0 + 9*gapIV
	raised := g.first(t, alert.Raised, "the silence raised live")
	if raised.RaisedAt <= last+3*gapIV {
		t.Fatalf("raised at %d, not by Tick after %d", raised.RaisedAt, last+3*gapIV)
	}
	// killed once the raise is checkpointed (a kill between its publish
	// and its checkpoint: TestLiveSilenceKilledBeforeCheckpointClearedOnce)
	wait.For(t, 10*time.Second, "the raise checkpointed", func() bool {
		e, err := g.kv(t).Get(context.Background(), "p0.site1.ac-1")
		if err != nil {
			return false
		}
		rec, err := decodeRecord(e.Value())
		return err == nil && slices.ContainsFunc(rec.Alerts, func(a alert.Alert) bool { return a.ID == raised.ID })
	})
	r.kill()
	cleared, after := g.backAfterKill(t, raised)
	// at the first batch after the silence, not before the raise (on the
	// collector's clock; alert.Latch.At)
	if want := max(after, raised.RaisedAt); cleared.ClearedAt != want {
		t.Fatalf("cleared at %d, want %d (the first batch after the silence at %d, raised at %d)", cleared.ClearedAt, want, after, raised.RaisedAt)
	}
}

// backAfterKill has ac-1 report again (10 batches up to now) while the
// collector is down after a kill with the live silence raised active,
// starts it again and waits for the silence's clear: exactly the raised
// occurrence is raised and cleared up to then, none other. It returns the
// clear and the first batch's ts_gw.
func (g *gapRig) backAfterKill(t *testing.T, raised alert.Alert) (alert.Alert, int64) {
	t.Helper()
	after := time.Now().UnixMilli() - 10*gapIV // the last batch not ahead of the collector's clock
	g.publish(t, after, 10)
	r2 := startCfg(t, g.cfg)
	evaluated(t, r2, after+9*gapIV)
	cleared := g.first(t, alert.Cleared, "the silence cleared")
	ids, events := g.occurrences(t, cleared.ClearedAt)
	if len(ids) != 1 || ids[0] != raised.ID || len(events[ids[0]]) != 2 {
		t.Fatalf("want the live occurrence %s raised and cleared and no other, got %+v", raised.ID, events)
	}
	return cleared, after
}

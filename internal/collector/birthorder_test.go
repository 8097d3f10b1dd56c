package collector

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// spanMsg is one message of a gateway's sequence for TestRedeliveredSpan.
type spanMsg struct {
	kind telemetry.Kind
	data []byte
}

var spanAsset = telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}

func spanBirth(t *testing.T, seq uint64, ts int64, pmax float64, signals ...string) spanMsg {
	var si []telemetry.SignalInfo
	for _, s := range signals {
		info := telemetry.SignalInfo{Signal: s, IntervalMS: 1000}
		if s == "discharge_pressure" {
			info.Unit, info.Max = "MPa", &pmax
		}
		si = append(si, info)
	}
	return spanMsg{telemetry.KindBirth, mustJSON(t, &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: seq, TSGW: ts,
		Asset: spanAsset.ToJSON(), Protocol: "modbus", Signals: si})}
}

// spanBatch is a batch of seq at ts; with dew, it also carries dew_point,
// a signal no birth of the test lists (taken from data).
func spanBatch(seq uint64, ts int64, dew bool) spanMsg {
	b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: spanAsset,
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
			{Signal: "discharge_pressure", Value: 0.7, Unit: "MPa", TS: ts}}}
	if dew {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: "dew_point", Value: 3, Unit: "Cel", TS: ts})
	}
	return spanMsg{telemetry.KindData, b.AppendJSON(nil)}
}

func spanDeath(t *testing.T, seq uint64, ts int64) spanMsg {
	return spanMsg{telemetry.KindDeath, mustJSON(t, &telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw-1", Seq: seq, TSGW: ts,
		Asset: spanAsset.ToJSON(), Reason: "no reply for 3s: modbus: i/o timeout"})}
}

// TestRedeliveredSpan: a collector killed after the checkpoint of a span of
// births, deaths and batches and before it acknowledged them gets the whole
// span again after its restart (kill -9 between steps 2 and 3 of a cycle).
// The restored state already holds it; nothing of the span may set it back.
//   - births: two different births in the span (the second adds load_state
//     and raises discharge_pressure's range), and batches carrying dew_point,
//     which neither birth lists. Before, the first birth (not the one in
//     force) was applied again over the second and dropped load_state and
//     dew_point, the second dropped dew_point again, and the batches after
//     it were skipped as duplicates: the asset lost dew_point for good.
//   - death: a death, then the birth and batches of the asset answering
//     again. Before, the redelivered death marked the live asset dead and
//     raised its silence alert, which stayed until the next new batch.
//
// Real nats-server, the collector's own consumer and bucket; the kill is the
// connection closed in the commit hook (after the checkpoint, before the
// acknowledgements).
func TestRedeliveredSpan(t *testing.T) {
	t0 := time.Now().UnixMilli() - 60_000
	at := func(i int) int64 { return t0 + int64(i)*1000 }
	cases := map[string]struct {
		span  func(t *testing.T) []spanMsg
		check func(t *testing.T, r *running)
	}{
		"births": {
			span: func(t *testing.T) []spanMsg {
				m := []spanMsg{spanBirth(t, 1, at(1), 1.0, "discharge_temp", "discharge_pressure")}
				for s := uint64(2); s <= 5; s++ {
					m = append(m, spanBatch(s, at(int(s)), false))
				}
				m = append(m, spanBirth(t, 6, at(6), 1.6, "discharge_temp", "discharge_pressure", "load_state"))
				for s := uint64(7); s <= 10; s++ {
					m = append(m, spanBatch(s, at(int(s)), true))
				}
				return m
			},
			check: func(t *testing.T, r *running) {
				av, ok := r.c.Asset("site1", "ac-1")
				if !ok {
					t.Fatal("asset not restored")
				}
				var names []string
				for _, s := range av.Signals {
					names = append(names, s.Signal)
				}
				for _, want := range []string{"discharge_temp", "discharge_pressure", "load_state", "dew_point"} {
					if !slices.Contains(names, want) {
						t.Errorf("after the redelivered span the asset holds %v: %s missing (an older birth applied over the newer state)", names, want)
					}
				}
				if g := r.c.live.Gateways(); len(g) > 0 && g[0].Births != 0 {
					t.Errorf("dashboard: %d births observed from the redelivered span, want 0", g[0].Births)
				}
			},
		},
		"death": {
			span: func(t *testing.T) []spanMsg {
				m := []spanMsg{spanBirth(t, 1, at(1), 1.6, "discharge_temp", "discharge_pressure", "load_state")}
				for s := uint64(2); s <= 4; s++ {
					m = append(m, spanBatch(s, at(int(s)), false))
				}
				m = append(m, spanDeath(t, 5, at(8)), spanBirth(t, 6, at(20), 1.6, "discharge_temp", "discharge_pressure", "load_state"))
				for s := uint64(7); s <= 10; s++ {
					m = append(m, spanBatch(s, at(int(s)+14), false))
				}
				return m
			},
			check: func(t *testing.T, r *running) {
				av, ok := r.c.Asset("site1", "ac-1")
				if !ok {
					t.Fatal("asset not restored")
				}
				if av.Dead != "" {
					t.Errorf("the live asset is dead after the redelivered death: %q", av.Dead)
				}
				if act := r.c.Alerts(true); len(act) != 0 {
					t.Errorf("active alerts after the redelivered span: %+v", act)
				}
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			js, cfg := replicaRig(t)
			cfg.Cluster.AckWait = Duration(2 * time.Second)
			cfg.Cluster.CheckpointInterval = 0
			ctx := context.Background()
			// the stream and consumer exist before the span is published,
			// so the first fetch gets the whole span: one cycle
			r := startCfg(t, cfg)
			wait.For(t, 10*time.Second, "collector ready", r.c.Ready)
			r.stop()
			span := tc.span(t)
			for i, m := range span {
				if _, err := js.Publish(ctx, telemetry.Subject("site1", "air_compressor", "ac-1", m.kind), m.data,
					jetstream.WithMsgID("gw-1-"+strconv.Itoa(i+1))); err != nil {
					t.Fatal(err)
				}
			}
			var once sync.Once
			killed := make(chan []BatchRef, 1)
			var c1 *Collector
			r1 := startWith(t, cfg, func(c *Collector) {
				c1 = c
				c.onCommit = func(_ int, b []BatchRef) {
					once.Do(func() {
						// checkpointed, not acknowledged: the process dies here
						c1.js.Load().nc.Close()
						killed <- slices.Clone(b)
					})
				}
			})
			var first []BatchRef
			select {
			case first = <-killed:
			case <-time.After(20 * time.Second):
				t.Fatal("the span was never checkpointed")
			}
			r1.stop()
			if last := first[len(first)-1].Seq; last != uint64(len(span)) {
				t.Fatalf("setup: the first checkpoint ended at seq %d, not with the span (%d)", last, len(span))
			}
			r2 := startCfg(t, cfg)
			cons, err := js.Consumer(ctx, "SMELTER", "smelter-collector")
			if err != nil {
				t.Fatal(err)
			}
			wait.For(t, 20*time.Second, "the span redelivered, evaluated and acknowledged", func() bool {
				info, err := cons.Info(ctx)
				// the stream holds the collector's alert messages too
				return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= uint64(len(span))
			})
			tc.check(t, r2)
			r2.stop()
		})
	}
}

// TestRestartWithEveryDeviceDownRaisesSilence: a collector restarted while
// every device is down (nothing arrives after the restart) raises the
// silence of its restored assets once the server says the stream holds
// nothing it lacks, for a single replica and for a partitioned group of
// one. Before, a worker judged silence only after its partition's first
// messages, which never came: the assets stayed "alive" for ever. The
// silence is measured from the time their records were written (the
// asset's silence clock), not from the restart.
func TestRestartWithEveryDeviceDownRaisesSilence(t *testing.T) {
	for _, parts := range []int{0, 2} {
		t.Run("partitions="+strconv.Itoa(parts), func(t *testing.T) { restartAllDown(t, parts) })
	}
}

// replicaRig is an embedded nats-server, a JetStream client of it, and
// the configuration of one replica on it (the same data dir every time it
// starts: a replica restarting; no HTTP).
func replicaRig(t *testing.T) (jetstream.JetStream, Config) {
	t.Helper()
	ns, js := embeddedJS(t)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	return js, cfg
}

func restartAllDown(t *testing.T, parts int) {
	js, cfg := replicaRig(t)
	cfg.Cluster.Partitions = parts
	if parts > 0 {
		cfg.Cluster.MemberTimeout, cfg.Cluster.PinnedTTL = Duration(2*time.Second), Duration(2*time.Second)
	}
	ctx := context.Background()
	r := startCfg(t, cfg)
	ids := []string{"ac-1", "ac-2", "ac-3", "ac-4"}
	// 2 s devices (silent after 6 s): 10 batches each, published at once
	// (the collector's observed interval is the batches' ts_gw spacing);
	// the collector is stopped long before their silence is due
	t0 := time.Now().UnixMilli() - 20_000
	seq := uint64(0)
	for i := range 10 {
		for _, id := range ids {
			seq++
			ts := t0 + int64(i)*2000
			b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}}}
			if _, err := js.Publish(ctx, telemetry.Subject("site1", "air_compressor", id, telemetry.KindData), b.AppendJSON(nil),
				jetstream.WithMsgID("gw-1-"+strconv.FormatUint(seq, 10))); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait.For(t, 20*time.Second, "every batch evaluated", func() bool {
		n := 0
		for _, id := range ids {
			if av, ok := r.c.Asset("site1", id); ok && av.LastTS == t0+9*2000 {
				n++
			}
		}
		return n == len(ids)
	})
	names := []string{cfg.consumerName(-1)}
	if parts > 0 {
		names = names[:0]
		for p := range parts {
			names = append(names, cfg.consumerName(p))
		}
	}
	wait.For(t, 20*time.Second, "every batch checkpointed and acknowledged", func() bool {
		acked := uint64(0)
		for _, name := range names {
			cons, err := js.Consumer(ctx, "SMELTER", name)
			if err != nil {
				return false
			}
			info, err := cons.Info(ctx)
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
			acked += info.AckFloor.Consumer
		}
		return acked >= seq
	})
	// stopped: the devices went down with it, no silence judged yet
	r.stop()
	if act := r.c.Alerts(true); len(act) != 0 {
		t.Fatalf("setup: alerts before the restart: %+v", act)
	}
	r2 := startCfg(t, cfg)
	silent := func() []string {
		var keys []string
		for _, a := range r2.c.Alerts(true) {
			if a.Rule == "stale" && a.Signal == "" && a.Severity != alert.None {
				keys = append(keys, a.Asset)
			}
		}
		slices.Sort(keys)
		return keys
	}
	wait.For(t, 30*time.Second, "every restored asset raised silent", func() bool { return slices.Equal(silent(), ids) })
	r2.stop()
}

// TestRestartWithLiveDevicesRaisesNoSilence: the restored silence clock
// starts at the record's put time, so a collector down for longer than the
// assets' silence window (4 x their 3 x 250 ms) has restored assets that look
// silent; their batches of the downtime wait in the stream and are evaluated
// before any judgment, so nothing is raised, for a single replica and a
// partitioned group of one.
func TestRestartWithLiveDevicesRaisesNoSilence(t *testing.T) {
	for _, parts := range []int{0, 2} {
		t.Run("partitions="+strconv.Itoa(parts), func(t *testing.T) { restartLive(t, parts) })
	}
}

func restartLive(t *testing.T, parts int) {
	js, cfg := replicaRig(t)
	cfg.Cluster.Partitions = parts
	if parts > 0 {
		cfg.Cluster.MemberTimeout, cfg.Cluster.PinnedTTL = Duration(2*time.Second), Duration(2*time.Second)
	}
	nc, err := nats.Connect(cfg.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	log := &alertLog{}
	log.subscribe(t, nc)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ids := []string{"ac-1", "ac-2", "ac-3", "ac-4"}
	var sent atomic.Uint64 // seq of the newest batch published
	devices := make(chan struct{})
	go func() { // 4 devices every 250 ms, all along
		defer close(devices)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			ts := time.Now().UnixMilli()
			for _, id := range ids {
				seq := sent.Load() + 1
				b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
					Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80 + float64(seq%5), Unit: "Cel", TS: ts}}}
				if _, err := js.Publish(ctx, telemetry.Subject("site1", "air_compressor", id, telemetry.KindData), b.AppendJSON(nil),
					jetstream.WithMsgID("gw-1-"+strconv.FormatUint(seq, 10))); err != nil {
					return
				}
				sent.Store(seq)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	evaluatedSince := func(r *running, ts int64) bool {
		for _, id := range ids {
			if av, ok := r.c.Asset("site1", id); !ok || av.LastTS < ts {
				return false
			}
		}
		return true
	}
	r := startCfg(t, cfg)
	started := time.Now().UnixMilli()
	wait.For(t, 20*time.Second, "the devices' batches evaluated for 2 s", func() bool { return evaluatedSince(r, started+2000) })
	r.stop()
	// down for 3 s of the devices' batches (12 per device: 4 x the window)
	down := sent.Load()
	wait.For(t, 20*time.Second, "3 s of batches published while the collector is down", func() bool { return sent.Load() >= down+12*uint64(len(ids)) })
	r2 := startCfg(t, cfg)
	restarted := time.Now().UnixMilli()
	wait.For(t, 30*time.Second, "the restarted collector evaluated the devices' batches for 3 s", func() bool { return evaluatedSince(r2, restarted+3000) })
	r2.stop()
	stop()
	<-devices
	for _, id := range ids {
		if got := log.byKey("site1." + id + ".stale"); len(got) != 0 {
			t.Errorf("%s: silence published across a restart with live devices: %+v", id, got)
		}
	}
}

package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// restartFleet publishes batches of n air compressors (ac-00..) through
// js, one batch per asset per call, ts_gw t0 + i s for the i-th call.
type restartFleet struct {
	js   jetstream.JetStream
	n    int
	t0   int64
	next int               // batches published per asset so far
	seq  map[string]uint64 // per gateway
}

func (f *restartFleet) asset(a int) (site, id string) {
	return "s" + strconv.Itoa(a%2+1), fmt.Sprintf("ac-%02d", a)
}

// publish sends one batch per asset at temp Cel, retrying each (deduplicated
// by its gateway-seq id) while the server is down or electing.
func (f *restartFleet) publish(t *testing.T, temp float64) {
	t.Helper()
	ts := f.t0 + int64(f.next)*1000
	f.next++
	for a := range f.n {
		site, id := f.asset(a)
		gw := "gw-" + site
		f.seq[gw]++
		b := &telemetry.Batch{Gateway: gw, Seq: f.seq[gw], TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", site, "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: temp + float64(f.next%5)*0.1, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
				{Signal: "discharge_pressure", Value: 0.7 + float64(f.next%7)*0.001, Unit: "MPa", TS: ts}}}
		data, msgID := b.AppendJSON(nil), gw+"-"+strconv.FormatUint(f.seq[gw], 10)
		wait.For(t, 30*time.Second, "publish "+msgID, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := f.js.Publish(ctx, telemetry.Subject(site, "air_compressor", id, telemetry.KindData), data, jetstream.WithMsgID(msgID))
			return err == nil
		})
	}
}

// checkpointed reports whether every asset's record in the state bucket
// counts all its batches.
func (f *restartFleet) checkpointed(kv jetstream.KeyValue, parts int) bool {
	for a := range f.n {
		site, id := f.asset(a)
		p := 0
		if parts > 0 {
			p = partitionOf(site, id, parts)
		}
		e, err := kv.Get(context.Background(), "p"+strconv.Itoa(p)+"."+site+"."+id)
		if err != nil {
			return false
		}
		rec, err := decodeRecord(e.Value())
		if err != nil || rec.Rules.Batches != uint64(f.next) {
			return false
		}
	}
	return true
}

// A collector, alone and as 2 replicas of 4 partitions, goes on after its
// NATS server is restarted (shut down, started again on the same port and
// store directory; the members bucket, in memory, is gone with it): it
// re-watches and re-announces its group, takes its partitions again and
// evaluates the batches published after the restart, raising each asset's
// alarm exactly once (as the stream holds the alert events), with its
// checkpoints counting every batch once. Before, Run returned "collector:
// members watch ended" once the watch's consumer could not be created again.
func TestCollectorSurvivesBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("broker restart")
	}
	for _, tc := range []struct {
		name     string
		parts    int
		replicas int
	}{{"single", 0, 1}, {"2 replicas", 4, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			disrupted(t, tc.parts, tc.replicas, func(ns *brokers.NATS, _ jetstream.JetStream) {
				ns.Shutdown()
				if err := ns.Start(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// The members bucket deleted under running replicas (an operator, or a
// stream lost otherwise) is created again and watched again: the watch's
// consumer, created again by the client on the new bucket, would resume at
// a sequence the new bucket has not reached and deliver nothing, so a
// watch that does not deliver the replica's own heartbeat is set up anew.
// Before, Run returned "members watch ended" once the client failed to
// create the watch's consumer on the deleted stream.
func TestCollectorSurvivesMembersBucketDeleted(t *testing.T) {
	if testing.Short() {
		t.Skip("broker disruption")
	}
	disrupted(t, 4, 2, func(_ *brokers.NATS, js jetstream.JetStream) {
		if err := js.DeleteKeyValue(context.Background(), "smelter-collector_members"); err != nil {
			t.Fatal(err)
		}
	})
}

// disrupted runs replicas collectors (parts partitions) on a NATS server,
// checks that 8 assets' batches are checkpointed, calls disrupt, then
// publishes 30 s of data time in which every asset's discharge_temp_high
// trips, and checks that every replica is still running, every batch was
// checkpointed once, each asset's alarm is in the stream once with its
// raised_at, and each replica set its members watch up again.
func disrupted(t *testing.T, parts, replicas int, disrupt func(*brokers.NATS, jetstream.JetStream)) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	var reps []*running
	for i := range replicas {
		cfg := Defaults()
		cfg.NATS.URL = ns.URL()
		cfg.HTTP.Listen = ""
		cfg.DataDir = t.TempDir()
		cfg.Replica = "r" + strconv.Itoa(i+1)
		cfg.Cluster = ClusterConfig{Partitions: parts, Replicas: 1, AckWait: Duration(2 * time.Second), PinnedTTL: Duration(2 * time.Second),
			MemberTimeout: Duration(2 * time.Second), Fetch: 64, CheckpointInterval: Duration(time.Second), RecordFormat: "binary"}
		reps = append(reps, startCfg(t, cfg))
	}
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	f := &restartFleet{js: js, n: 8, t0: time.Now().UnixMilli() - 3600_000, seq: map[string]uint64{}}
	for range 5 {
		f.publish(t, 80)
	}
	kv, err := js.KeyValue(context.Background(), "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "batches before the restart checkpointed", func() bool { return f.checkpointed(kv, parts) })

	disrupt(ns, js)
	// 30 s of data time at 115 Cel: discharge_temp_high trips after its 15 s on delay
	for range 30 {
		f.publish(t, 115)
	}
	wait.For(t, 60*time.Second, "batches after the disruption checkpointed", func() bool {
		for i, r := range reps {
			r.mustRun(t, "replica "+strconv.Itoa(i+1))
		}
		return f.checkpointed(kv, parts)
	})
	filter := "smelter.v1.*.*.*.alert"
	if parts > 0 {
		filter += ".*"
	}
	cons, err := js.OrderedConsumer(context.Background(), "SMELTER", jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	raised := map[string][]int64{}
	wait.For(t, 30*time.Second, "an alarm raised per asset", func() bool {
		got, ok := fetchAlerts(t, cons)
		if !ok {
			return false
		}
		for _, a := range got {
			if a.State != alert.Updated {
				if a.State != alert.Raised || a.Rule != "discharge_temp_high" {
					t.Fatalf("unexpected alert event %s %s %s", a.Key, a.State, a.Rule)
				}
				raised[a.Key] = append(raised[a.Key], a.RaisedAt)
			}
		}
		return len(raised) == f.n
	})
	for k, r := range raised {
		if len(r) != 1 || r[0] != f.t0+(5+15)*1000 {
			t.Errorf("%s raised at %v, want once at %d", k, r, f.t0+(5+15)*1000)
		}
	}
	// every replica watches its group again, and sees the others: the
	// partitions are spread again (a replica whose watch delivers nothing
	// counts the others gone and takes every partition)
	wait.For(t, 30*time.Second, "members watched again, partitions spread", func() bool {
		for i, r := range reps {
			r.mustRun(t, "replica "+strconv.Itoa(i+1))
			if testutil.ToFloat64(r.c.m.rewatches.WithLabelValues(watchMembers)) < 1 ||
				(parts > 0 && testutil.ToFloat64(r.c.m.owned) != float64(parts/replicas)) {
				return false
			}
		}
		return true
	})
}

// mustRun fails the test when the collector's Run returned.
func (r *running) mustRun(t *testing.T, name string) {
	t.Helper()
	select {
	case err := <-r.done:
		r.cancel = nil
		t.Fatalf("%s stopped: %v", name, err)
	default:
	}
}

// fetchAlerts returns the alert events cons has for now; false when the
// fetch failed.
func fetchAlerts(t *testing.T, cons jetstream.Consumer) ([]alert.Alert, bool) {
	t.Helper()
	b, err := cons.FetchNoWait(1000)
	if err != nil {
		return nil, false
	}
	var out []alert.Alert
	for m := range b.Messages() {
		var a alert.Alert
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out, true
}

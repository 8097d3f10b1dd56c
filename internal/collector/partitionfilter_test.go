package collector

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/wait"
)

// partitionedFleet starts one replica owning parts partitions on the NATS
// server at url, publishes 5 rounds of 8 assets and waits for their
// checkpoints.
func partitionedFleet(t *testing.T, url string, parts int) (*running, *restartFleet, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	cfg := Defaults()
	cfg.NATS.URL = url
	cfg.HTTP.Listen = ""
	cfg.DataDir = t.TempDir()
	cfg.Cluster = fastCluster(parts, 1)
	r := startCfg(t, cfg)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	f := &restartFleet{js: js, n: 8, t0: time.Now().UnixMilli() - 3600_000, seq: map[string]uint64{}}
	for range 5 {
		f.publish(t, 80)
	}
	wait.For(t, 30*time.Second, "the first batches checkpointed", func() bool { return f.checkpointed(kv, parts) })
	return r, f, js, kv
}

// alarmsOnce publishes 20 rounds at 115 Cel (discharge_temp_high trips
// after its 15 s on delay), waits for their checkpoints and checks that
// every asset's alarm is in the stream once and no other event is but the
// assets' silence.
func alarmsOnce(t *testing.T, f *restartFleet, js jetstream.JetStream, kv jetstream.KeyValue, parts int) {
	t.Helper()
	for range 20 {
		f.publish(t, 115)
	}
	wait.For(t, 60*time.Second, "the batches after the disruption checkpointed", func() bool { return f.checkpointed(kv, parts) })
	cons, err := js.OrderedConsumer(context.Background(), "SMELTER", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"smelter.v1.*.*.*.alert.*"}})
	if err != nil {
		t.Fatal(err)
	}
	raised := map[string]int{}
	wait.For(t, 30*time.Second, "an alarm per asset", func() bool {
		got, _ := fetchAlerts(t, cons)
		for _, a := range got {
			if a.Kind == "stale" && a.Signal == "" {
				continue // the test's own pauses are silence (disrupted)
			}
			if a.State != alert.Updated {
				if a.State != alert.Raised || a.Rule != "discharge_temp_high" {
					t.Fatalf("unexpected alert event %s %s %s", a.Key, a.State, a.Rule)
				}
				raised[a.Key]++
			}
		}
		return len(raised) == f.n
	})
	for k, n := range raised {
		if n != 1 {
			t.Errorf("%s raised %d times, want once", k, n)
		}
	}
}

// consumerFilters returns each partition consumer's filter.
func consumerFilters(t *testing.T, js jetstream.JetStream, parts int) []string {
	t.Helper()
	out := make([]string, parts)
	for p := range parts {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cons, err := js.Consumer(ctx, "SMELTER", "smelter-collector-p"+strconv.Itoa(p))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		cc := cons.CachedInfo().Config
		out[p] = cc.FilterSubject
		if len(cc.FilterSubjects) > 0 {
			out[p] = cc.FilterSubjects[0]
		}
	}
	return out
}

// review12 F1: partition workers restarted while the server was down
// created their consumers with the 2.9 filter (smelter.v1.>): the client
// reports no server version while it reconnects, and the create requests,
// buffered meanwhile, reached the server when it came back. Each worker
// then evaluated every asset (alarms raised twice, records under other
// partitions' keys). Now a worker creates its consumer only while
// connected: after an outage in which every worker restarted, each
// consumer keeps its partition's filter, no message reaches another
// partition's worker, and each alarm is raised once.
func TestOutageKeepsPartitionFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("broker outage of seconds")
	}
	const parts = 4
	ns := natsServer(t)
	r, f, js, kv := partitionedFleet(t, ns.URL(), parts)
	before := testutil.ToFloat64(r.c.m.workerStops)
	ns.Shutdown()
	// every worker stopped (its membership lapsed without heartbeats)
	wait.For(t, 90*time.Second, "workers stopped during the outage", func() bool {
		return testutil.ToFloat64(r.c.m.workerStops) >= before+parts
	})
	// the server comes back while the next workers (started 1 s after the
	// stops) wait for the connection; before, they had their create
	// requests out (a request times out after 5 s, and one that reaches
	// the server in time is applied)
	time.Sleep(1500 * time.Millisecond)
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	alarmsOnce(t, f, js, kv, parts)
	for p, fl := range consumerFilters(t, js, parts) {
		if want := consumerFilter("." + strconv.Itoa(p)); fl != want {
			t.Errorf("partition %d's consumer filter %q, want %q", p, fl, want)
		}
	}
	if n := testutil.ToFloat64(r.c.m.foreign); n != 0 {
		t.Errorf("%v messages of other partitions delivered to a partition's consumer", n)
	}
	r.mustRun(t, "collector")
}

// A partition's consumer widened to every subject under a running worker
// (by hand, or by any create request made while the version was unknown)
// delivers other partitions' messages: the worker evaluates none of them,
// counts them, ends, and the next worker sets the filter again; each
// asset's alarm is raised once, by its partition's owner.
func TestForeignPartitionMessageNotEvaluated(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	const parts = 4
	ns := natsServer(t)
	r, f, js, kv := partitionedFleet(t, ns.URL(), parts)
	ctx := context.Background()
	cons, err := js.Consumer(ctx, "SMELTER", "smelter-collector-p0")
	if err != nil {
		t.Fatal(err)
	}
	cc := cons.CachedInfo().Config
	cc.FilterSubject, cc.FilterSubjects = "smelter.v1.>", nil
	if _, err := js.UpdateConsumer(ctx, "SMELTER", cc); err != nil {
		t.Fatal(err)
	}
	alarmsOnce(t, f, js, kv, parts)
	if n := testutil.ToFloat64(r.c.m.foreign); n < 1 {
		t.Fatalf("smelter_collector_foreign_partition_messages_total = %v: the widened consumer delivered nothing foreign?", n)
	}
	wait.For(t, 30*time.Second, "partition 0's filter set again", func() bool {
		return consumerFilters(t, js, parts)[0] == consumerFilter(".0")
	})
	r.mustRun(t, "collector")
}

// The consumer's filter follows the server's version, which the client
// knows only while connected: a worker started while the connection is
// down waits for it and creates no consumer meanwhile (its request,
// buffered by the client, would reach the server when it is back). Before, it took the
// unknown version for 2.9 and asked for smelter.v1.> (review12 F1).
func TestWorkerCreatesNoConsumerWhileDisconnected(t *testing.T) {
	const parts = 4
	ns := natsServer(t)
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = ""
	cfg.DataDir = t.TempDir()
	cfg.Cluster = fastCluster(parts, 1)
	c := newCollector(t, cfg)
	ctx := context.Background()
	io := collectorIO(t, c, ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	nc, js := io.nc, io.js
	ns.Shutdown()
	wait.For(t, 10*time.Second, "the client reconnecting", nc.IsReconnecting)
	// the worker waits for the connection (stopped after 2 s here)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.work(wctx, wctx, io, nil, 1, true); err != nil {
		t.Errorf("worker started while disconnected, stopped: %v, want it to have waited for the connection", err)
	}
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the client reconnected", nc.IsConnected)
	if err := nc.Flush(); err != nil { // whatever the client buffered has reached the server
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, "SMELTER", "smelter-collector-p1")
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		t.Fatal(err)
	case cons.CachedInfo().Config.FilterSubject != consumerFilter(".1"):
		t.Errorf("partition 1's consumer created with filter %q while disconnected", cons.CachedInfo().Config.FilterSubject)
	}
}

// fastCluster is a cluster configuration with short timers for tests:
// parts partitions, streams and buckets of storeReplicas.
func fastCluster(parts, storeReplicas int) ClusterConfig {
	return ClusterConfig{Partitions: parts, Replicas: storeReplicas, AckWait: Duration(2 * time.Second), PinnedTTL: Duration(2 * time.Second),
		MemberTimeout: Duration(2 * time.Second), Fetch: 64, CheckpointInterval: Duration(time.Second), RecordFormat: "binary"}
}

// collectorIO connects to the NATS server at url (closed when the test
// ends) and creates c's stream and state bucket as Run does, for tests
// that drive a worker or a cycle directly.
func collectorIO(t *testing.T, c *Collector, url string, opts ...nats.Option) *natsIO {
	t.Helper()
	ctx := context.Background()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, _, err := c.ensureStream(ctx, js, true); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: c.cfg.stateBucket()})
	if err != nil {
		t.Fatal(err)
	}
	return &natsIO{nc: nc, js: js, kv: kv, bucket: c.cfg.stateBucket()}
}

package history

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestInteropPostgresRestart stops the machine's PostgreSQL cluster
// (pg_ctlcluster, as root) for SMELTER_PG_OUTAGE (default 1m) while batches
// keep arriving, starts it again, and requires every batch stored exactly
// once and nothing left in the consumer. It runs with SMELTER_INTEROP=1,
// SMELTER_PG_DSN naming that cluster and SMELTER_PG_CLUSTER=<version>/<name>
// (.ci/run sets both); TestSinkDatabaseOutageLosesNothing covers the same
// through a TCP proxy without root.
func TestInteropPostgresRestart(t *testing.T) {
	if os.Getenv("SMELTER_INTEROP") == "" {
		t.Skip("interop test: set SMELTER_INTEROP=1")
	}
	cluster := os.Getenv("SMELTER_PG_CLUSTER")
	ver, name, ok := strings.Cut(cluster, "/")
	if !ok {
		t.Skip("set SMELTER_PG_CLUSTER=<version>/<name> (e.g. 15/main) to stop and start the cluster SMELTER_PG_DSN names")
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil || os.Geteuid() != 0 {
		t.Skip("pg_ctlcluster as root needed to stop and start PostgreSQL")
	}
	outage := time.Minute
	if v := os.Getenv("SMELTER_PG_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SMELTER_PG_OUTAGE: %v", err)
		}
		outage = d
	}
	pgctl := func(action string) {
		t.Helper()
		out, err := exec.Command("pg_ctlcluster", ver, name, action).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "already running") {
			t.Fatalf("pg_ctlcluster %s %s %s: %v: %s", ver, name, action, err, out)
		}
	}
	st := testStore(t, testDSN(t), nil)
	t.Cleanup(func() { pgctl("start") }) // never leave it stopped
	js := startStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, _ := NewMetrics(nil)
	sink := NewSink(st, js, SinkOptions{Stream: "SMELTER", Consumer: "hist", Batch: 100, Flush: 50 * time.Millisecond, Metrics: m})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	publish := func(from, to int) {
		for seq := from; seq <= to; seq++ {
			b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(seq), Asset: testAsset, TSGW: t0 + int64(seq),
				Readings: []telemetry.Reading{{Signal: "pressure", Value: float64(seq), TS: t0 + int64(seq)}}}
			if _, err := js.Publish(ctx, telemetry.AssetSubject(testAsset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 100)
	waitFor(t, "100 stored", 30*time.Second, func() bool { return sink.Stored() == 100 })
	pgctl("stop")
	down := time.Now()
	publish(101, 1000)
	waitFor(t, "the outage to last "+outage.String()+" with failed writes", outage+30*time.Second, func() bool {
		return time.Since(down) >= outage && testutil.ToFloat64(m.errors.WithLabelValues("write")) >= 3
	})
	if sink.Stored() != 100 {
		t.Fatalf("%d messages acknowledged while the database was down", sink.Stored())
	}
	pgctl("start")
	waitFor(t, "every batch stored after the restart", 2*time.Minute, func() bool { return sink.Stored() == 1000 })
	var n, sum int64
	if err := st.db().QueryRow(ctx, "SELECT count(*), sum(value)::int8 FROM readings").Scan(&n, &sum); err != nil || n != 1000 || sum != 1000*1001/2 {
		t.Fatalf("readings %d, sum %d, %v", n, sum, err)
	}
	cons, _ := js.Consumer(ctx, "SMELTER", "hist")
	waitFor(t, "consumer drained", 30*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// TestInteropSinkNATS29 runs the sink on the machine's nats-server (2.9 on
// the CI machine: one filter subject per consumer, no priority groups) on a
// stream of its own, deleted at the end.
func TestInteropSinkNATS29(t *testing.T) {
	if os.Getenv("SMELTER_INTEROP") == "" {
		t.Skip("interop test: set SMELTER_INTEROP=1")
	}
	st := testStore(t, testDSN(t), nil)
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("the machine's NATS on 127.0.0.1:4222: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	site := fmt.Sprintf("histinterop%d", os.Getpid())
	stream := "SMELTER_HIST_INTEROP_" + strconv.Itoa(os.Getpid())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"smelter.v1." + site + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("stream (another stream on smelter.v1.> left behind?): %v", err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), stream) }()
	a := telemetry.Asset{ID: "comp_1", Class: "air_compressor", Path: []string{"acme", site}}
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	for seq := 1; seq <= 50; seq++ {
		b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(seq), Asset: a, TSGW: t0 + int64(seq),
			Readings: []telemetry.Reading{{Signal: "pressure", Value: float64(seq), TS: t0 + int64(seq)}}}
		if _, err := js.Publish(ctx, telemetry.AssetSubject(a, telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	sink := NewSink(st, js, SinkOptions{Stream: stream, Consumer: "hist", Filter: "smelter.v1." + site + ".>", Batch: 20, Flush: 50 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	waitFor(t, "50 batches stored from NATS "+nc.ConnectedServerVersion(), 30*time.Second, func() bool { return sink.Stored() == 50 })
	var n int64
	if err := st.db().QueryRow(ctx, "SELECT count(*) FROM readings WHERE site = $1", site).Scan(&n); err != nil || n != 50 {
		t.Fatalf("readings %d %v", n, err)
	}
	cancel()
	<-done
}

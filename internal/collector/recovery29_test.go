package collector

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// nats29 starts the machine's nats-server (Debian's 2.9) on a free
// loopback port with a fresh store and returns its URL. Interop only:
// SMELTER_INTEROP=1 and /usr/sbin/nats-server present.
func nats29(t *testing.T) string {
	t.Helper()
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test: set SMELTER_INTEROP=1 (needs /usr/sbin/nats-server)")
	}
	const bin = "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("interop test: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	wait.For(t, 10*time.Second, "nats-server 2.9 listening", func() bool {
		nc, err := nats.Connect(url)
		if err != nil {
			return false
		}
		nc.Close()
		return true
	})
	return url
}

// attack-col F1: on nats-server 2.9 a collector killed (-9) while it
// replayed a backlog of about 5,500 messages restarted its partition
// worker every ~28 s for 20 minutes ("earlier messages did not come back"):
// 2.9 served the consumer's wildcard filter at ~300 messages/s. The
// restarted collector must take the partition over once and evaluate the
// whole backlog; the consumer an older collector created with the
// wildcard is updated to no filter.
func TestInteropKill9DuringReplayRecoversOn29(t *testing.T) {
	url := nats29(t)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = url, "", t.TempDir()
	r1 := startCfg(t, cfg) // creates the stream
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	r1.stop()
	// as an older collector left it on 2.9: filtered by the wildcard
	ctx := t.Context()
	if _, err := js.CreateOrUpdateConsumer(ctx, cfg.NATS.Stream, jetstream.ConsumerConfig{Durable: cfg.consumerName(-1), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Duration(cfg.Cluster.AckWait), MaxAckPending: maxAckPending(cfg.Cluster.Fetch), DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: telemetry.SubjectPrefix + ".>"}); err != nil {
		t.Fatal(err)
	}

	const assets, rounds = 500, 16
	t0 := time.Now().UnixMilli() - rounds*1000 - 60_000
	for i := range rounds {
		for a := range assets {
			ts := t0 + int64(i)*1000
			id := "ac-" + strconv.Itoa(a)
			b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i*assets + a + 1), TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "s1", "_", "_", "_"}},
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
			if _, err := js.PublishAsync(telemetry.Subject("s1", "air_compressor", id, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("backlog not stored")
	}
	r2 := startCfg(t, cfg)
	data := r2.c.m.ingested.WithLabelValues(string(telemetry.KindData))
	wait.For(t, 30*time.Second, "replay under way", func() bool { return counter(data) >= 4096 })
	r2.kill()
	cons, err := js.Consumer(ctx, cfg.NATS.Stream, cfg.consumerName(-1))
	if err != nil {
		t.Fatal(err)
	}
	if f := cons.CachedInfo().Config.FilterSubject; f != "" {
		t.Fatalf("consumer filter %q on 2.9, want none", f)
	}

	r3 := startCfg(t, cfg)
	last := t0 + (rounds-1)*1000
	wait.For(t, 120*time.Second, "restarted collector evaluated the whole backlog", func() bool {
		for a := range assets {
			av, ok := r3.c.Asset("s1", "ac-"+strconv.Itoa(a))
			if !ok || av.LastTS < last {
				return false
			}
		}
		return true
	})
	if n := counter(r3.c.m.workerStops); n != 0 {
		t.Fatalf("partition worker stopped %v times during the recovery", n)
	}
	if n := counter(r3.c.m.takeovers); n != 1 {
		t.Fatalf("partition taken over %v times, want 1", n)
	}
}

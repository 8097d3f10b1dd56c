package collector

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// The order check after a kill -9 waits as long as the earlier messages
// keep coming back, not a fixed 5 x ack_wait: a server that redelivers
// them slowly (nats-server 2.9 with a wildcard filter: ~300/s, attack-col
// F1) restarted the worker for ever. Here every pull of the restarted
// collector is answered 1.5 s late (read late: the server's slowness, as
// the worker sees it), so the 20 messages left unacknowledged come back
// over about 8 s, longer than 5 x ack_wait (5 s) but never 4 x ack_wait
// without one.
func TestOrderCheckWaitsWhileRedeliveriesProgress(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	cfg.Cluster.AckWait = Duration(time.Second)
	cfg.Cluster.CheckpointInterval = Duration(500 * time.Millisecond)
	cfg.Cluster.Fetch = 4 // max_ack_pending 32; a checkpoint is due above 24 held
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)

	const n = 28
	// event times 120 s back, inside one 15-minute KPI window: a window
	// closing among them would publish a KPI and so checkpoint at once
	t0 := time.Now().UnixMilli() - 120_000
	if w := int64(15 * 60_000); t0/w != (t0+n*1000)/w {
		t0 = (t0+n*1000)/w*w - n*1000 - 1000
	}
	var pulls atomic.Int32
	published, blocked, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	// the first collector evaluates five pulls (20 messages) and is killed
	// before its sixth: nothing checkpointed, 20 delivered unacknowledged.
	// Its first pull waits until all are stored, so each pull takes four at
	// once and the five cycles pass well within checkpoint_interval (with
	// pulls racing the publishing, a loaded machine gave pulls of fewer
	// messages, or a checkpoint 500 ms after the first cycle).
	r1 := startWith(t, cfg, func(c *Collector) {
		c.beforeFetch = func(int) {
			switch pulls.Add(1) {
			case 1:
				select { // t.Context ends before the cleanups stop the collector
				case <-published:
				case <-t.Context().Done():
				}
			case 6:
				close(blocked)
				select {
				case <-release:
				case <-t.Context().Done():
				}
			}
		}
	})
	for i := range n {
		ts := t0 + int64(i)*1000
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i + 1), TSGW: ts, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "s1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
		if _, err := js.Publish(t.Context(), telemetry.Subject("s1", "air_compressor", "ac-1", telemetry.KindData), b.AppendJSON(nil), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	close(published)
	select {
	case <-blocked:
	case <-time.After(30 * time.Second):
		t.Fatal("first collector did not reach its sixth pull")
	}
	r1.c.js.Load().nc.Close() // the kill: nothing more reaches the server
	close(release)
	r1.stop()
	cons, err := js.Consumer(t.Context(), cfg.NATS.Stream, cfg.consumerName(-1))
	if err != nil {
		t.Fatal(err)
	}
	if p := cons.CachedInfo().NumAckPending; p < 16 {
		t.Fatalf("%d delivered unacknowledged at the kill, want 20 (a checkpoint came first?)", p)
	}
	r2 := startWith(t, cfg, func(c *Collector) {
		c.inFetch = func(int, *puller) {
			select { // the server's slowness: this pull's messages are read 1.5 s late
			case <-time.After(1500 * time.Millisecond):
			case <-t.Context().Done():
			}
		}
	})
	wait.For(t, 60*time.Second, "restarted collector evaluated every message", func() bool {
		av, ok := r2.c.Asset("s1", "ac-1")
		return ok && av.LastTS >= t0+(n-1)*1000
	})
	if s := counter(r2.c.m.workerStops); s != 0 {
		t.Fatalf("partition worker stopped %v times while the earlier messages were coming back", s)
	}
}

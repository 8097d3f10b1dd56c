package collector

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestWorkerRecreatesConsumerDeletedBetweenFetches: a partition's consumer
// deleted while its worker is between two fetches (no pull waiting, so no
// 409 Consumer Deleted reaches it) makes the next pull get no responders.
// The worker must notice that the consumer is gone (its info: not found)
// and start over with a new one, instead of retrying the pull for ever:
// the batches published afterwards are evaluated, each exactly once, and
// the new consumer's redelivery of the old ones is skipped as duplicates.
func TestWorkerRecreatesConsumerDeletedBetweenFetches(t *testing.T) {
	consumerDeleted(t, false)
}

// TestWorkerRecreatesConsumerDeletedWhilePulling: the same with the
// consumer deleted while the worker's pull waits on the server, which
// ends the pull with 409 Consumer Deleted (the worker's own pull loop
// takes it for the consumer gone, as jetstream's Fetch did).
func TestWorkerRecreatesConsumerDeletedWhilePulling(t *testing.T) {
	consumerDeleted(t, true)
}

// consumerDeleted deletes a partition's consumer once its first 10
// batches are committed, between two fetches or (pulling) while a pull
// waits, and checks that the 10 batches published after are committed
// through a new consumer, each of the 20 exactly once.
func consumerDeleted(t *testing.T, pulling bool) {
	ns, cfg := embeddedConfig(t)
	const parts = 2
	asset := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	p := partitionOf(asset.Site(), asset.ID, parts)

	cfg.Cluster.Partitions = parts
	cfg.Cluster.PinnedTTL = Duration(time.Second)
	logs := &logtest.Buffer{}
	c := newCollectorLog(t, cfg, logs)
	var mu sync.Mutex
	commits := map[uint64]int{} // seq -> times committed
	c.onCommit = func(_ int, bs []BatchRef) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bs {
			commits[b.Seq]++
		}
	}
	var armed atomic.Bool
	paused, resume := make(chan struct{}), make(chan struct{})
	del := func(js jetstream.JetStream) {
		if err := js.DeleteConsumer(context.Background(), cfg.NATS.Stream, cfg.consumerName(p)); err != nil {
			t.Error(err)
		}
	}
	if pulling {
		// the consumer is deleted while the worker's pull waits on the
		// server: the worker's 100 ms pull is read to its end, a 10 s one
		// sent instead (the deletion may take longer than 100 ms on a
		// loaded machine), and deleted once the server lists it waiting
		// (it queues pull requests: a deletion may overtake one)
		c.inFetch = func(q int, pl *puller) {
			if q == p && armed.CompareAndSwap(true, false) {
				pl.lose()
				if err := pl.send(cfg.Cluster.Fetch, 10*time.Second, 0); err != nil {
					t.Error(err)
				}
				js, _ := jetstream.New(pl.nc)
				if !pullWaiting(js, cfg.NATS.Stream, cfg.consumerName(p)) {
					t.Error("the 10 s pull never listed waiting")
				}
				del(js)
				close(paused)
			}
		}
	} else {
		c.beforeFetch = func(q int) {
			if q == p && armed.CompareAndSwap(true, false) {
				close(paused)
				<-resume // the test deletes the consumer meanwhile
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	wait.For(t, 10*time.Second, "collector ready", c.Ready)
	t.Cleanup(r.stop)

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	t0 := time.Now().UnixMilli() - 600_000
	pub := func(from, to int) {
		for seq := from; seq <= to; seq++ {
			ts := t0 + int64(seq)*1000
			b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(seq), TSGW: ts, Asset: asset,
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
			if _, err := js.Publish(ctx, telemetry.AssetSubject(asset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	committed := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(commits) >= n
		}
	}
	pub(1, 10)
	wait.For(t, 20*time.Second, "the first 10 batches committed", committed(10))

	armed.Store(true)
	select {
	case <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker never fetched again")
	}
	if !pulling {
		del(js)
	}
	close(resume)
	pub(11, 20)
	wait.For(t, 30*time.Second, "the later batches committed through a new consumer", committed(20))
	// the new consumer delivers the stream from its start: the first 10
	// are recognised from the checkpoint, not evaluated again
	wait.For(t, 10*time.Second, "the old batches skipped", func() bool { return testutil.ToFloat64(c.m.duplicates) >= 10 })
	if pulling && !strings.Contains(logs.String(), jetstream.ErrConsumerDeleted.Error()) {
		t.Errorf("the waiting pull did not end with %q:\n%s", jetstream.ErrConsumerDeleted, logs.String())
	}
	mu.Lock()
	defer mu.Unlock()
	for seq := uint64(1); seq <= 20; seq++ {
		if commits[seq] != 1 {
			t.Errorf("batch %d committed %d times", seq, commits[seq])
		}
	}
	if len(commits) != 20 {
		t.Errorf("%d batches committed, want 20", len(commits))
	}
}

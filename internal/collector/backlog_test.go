package collector

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// Under a backlog a partition keeps fetching until the next fetch could
// reach the consumer's max_ack_pending (8 x fetch) and only then
// checkpoints and acknowledges, unless checkpoint_interval comes first:
// with fetch 8 and a long interval, a backlog of 60 batches is committed
// in one checkpoint of more than 6 x fetch messages (it was 2 x fetch,
// which wrote every asset of a large partition about twice as often as
// the interval asks).
func TestBacklogHeldUpToMaxAckPending(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.Fetch = 8
	cfg.Cluster.AckWait = Duration(2 * time.Minute)
	cfg.Cluster.CheckpointInterval = Duration(time.Minute)

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	c := newCollector(t, cfg)
	if _, _, err := c.ensureStream(ctx, js, true); err != nil {
		t.Fatal(err)
	}
	const n = 60
	asset := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute).UnixMilli() // one KPI window, a varying value: no output
	for seq := 1; seq <= n; seq++ {
		ts := t0 + int64(seq)*100
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(seq), TSGW: ts, Asset: asset,
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80 + float64(seq%5)*0.1, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
		if _, err := js.Publish(ctx, telemetry.AssetSubject(asset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var commits []int // batches per commit
	c.onCommit = func(_ int, bs []BatchRef) {
		mu.Lock()
		defer mu.Unlock()
		commits = append(commits, len(bs))
	}
	cctx, cancel := context.WithCancel(ctx)
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(cctx) }()
	t.Cleanup(r.stop)
	wait.For(t, 30*time.Second, "a first checkpoint", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(commits) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if want := 6 * cfg.Cluster.Fetch; commits[0] <= want {
		t.Fatalf("the first checkpoint of the backlog committed %d batches, want more than %d (commits %v)", commits[0], want, commits)
	}
}

package collector

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// A partition consumer filters its partition with one wildcard subject,
// not one per evaluated kind: with several filters nats-server looks up
// every next message by intersecting them with the subjects of the
// stream's block, and a backlog of 1,000 assets was delivered at about
// 3,000 messages/s (docs/benchmarks.md, "Collector, second pass"). A
// consumer created the old way (three filters, with messages delivered
// and not acknowledged) is updated; the other kinds of the partition
// (status, alert, KPI) are delivered, skipped and acknowledged, and every
// batch is evaluated exactly once.
func TestPartitionConsumerOneFilter(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	const parts = 2
	asset := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	p := partitionOf(asset.Site(), asset.ID, parts)

	cfg.Cluster.Partitions = parts
	cfg.Cluster.PinnedTTL = Duration(time.Second)
	cfg.Cluster.AckWait = Duration(2 * time.Second)

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	pc := &Collector{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	if _, _, err := pc.ensureStream(ctx, js, true); err != nil {
		t.Fatal(err)
	}
	// the consumer as a collector before this change created it
	old := jetstream.ConsumerConfig{Durable: cfg.consumerName(p), AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Duration(cfg.Cluster.AckWait),
		MaxAckPending: 4 * cfg.Cluster.Fetch, DeliverPolicy: jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{priorityGroup}, PinnedTTL: time.Duration(cfg.Cluster.PinnedTTL)}
	for _, s := range ingest.Subjects {
		old.FilterSubjects = append(old.FilterSubjects, s+"."+strconv.Itoa(p))
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.NATS.Stream, old)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UnixMilli() - 600_000
	pub := func(from, to int) {
		for seq := from; seq <= to; seq++ {
			ts := t0 + int64(seq)*1000
			b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(seq), TSGW: ts, Asset: asset,
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
			if _, err := js.Publish(ctx, telemetry.AssetSubject(asset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
			for _, k := range []telemetry.Kind{telemetry.KindStatus, telemetry.KindKPI} { // not evaluated
				if _, err := js.Publish(ctx, telemetry.AssetSubject(asset, k), []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	pub(1, 10)
	// a previous owner received the first five batches and died
	b, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(priorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range b.Messages() {
		got++
	}
	if got != 5 {
		t.Fatalf("the old consumer delivered %d messages, want 5", got)
	}

	c := newCollector(t, cfg)
	var mu sync.Mutex
	commits := map[uint64]int{}
	c.onCommit = func(_ int, bs []BatchRef) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bs {
			commits[b.Seq]++
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(cctx) }()
	wait.For(t, 10*time.Second, "collector ready", c.Ready)
	t.Cleanup(r.stop)
	pub(11, 20)
	wait.For(t, 30*time.Second, "every batch committed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(commits) == 20
	})
	wait.For(t, 10*time.Second, "everything of the partition acknowledged", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "smelter.v1.*.*.*.*." + strconv.Itoa(p); info.Config.FilterSubject != want || len(info.Config.FilterSubjects) != 0 {
		t.Fatalf("consumer filters %q %q, want the one filter %q", info.Config.FilterSubject, info.Config.FilterSubjects, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for seq := uint64(1); seq <= 20; seq++ {
		if commits[seq] != 1 {
			t.Errorf("batch %d committed %d times", seq, commits[seq])
		}
	}
}

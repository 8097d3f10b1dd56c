package collector

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/wait"
)

// loadInto restores partition p of a fresh shard of c from a state bucket
// holding recs (key -> value).
func loadInto(t *testing.T, c *Collector, p int, recs map[string][]byte) (*shard, jetstream.KeyValue) {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	js := jsClient(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state-test"})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range recs {
		if _, err := kv.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	sh := c.newShard(p)
	if err := c.load(ctx, kv, sh, ""); err != nil {
		t.Fatal(err)
	}
	return sh, kv
}

// TestUnreadableStateRecordIsReplaced: a record that does not decode
// (corrupt, or a format this build does not know) is skipped and counted,
// and its revision is kept, so the asset's next checkpoint replaces it;
// before, the checkpoint expected no record, every compare-and-set was
// refused and the partition stalled for ever.
func TestUnreadableStateRecordIsReplaced(t *testing.T) {
	c, warm := warmShard(t)
	v := warm.engine.Assets()[0]
	key := stateKey(0, v.Site, v.ID)
	for name, bad := range map[string][]byte{"truncated": {2, 0x81}, "unknown version": {7, 1, 2, 3}, "json of wrong types": []byte(`{"v":"x","rules":7}`), "empty": {}} {
		t.Run(name, func(t *testing.T) {
			before := counterVec(c.m.badState, "unreadable")
			sh, _ := loadInto(t, c, 0, map[string][]byte{key: bad})
			if got := counterVec(c.m.badState, "unreadable") - before; got != 1 {
				t.Fatalf("unreadable records counted %v, want 1", got)
			}
			sh.mu.Lock()
			defer sh.mu.Unlock()
			if sh.rev[[2]string{v.Site, v.ID}] == 0 {
				t.Fatal("the unreadable record's revision was not kept: the next checkpoint would be refused")
			}
		})
	}
}

// TestStateRecordOfAnotherPartitionSkipped: after cluster.partitions
// changed, a partition's keys may hold records of assets another partition
// owns now; they are skipped (counted), not restored as a second copy of
// the asset that never gets data.
func TestStateRecordOfAnotherPartitionSkipped(t *testing.T) {
	c, warm := warmShard(t)
	recs := records(t, warm, false)
	const parts = 6
	c.cfg.Cluster.Partitions = parts
	kv := map[string][]byte{}
	mine, others := 0, 0
	for k, data := range recs {
		kv[stateKey(0, k[0], k[1])] = data // all under partition 0: a single-mode group's keys
		if partitionOf(k[0], k[1], parts) == 0 {
			mine++
		} else {
			others++
		}
	}
	if mine == 0 || others == 0 {
		t.Fatalf("fleet gives %d assets of partition 0 and %d others: the test needs both", mine, others)
	}
	before := counterVec(c.m.badState, "other_partition")
	sh, _ := loadInto(t, c, 0, kv)
	if got := counterVec(c.m.badState, "other_partition") - before; got != float64(others) {
		t.Fatalf("skipped %v records of other partitions, want %d", got, others)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.engine.Len(); n != mine {
		t.Fatalf("partition 0 restored %d assets, want its own %d", n, mine)
	}
	for _, v := range sh.engine.Assets() {
		if p := partitionOf(v.Site, v.ID, parts); p != 0 {
			t.Fatalf("asset %s/%s of partition %s restored in partition 0", v.Site, v.ID, strconv.Itoa(p))
		}
	}
}

// TestOutputMsgIDsNameTheGroup: alert and KPI messages carry a Nats-Msg-Id
// that starts with the group, so two groups on one stream do not drop each
// other's (identical) messages as duplicates.
func TestOutputMsgIDsNameTheGroup(t *testing.T) {
	c := processCollector(t)
	sh := c.shard(0)
	var cy cycle
	n := 0
	genIngest(24, 80, 15*time.Second, func(subject string, data []byte) {
		cy.outs = cy.outs[:0]
		c.process(sh, subject, data, time.Now(), &cy)
		for _, o := range cy.outs {
			n++
			if want := c.cfg.Group + ":"; len(o.msgID) <= len(want) || o.msgID[:len(want)] != want {
				t.Fatalf("msg id %q of %s does not start with the group %q", o.msgID, o.subject, c.cfg.Group)
			}
		}
	})
	if n == 0 {
		t.Fatal("the fleet produced no alert or KPI message to check")
	}
}

// TestDecodeRecordNamesUnknownFormat: a record that is neither binary nor
// JSON is reported as an unknown format (a newer release's), not as a JSON
// syntax error.
func TestDecodeRecordNamesUnknownFormat(t *testing.T) {
	if _, err := decodeRecord([]byte{7, 1, 2}); err == nil || !strings.Contains(err.Error(), "unknown record format (first byte 0x07") {
		t.Fatalf("err = %v", err)
	}
	if _, err := decodeRecord(nil); err == nil || !strings.Contains(err.Error(), "empty record") {
		t.Fatalf("err = %v", err)
	}
}

// TestSingleReplicaFollowsRepartitionedStream: a single-replica collector
// whose stream another group partitions while it runs (the stream gets the
// subject transform, new messages a seventh token) notices it and goes on
// consuming; before, its consumer's filter matched nothing from then on
// and every asset went stale with no error.
func TestSingleReplicaFollowsRepartitionedStream(t *testing.T) {
	defer func(d time.Duration) { streamCheckEvery = d }(streamCheckEvery)
	streamCheckEvery = 200 * time.Millisecond
	ns, cfg := embeddedConfig(t)
	r := startCfg(t, cfg)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now().UnixMilli() - 600_000
	pub := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := js.Publish(ctx, subj, batchJSON(uint64(i), t0+int64(i)*1000, 60), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := func(i int) func() bool {
		return func() bool { av, ok := r.c.Asset("site1", "ac-1"); return ok && av.LastTS >= t0+int64(i)*1000 }
	}
	pub(1, 10)
	wait.For(t, 10*time.Second, "the first batches evaluated", seen(9))
	// another group partitions the stream
	partitionStream(ctx, t, js, cfg.NATS.Stream)
	pub(10, 30)
	wait.For(t, 20*time.Second, "batches stored after the stream was partitioned evaluated", seen(29))
	if !r.c.repartitioned.Load() {
		t.Fatal("the change was not noticed")
	}
}

// TestSingleReplicaFollowsStreamPartitionedBeforeData: the reviewer's
// order. The single replica creates the stream, a group with
// cluster.partitions: 4 starts on it a moment later (and partitions it),
// and only then is anything published. Before, the single replica's pulls
// on its six-token filter moved its consumer past the partitioned messages
// stored until it noticed the change; with the filter updated in place
// they were never delivered, its order check waited for them for ever
// (earlier messages ... did not come back) and it evaluated nothing.
func TestSingleReplicaFollowsStreamPartitionedBeforeData(t *testing.T) {
	defer func(d time.Duration) { streamCheckEvery = d }(streamCheckEvery)
	streamCheckEvery = 500 * time.Millisecond
	ns, cfg := embeddedConfig(t)
	cfg.Group = "refgrp"
	ref := startCfg(t, cfg)
	g1 := cfg
	g1.Group, g1.DataDir, g1.Cluster.Partitions = "g1", t.TempDir(), 4
	startCfg(t, g1)
	js := jsClient(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now().UnixMilli() - 600_000
	const n = 80
	for i := 1; i <= n; i++ {
		if _, err := js.Publish(ctx, subj, batchJSON(uint64(i), t0+int64(i)*1000, 60), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i == n/2 { // some before the single replica notices, some after
			wait.For(t, 10*time.Second, "the change noticed", ref.c.repartitioned.Load)
		}
	}
	wait.For(t, 20*time.Second, "every batch evaluated by the single replica", func() bool {
		av, ok := ref.c.Asset("site1", "ac-1")
		return ok && av.LastTS >= t0+n*1000
	})
	// exactly once: every batch evaluated, none twice
	evaluatedOnce(t, ref.c, n)
}

// TestSingleReplicaDrainsUnpartitionedBacklog: a single replica stopped
// with batches of the unpartitioned subjects still unread, whose stream
// another group partitions meanwhile, evaluates that backlog first, then
// the partitioned batches: each once. Before, its consumer's filter was
// updated at its start and the unread unpartitioned batches were never
// delivered.
func TestSingleReplicaDrainsUnpartitionedBacklog(t *testing.T) {
	defer func(d time.Duration) { streamCheckEvery = d }(streamCheckEvery)
	streamCheckEvery = 200 * time.Millisecond
	ns, cfg := embeddedConfig(t)
	js := jsClient(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := startCfg(t, cfg)
	wait.For(t, 10*time.Second, "the consumer created", func() bool { _, err := js.Consumer(ctx, cfg.NATS.Stream, cfg.consumerName(-1)); return err == nil })
	first.stop()
	t0 := time.Now().UnixMilli() - 600_000
	pub := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := js.Publish(ctx, subj, batchJSON(uint64(i), t0+int64(i)*1000, 60), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub(1, 20) // unpartitioned, unread
	partitionStream(ctx, t, js, cfg.NATS.Stream)
	pub(21, 40) // partitioned
	r := startCfg(t, cfg)
	wait.For(t, 20*time.Second, "every batch evaluated", func() bool {
		av, ok := r.c.Asset("site1", "ac-1")
		return ok && av.LastTS >= t0+40*1000
	})
	evaluatedOnce(t, r.c, 40)
}

// partitionStream gives stream the subject transform of 4 partitions, as
// a group with cluster.partitions: 4 does.
func partitionStream(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.SubjectTransform = partitionTransform(4)
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
}

// evaluatedOnce fails t unless c ingested n data messages, none twice.
func evaluatedOnce(t *testing.T, c *Collector, n int) {
	t.Helper()
	if got := testutil.ToFloat64(c.m.ingested.WithLabelValues("data")); got != float64(n) {
		t.Errorf("ingested %v data messages, want %d", got, n)
	}
	if got := testutil.ToFloat64(c.m.duplicates); got != 0 {
		t.Errorf("%v duplicates: a batch evaluated twice", got)
	}
}

package collector

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/brokers"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// benchPayloads builds encoded batches for assets of several classes:
// motors (12 signals), diesel engines (14) and PV strings (7) are padded
// with extra generic-looking signals to the wanted batch size.
func benchPayloads(assets, readings, batches int) [][]byte {
	classes := []struct {
		class string
		sigs  []string
		mean  []float64
	}{
		{"motor", []string{"voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c", "power_factor", "power", "frequency", "winding_temp", "bearing_temp", "vibration"},
			[]float64{400, 400, 400, 110, 110, 110, 0.86, 65, 50, 95, 60, 2}},
		{"diesel_engine", []string{"speed", "load", "fuel_rate", "lube_oil_pressure", "coolant_temp", "exhaust_temp_cyl_1", "exhaust_temp_cyl_2", "exhaust_temp_cyl_3",
			"exhaust_temp_cyl_4", "exhaust_temp_cyl_5", "exhaust_temp_cyl_6", "boost_pressure", "power", "run_hours"},
			[]float64{1500, 75, 160, 420, 82, 410, 405, 415, 400, 412, 408, 180, 750, 1200}},
		{"air_compressor", []string{"discharge_pressure", "discharge_temp", "input_power", "free_air_delivery", "load_state", "dew_point"},
			[]float64{0.75, 82, 70, 11.5, 2, 3}},
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var out [][]byte
	seq := uint64(0)
	for bi := range batches {
		for a := range assets {
			c := classes[a%len(classes)]
			ts := int64(1_763_812_345_000) + int64(bi)*1000
			b := &telemetry.Batch{Gateway: fmt.Sprintf("gw-%02d", a%4), Asset: telemetry.Asset{ID: fmt.Sprintf("%s-%d", c.class, a), Class: c.class,
				Path: []string{"acme", "plant", "area", "line", "_"}}, TSGW: ts}
			seq++
			b.Seq = seq
			for i := range readings {
				k := i % len(c.sigs)
				name := c.sigs[k]
				if i >= len(c.sigs) { // a bigger asset: more sensors of the same kinds
					name = fmt.Sprintf("%s_%d", c.sigs[k], i/len(c.sigs))
				}
				b.Readings = append(b.Readings, telemetry.Reading{Signal: name, Value: c.mean[k] * (1 + rng.NormFloat64()*0.005), Unit: "", TS: ts,
					Src: fmt.Sprintf("modbus:1:hr:%d", 40001+2*i)})
			}
			out = append(out, b.AppendJSON(nil))
		}
	}
	return out
}

// BenchmarkPipeline measures decode + dedup + rule evaluation with the
// default packs on one goroutine, reporting readings/s and allocs/reading.
func BenchmarkPipeline(b *testing.B) {
	for _, n := range []int{20, 50, 100} {
		b.Run(fmt.Sprintf("readings=%d", n), func(b *testing.B) {
			cat := catalog.Default()
			d, err := rules.DefaultPacks(cat)
			if err != nil {
				b.Fatal(err)
			}
			eng := rules.New(rules.Merge(d...), cat, rules.Options{Now: func() int64 { return 0 }})
			dd := ingest.NewDedup(16384)
			payloads := benchPayloads(30, n, 200)
			var out []alert.Alert
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				bt, err := telemetry.DecodeBatch(payloads[i%len(payloads)])
				if err != nil {
					b.Fatal(err)
				}
				i++
				if dup, _ := dd.Seen(bt.Gateway, bt.Seq+uint64(i/len(payloads))*1e6); dup {
					b.Fatal("dup")
				}
				if i%len(payloads) == 0 { // replay the data set later in time
					eng = rules.New(rules.Merge(d...), cat, rules.Options{Now: func() int64 { return 0 }})
				}
				out = eng.Process(bt, 0, out[:0])
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkPartitionCycle is the CPU of one replica's cycles with
// partitioning on, without the network: decode, dedup, rules and KPIs per
// message, then the per-asset checkpoint records (JSON) of every asset a
// fetch (cluster.fetch messages: under load a cycle fills up) touched, as
// commit writes them, for 300 assets. readings/s is per core (one
// goroutine).
func BenchmarkPartitionCycle(b *testing.B) {
	for _, bc := range []struct{ n, fetch int }{{20, 512}, {20, 2048}, {100, 512}, {100, 2048}} {
		n := bc.n
		b.Run(fmt.Sprintf("readings=%d/fetch=%d", n, bc.fetch), func(b *testing.B) {
			c := benchCollector(b, Defaults())
			payloads := benchPayloads(300, n, 40)
			subjects := make([]string, len(payloads))
			for i, p := range payloads {
				bt, _ := telemetry.DecodeBatch(p)
				subjects[i] = telemetry.Subject(bt.Asset.Site(), bt.Asset.Class, bt.Asset.ID, telemetry.KindData)
			}
			sh := c.newShard(0)
			var cy cycle
			i, readings := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				if i%len(payloads) == 0 { // replay later in time: a fresh shard
					sh = c.newShard(0)
				}
				cy.reset()
				for range bc.fetch {
					c.process(sh, subjects[i%len(payloads)], payloads[i%len(payloads)], time.Now(), &cy)
					i++
					readings += n
				}
				sh.mu.Lock()
				var err error
				cy.kv, err = sh.snapshot(cy.kv[:0], 0, false, nil)
				sh.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(readings)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkBytesPerAsset measures the heap one tracked asset costs (a
// motor of 12 signals with the default packs: rule state, KPI window,
// dashboard store, checkpoint revision), by ReadMemStats around 5,000 assets.
func BenchmarkBytesPerAsset(b *testing.B) {
	const assets = 5000
	cfg := Defaults()
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		b.Fatal(err)
	}
	payloads := benchPayloads(assets*3, 12, 1) // every third is a motor
	var per float64
	for b.Loop() {
		c, err := New(cfg, set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		before := heapInUse()
		sh := c.newShard(0)
		var cy cycle
		for i := 0; i < len(payloads); i += 3 {
			bt, _ := telemetry.DecodeBatch(payloads[i])
			c.process(sh, telemetry.Subject(bt.Asset.Site(), bt.Asset.Class, bt.Asset.ID, telemetry.KindData), payloads[i], time.Now(), &cy)
		}
		per = float64(int64(heapInUse())-int64(before)) / assets
		runtime.KeepAlive(sh)
		runtime.KeepAlive(c)
	}
	b.ReportMetric(per, "bytes/asset")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkReplicas is end to end on an embedded nats-server: 1, 2 or 3
// replicas on 6 partitions consume 6,000 batches of 20 readings published
// as fast as one publisher can, each batch's alerts/KPIs PubAcked and its
// asset's state checkpointed before the ack. readings/s is for the whole
// group from the first publish to the last commit, with the replicas, the
// server and the publisher sharing this machine's cores.
func BenchmarkReplicas(b *testing.B) {
	payloads := benchPayloads(300, 20, 20)
	for _, reps := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("replicas=%d", reps), func(b *testing.B) {
			var readings int
			var consuming time.Duration
			for b.Loop() {
				n, d := runReplicas(b, reps, payloads, 20)
				readings, consuming = readings+n, consuming+d
			}
			b.ReportMetric(float64(readings)/consuming.Seconds(), "readings/s")
			b.ReportMetric(float64(readings)/consuming.Seconds()/float64(reps), "readings/s/replica")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchGroup starts reps replicas of one partitioned group on url and
// returns them with a channel of committed batch counts.
func benchGroup(b *testing.B, url string, reps int, ttl time.Duration) ([]*benchReplica, *atomic.Int64) {
	b.Helper()
	var done atomic.Int64
	var out []*benchReplica
	for i := range reps {
		cfg := Defaults()
		cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir, cfg.Replica = url, "", b.TempDir(), fmt.Sprintf("r%d", i+1)
		cfg.Cluster.Partitions = 6
		cfg.Cluster.PinnedTTL, cfg.Cluster.MemberTimeout = Duration(ttl), Duration(ttl)
		c := benchCollector(b, cfg)
		r := &benchReplica{c: c, done: make(chan error, 1)}
		c.onCommit = func(p int, bs []BatchRef) {
			done.Add(int64(len(bs)))
			r.last.Store(time.Now().UnixNano())
		}
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		go func() { r.done <- c.Run(ctx) }()
		out = append(out, r)
	}
	// wait until the partitions are spread (nothing is pinned before the
	// first delivery, so the work then starts on the right replicas)
	for {
		owned, all := 0, true
		for _, r := range out {
			var m dto.Metric
			_ = r.c.m.owned.Write(&m)
			n := int(m.GetGauge().GetValue())
			owned += n
			all = all && r.c.Ready() && n > 0
		}
		if all && owned == 6 {
			break
		}
		time.Sleep(10 * time.Millisecond) // a benchmark set-up, not a test assertion
	}
	return out, &done
}

type benchReplica struct {
	c      *Collector
	cancel context.CancelFunc
	done   chan error
	last   atomic.Int64
}

func (r *benchReplica) stop() {
	r.cancel()
	<-r.done
}

func runReplicas(b *testing.B, reps int, payloads [][]byte, n int) (int, time.Duration) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Shutdown()
	group, done := benchGroup(b, ns.URL(), reps, 2*time.Second)
	defer func() {
		for _, r := range group {
			r.stop()
		}
	}()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2048))
	start := time.Now() // the replicas consume while the backlog is published
	for i, p := range payloads {
		bt, _ := telemetry.DecodeBatch(p)
		if _, err := js.PublishAsync(telemetry.Subject(bt.Asset.Site(), bt.Asset.Class, bt.Asset.ID, telemetry.KindData), p); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 1023 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	for done.Load() < int64(len(payloads)) {
		time.Sleep(5 * time.Millisecond) // a benchmark's completion poll
	}
	return len(payloads) * n, time.Since(start)
}

// BenchmarkTakeover kills one of 3 replicas (no flush, its connection
// dropped) under a steady stream and reports the seconds until every
// partition it owned committed again on another replica (the defaults:
// pinned_ttl 5 s, member_timeout 4 s, ack_wait 5 s).
func BenchmarkTakeover(b *testing.B) {
	payloads := benchPayloads(60, 10, 2000)
	var total time.Duration
	for b.Loop() {
		total += takeover(b, payloads)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "takeover-s")
	b.ReportMetric(0, "ns/op")
}

func takeover(b *testing.B, payloads [][]byte) time.Duration {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Shutdown()
	group, _ := benchGroup(b, ns.URL(), 3, 5*time.Second)
	for _, r := range group {
		r.c.cfg.Cluster.MemberTimeout = Duration(4 * time.Second)
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(2 * time.Millisecond):
			}
			p := payloads[i%len(payloads)]
			bt, _ := telemetry.DecodeBatch(p)
			bt.Seq += uint64(i/len(payloads)) * 1_000_000
			bt.TSGW += int64(i/len(payloads)) * 2_000_000
			_, _ = js.Publish(context.Background(), telemetry.Subject(bt.Asset.Site(), bt.Asset.Class, bt.Asset.ID, telemetry.KindData), bt.AppendJSON(nil))
		}
	}()
	victim := group[0]
	for len(victim.c.shardList()) == 0 || group[1].last.Load() == 0 || group[2].last.Load() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	owned := map[int]bool{}
	for _, sh := range victim.c.shardList() {
		owned[sh.p] = true
	}
	taken := map[int]bool{}
	var mu sync.Mutex
	killed := time.Now()
	for _, r := range group[1:] {
		r.c.onCommit = func(p int, bs []BatchRef) {
			mu.Lock()
			if owned[p] {
				taken[p] = true
			}
			mu.Unlock()
		}
	}
	if io := victim.c.js.Load(); io != nil {
		io.nc.Close()
	}
	victim.stop()
	for {
		mu.Lock()
		n := len(taken)
		mu.Unlock()
		if n == len(owned) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(killed)
	close(stopPub)
	<-pubDone
	for _, r := range group[1:] {
		r.stop()
	}
	return d
}

// benchCollector is a collector of cfg with the default rule packs, logging
// nothing (benchmarks).
func benchCollector(b testing.TB, cfg Config) *Collector {
	b.Helper()
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(cfg, set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	return c
}

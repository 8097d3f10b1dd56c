package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// The ingest benchmark runs the real collector (Run: JetStream fetch per
// partition, decode, ingest checks, dedup, rules, KPIs, alert and KPI
// publishing with PubAcks, the per-asset checkpoint with compare-and-set,
// acknowledgements) in a child process (this test binary re-executed)
// against an embedded nats-server in the parent, on a backlog the parent
// published before the child started: the child's CPU time (getrusage) and
// heap are its own, the server's and the publisher's are not counted.
//
//	go test -run '^$' -bench BenchmarkIngest -benchtime 1x ./internal/collector
//
// Environment: SMELTER_BENCH_ASSETS (comma-separated fleet sizes; 300),
// SMELTER_BENCH_ROUNDS (batches per asset; 20), SMELTER_BENCH_PARTITIONS
// (4), SMELTER_BENCH_EXTRA (YAML appended to the child's config, e.g.
// "max_assets: 50000"), SMELTER_BENCH_CLUSTER (fields added to its cluster
// section, e.g. "fetch: 512, checkpoint_interval: 2s"), SMELTER_BENCH_CPUPROFILE and
// SMELTER_BENCH_MEMPROFILE (pprof files the child writes: CPU while it
// consumes, heap after the last commit; SMELTER_BENCH_CPUPROFILE_STEADY=1:
// the CPU profile starts with the steady state), SMELTER_BENCH_STRACE (a file:
// the child runs under strace -c -f, its syscall counts there; slower),
// SMELTER_BENCH_WARMUP (rounds; 5): the steady-state figures (steady-*)
// count only what the child spends after that many rounds' batches are
// committed (births and the state built from nothing come before), beside
// the whole run's.

const ingestChildEnv = "SMELTER_INGEST_CHILD"

// ingestResult is what the child reports on stdout.
type ingestResult struct {
	Batches, Readings int
	Wall, CPU         float64 // s, from Run to the last commit
	User, System      float64 // s, CPU split
	HeapAlloc         uint64  // bytes after GC, collector still live
	Series            int     // asset signals with history
	Checkpoints       float64
	Published         float64 // alert and KPI messages
	// from Run to the last commit: minor page faults, voluntary and
	// involuntary context switches (getrusage), garbage collections
	MinFlt, NVCSw, NIVCSw, NumGC int64
	Fetches                      int64 // pulls of all partitions
	// heap allocations and bytes allocated from Run to the last commit
	Mallocs, AllocBytes uint64
	// the child's peak resident set (VmHWM) and the Go
	// peak of heap objects, live and garbage (runtime/metrics
	// /memory/classes/heap/objects:bytes, sampled every 50 ms)
	MaxRSS, PeakHeap uint64
	// the steady state: from the first moment (sampled every 50 ms) at
	// which warm-up rounds x assets batches were evaluated (births, the
	// first rounds and the state built from nothing are before it) to the
	// last commit
	SteadyBatches               int
	SteadyCPU                   float64 // s
	SteadyMallocs, SteadyAllocB uint64
	SteadyMinFlt, SteadyNumGC   int64
}

// benchFleet is the classes the ingest benchmark cycles through, with the
// signals a gateway would send per poll (units from the catalog) and
// typical values; pv_string assets share inverters of 20 strings (the
// peer rule's groups).
var benchFleet = []struct {
	class string
	sigs  []string
	mean  []float64
	plate map[string]float64
}{
	{"motor", []string{"voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c", "power_factor", "power", "frequency", "winding_temp", "bearing_temp", "vibration"},
		[]float64{400, 400, 400, 110, 110, 110, 0.86, 65, 50, 95, 60, 2}, map[string]float64{"rated_power": 75, "rated_voltage": 400, "rated_current": 130}},
	{"diesel_engine", []string{"speed", "load", "fuel_rate", "lube_oil_pressure", "coolant_temp", "exhaust_temp_cyl_1", "exhaust_temp_cyl_2", "exhaust_temp_cyl_3",
		"exhaust_temp_cyl_4", "exhaust_temp_cyl_5", "exhaust_temp_cyl_6", "boost_pressure", "power", "run_hours"},
		[]float64{1500, 75, 160, 420, 82, 410, 405, 415, 400, 412, 408, 180, 750, 1200}, map[string]float64{"rated_power": 1000, "rated_speed": 1500}},
	{"air_compressor", []string{"discharge_pressure", "discharge_temp", "input_power", "free_air_delivery", "load_state", "dew_point"},
		[]float64{0.75, 82, 70, 11.5, 2, 3}, map[string]float64{"rated_power": 90, "rated_fad": 15, "rated_specific_power": 6.5, "rated_pressure": 0.8}},
	{"pv_string", []string{"string_current", "string_voltage", "irradiance_poa", "module_temp", "ac_power", "energy", "insulation_resistance"},
		[]float64{9, 800, 800, 45, 7, 1000, 20}, map[string]float64{"rated_power": 8, "gamma": -0.0035}},
}

// ingestMessages builds the backlog: one birth per asset, then rounds
// batches per asset (every asset once per round, step apart in time, the
// last round step before now), as the gateway encodes them.
func ingestMessages(assets, rounds int, step time.Duration) (subjects []string, data [][]byte, readings int) {
	readings = genIngest(assets, rounds, step, func(s string, d []byte) {
		subjects, data = append(subjects, s), append(data, append([]byte(nil), d...))
	})
	return subjects, data, readings
}

// genIngest hands the messages of ingestMessages to add (data valid
// during the call) and returns the number of readings.
func genIngest(assets, rounds int, step time.Duration, add func(subject string, data []byte)) (readings int) {
	cat := catalog.Default()
	rng := rand.New(rand.NewPCG(3, 4))
	start := time.Now().Add(-time.Duration(rounds+1) * step).UnixMilli()
	seq := map[string]uint64{}
	gw := func(a int) string { return fmt.Sprintf("gw-%03d", a/50) } // 50 assets per gateway
	for a := range assets {
		f := benchFleet[a%len(benchFleet)]
		cl, _ := cat.Class(f.class)
		as := telemetry.Asset{ID: fmt.Sprintf("%s-%05d", f.class, a), Class: f.class, Path: []string{"bench", "plant", "area", "line", "_"}}
		bi := &telemetry.Birth{Gateway: gw(a), Asset: as.ToJSON(), TSGW: start, Nameplate: map[string]float64{}}
		for k, v := range f.plate {
			bi.Nameplate[k] = v
		}
		if f.class == "pv_string" {
			bi.Nameplate["inverter"] = float64(a / (20 * len(benchFleet)))
		}
		for _, s := range f.sigs {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: s, Unit: cl.Signals[s].Unit, IntervalMS: step.Milliseconds()})
		}
		seq[bi.Gateway]++
		bi.Seq = seq[bi.Gateway]
		d, err := telemetry.MarshalBirth(bi)
		if err != nil {
			panic(err)
		}
		add(telemetry.Subject(as.Site(), as.Class, as.ID, telemetry.KindBirth), d)
	}
	var buf []byte
	for r := range rounds {
		ts := start + int64(r+1)*step.Milliseconds()
		for a := range assets {
			f := benchFleet[a%len(benchFleet)]
			cl, _ := cat.Class(f.class)
			as := telemetry.Asset{ID: fmt.Sprintf("%s-%05d", f.class, a), Class: f.class, Path: []string{"bench", "plant", "area", "line", "_"}}
			b := &telemetry.Batch{Gateway: gw(a), Asset: as, TSGW: ts + 20}
			seq[b.Gateway]++
			b.Seq = seq[b.Gateway]
			for i, s := range f.sigs {
				v := f.mean[i] * (1 + rng.NormFloat64()*0.005)
				if cl.Signals[s].IsState() {
					v = f.mean[i]
				}
				b.Readings = append(b.Readings, telemetry.Reading{Signal: s, Value: v, Unit: cl.Signals[s].Unit, TS: ts,
					Src: "modbus:1:hr:" + strconv.Itoa(40001+2*i)})
			}
			readings += len(b.Readings)
			buf = b.AppendJSON(buf[:0])
			add(telemetry.Subject(as.Site(), as.Class, as.ID, telemetry.KindData), buf)
		}
	}
	return readings
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestIngestChild is the child process of BenchmarkIngest; it does nothing
// in a normal test run.
func TestIngestChild(t *testing.T) {
	spec := os.Getenv(ingestChildEnv)
	if spec == "" {
		t.Skip("child process of BenchmarkIngest only")
	}
	var args struct {
		URL                        string
		Partitions, Expect, Warmup int
		Extra, Cluster             string
	}
	if err := json.Unmarshal([]byte(spec), &args); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cluster := fmt.Sprintf("partitions: %d", args.Partitions)
	if args.Cluster != "" {
		cluster += ", " + args.Cluster
	}
	yml := fmt.Sprintf("nats: {url: %q}\nhttp: {listen: \"\"}\ndata_dir: %q\ncluster: {%s}\nmax_future: 0s\n%s",
		args.URL, dir, cluster, args.Extra)
	path := dir + "/collector.yaml"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, set, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var done, fetches atomic.Int64
	c.beforeFetch = func(int) { fetches.Add(1) }
	finished := make(chan struct{})
	var warm struct { // the start of the steady state (warmedUp): batches evaluated by then
		sync.Once
		batches int64
		cpu     time.Duration
		ru      syscall.Rusage
		allocs  []rtmetrics.Sample
	}
	var startProfile func() // the CPU profile's start, at once or with the steady state
	warmedUp := func(n int64) {
		warm.Do(func() {
			warm.batches, warm.cpu, warm.ru = n, cpuTime(), rusage()
			warm.allocs = allocSamples()
			if startProfile != nil && os.Getenv("SMELTER_BENCH_CPUPROFILE_STEADY") != "" {
				startProfile()
			}
		})
	}
	c.onCommit = func(p int, bs []BatchRef) {
		if done.Add(int64(len(bs))) == int64(args.Expect) {
			close(finished)
		}
	}
	data := c.m.ingested.WithLabelValues(string(telemetry.KindData))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f := os.Getenv("SMELTER_BENCH_CPUPROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer pf.Close()
		startProfile = func() {
			if err := pprof.StartCPUProfile(pf); err != nil {
				t.Error(err)
			}
		}
		if os.Getenv("SMELTER_BENCH_CPUPROFILE_STEADY") == "" {
			startProfile()
		}
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	ru0 := rusage()
	cpu0, t0 := cpuTime(), time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var peak atomic.Uint64
	sampled := make(chan struct{})
	go func() { // the heap's peak, as an RSS limit would have to allow for
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}} // no stop of the world
		for {
			select {
			case <-finished:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rtmetrics.Read(s)
			peak.Store(max(peak.Load(), s[0].Value.Uint64()))
			// the steady state starts once warm-up rounds x assets
			// batches are evaluated (commits come a checkpoint at a
			// time, up to 6 x fetch messages per partition: too coarse)
			if n := int64(testutil.ToFloat64(data)); n >= int64(args.Warmup) {
				warmedUp(n)
			}
		}
	}()
	select {
	case <-finished:
	case err := <-errc:
		t.Fatalf("collector stopped: %v", err)
	case <-time.After(30 * time.Minute):
		t.Fatalf("only %d of %d batches committed", done.Load(), args.Expect)
	}
	cpu1 := cpuTime()
	res := ingestResult{Batches: int(done.Load()), Wall: time.Since(t0).Seconds(), CPU: (cpu1 - cpu0).Seconds()}
	ru1 := rusage()
	allocs1 := allocSamples()
	pprof.StopCPUProfile()
	warmedUp(int64(args.Expect)) // a warm-up of every batch: an empty steady state
	res.SteadyBatches = args.Expect - int(warm.batches)
	res.SteadyCPU = (cpu1 - warm.cpu).Seconds()
	res.SteadyMallocs = allocs1[0].Value.Uint64() + allocs1[3].Value.Uint64() - warm.allocs[0].Value.Uint64() - warm.allocs[3].Value.Uint64()
	res.SteadyAllocB = allocs1[1].Value.Uint64() - warm.allocs[1].Value.Uint64()
	res.SteadyNumGC = int64(allocs1[2].Value.Uint64() - warm.allocs[2].Value.Uint64())
	res.SteadyMinFlt = ru1.Minflt - warm.ru.Minflt
	res.User, res.System = float64(ru1.Utime.Nano()-ru0.Utime.Nano())/1e9, float64(ru1.Stime.Nano()-ru0.Stime.Nano())/1e9
	res.MinFlt, res.NVCSw, res.NIVCSw = ru1.Minflt-ru0.Minflt, ru1.Nvcsw-ru0.Nvcsw, ru1.Nivcsw-ru0.Nivcsw
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	res.NumGC = int64(ms1.NumGC - ms0.NumGC)
	res.Mallocs, res.AllocBytes = ms1.Mallocs-ms0.Mallocs, ms1.TotalAlloc-ms0.TotalAlloc
	res.Fetches = fetches.Load()
	res.MaxRSS = vmHWM()
	<-sampled
	res.PeakHeap = peak.Load()
	runtime.GC()
	if f := os.Getenv("SMELTER_BENCH_MEMPROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		_ = pprof.WriteHeapProfile(pf)
		_ = pf.Close()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapAlloc = ms.HeapAlloc
	res.Series = c.live.Stats().Series
	mfs, _ := c.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "smelter_collector_readings_total":
				res.Readings += int(m.GetCounter().GetValue())
			case "smelter_collector_checkpoints_total":
				res.Checkpoints += m.GetCounter().GetValue()
			case "smelter_collector_published_total":
				res.Published += m.GetCounter().GetValue()
			}
		}
	}
	runtime.KeepAlive(c)
	out, _ := json.Marshal(res)
	fmt.Printf("INGEST-RESULT %s\n", out)
	cancel()
	<-errc
}

// allocSamples reads the heap allocations, bytes allocated and GC cycles
// so far (runtime/metrics: no stop of the world, unlike ReadMemStats).
func allocSamples() []rtmetrics.Sample {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/tiny/allocs:objects"}} // not in allocs:objects; in MemStats.Mallocs
	rtmetrics.Read(s)
	return s
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	ru := rusage()
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM is this process's peak resident set in bytes, VmHWM of
// /proc/self/status (0 if unavailable): its memory since exec, unlike
// getrusage's ru_maxrss, which a child exec'ed by a large parent inherits.
func vmHWM() uint64 {
	d, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(d), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// rusage is this process's resource usage (zero if unavailable).
func rusage() syscall.Rusage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru
}

// BenchmarkIngest reports, per fleet size: readings/s through the whole
// collector, its CPU-s per million readings, heap allocations and bytes
// allocated per reading, heap per series (after GC,
// dashboard history included; the rings are full only with rounds >= 300
// at the 15 s step used here) and checkpoint records written.
func BenchmarkIngest(b *testing.B) {
	rounds := benchEnvInt("SMELTER_BENCH_ROUNDS", 20)
	parts := benchEnvInt("SMELTER_BENCH_PARTITIONS", 4)
	warmup := benchEnvInt("SMELTER_BENCH_WARMUP", 5)
	sizes := []int{300}
	if v := os.Getenv("SMELTER_BENCH_ASSETS"); v != "" {
		sizes = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				b.Fatalf("SMELTER_BENCH_ASSETS: %q is not a positive number", s)
			}
			sizes = append(sizes, n)
		}
	}
	for _, assets := range sizes {
		b.Run(fmt.Sprintf("assets=%d", assets), func(b *testing.B) {
			subjects, data, readings := ingestMessages(assets, rounds, 15*time.Second)
			for b.Loop() {
				res := runIngest(b, subjects, data, parts, assets*rounds, assets*min(warmup, rounds))
				if res.Readings != readings {
					// every batch was committed, but a partition restarted
					// (its shard's readings_total went with it; on a loaded
					// machine the membership lapses, say): the run did more
					// than the backlog's work, so its figures are flagged
					b.Logf("RESTARTED: the live shards count %d readings of %d published (SMELTER_BENCH_CHILDLOG has the child's warnings); figures per published reading", res.Readings, readings)
					res.Readings = readings
				}
				b.ReportMetric(float64(res.Readings)/res.Wall, "readings/s")
				b.ReportMetric(res.CPU/(float64(res.Readings)/1e6), "cpu-s/Mreadings")
				b.ReportMetric(float64(res.HeapAlloc)/float64(max(res.Series, 1)), "heap-B/series")
				b.ReportMetric(float64(res.HeapAlloc)/1e6, "heap-MB")
				b.ReportMetric(float64(res.PeakHeap)/1e6, "peakheap-MB")
				b.ReportMetric(float64(res.MaxRSS)/1e6, "maxrss-MB")
				b.ReportMetric(res.Checkpoints/float64(assets*rounds), "checkpoints/batch")
				b.ReportMetric(float64(res.Mallocs)/float64(res.Readings), "allocs/reading")
				b.ReportMetric(float64(res.AllocBytes)/float64(res.Readings), "B/reading")
				// the steady state: the batches committed after the
				// warm-up, at the run's readings per batch
				steady := float64(res.SteadyBatches) * float64(res.Readings) / float64(assets*rounds)
				if steady > 0 {
					b.ReportMetric(res.SteadyCPU/(steady/1e6), "steady-cpu-s/Mreadings")
					b.ReportMetric(float64(res.SteadyMallocs)/steady, "steady-allocs/reading")
					b.ReportMetric(float64(res.SteadyAllocB)/steady, "steady-B/reading")
				}
				b.ReportMetric(0, "ns/op")
				b.Logf("%d assets, %d series, %d readings in %.2fs wall, %.2f CPU-s (user %.2f, system %.2f); %.0f checkpoint records, %.0f alert/KPI messages; "+
					"%d fetches, %d page faults, %d+%d context switches, %d GCs, %d allocations (%d MB); load average %s",
					assets, res.Series, res.Readings, res.Wall, res.CPU, res.User, res.System, res.Checkpoints, res.Published,
					res.Fetches, res.MinFlt, res.NVCSw, res.NIVCSw, res.NumGC, res.Mallocs, res.AllocBytes>>20, loadAvg())
				b.Logf("steady state (after %d warm-up rounds: the last %d batches): %.2f CPU-s, %d page faults, %d GCs, %d allocations (%d MB)",
					min(warmup, rounds), res.SteadyBatches, res.SteadyCPU, res.SteadyMinFlt, res.SteadyNumGC, res.SteadyMallocs, res.SteadyAllocB>>20)
			}
		})
	}
}

func loadAvg() string {
	d, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(d))[:3], " ")
}

// runIngest publishes the backlog to a fresh embedded server with the
// collector's partitioned stream and runs one child collector over it.
func runIngest(b *testing.B, subjects []string, data [][]byte, parts, batches, warmup int) ingestResult {
	b.Helper()
	b.StopTimer()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	cfg := Defaults()
	cfg.Cluster.Partitions = parts
	pc := &Collector{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	if _, _, err := pc.ensureStream(context.Background(), js, true); err != nil { // as the collector creates it
		b.Fatal(err)
	}
	for i := range data {
		// with a Nats-Msg-Id as the gateways publish (internal/uplink/natsjs):
		// every delivery then carries a header block the client decodes
		if _, err := js.PublishAsync(subjects[i], data[i], jetstream.WithMsgID("gw-bench-"+strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 4095 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	spec, _ := json.Marshal(map[string]any{"URL": ns.URL(), "Partitions": parts, "Expect": batches, "Warmup": warmup, "Extra": os.Getenv("SMELTER_BENCH_EXTRA"),
		"Cluster": os.Getenv("SMELTER_BENCH_CLUSTER")})
	cmd := exec.Command(os.Args[0], "-test.run=^TestIngestChild$", "-test.v")
	if f := os.Getenv("SMELTER_BENCH_STRACE"); f != "" { // count the child's syscalls (slows it down)
		cmd = exec.Command("strace", append([]string{"-c", "-f", "-o", f}, cmd.Args...)...)
	}
	cmd.Env = append(os.Environ(), ingestChildEnv+"="+string(spec))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	b.StartTimer()
	if err := cmd.Run(); err != nil {
		b.Fatalf("child: %v\n%s", err, out.String())
	}
	if f := os.Getenv("SMELTER_BENCH_CHILDLOG"); f != "" {
		_ = os.WriteFile(f, []byte(out.String()), 0o600)
	}
	var res ingestResult
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "INGEST-RESULT "); ok {
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				b.Fatal(err)
			}
		}
	}
	if res.Batches == 0 {
		b.Fatalf("child reported nothing:\n%s", out.String())
	}
	return res
}

// processCollector is a collector with the default config and packs
// (no future-time clamp: the fleet's data time may run ahead) for feeding
// through process, without NATS.
func processCollector(tb testing.TB) *Collector {
	tb.Helper()
	cfg := Defaults()
	cfg.MaxFuture = 0
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		tb.Fatal(err)
	}
	c, err := New(cfg, set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkBytesPerSeries is the heap one asset signal costs with the
// dashboard's history rings full (rule state, KPI window, history, dedup
// and checkpoint bookkeeping included): 40 assets of the ingest fleet
// (SMELTER_BENCH_SERIES_ASSETS) polled every second for 62 minutes
// (both tiers full: 300 fine buckets of one reading, 240 coarse ones of
// 15) through the collector's process path, checkpoint records encoded
// every 2,048 batches; heap after GC over the number of series.
func BenchmarkBytesPerSeries(b *testing.B) {
	assets := benchEnvInt("SMELTER_BENCH_SERIES_ASSETS", 40)
	var per float64
	for b.Loop() {
		c := processCollector(b)
		before := heapInUse()
		sh := c.shard(0)
		var err error
		var cy cycle
		genIngest(assets, 3720, time.Second, func(subject string, data []byte) {
			c.process(sh, subject, data, time.Now(), &cy)
			if len(cy.batches) >= 2048 {
				sh.mu.Lock()
				cy.kv, err = sh.snapshot(cy.kv[:0], 0, false, nil)
				sh.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				cy.reset()
			}
		})
		cy = cycle{}
		series := c.live.Stats().Series
		per = float64(int64(heapInUse())-int64(before)) / float64(series)
		if f := os.Getenv("SMELTER_BENCH_MEMPROFILE"); f != "" {
			pf, err := os.Create(f)
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.WriteHeapProfile(pf)
			_ = pf.Close()
		}
		runtime.KeepAlive(c)
	}
	b.ReportMetric(per, "bytes/series")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCheckpointRecord is the CPU of checkpointing one asset: the
// record of a warm asset of the ingest fleet (rule latches and evaluator
// memory, KPI window, birth) built and encoded as commit writes it to the
// state bucket, without the network (a KV put with compare-and-set and its
// PubAck come on top). Reports the record's size.
func BenchmarkCheckpointRecord(b *testing.B) {
	const assets = 400
	c := processCollector(b)
	sh := c.shard(0)
	var cy cycle
	genIngest(assets, 120, time.Second, func(subject string, data []byte) { c.process(sh, subject, data, time.Now(), &cy) })
	var keys [][2]string
	sh.mu.Lock()
	sh.clearDirty()
	for _, v := range sh.engine.Assets() {
		keys = append(keys, [2]string{v.Site, v.ID})
	}
	sh.mu.Unlock()
	for _, format := range []string{"binary", "json"} {
		b.Run("format="+format, func(b *testing.B) {
			var err error
			bytes, records := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				sh.mu.Lock()
				for _, k := range keys[:64] {
					sh.dirtyKey(k[0], k[1])
				}
				cy.kv, err = sh.snapshot(cy.kv[:0], 0, format == "json", nil)
				sh.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				for _, w := range cy.kv {
					bytes += len(w.data)
				}
				records += len(cy.kv)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(records), "ns/record")
			b.ReportMetric(float64(bytes)/float64(records), "B/record")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestRecordEncodingMatchesMarshal: the checkpoint records of warm assets
// of every fleet class (rule latches and evaluator memory, KPI windows,
// active alerts) are byte for byte what json.Marshal writes, so the
// records written before and after decode alike.
func TestRecordEncodingMatchesMarshal(t *testing.T) {
	c := processCollector(t)
	sh := c.shard(0)
	var cy cycle
	genIngest(24, 80, 15*time.Second, func(subject string, data []byte) { c.process(sh, subject, data, time.Now(), &cy) })
	sh.mu.Lock()
	defer sh.mu.Unlock()
	views := sh.engine.Assets()
	for i, v := range views[:6] { // active alerts with text that needs escaping
		sh.setAlert(alert.Alert{Schema: alert.Schema, Key: alert.MakeKey(v.Site, v.ID, "r<"+strconv.Itoa(i)+">", ""), Site: v.Site, Asset: v.ID,
			State: alert.Raised, Severity: alert.Warn, Message: "ä \"quoted\" & more", RaisedAt: 1})
	}
	kpis := 0
	for _, v := range views {
		st, ok := sh.engine.Snapshot(v.Site, v.ID)
		if !ok {
			t.Fatalf("no state for %s", v.ID)
		}
		r := record{V: recordVersion, Rules: st}
		if ks, ok := sh.kpis.Snapshot(v.Site, v.ID); ok {
			r.KPI = &ks
			kpis++
		}
		for key := range sh.activeOf[[2]string{v.Site, v.ID}] {
			r.Alerts = append(r.Alerts, sh.active[key])
		}
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.encode()
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s: %v\n got %s\nwant %s", v.ID, err, got, want)
		}
	}
	if len(views) != 24 || kpis == 0 {
		t.Fatalf("%d assets, %d with KPI state", len(views), kpis)
	}
}

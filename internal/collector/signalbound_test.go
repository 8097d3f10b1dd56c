package collector

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// boundBatch is a batch of asset (class) with n signals named prefix1..n,
// every value v.
func boundBatch(class, asset, prefix string, seq uint64, ts int64, n int, v float64) *telemetry.Batch {
	b := &telemetry.Batch{Gateway: "gw-b", Seq: seq, TSGW: ts,
		Asset: telemetry.Asset{ID: asset, Class: class, Path: []string{"acme", "s1", "_", "_", "_"}}}
	for i := range n {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("%s%d", prefix, i+1), Value: v, Unit: "Cel", TS: ts})
	}
	return b
}

// The checkpoint record of an asset at the signal bound stays far below
// the 1 MiB max_payload of a default nats-server, in the worst case the
// default packs allow: a diesel engine whose signals all match the
// per-cylinder exhaust rules (exhaust_temp_cyl_*: a threshold and a
// bank-deviation expression over all of them) with a trip alert active on
// every one (an alert record per signal), and a generic asset of plain
// signals. Logged per signal for docs/collector.md; the bound is an upper
// limit, not a timing.
func TestRecordSizeAtSignalBound(t *testing.T) {
	for _, tc := range []struct {
		name, class, prefix string
		value               float64
		n                   int
		labels              bool // a birth first, its labels at the schema's totals per birth
	}{
		{"generic", "generic", "point_", 50, DefaultMaxSignalsPerAsset, false},
		{"diesel-all-tripped", "diesel_engine", "exhaust_temp_cyl_", 600, DefaultMaxSignalsPerAsset, false},
		{"diesel-all-tripped-at-limit", "diesel_engine", "exhaust_temp_cyl_", 600, MaxSignalsPerAssetLimit, false},
		{"generic-labels-at-limit", "generic", "point_", 50, MaxSignalsPerAssetLimit, true},
		{"diesel-all-tripped-labels-at-limit", "diesel_engine", "exhaust_temp_cyl_", 600, MaxSignalsPerAssetLimit, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := processCollector(t)
			c.cfg.MaxSignalsPerAsset = tc.n
			sh := c.shard(0)
			var cy cycle
			const t0 = int64(1_763_812_345_000)
			subject := telemetry.Subject("s1", tc.class, "a-1", telemetry.KindData)
			if tc.labels {
				// every label the schema allows one birth (MaxBirthLabels
				// labels, MaxBirthLabelBytes bytes), spread over the signals
				// as enum and write.allowed with the longest src
				bi := labelBirth(tc.class, "a-1", tc.prefix, tc.n, t0)
				data, err := telemetry.MarshalBirth(bi)
				if err != nil {
					t.Fatal(err)
				}
				c.process(sh, telemetry.Subject("s1", tc.class, "a-1", telemetry.KindBirth), data, time.Now(), &cy)
				if got := counterValue(t, c.m.malformed.WithLabelValues("bounds")); got != 0 {
					t.Fatalf("birth at the totals refused (%v)", got)
				}
			}
			for i := range 200 { // past every on delay: the trip alerts are raised
				b := boundBatch(tc.class, "a-1", tc.prefix, uint64(i+1), t0+int64(i)*1000, tc.n, tc.value)
				c.process(sh, subject, b.AppendJSON(nil), time.Now(), &cy)
			}
			sh.mu.Lock()
			nAlerts := len(sh.active)
			sh.mu.Unlock()
			recs := records(t, sh, false)
			data := recs[[2]string{"s1", "a-1"}]
			if len(data) == 0 {
				t.Fatal("no record")
			}
			t.Logf("%d signals, %d active alerts: record %d bytes (%.0f per signal)", tc.n, nAlerts, len(data), float64(len(data))/float64(tc.n))
			if tc.n == DefaultMaxSignalsPerAsset && len(data) > 512<<10 {
				t.Fatalf("record at the default bound %d bytes, want well under 1 MiB", len(data))
			}
			if len(data) > 1<<20-1024 {
				t.Fatalf("record at %d signals is %d bytes: over a default max_payload", tc.n, len(data))
			}
		})
	}
}

// labelBirth is a birth of asset (class) with n signals named prefix1..n,
// each with the longest src, and every label the schema allows one birth
// (telemetry.MaxBirthLabels labels of MaxBirthLabelBytes/MaxBirthLabels
// bytes) spread over them as enum and write.allowed.
func labelBirth(class, asset, prefix string, n int, ts int64) *telemetry.Birth {
	bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-b", Seq: 1, TSGW: ts,
		Asset: telemetry.AssetJSON{ID: asset, Class: class, Path: []string{"acme", "s1", "_", "_", "_"}}}
	size := telemetry.MaxBirthLabelBytes / telemetry.MaxBirthLabels
	for i := range n {
		bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("%s%d", prefix, i+1), Unit: "Cel",
			Src: strings.Repeat("s", telemetry.MaxSrcLen)})
	}
	for l := range telemetry.MaxBirthLabels {
		s := &bi.Signals[l%n]
		lbl := fmt.Sprintf("%0*d", size, l)
		if l/n%2 == 0 {
			s.Enum = append(s.Enum, lbl)
		} else {
			if s.Write == nil {
				s.Write = &telemetry.WriteLimits{}
			}
			s.Write.Allowed = append(s.Write.Allowed, lbl)
		}
	}
	return bi
}

// A gateway that invents signal names for one asset (the review's 28,000)
// no longer grows it: over an embedded nats-server, a birth listing more
// than max_signals_per_asset signals keeps its first ones, readings of
// further new signals are refused (counted by kind, one WARN per asset),
// the signals the asset holds keep evaluating, and its checkpoint record
// holds at most the bound and is written (not over max_payload). A
// restarted collector restores the record and goes on refusing.
func TestSignalsPerAssetBoundedEndToEnd(t *testing.T) {
	const max, batches, invented = 8, 20, 100
	ns, cfg := embeddedConfig(t)
	cfg.MaxSignalsPerAsset = max
	var lb logtest.Buffer
	run := func() (*Collector, func()) {
		c := newCollectorLog(t, cfg, &lb)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		wait.For(t, 10*time.Second, "collector ready", c.Ready)
		return c, func() { cancel(); <-done }
	}
	c, stop := run()
	defer func() { stop() }()

	js := jsClient(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub := func(subject string, data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	asset := func(id string) telemetry.AssetJSON {
		return telemetry.AssetJSON{ID: id, Class: "generic", Path: []string{"acme", "s1", "_", "_", "_"}}
	}
	t0 := time.Now().UnixMilli() - 60_000
	// gen-1's birth lists 10 signals: the first 8 are taken, sig_09 and sig_10 refused
	bi := telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-b", Asset: asset("gen-1"), TSGW: t0}
	for i := range max + 2 {
		bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("sig_%02d", i+1), Unit: "Cel"})
	}
	pub(telemetry.Subject("s1", "generic", "gen-1", telemetry.KindBirth), mustJSON(t, bi))
	// then batches with every born signal (the refused ones too) and 100
	// invented names each, for gen-1 and gen-2 (no birth: its first 8
	// signals in data are taken)
	seq := uint64(0)
	batch := func(id string, i int) []byte {
		seq++
		ts := t0 + int64(i+1)*1000
		b := telemetry.Batch{Gateway: "gw-b", Seq: seq, TSGW: ts, Asset: telemetry.Asset(asset(id))}
		for k := range max + 2 {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("sig_%02d", k+1), Value: float64(i), Unit: "Cel", TS: ts})
		}
		for k := range invented {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("invented_%d_%d", i, k), Value: 1, TS: ts})
		}
		return b.AppendJSON(nil)
	}
	for i := range batches {
		pub(telemetry.Subject("s1", "generic", "gen-1", telemetry.KindData), batch("gen-1", i))
		pub(telemetry.Subject("s1", "generic", "gen-2", telemetry.KindData), batch("gen-2", i))
	}
	wait.For(t, 30*time.Second, "every message evaluated", func() bool {
		return counterVec(c.m.ingested, "data") == 2*batches && counterVec(c.m.ingested, "birth") == 1
	})
	// refused: 2 birth signals; per batch 2+100 readings (gen-1), 2+100 (gen-2)
	if got := counterVec(c.m.sigRefused, "birth"); got != 2 {
		t.Errorf("birth signals refused %v, want 2", got)
	}
	if got, want := counterVec(c.m.sigRefused, "data"), float64(2*batches*(2+invented)); got != want {
		t.Errorf("readings refused %v, want %v", got, want)
	}
	for _, id := range []string{"gen-1", "gen-2"} {
		v, ok := c.Asset("s1", id)
		if !ok {
			t.Fatalf("%s not tracked", id)
		}
		if len(v.Signals) != max {
			t.Fatalf("%s holds %d signals, want %d: %+v", id, len(v.Signals), max, v.Signals)
		}
		for k, s := range v.Signals { // the first signals, still evaluated: the last batch's value
			if want := fmt.Sprintf("sig_%02d", k+1); s.Signal != want || s.Value != batches-1 || !s.Valid {
				t.Errorf("%s signal %d = %+v, want %s = %d, valid", id, k, s, want, batches-1)
			}
		}
		if want := uint64(batches * (2 + invented)); id == "gen-2" && v.SignalsRefused != want || id == "gen-1" && v.SignalsRefused != want+2 {
			t.Errorf("%s: %d refused in its view", id, v.SignalsRefused)
		}
	}
	// the API shows the count with the asset
	rec := httptest.NewRecorder()
	c.HTTPHandler("").ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/assets/s1/gen-1", nil))
	if want := fmt.Sprintf(`"signals_refused":%d`, batches*(2+invented)+2); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
		t.Errorf("GET /api/v1/assets/s1/gen-1: %d %s, want %s", rec.Code, rec.Body, want)
	}
	// one WARN per asset: the first refusal (then at most one a minute)
	wait.For(t, 10*time.Second, "refusals logged", func() bool {
		return strings.Count(lb.String(), `level=WARN msg="signals refused`) >= 2
	})
	if logs := lb.String(); strings.Count(logs, `level=WARN msg="signals refused`) != 2 ||
		!strings.Contains(logs, "asset=gen-1 class=generic gateway=gw-b kind=birth refused=2 signal=sig_09 signals=8 max_signals_per_asset=8") ||
		!strings.Contains(logs, "asset=gen-2 class=generic gateway=gw-b kind=data refused=102 signal=sig_09 signals=8 max_signals_per_asset=8") {
		t.Errorf("refusals logged:\n%s", grepLines(logs, "signals refused"))
	}
	// the records are written, with at most the bound
	kv, err := js.KeyValue(ctx, cfg.stateBucket())
	if err != nil {
		t.Fatal(err)
	}
	stored := func(id string) (record, int) {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys.Keys() {
			if strings.HasSuffix(k, ".s1."+id) {
				e, err := kv.Get(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				r, err := decodeRecord(e.Value())
				if err != nil {
					t.Fatal(err)
				}
				return r, len(e.Value())
			}
		}
		return record{}, 0
	}
	for _, id := range []string{"gen-1", "gen-2"} {
		var r record
		var n int
		wait.For(t, 10*time.Second, id+"'s last batch checkpointed", func() bool {
			r, n = stored(id)
			return len(r.Rules.Signals) > 0 && r.Rules.LastTSGW == t0+batches*1000
		})
		if len(r.Rules.Signals) != max {
			t.Errorf("%s's record holds %d signals (%d bytes), want %d", id, len(r.Rules.Signals), n, max)
		}
	}
	if e := counter(c.m.pubErrors); e != 0 {
		t.Errorf("%v publish errors", e)
	}

	// a restart restores the bounded assets and keeps refusing new names
	stop()
	c, stop = run()
	pub(telemetry.Subject("s1", "generic", "gen-2", telemetry.KindData), batch("gen-2", batches))
	wait.For(t, 30*time.Second, "the batch after the restart evaluated", func() bool {
		return counterVec(c.m.ingested, "data") == 1
	})
	if got, want := counterVec(c.m.sigRefused, "data"), float64(2+invented); got != want {
		t.Errorf("after the restart: %v readings refused, want %v", got, want)
	}
	if v, _ := c.Asset("s1", "gen-2"); len(v.Signals) != max || v.Signals[0].Value != batches {
		t.Errorf("after the restart gen-2 holds %+v", v.Signals)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// BenchmarkInventedSignalNames is the review's case: one generic asset
// sent 28,000 invented signal names (28 batches of 1,000 new names, then
// the same names again), through the collector's process path, with the
// default bound and without one (the collector before the bound). It
// reports the heap the asset took (after GC), the signals it holds and its
// checkpoint record's size.
func BenchmarkInventedSignalNames(b *testing.B) {
	for _, bound := range []int{DefaultMaxSignalsPerAsset, 0} {
		name := fmt.Sprintf("max_signals_per_asset=%d", bound)
		if bound == 0 {
			name = "unbounded"
		}
		b.Run(name, func(b *testing.B) {
			var heap, rec float64
			var held int
			for b.Loop() {
				c := processCollector(b)
				c.cfg.MaxSignalsPerAsset = bound // 0: no bound (LimitSignals and LimitBirth take none)
				sh := c.shard(0)
				var cy cycle
				before := heapInUse()
				const t0 = int64(1_763_812_345_000)
				subject := telemetry.Subject("s1", "generic", "a-1", telemetry.KindData)
				for round := range 2 {
					for i := range 28 {
						seq := uint64(round*28 + i + 1)
						bt := boundBatch("generic", "a-1", fmt.Sprintf("invented_%d_", i), seq, t0+int64(seq)*1000, 1000, 1)
						c.process(sh, subject, bt.AppendJSON(nil), time.Now(), &cy)
					}
				}
				heap = float64(int64(heapInUse()) - int64(before))
				sh.mu.Lock()
				v, _ := sh.engine.Asset("s1", "a-1")
				sh.dirtyKey("s1", "a-1")
				ws, err := sh.snapshot(nil, 0, false, nil)
				sh.mu.Unlock()
				if err != nil || len(ws) != 1 {
					b.Fatal(err, len(ws))
				}
				held, rec = len(v.Signals), float64(len(ws[0].data))
				runtime.KeepAlive(c)
			}
			b.ReportMetric(heap/1e6, "heap-MB")
			b.ReportMetric(float64(held), "signals")
			b.ReportMetric(rec/1e3, "record-kB")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// The log's sample of a refused signal is cut to 64 bytes: a name beyond
// the schema's bounds may be as long as a message.
func TestRefusedSignalLogSampleCut(t *testing.T) {
	var lb logtest.Buffer
	cfg := Defaults()
	cfg.MaxSignalsPerAsset = 1
	c := newCollectorLog(t, cfg, &lb)
	sh := c.shard(0)
	var cy cycle
	ts := time.Now().UnixMilli()
	b := boundBatch("generic", "a-1", "s", 1, ts, 1, 1)
	long := strings.Repeat("x", 1000)
	b.Readings = append(b.Readings, telemetry.Reading{Signal: long, Value: 1, TS: ts})
	c.process(sh, telemetry.Subject("s1", "generic", "a-1", telemetry.KindData), b.AppendJSON(nil), time.Now(), &cy)
	// a name that long breaks the schema's bounds: refused as invalid, the
	// sample cut to 64 bytes
	logs := grepLines(lb.String(), "readings refused")
	if !strings.Contains(logs, "signal="+strings.Repeat("x", 64)+" ") || strings.Contains(logs, strings.Repeat("x", 65)) {
		t.Fatalf("logged: %s", logs)
	}
}

// BenchmarkBytesPerSignalAtBound measures the heap of assets filled to the
// default max_signals_per_asset with names of the longest length the schema
// allows (telemetry.MaxSignalLen) and of 8 bytes: 100 generic assets of 256
// signals, two batches each (rule state, KPI inputs, dashboard store with
// its rings just begun; the rings' full cost is BytesPerSeries). It is the
// per-signal cost behind the worst case in docs/collector.md ("Bounded
// memory"): max_assets x max_signals_per_asset x bytes/signal.
func BenchmarkBytesPerSignalAtBound(b *testing.B) {
	const assets, n = 100, DefaultMaxSignalsPerAsset
	for _, nameLen := range []int{8, telemetry.MaxSignalLen} {
		b.Run(fmt.Sprintf("name=%dB", nameLen), func(b *testing.B) {
			var per float64
			for b.Loop() {
				c := processCollector(b)
				sh := c.shard(0)
				var cy cycle
				before := heapInUse()
				const t0 = int64(1_763_812_345_000)
				for a := range assets {
					id := fmt.Sprintf("g-%d", a)
					subject := telemetry.Subject("s1", "generic", id, telemetry.KindData)
					for round := range 2 {
						ts := t0 + int64(round)*1000
						bt := boundBatch("generic", id, "", uint64(a*2+round+1), ts, n, 1)
						for k := range bt.Readings {
							s := fmt.Sprintf("%d_", k)
							bt.Readings[k].Signal = s + strings.Repeat("s", nameLen-len(s))
						}
						c.process(sh, subject, bt.AppendJSON(nil), time.Now(), &cy)
					}
				}
				per = float64(int64(heapInUse())-int64(before)) / (assets * n)
				if v, _ := c.Asset("s1", "g-0"); len(v.Signals) != n {
					b.Fatalf("%d signals held", len(v.Signals))
				}
				runtime.KeepAlive(c)
			}
			b.ReportMetric(per, "bytes/signal")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkBytesPerAssetBirthLabels is the heap of an asset whose birth
// carries every label the schema's totals allow one birth (2,048 labels,
// 32 KiB) on 256 signals with the longest src, against the same birth
// without labels (review 3 A: ~29 MB an asset within the old per-signal
// bounds): 100 assets through the process path, heap after GC.
func BenchmarkBytesPerAssetBirthLabels(b *testing.B) {
	const assets, n = 100, DefaultMaxSignalsPerAsset
	for _, labels := range []bool{false, true} {
		b.Run(fmt.Sprintf("labels=%v", labels), func(b *testing.B) {
			var per float64
			for b.Loop() {
				c := processCollector(b)
				sh := c.shard(0)
				var cy cycle
				before := heapInUse()
				const t0 = int64(1_763_812_345_000)
				for a := range assets {
					id := fmt.Sprintf("g-%d", a)
					bi := labelBirth("generic", id, "point_", n, t0)
					if !labels {
						for i := range bi.Signals {
							bi.Signals[i].Enum, bi.Signals[i].Write = nil, nil
						}
					}
					data, err := telemetry.MarshalBirth(bi)
					if err != nil {
						b.Fatal(err)
					}
					c.process(sh, telemetry.Subject("s1", "generic", id, telemetry.KindBirth), data, time.Now(), &cy)
				}
				per = float64(int64(heapInUse())-int64(before)) / assets
				if v, _ := c.Asset("s1", "g-0"); labels && len(v.Writable) != n {
					b.Fatalf("%d writable signals held", len(v.Writable))
				}
				runtime.KeepAlive(c)
			}
			b.ReportMetric(per, "bytes/asset")
			b.ReportMetric(0, "ns/op")
		})
	}
}

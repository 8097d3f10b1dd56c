package dashboard

import (
	"fmt"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

func batch(seq uint64, ts int64, n int) *telemetry.Batch {
	b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: "m-1", Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}}}
	for i := range n {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("sig_%02d", i), Value: float64(seq) + float64(i), Unit: "V", TS: ts})
	}
	return b
}

func TestTierWrapOutOfOrderAndGaps(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	l := NewLive(func() time.Time { return now })
	base := now.UnixMilli() - 1_000_000
	for i := range 400 { // 400 s at 1 s: the fine ring (300) wraps
		l.ObserveBatch(batch(uint64(i+1), base+int64(i)*1000, 2))
	}
	// older than the newest bucket: dropped and counted
	l.ObserveBatch(batch(500, base+10_000, 2))
	if st := l.Stats(); st.OutOfOrder != 2 || st.Series != 2 {
		t.Fatalf("stats %+v, want 2 out of order readings, 2 series", st)
	}
	// a bad reading in a new bucket is a gap, the next good one a value
	b := batch(401, base+400_000, 1)
	b.Readings[0].Quality, b.Readings[0].Value = telemetry.QualityBad, 0
	l.ObserveBatch(b)
	pts, _, _, ok := l.History("s1", "m-1", []string{"sig_00"}, 0)
	if !ok {
		t.Fatal("asset unknown")
	}
	p := pts["sig_00"]
	fine := p[len(p)-300:]
	if fine[0].T != base+101_000 || *fine[len(fine)-2].V != 400 {
		t.Errorf("fine ring after wrap: first %d (want %d), last value %v", fine[0].T, base+101_000, *fine[len(fine)-2].V)
	}
	if g := fine[len(fine)-1]; g.V != nil || g.Bad != 1 || g.Quality != "bad" {
		t.Errorf("gap point %+v", g)
	}
	// the coarse tier covers what the fine one lost: 15 s buckets up to it
	if p[0].T != base-base%15_000 || p[0].N == 0 {
		t.Errorf("first coarse point %+v (base %d)", p[0], base)
	}
	for i := 1; i < len(p); i++ {
		if p[i].T <= p[i-1].T {
			t.Fatalf("not increasing at %d", i)
		}
	}
}

func TestEventLogLost(t *testing.T) {
	l := NewLive(nil)
	for range EventLog + 10 {
		l.appendEvent("kpi", []byte(`{}`))
	}
	if _, _, lost := l.EventsSince(5); !lost {
		t.Error("events 6..10 left the log: want lost")
	}
	evs, _, lost := l.EventsSince(l.LastEventID() - 3)
	if lost || len(evs) != 3 || evs[2].ID != l.LastEventID() {
		t.Errorf("last 3 events: %d lost %v", len(evs), lost)
	}
}

// BenchmarkObserveBatch is the collector's per-batch cost of keeping the
// dashboard history (20 readings per batch).
func BenchmarkObserveBatch(b *testing.B) {
	l := NewLive(nil)
	bs := make([]*telemetry.Batch, 1000)
	for i := range bs {
		bs[i] = batch(uint64(i+1), 1_800_000_000_000+int64(i)*1000, 20)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		x := bs[i%len(bs)]
		x.Readings[0].TS += int64(len(bs)) * 1000 // keep time moving forward
		for j := range x.Readings {
			x.Readings[j].TS = x.Readings[0].TS
		}
		l.ObserveBatch(x)
		i++
	}
}

// BenchmarkObserveBatchFleet is ObserveBatch over a fleet observed round
// robin, one batch of 10 readings (or 1) per asset per round, 15 s apart in data
// time (as the collector's ingest benchmark sends them): with 10,000
// assets the store's state is far larger than the caches, so the cost is
// mostly memory latency, as in the collector. Reports ns per reading.
func BenchmarkObserveBatchFleet(b *testing.B) {
	for _, c := range []struct{ assets, readings int }{{100, 10}, {10_000, 10}, {10_000, 1}} {
		assets, readings := c.assets, c.readings
		b.Run(fmt.Sprintf("assets=%d/readings=%d", assets, readings), func(b *testing.B) {
			l := NewLive(nil)
			bs := make([]*telemetry.Batch, assets)
			for i := range bs {
				x := &telemetry.Batch{Gateway: fmt.Sprintf("gw-%03d", i/50), Seq: 1, TSGW: 1_800_000_000_000,
					Asset: telemetry.Asset{ID: fmt.Sprintf("motor-%05d", i), Class: "motor", Path: []string{"bench", "plant", "area", "line", "_"}}}
				for j := range readings {
					x.Readings = append(x.Readings, telemetry.Reading{Signal: fmt.Sprintf("signal_name_%02d", j), Value: 400 + float64(j), Unit: "V",
						TS: x.TSGW})
				}
				bs[i] = x
			}
			observe := func(x *telemetry.Batch) {
				x.Seq++
				x.TSGW += 15_000
				for j := range x.Readings {
					x.Readings[j].TS = x.TSGW
					x.Readings[j].Value += 0.5
				}
				l.ObserveBatch(x)
			}
			for _, x := range bs { // every asset and series created
				observe(x)
			}
			i := 0
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				observe(bs[i%len(bs)])
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*readings), "ns/reading")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*readings), "cpu-ns/reading")
		})
	}
}

// BenchmarkObserveBatchCollector is ObserveBatchClock as the collector
// calls it in its ingest benchmark (BenchmarkIngest): 10,000 assets of 10
// signals, 50 to a gateway, one batch per asset per round, round robin,
// rounds 15 s apart in data time, so the store's state is out of the
// caches. Unlike BenchmarkObserveBatchFleet the batch is hot, as a batch
// the collector has just decoded is: one batch value refilled for each
// call, its names views into one small buffer. rounds is how many rounds
// the store has seen before the timed ones (30: the ingest benchmark's
// run, its tiers still growing; 310: their rings full and wrapping); run
// it with -benchtime 100000x (10 rounds) to keep them so.
func BenchmarkObserveBatchCollector(b *testing.B) {
	const assets, signals = 10_000, 10
	for _, warm := range []int{30, 310} {
		b.Run(fmt.Sprintf("assets=%d/rounds=%d", assets, warm), func(b *testing.B) {
			var ids, gws []string
			for i := range assets {
				ids = append(ids, fmt.Sprintf("motor-%05d", i))
				gws = append(gws, fmt.Sprintf("gw-%03d", i/50))
			}
			x := &telemetry.Batch{Asset: telemetry.Asset{Class: "motor", Path: []string{"bench", "plant", "area", "line", "_"}}}
			for j := range signals {
				x.Readings = append(x.Readings, telemetry.Reading{Signal: fmt.Sprintf("signal_name_%02d", j), Unit: "V"})
			}
			const t0 = 1_800_000_000_000
			l := NewLive(func() time.Time { return time.UnixMilli(t0) })
			seq := make([]uint64, assets/50+1)
			k := 0 // batches observed
			observe := func() {
				a, round := k%assets, k/assets
				x.Asset.ID, x.Gateway = ids[a], gws[a]
				seq[a/50]++
				x.Seq, x.TSGW = seq[a/50], t0+int64(round)*15_000
				for j := range x.Readings {
					x.Readings[j].TS = x.TSGW - 20
					x.Readings[j].Value = 400 + float64(j) + float64(k%7)*0.5
				}
				l.ObserveBatchClock(x, false, Clock{TSGW: x.TSGW, Arrival: x.TSGW, Live: true})
				k++
			}
			for range warm * assets {
				observe()
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				observe()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*signals), "cpu-ns/reading")
		})
	}
}

// TestDataClockFollowsTheGateway: a demo plant clock set to 09:00 while the
// wall says 23:00, running 60 times faster than real time. Ages are judged
// on the gateway's data clock (its newest ts_gw advanced at its measured
// rate), so they are neither negative nor hours off.
func TestDataClockFollowsTheGateway(t *testing.T) {
	wall := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	plant := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC).UnixMilli()
	seq := uint64(0)
	for range 40 { // 10 s of wall time, a batch every 250 ms: 15 s of plant time each
		seq++
		l.ObserveBatch(batch(seq, plant, 1))
		plant += 15_000
		wall = wall.Add(250 * time.Millisecond)
	}
	last := plant - 15_000
	dn, rate, ok := l.DataClock("s1", "m-1", wall.UnixMilli())
	if !ok || rate < 59 || rate > 61 {
		t.Fatalf("rate %v (ok %v), want 60", rate, ok)
	}
	// 250 ms of wall time since the last batch = 15 s of plant time
	if d := dn - last; d < 14_000 || d > 16_000 {
		t.Errorf("data clock %d ms after the last batch, want ~15000", d)
	}
	if _, _, ok := l.DataClock("s1", "nope", wall.UnixMilli()); ok {
		t.Error("unknown asset has a data clock")
	}
}

// A birth that lists signals drops the history of the signals it does not
// list (as the rules drop their state): births listing ever other names
// cannot grow an asset's series; a nameplate-only birth changes nothing.
func TestBirthDropsUnlistedSeries(t *testing.T) {
	l := NewLive(nil)
	birth := func(names ...string) {
		bi := &telemetry.Birth{Gateway: "gw-1", Asset: telemetry.AssetJSON{ID: "m-1", Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}}}
		for _, n := range names {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: n})
		}
		l.ObserveBirth(bi)
	}
	ts := time.Now().UnixMilli()
	l.ObserveBatch(batch(1, ts, 4)) // sig_00..sig_03
	birth()
	if n := l.Stats().Series; n != 4 {
		t.Fatalf("%d series after a nameplate-only birth, want 4", n)
	}
	birth("sig_01", "sig_03", "other")
	if n := l.Stats().Series; n != 2 {
		t.Fatalf("%d series after the birth, want 2", n)
	}
	l.ObserveBatch(batch(2, ts+1000, 4)) // the batch brings sig_00 and sig_02 back, fresh
	if n := l.Stats().Series; n != 4 {
		t.Fatalf("%d series after the next batch, want 4", n)
	}
}

// cpuTime is the process's user and system CPU time in ns (on a shared
// machine a steadier measure than the wall time of a benchmark loop).
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestLateBatchKeepsTheAssetsGateway (review4 F7): a batch the rules did
// not evaluate (the old gateway's backlog, older than the asset's newest)
// counts for its gateway but leaves the asset on the gateway of its newest
// evaluated batch: Received names it, and the data clock stays its clock
// (before, both moved to the gateway the asset left).
func TestLateBatchKeepsTheAssetsGateway(t *testing.T) {
	wall := time.UnixMilli(1_800_000_000_000)
	l := NewLive(func() time.Time { return wall })
	moved := batch(1, wall.UnixMilli(), 1)
	moved.Gateway = "gw-2"
	l.ObserveBatch(moved)
	late := batch(7, wall.UnixMilli()-3_600_000, 1) // gw-1, an hour old
	l.ObserveLateBatch(late)
	if _, gw := l.Received("s1", "m-1"); gw != "gw-2" {
		t.Errorf("asset on %q after the old gateway's late batch, want gw-2", gw)
	}
	if dn, _, ok := l.DataClock("s1", "m-1", wall.UnixMilli()); !ok || dn != wall.UnixMilli() {
		t.Errorf("data clock %d (ok %v), want gw-2's (%d)", dn, ok, wall.UnixMilli())
	}
	gws := l.Gateways()
	if len(gws) != 2 || gws[0].ID != "gw-1" || gws[0].Batches != 1 || gws[0].LastSeq != 7 {
		t.Errorf("the late batch not counted for gw-1: %+v", gws)
	}
}

// TestObserveBatchAtMatchesLookup: batches observed through an
// AssetHandle leave the store as the same batches observed by lookup
// (late ones too), and the handle, filled by the first, stays on the
// asset's one entry.
func TestObserveBatchAtMatchesLookup(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	clock := func() time.Time { return now }
	byKey, byHandle := NewLive(clock), NewLive(clock)
	var h AssetHandle
	base := now.UnixMilli() - 100_000
	for i := range 60 {
		b := batch(uint64(i+1), base+int64(i)*1000, 3)
		late := i%7 == 6
		if late {
			b.Gateway, b.TSGW = "gw-2", base // a backlog of another gateway
		}
		c := Clock{TSGW: b.TSGW, Arrival: now.UnixMilli(), Live: true}
		byKey.ObserveBatchClock(b, late, c)
		byHandle.ObserveBatchAt(&h, b, late, c)
		if h.a == nil || h.a != byHandle.assets[assetKey{"s1", "m-1"}] {
			t.Fatalf("batch %d: the handle is not the asset's entry", i)
		}
	}
	want, _, _, _ := byKey.History("s1", "m-1", []string{"sig_00", "sig_02"}, 0)
	got, _, _, ok := byHandle.History("s1", "m-1", []string{"sig_00", "sig_02"}, 0)
	if !ok || !reflect.DeepEqual(got, want) || len(got["sig_00"]) == 0 {
		t.Fatalf("history through the handle %v, want %v", got, want)
	}
	wr, wg := byKey.Received("s1", "m-1")
	gr, gg := byHandle.Received("s1", "m-1")
	if wr != gr || wg != gg || gg != "gw-1" {
		t.Fatalf("received %d %q, want %d %q (gw-1)", gr, gg, wr, wg)
	}
	if !reflect.DeepEqual(byKey.Gateways(), byHandle.Gateways()) {
		t.Fatalf("gateways %v, want %v", byHandle.Gateways(), byKey.Gateways())
	}
}

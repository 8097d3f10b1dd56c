package telemetry

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
)

// classBirths returns one birth per equipment class of the catalog, as a
// gateway announces it: every signal of the class with its unit, range
// and states, an interval, a source address, write limits on some, and
// the class's nameplate ratings. rng varies the values.
func classBirths(tb testing.TB, rng *rand.Rand) []*Birth {
	tb.Helper()
	cat := catalog.Default()
	var out []*Birth
	for n, class := range cat.ClassNames() {
		cl, _ := cat.Class(class)
		b := &Birth{Gateway: "gw-01", Seq: uint64(1 + rng.IntN(1_000_000)), TSGW: 1_700_000_000_000 + rng.Int64N(1e9),
			Asset:    AssetJSON{ID: fmt.Sprintf("%s-%03d", class, n), Class: class, Path: []string{"acme", "plant-1", "area-2", "line-3", "cell"}},
			Protocol: "modbus"}
		if len(cl.Nameplate) > 0 {
			b.Nameplate = map[string]float64{}
			for i, r := range cl.Nameplate {
				b.Nameplate[r] = float64(rng.IntN(5000)) / float64(1+i%3*10)
			}
		}
		for i, name := range cl.SignalNames() {
			s := cl.Signals[name]
			si := SignalInfo{Signal: name, Unit: s.Unit, Min: s.Min, Max: s.Max, IntervalMS: int64(1000 * (1 + i%5)),
				Src: fmt.Sprintf("hr:%d", 40001+2*i), Enum: s.States}
			if i%4 == 1 {
				w := &WriteLimits{MaxStep: float64(rng.IntN(100)) / 8, MinIntervalMS: int64(rng.IntN(3)) * 500}
				if s.IsState() {
					w.Allowed = s.States[:1]
				} else {
					w.Min, w.Max = s.Min, s.Max
				}
				si.Write = w
			}
			b.Signals = append(b.Signals, si)
		}
		out = append(out, b)
	}
	return out
}

// BenchmarkDecodeBirth decodes the births of every catalog class in turn;
// reports ns per signal besides ns per birth, and the process's CPU ns
// per birth (steadier on a shared machine; GC included).
func BenchmarkDecodeBirth(b *testing.B) {
	births := classBirths(b, rand.New(rand.NewPCG(1, 2)))
	var data [][]byte
	sigs := 0
	for _, bi := range births {
		d, err := MarshalBirth(bi)
		if err != nil {
			b.Fatal(err)
		}
		data = append(data, d)
		sigs += len(bi.Signals)
	}
	b.ReportAllocs()
	i := 0
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := DecodeBirth(data[i%len(data)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*float64(len(data))/float64(sigs), "ns/signal")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

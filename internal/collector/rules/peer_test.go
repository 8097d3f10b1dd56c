package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// TestPeerGroupMedianMatchesScan drives groups of up to 2,000 members
// through random updates (20,000; 4,000 for 2,000 members), pauses,
// silences (members left behind the age window, some ahead of it),
// rejoins and duplicate values, and requires the tree median and peer
// count to equal the scan's exactly.
func TestPeerGroupMedianMatchesScan(t *testing.T) {
	for _, size := range []int{1, 2, 3, 10, 257, 2000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(size), 99))
			g := newPeerGroup()
			ids := make([]string, size)
			ms := make([]*peerMember, size)
			for i := range ids {
				ids[i] = fmt.Sprintf("s%d", i)
				ms[i] = g.join(ids[i])
			}
			const maxAge = 300_000
			now := int64(1_000_000_000)
			var scratch, scan []float64
			steps := 20_000
			if size > 1000 {
				steps = 4_000 // each check scans the group (the reference)
			}
			for step := range steps {
				i := rng.IntN(size)
				now += int64(rng.IntN(200))
				switch r := rng.IntN(100); {
				case r < 3:
					g.set(ms[i], ms[i].v, 0) // paused
					continue
				case r < 4:
					ms[i] = g.join(ids[i]) // a restored asset rejoins
					continue
				case r < 6 && size > 50: // silent for long: far behind (or ahead of) the others
					g.set(ms[i], float64(rng.IntN(20)), now-int64(rng.IntN(3))*maxAge)
					continue
				case r < 7:
					g.set(ms[i], float64(rng.IntN(20)), now+maxAge+1+int64(rng.IntN(1000)))
					continue
				}
				v := float64(rng.IntN(40)) / 4 // many equal values
				ts := now - int64(rng.IntN(2*maxAge))
				g.set(ms[i], v, ts)
				minPeers := 1 + rng.IntN(3)
				got, gn := g.median(ms[i], ts, maxAge, minPeers, &scratch)
				want, wn := g.scanMedian(ms[i], ts, maxAge, minPeers, &scan)
				if got != want || gn != wn {
					t.Fatalf("step %d: tree median %v of %d peers, scan %v of %d", step, got, gn, want, wn)
				}
			}
		})
	}
}

// TestPeerRule2000Strings: 2,000 PV strings on one inverter, ten of them
// weak; exactly the ten are raised after the 30 min on-delay, each
// against the median of 1,999 peers.
func TestPeerRule2000Strings(t *testing.T) {
	h := newHarness(t, true, "")
	const n = 2000
	weak := func(i int) bool { return i%200 == 7 }
	for i := range n {
		h.e.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: fmt.Sprintf("pv-%04d", i), Class: "pv_string", Path: []string{"acme", "site1"}},
			Nameplate: map[string]float64{"inverter": 1, "rated_power": 5}}, 0,
			nil)

	}
	raised := map[string]alert.Alert{}
	for s := 0; s <= 31*60; s += 60 {
		for i := range n {
			cur := 9.0 + float64((i*7+s)%13)*0.01
			if weak(i) {
				cur = 6.5
			}
			for _, a := range h.feed("pv_string", fmt.Sprintf("pv-%04d", i), sec(s), "string_current", cur, "irradiance_poa", 800.0) {
				if a.Rule != "string_underperformance" {
					continue
				}
				if a.State != alert.Raised || !weak(i) {
					t.Fatalf("unexpected %s %s", a.State, a.Message)
				}
				if s < 30*60 {
					t.Fatalf("raised before the on-delay, at %d s", s)
				}
				raised[a.Asset] = a
			}
		}
	}
	if len(raised) != 10 {
		t.Fatalf("raised %d strings, want the 10 weak ones", len(raised))
	}
	for _, a := range raised {
		if !strings.Contains(a.Message, "1999 peers") || a.Values["peer_median"] < 9 || a.Values["peer_median"] > 9.13 {
			t.Fatalf("%s: %v", a.Message, a.Values)
		}
	}
}

// BenchmarkPeerRule is the cost of one reading of a PV string in a group
// of size strings on one inverter (the peer rule's median and the rest
// of the default pv_string pack).
func BenchmarkPeerRule(b *testing.B) {
	for _, size := range []int{20, 2000} {
		b.Run(fmt.Sprintf("strings=%d", size), func(b *testing.B) {
			h := newHarness(b, true, "")
			for i := range size {
				h.e.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: fmt.Sprintf("pv-%04d", i), Class: "pv_string", Path: []string{"acme", "site1"}},
					Nameplate: map[string]float64{"inverter": 1, "rated_power": 5}}, 0,
					nil)

			}
			batches := make([]*telemetry.Batch, size)
			for i := range batches {
				batches[i] = &telemetry.Batch{Gateway: "gw", Asset: telemetry.Asset{ID: fmt.Sprintf("pv-%04d", i), Class: "pv_string", Path: []string{"acme", "site1", "_", "_", "_"}},
					Readings: []telemetry.Reading{{Signal: "string_current", Value: 9}, {Signal: "irradiance_poa", Value: 800}}}
			}
			var out []alert.Alert
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				bt := batches[i%size]
				ts := sec(i / size)
				bt.TSGW, bt.Readings[0].TS, bt.Readings[1].TS = ts, ts, ts
				bt.Readings[0].Value = 9 + float64(i%17)*0.01
				out = h.e.Process(bt, 0, out[:0])
				i++
			}
		})
	}
}

package rules

import (
	"math"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
)

// stuckRule is the shipped air compressor pack's stuck pressure rule, with
// extra fields added.
func stuckRule(extra string) string {
	return `
version: 1
rules:
  - name: stuck
    kind: stuck
    class: air_compressor
    signal: discharge_pressure
    polls: 30
    resolution: 0.0005
` + extra
}

// loadCycle is a discharge pressure polled every 100 ms through a load
// cycle: 5 s flat at the top (within the resolution), 5 s falling by
// 0.01 MPa, 5 s rising again.
func loadCycle(ms int64) float64 {
	switch p := ms % 15000; {
	case p < 5000:
		return 0.7 + 0.0001*float64(p%300)/300
	case p < 10000:
		return 0.7 - 0.01*float64(p-5000)/5000
	default:
		return 0.69 + 0.01*float64(p-10000)/5000
	}
}

// TestStuckMinSpanAtFastPolls: at 100 ms polls a stuck rule of 30 polls
// judged 3 s, and the flat top of a load cycle raised and cleared it within
// a few hundred ms, again and again (bbtest3 F13). With min_span (default
// 30 s) the window covers 30 s: the cycle raises nothing, and a frozen
// sensor is reported once it has been flat for 30 s, not before.
func TestStuckMinSpanAtFastPolls(t *testing.T) {
	count := func(h *harness, from, to int64, v func(ms int64) float64) (raised int, first int64) {
		for ms := from; ms < to; ms += 100 {
			for _, a := range h.feed("air_compressor", "ac-1", t0+ms, "discharge_pressure", v(ms)) {
				if a.State == alert.Raised {
					if raised++; raised == 1 {
						first = ms
					}
				}
			}
		}
		return raised, first
	}
	t.Run("min_span 0s: the load cycle chatters", func(t *testing.T) {
		h := newHarness(t, false, stuckRule("    min_span: 0s\n"))
		if n, _ := count(h, 0, 120000, loadCycle); n < 5 {
			t.Fatalf("%d stuck alerts over 8 load cycles at min_span 0s, want one a cycle (the case min_span is for)", n)
		}
	})
	h := newHarness(t, false, stuckRule(""))
	if n, _ := count(h, 0, 120000, loadCycle); n != 0 {
		t.Fatalf("%d stuck alerts over 8 load cycles with the default min_span, want none", n)
	}
	frozen := func(int64) float64 { return 0.6932 }
	const from = 120000
	n, first := count(h, from, from+60000, frozen)
	if n != 1 {
		t.Fatalf("%d stuck alerts over 60 s of a frozen sensor, want 1", n)
	}
	if d := first - from; d < 29000 || d > 32000 {
		t.Fatalf("raised %d ms after the value froze, want about 30 s (min_span)", d)
	}
	var cleared bool
	for _, a := range h.feed("air_compressor", "ac-1", t0+from+60000, "discharge_pressure", 0.71) {
		cleared = cleared || a.State == alert.Cleared
	}
	if !cleared {
		t.Fatal("not cleared by a reading 0.017 MPa off the frozen value")
	}
}

// TestStuckSlowPollsKeepPolls: at polls slower than a slot's slice every
// reading has a slot: 30 polls at 5 s judge 150 s, as before min_span.
func TestStuckSlowPollsKeepPolls(t *testing.T) {
	h := newHarness(t, false, stuckRule(""))
	for i := range 29 {
		none(t, h.feed("air_compressor", "ac-1", t0+int64(i)*5000, "discharge_pressure", 0.7), "window filling")
	}
	only(t, h.feed("air_compressor", "ac-1", t0+29*5000, "discharge_pressure", 0.7), alert.Raised, alert.Warn)
}

// TestStuckRecordOfEarlierRelease: a checkpoint written before min_span
// (head, n, spread and one value a poll) restores into the slots: the
// window goes on where it was.
func TestStuckRecordOfEarlierRelease(t *testing.T) {
	f, err := Parse("test.yaml", []byte(stuckRule("")), catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	r := f.Rules[0]
	if r.MinSpan != 30000 {
		t.Fatalf("default min_span = %d ms, want 30000", r.MinSpan)
	}
	old := []float64{7, 30, 0}
	for range 30 {
		old = append(old, 0.7)
	}
	ev := newStuck(r)
	loadEval(ev, r, old)
	in := &inst{r: r, impl: ev}
	if got := ev.step(in, 0.7, t0); got != alert.Warn {
		t.Fatalf("after the old record and one more flat reading: %v, want warn", got)
	}
	// written again in the new layout and read back: the same window
	back := newStuck(r)
	loadEval(back, r, appendEval(nil, ev))
	if back.head != ev.head || back.n != ev.n || back.slice != ev.slice || math.Abs(back.spread-ev.spread) > 0 {
		t.Fatalf("read back %+v, want %+v", back, ev)
	}
	if got := back.step(in, 0.71, t0+100); got != alert.None {
		t.Fatalf("a reading 0.01 MPa off: %v, want none", got)
	}
}

package ingest

import (
	"math"
	"strconv"
	"testing"
)

type dedupStep struct {
	gw        string
	seq       uint64
	dup, late bool
}

func runSteps(t *testing.T, d *Dedup, steps []dedupStep) {
	t.Helper()
	for i, s := range steps {
		dup, late := d.Seen(s.gw, s.seq)
		if dup != s.dup || late != s.late {
			t.Errorf("step %d %s/%d: dup %v late %v, want %v %v", i, s.gw, s.seq, dup, late, s.dup, s.late)
		}
	}
}

func TestDedup(t *testing.T) {
	d := NewDedup(128)
	runSteps(t, d, []dedupStep{
		{"a", 10, false, false}, {"a", 10, true, false}, {"a", 12, false, false}, {"a", 11, false, false}, // reordered
		{"a", 11, true, false}, {"b", 10, false, false}, // another gateway, same seq
		// a jump beyond the window opens a second run; the first still
		// checks its seqs (before runs, 12 here was accepted unchecked)
		{"a", 300, false, false}, {"a", 12, true, false},
		{"a", 200, false, false}, {"a", 200, true, false},
		{"a", 172, false, false}, {"a", 172, true, false}, {"a", 174, false, false},
		{"a", 1000, false, false}, {"a", 999, false, false}, {"a", 1000, true, false},
		{"a", 5000, false, false}, // a fifth run: the least recently used (10-12) goes
		{"a", 12, false, true}, {"a", 1000, true, false},
		{"c", 1000, false, false}, {"c", 5, false, true}, // behind every run: late, unchecked, a run of its own
		{"c", 6, false, false}, {"c", 5, true, false},
	})
	if d.Gateways() != 3 {
		t.Fatal(d.Gateways())
	}
	if st := d.Stats(); st.Jumps != 4 || st.Late != 2 || st.Evicted != 2 {
		t.Fatalf("stats %+v, want 4 jumps, 2 late, 2 evictions", st)
	}
}

// A seq at the top of the uint64 range (or any bogus jump far ahead) costs
// one run: the gateway's next, normal seqs are still deduplicated. Before
// runs, every later batch of that gateway was "late beyond the window" and
// no duplicate was caught again.
func TestDedupJumpDoesNotPoison(t *testing.T) {
	for _, bogus := range []uint64{math.MaxUint64, MaxSeq, 1 << 40, 5000} {
		d := NewDedup(128)
		steps := []dedupStep{{"gw", 100, false, false}, {"gw", 101, false, false}, {"gw", bogus, false, false}}
		for s := uint64(102); s < 400; s++ {
			steps = append(steps, dedupStep{"gw", s, false, false}, dedupStep{"gw", s, true, false}, dedupStep{"gw", s - 1, true, false})
		}
		steps = append(steps, dedupStep{"gw", bogus, true, false}) // its run is still tracked
		runSteps(t, d, steps)
		if st := d.Stats(); st.Jumps != 1 || st.Late != 0 {
			t.Errorf("bogus %d: stats %+v, want one jump", bogus, st)
		}
	}
}

// A live lane at the head and a historical lane replaying far behind are
// both deduplicated, each in its own run; further jumps evict only the run
// used least recently, never the two in use.
func TestDedupLiveAndHistoricalLanes(t *testing.T) {
	d := NewDedup(64)
	live, hist := uint64(1_000_000), uint64(10)
	for i := range 500 {
		for _, s := range []uint64{live, hist} {
			if dup, _ := d.Seen("gw", s); dup {
				t.Fatalf("round %d: %d reported duplicate", i, s)
			}
			if dup, _ := d.Seen("gw", s); !dup {
				t.Fatalf("round %d: redelivered %d not caught", i, s)
			}
		}
		if i%50 == 0 { // a bogus seq now and then
			d.Seen("gw", 1<<50+uint64(i)*1000)
		}
		live++
		hist++
	}
	if st := d.Stats(); st.Evicted == 0 {
		t.Fatalf("stats %+v: the bogus runs should have been evicted", st)
	}
}

// Invented gateway ids cannot grow Dedup without bound: at the limit a new
// gateway replaces one at random, and what is tracked still deduplicates.
func TestDedupGatewayBound(t *testing.T) {
	d := NewDedup(64)
	d.maxGW = 100
	for i := range 10_000 {
		d.Seen("gw-"+strconv.Itoa(i), 1)
	}
	if d.Gateways() != 100 || d.Stats().GatewaysEvicted != 9_900 {
		t.Fatalf("%d gateways tracked, %d evicted", d.Gateways(), d.Stats().GatewaysEvicted)
	}
	if dup, _ := d.Seen("gw-9999", 1); !dup {
		t.Fatal("the newest gateway lost its state")
	}
	if NewDedup(64).maxGW != MaxGateways {
		t.Fatal("default bound")
	}
}

// TestDedupParts: the parts of a split batch are each accepted once; a
// part sent again is a duplicate; a whole batch keeps its seq rule.
func TestDedupParts(t *testing.T) {
	d := NewDedup(64)
	for i, s := range []struct {
		seq         uint64
		part, parts int
		dup         bool
	}{
		{5, 1, 3, false}, {5, 2, 3, false}, {5, 2, 3, true}, {5, 3, 3, false}, {5, 1, 3, true},
		{5, 1, 2, false}, // another split of the same batch (the limit changed): its own parts
		{6, 0, 0, false}, {6, 0, 0, true}, {5, 0, 0, true},
	} {
		if dup, _ := d.SeenPart("a", s.seq, s.part, s.parts); dup != s.dup {
			t.Errorf("step %d seq %d part %d/%d: dup %v, want %v", i, s.seq, s.part, s.parts, dup, s.dup)
		}
	}
	for i := range uint64(200) {
		d.SeenPart("a", 100+i, 1, 2)
	}
	if len(d.parts) != 64 || len(d.partOrder) != 64 {
		t.Fatalf("%d parts remembered, want the window of 64", len(d.parts))
	}
}

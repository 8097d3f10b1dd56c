package alert

import (
	"math/rand/v2"
	"testing"
)

// TestLatchOccurrencesRaisedInOneMillisecond (review12 F4): an alert
// raised, cleared and raised again at one time (a backlog whose times were
// set to its arrival) gets a second occurrence 1 ms after the first, so the
// two have distinct ids (key@raised_at) and their messages distinct
// Nats-Msg-Ids; At dates its changes no earlier than that.
func TestLatchOccurrencesRaisedInOneMillisecond(t *testing.T) {
	var l Latch
	if !l.Step(Warn, 1000, 0, 0) || l.Raised != 1000 {
		t.Fatalf("first raise: %+v", l)
	}
	if !l.Step(None, 1000, 0, 0) {
		t.Fatal("clear")
	}
	if !l.Step(Warn, 1000, 0, 0) || l.Raised != 1001 {
		t.Fatalf("second occurrence raised at %d, want 1001 (after the first's 1000)", l.Raised)
	}
	if got := l.At(1000); got != 1001 {
		t.Fatalf("At(1000) = %d, want 1001", got)
	}
	if MakeID("k", 1000) == MakeID("k", l.Raised) {
		t.Fatal("two occurrences share an id")
	}
	// a later raise keeps its own time
	l.Step(None, 2000, 0, 0)
	if !l.Step(Alarm, 5000, 0, 0) || l.Raised != 5000 {
		t.Fatalf("later raise at %d, want 5000", l.Raised)
	}
}

// TestLatchIdle: Step(None) changes nothing in an idle latch (callers
// skip that Step on it), and a clear latch that is not idle is one a
// Step(None) would change, over random sequences of targets, times (0
// included) and delays.
func TestLatchIdle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 17))
	for range 200 {
		var l Latch
		ts := int64(0)
		for range 200 {
			ts += rng.Int64N(3) * 500
			on, off := rng.Int64N(3)*500, rng.Int64N(3)*500
			was := l
			after := l
			changed := after.Step(None, ts, on, off)
			if l.Idle() && (after != was || changed) || !l.Idle() && l.Level == None && after == was {
				t.Fatalf("Idle() = %v for %+v, Step(None, %d) gives %+v", l.Idle(), l, ts, after)
			}
			l.Step(Severity(rng.IntN(4)), ts, on, off)
		}
	}
}

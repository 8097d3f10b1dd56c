package alert

import "testing"

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

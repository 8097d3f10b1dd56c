package collector

import (
	"testing"
	"time"
)

// A replica resumed after a pause read none of the heartbeats its peers
// sent meanwhile and counted a healthy peer gone, restoring the peer's
// partitions for ~50 ms (review 2, finding 6). Its member view is not
// current until the watch loop turned again and a heartbeat round could
// be read; the supervisor changes no assignment on it until then.
func TestMemberViewAfterLoopGap(t *testing.T) {
	m := &members{timeout: 4 * time.Second}
	if m.current() {
		t.Fatal("current before the watch loop turned")
	}
	m.turn()
	if !m.current() {
		t.Fatal("not current after a turn")
	}
	m.loopAt = time.Now().Add(-1500 * time.Millisecond) // within timeout/2: the ticker's period is timeout/4
	m.turn()
	if !m.current() {
		t.Fatal("a turn 1.5 s after the last one (member_timeout 4 s) settles")
	}
	m.loopAt = time.Now().Add(-2500 * time.Millisecond) // paused
	if m.current() {
		t.Fatal("current while the watch loop has not turned for longer than timeout/2")
	}
	m.turn()
	if m.current() {
		t.Fatal("current right after the loop resumed: the peers' heartbeats are not read yet")
	}
	if d := time.Until(m.settle); d < time.Second || d > 1500*time.Millisecond {
		t.Fatalf("settles in %v, want timeout/4 + timeout/8 (1.5 s)", d)
	}
	m.settle = time.Now().Add(-time.Millisecond)
	m.turn()
	if !m.current() {
		t.Fatal("not current once settled")
	}
}

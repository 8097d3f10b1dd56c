// Package wait is the tests' way to wait for something that happens on
// another goroutine, process or socket: poll a condition with a deadline,
// never sleep a fixed time and hope.
package wait

import (
	"testing"
	"time"
)

// Interval is how often For polls.
const Interval = 10 * time.Millisecond

// For polls cond every Interval until it holds, and fails the test naming
// what it waited for if timeout passes first.
func For(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Interval)
	}
}

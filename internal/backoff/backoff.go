// Package backoff computes reconnect waits for the drivers and uplinks:
// exponential from a minimum to a maximum, with jitter so that many clients
// losing the same server do not come back in step. Each wait is drawn
// uniformly from [d/2, d], where d is the minimum doubled once per earlier
// failure and capped at the maximum.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Step returns the jittered wait after n consecutive failures (n >= 1):
// d = lo doubled n-1 times, capped at hi, then a value drawn from [d/2, d].
// A non-positive lo or hi gives 0.
func Step(n int, lo, hi time.Duration) time.Duration {
	if lo <= 0 || hi <= 0 {
		return 0
	}
	d := min(lo, hi)
	for i := 1; i < n && d < hi; i++ {
		if d > hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	return d/2 + rand.N(d/2+1)
}

// Backoff counts consecutive failures. The zero value with Min and Max set
// is ready to use; it is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next records one more failure and returns the wait before the next try.
func (b *Backoff) Next() time.Duration {
	b.n++
	return Step(b.n, b.Min, b.Max)
}

// Reset starts over after a success: the next wait is about Min again.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d, or less if ctx ends first; it reports whether the whole
// wait passed (false: ctx ended).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

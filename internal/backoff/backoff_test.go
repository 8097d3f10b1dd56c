package backoff

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestStepBounds(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 5 * time.Second
	cases := []struct {
		n    int
		want time.Duration // d before jitter
	}{
		{0, lo}, {1, lo}, {2, 2 * lo}, {3, 4 * lo}, {6, 32 * lo}, {7, hi}, {50, hi}, {math.MaxInt, hi},
	}
	for _, c := range cases {
		seen := map[time.Duration]bool{}
		for range 200 {
			got := Step(c.n, lo, hi)
			if got < c.want/2 || got > c.want {
				t.Fatalf("Step(%d) = %v, want within [%v, %v]", c.n, got, c.want/2, c.want)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Errorf("Step(%d): no jitter over 200 draws (%v)", c.n, seen)
		}
	}
}

func TestStepEdges(t *testing.T) {
	if got := Step(3, 0, time.Second); got != 0 {
		t.Errorf("zero min: %v", got)
	}
	if got := Step(3, time.Second, 0); got != 0 {
		t.Errorf("zero max: %v", got)
	}
	// min above max: max wins
	if got := Step(1, time.Hour, time.Second); got < time.Second/2 || got > time.Second {
		t.Errorf("min above max: %v", got)
	}
	// a max near the largest duration does not overflow while doubling
	big := time.Duration(math.MaxInt64)
	for n := 1; n < 80; n++ {
		if got := Step(n, time.Nanosecond, big); got < 0 {
			t.Fatalf("Step(%d) overflowed: %v", n, got)
		}
	}
}

func TestBackoffNextReset(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	for i, want := range []time.Duration{10, 20, 40, 80, 80} {
		want *= time.Millisecond
		if got := b.Next(); got < want/2 || got > want {
			t.Fatalf("wait %d = %v, want within [%v, %v]", i+1, got, want/2, want)
		}
	}
	b.Reset()
	if got := b.Next(); got > 10*time.Millisecond {
		t.Fatalf("after Reset: %v", got)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live context reported cancellation")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with a cancelled context reported a full wait")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Sleep did not return on cancellation (%v)", d)
	}
}

package demo

import (
	"testing"
	"time"
)

func TestClockScaling(t *testing.T) {
	for _, tc := range []struct {
		speed  float64
		poll   time.Duration
		window time.Duration
	}{
		{0, time.Second, 2 * time.Minute},
		{1, time.Second, 2 * time.Minute},
		{2, 500 * time.Millisecond, 2 * time.Minute},
		{10, 250 * time.Millisecond, 2 * time.Minute},
		{60, 250 * time.Millisecond, 10 * time.Minute},
	} {
		if p := pollInterval(tc.speed); p != tc.poll {
			t.Errorf("pollInterval(%v) = %v, want %v", tc.speed, p, tc.poll)
		}
		if w := kpiWindow(tc.speed); w != tc.window {
			t.Errorf("kpiWindow(%v) = %v, want %v", tc.speed, w, tc.window)
		}
	}
}

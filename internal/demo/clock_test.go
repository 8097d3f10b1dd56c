package demo

import (
	"strings"
	"testing"
	"time"
)

func TestParseStart(t *testing.T) {
	loc := time.FixedZone("CST", 8*3600)
	now := time.Date(2026, 11, 29, 15, 30, 0, 0, time.UTC) // 23:30 in loc
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"09:00", time.Date(2026, 11, 29, 9, 0, 0, 0, loc)},
		{" 10:30 ", time.Date(2026, 11, 29, 10, 30, 0, 0, loc)},
		{"now", now.In(loc)},
		{"2025-06-21T10:00:00Z", time.Date(2025, 6, 21, 10, 0, 0, 0, time.UTC)},
	} {
		got, err := ParseStart(tc.in, now, loc)
		if err != nil || !got.Equal(tc.want) || got.Location().String() != tc.want.Location().String() {
			t.Errorf("ParseStart(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "25:00", "9am", "tomorrow"} {
		if _, err := ParseStart(bad, now, loc); err == nil || !strings.Contains(err.Error(), "-start") {
			t.Errorf("ParseStart(%q) = %v, want an error naming -start", bad, err)
		}
	}
}

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

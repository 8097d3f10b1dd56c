package fleet

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

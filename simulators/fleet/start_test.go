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

// TestFleetFileStart: a fleet file's start: takes what -start takes (an
// RFC 3339 time, as a YAML timestamp too; a time of day; now) and names the
// file and field when it cannot read it.
func TestFleetFileStart(t *testing.T) {
	doc := func(start string) []byte {
		return []byte("start: " + start + "\ndevices:\n  - {id: ac-1, class: air_compressor, template: t.yaml, modbus: {address: \"127.0.0.1:0\"}}\n")
	}
	before := time.Now()
	cfg, err := Parse("fleet.yaml", doc("now"))
	if err != nil || cfg.Start.Before(before.Add(-time.Second)) || cfg.Start.After(time.Now()) {
		t.Errorf("start: now: %v %v", cfg.Start, err)
	}
	cfg, err = Parse("fleet.yaml", doc("2025-06-21T06:00:00Z"))
	if err != nil || !cfg.Start.Equal(time.Date(2025, 6, 21, 6, 0, 0, 0, time.UTC)) {
		t.Errorf("start: RFC 3339: %v %v", cfg.Start, err)
	}
	cfg, err = Parse("fleet.yaml", doc(`"09:00"`))
	if err != nil || cfg.Start.Hour() != 9 || cfg.Start.Minute() != 0 {
		t.Errorf("start: 09:00: %v %v", cfg.Start, err)
	}
	if _, err := Parse("fleet.yaml", doc("tomorrow")); err == nil || !strings.Contains(err.Error(), `fleet.yaml: start: "tomorrow"`) {
		t.Errorf("start: tomorrow: %v", err)
	}
}

package fleet

import (
	"fmt"
	"strings"
	"time"
)

// ParseStart reads the -start flag of smelter-demo and smelter-sim: "HH:MM" (today at that time
// of day in loc), an RFC 3339 time, or "now" (the wall clock: the plant
// shows real time of day).
func ParseStart(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return now.In(loc), nil
	}
	if t, err := time.ParseInLocation("15:04", s, loc); err == nil {
		y, m, d := now.In(loc).Date()
		return time.Date(y, m, d, t.Hour(), t.Minute(), 0, 0, loc), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("-start %q: want a time of day (09:00), an RFC 3339 time (2025-06-21T10:00:00+08:00) or now", s)
}

package rules

import (
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
)

// Adopt applies an alert event a restored state lacks: a raise becomes the
// active occurrence (not raised again; its clear keeps its raised_at), a
// clear of the active occurrence clears it silently (a new occurrence is
// raised later than it), a clear of another occurrence and a raise of a
// rule no longer configured change nothing (no asset is made for it).
func TestAdoptPublishedEvent(t *testing.T) {
	h := newHarness(t, true, thresholdRule)
	for s := range 5 {
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2), "normal")
	}
	raise := only(t, h.e.Tick(nil, sec(4)+3001, 0), alert.Raised, alert.Warn)

	h2 := newHarness(t, true, thresholdRule)
	for s := range 5 {
		none(t, h2.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2), "normal")
	}
	if !h2.e.Adopt(raise) {
		t.Fatal("raise not adopted")
	}
	if h2.e.Adopt(raise) {
		t.Fatal("raise adopted twice")
	}
	none(t, h2.e.Tick(nil, sec(4)+5000, 0), "adopted: not raised again")
	c := only(t, h2.feed("air_compressor", "ac-1", sec(8), "discharge_temp", 80.0, "load_state", 2), alert.Cleared, alert.Warn)
	if c.ID != raise.ID || c.RaisedAt != raise.RaisedAt {
		t.Fatalf("cleared %+v, want occurrence %s", c, raise.ID)
	}

	h3 := newHarness(t, true, thresholdRule)
	for s := range 5 {
		none(t, h3.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2), "normal")
	}
	only(t, h3.e.Tick(nil, sec(4)+3001, 0), alert.Raised, alert.Warn)
	other := c
	other.RaisedAt, other.ID = 7, alert.MakeID(c.Key, 7)
	if h3.e.Adopt(other) {
		t.Fatal("a clear of another occurrence adopted")
	}
	if !h3.e.Adopt(c) {
		t.Fatal("clear not adopted")
	}
	none(t, h3.feed("air_compressor", "ac-1", sec(9), "discharge_temp", 80.0, "load_state", 2), "cleared silently")
	again := only(t, h3.e.Tick(nil, sec(9)+60_000, 0), alert.Raised, alert.Warn)
	if again.RaisedAt <= raise.RaisedAt {
		t.Fatalf("new occurrence raised at %d, not after %d", again.RaisedAt, raise.RaisedAt)
	}

	gone := raise
	gone.Asset, gone.Rule, gone.Key = "ac-9", "no_such_rule", "site1.ac-9.no_such_rule"
	if h3.e.Adopt(gone) || h3.e.Has("site1", "ac-9") {
		t.Fatal("a raise of an unknown rule adopted or made an asset")
	}
}

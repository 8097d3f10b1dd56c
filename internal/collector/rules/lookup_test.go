package rules

import (
	"testing"

	"github.com/smelterio/smelter/internal/collector/statebin"
)

// The engine remembers the asset of its newest lookup (Engine.lookup): an
// asset replaced by another state of the same site and id (a batch of
// another class starts it over; a restore replaces it) is never answered
// from that memory afterwards.
func TestLookupAfterAssetReplaced(t *testing.T) {
	h := newHarness(t, true, "")
	h.feed("air_compressor", "a-1", sec(1), "discharge_temp", 80.0)
	if v, ok := h.e.Asset("site1", "a-1"); !ok || v.Class != "air_compressor" {
		t.Fatalf("%+v %v", v, ok)
	}
	// another class: the asset starts over as a motor
	h.feed("motor", "a-1", sec(2), "winding_temp", 70.0)
	if v, ok := h.e.Asset("site1", "a-1"); !ok || v.Class != "motor" {
		t.Fatalf("after a batch of another class: %+v %v, want class motor", v, ok)
	}
	st, ok := h.e.Snapshot("site1", "a-1")
	if !ok || st.Class != "motor" {
		t.Fatalf("snapshot: %+v %v", st, ok)
	}
	// a restore replaces the asset's state by the record's
	h.feed("motor", "a-2", sec(3), "winding_temp", 71.0) // another asset in between
	st.Class = "air_compressor"
	st.Signals = nil
	h.e.RestoreAssetAt(&st, 0)
	if v, ok := h.e.Asset("site1", "a-1"); !ok || v.Class != "air_compressor" {
		t.Fatalf("after a restore: %+v %v, want class air_compressor", v, ok)
	}
	b, ok := h.e.AppendBinary(nil, "site1", "a-1")
	if !ok {
		t.Fatal("not tracked")
	}
	r := statebin.NewReader(b)
	if got := ReadBinary(r); r.Err() != nil || got.Class != "air_compressor" {
		t.Fatalf("record after a restore: %+v %v", got, r.Err())
	}
}

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

// TestBindHandleStale: a Handle follows its asset while the engine keeps
// it, and is looked up again once the engine replaced the asset (a batch
// of another class, a restore); an asset the engine does not track
// leaves it zero.
func TestBindHandleStale(t *testing.T) {
	h := newHarness(t, true, "")
	var ref Handle
	if h.e.Bind(&ref, "site1", "a-1") || ref.a != nil {
		t.Fatalf("untracked asset bound: %+v", ref)
	}
	h.feed("air_compressor", "a-1", sec(1), "discharge_temp", 80.0)
	h.feed("air_compressor", "a-2", sec(1), "discharge_temp", 80.0)
	if !h.e.Bind(&ref, "site1", "a-1") || ref.a == nil || ref.a.class != "air_compressor" || h.e.last != ref.a {
		t.Fatalf("bound %+v, last %p", ref.a, h.e.last)
	}
	first := ref.a
	h.feed("motor", "a-1", sec(2), "winding_temp", 70.0) // replaced: another class
	h.feed("motor", "a-2", sec(2), "winding_temp", 70.0)
	if !h.e.Bind(&ref, "site1", "a-1") || ref.a == first || ref.a.class != "motor" || h.e.last != ref.a {
		t.Fatalf("after a class change: bound %+v (the first state: %v)", ref.a, ref.a == first)
	}
	st, _ := h.e.Snapshot("site1", "a-1")
	second := ref.a
	h.e.RestoreAssetAt(&st, 0) // replaced: restored
	if !h.e.Bind(&ref, "site1", "a-1") || ref.a == second || ref.a != h.e.assets[[2]string{"site1", "a-1"}] {
		t.Fatalf("after a restore: bound %p, engine holds %p", ref.a, h.e.assets[[2]string{"site1", "a-1"}])
	}
}

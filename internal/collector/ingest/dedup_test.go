package ingest

import "testing"

func TestDedup(t *testing.T) {
	d := NewDedup(128)
	type step struct {
		gw        string
		seq       uint64
		dup, late bool
	}
	for i, s := range []step{
		{"a", 10, false, false}, {"a", 10, true, false}, {"a", 12, false, false}, {"a", 11, false, false}, // reordered
		{"a", 11, true, false}, {"b", 10, false, false}, // another gateway, same seq
		{"a", 300, false, false}, {"a", 12, false, true}, // beyond the window: late, accepted
		{"a", 200, false, false}, {"a", 200, true, false}, {"a", 172, false, true}, {"a", 174, false, false},
		{"a", 1000, false, false}, {"a", 999, false, false}, {"a", 1000, true, false},
	} {
		dup, late := d.Seen(s.gw, s.seq)
		if dup != s.dup || late != s.late {
			t.Errorf("step %d %s/%d: dup %v late %v, want %v %v", i, s.gw, s.seq, dup, late, s.dup, s.late)
		}
	}
	if d.Gateways() != 2 {
		t.Fatal(d.Gateways())
	}
}

// TestDedupParts: the parts of a split batch are each accepted once; a
// part sent again is a duplicate; a whole batch keeps its seq rule.
func TestDedupParts(t *testing.T) {
	d := NewDedup(64)
	for i, s := range []struct {
		seq         uint64
		part, parts int
		dup         bool
	}{
		{5, 1, 3, false}, {5, 2, 3, false}, {5, 2, 3, true}, {5, 3, 3, false}, {5, 1, 3, true},
		{5, 1, 2, false}, // another split of the same batch (the limit changed): its own parts
		{6, 0, 0, false}, {6, 0, 0, true}, {5, 0, 0, true},
	} {
		if dup, _ := d.SeenPart("a", s.seq, s.part, s.parts); dup != s.dup {
			t.Errorf("step %d seq %d part %d/%d: dup %v, want %v", i, s.seq, s.part, s.parts, dup, s.dup)
		}
	}
	for i := range uint64(200) {
		d.SeenPart("a", 100+i, 1, 2)
	}
	if len(d.parts) != 64 || len(d.partOrder) != 64 {
		t.Fatalf("%d parts remembered, want the window of 64", len(d.parts))
	}
}

func TestTopicsAndVersions(t *testing.T) {
	got := Topics("g1")
	if got[0] != "$share/g1/smelter/v1/+/+/+/data" || len(got) != 3 {
		t.Fatal(got)
	}
	for v, want := range map[string]bool{"2.9.25": false, "2.10.0": true, "2.15.2": true, "3.0.0": true, "": false} {
		if supportsFilterSubjects(v) != want {
			t.Errorf("%s", v)
		}
	}
}

package ingest

import (
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

func birthPart(seq uint64, part, parts int, signals ...string) *telemetry.Birth {
	b := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw", Seq: seq, TSGW: 1,
		Asset: telemetry.AssetJSON{ID: "a", Class: "motor"}, Part: part, Parts: parts}
	for _, s := range signals {
		b.Signals = append(b.Signals, telemetry.SignalInfo{Signal: s})
	}
	return b
}

// TestBirthParts: parts in any order, one repeated, give one birth with
// every signal in part order; incomplete births beyond the bound are
// dropped oldest first.
func TestBirthParts(t *testing.T) {
	p := NewBirthParts(2)
	for _, b := range []*telemetry.Birth{birthPart(7, 3, 3, "e"), birthPart(7, 1, 3, "a", "b"), birthPart(7, 1, 3, "a", "b")} {
		if got, err := p.Add(b); got != nil || err != nil {
			t.Fatalf("complete after part %d: %v %v", b.Part, got, err)
		}
	}
	got, err := p.Add(birthPart(7, 2, 3, "c", "d"))
	if err != nil || got == nil || got.Parts != 0 || len(got.Signals) != 5 || got.Signals[2].Signal != "c" || got.Signals[4].Signal != "e" {
		t.Fatalf("merged %+v, %v", got, err)
	}
	if len(p.pending) != 0 {
		t.Fatalf("%d pending after completion", len(p.pending))
	}
	p.Add(birthPart(1, 1, 2, "x"))
	p.Add(birthPart(2, 1, 2, "x"))
	p.Add(birthPart(3, 1, 2, "x")) // evicts seq 1
	if got, _ := p.Add(birthPart(1, 2, 2, "y")); got != nil {
		t.Fatal("an evicted birth completed")
	}
	if got, _ := p.Add(birthPart(3, 2, 2, "y")); got == nil {
		t.Fatal("seq 3 did not complete")
	}
}

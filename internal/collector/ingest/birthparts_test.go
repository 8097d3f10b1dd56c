package ingest

import (
	"errors"
	"testing"
	"time"

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
	p := NewBirthParts(2, nil)
	now := time.Unix(1_763_812_345, 0)
	for _, b := range []*telemetry.Birth{birthPart(7, 3, 3, "e"), birthPart(7, 1, 3, "a", "b"), birthPart(7, 1, 3, "a", "b")} {
		if got, err := p.Add(b, 100, now); got != nil || err != nil {
			t.Fatalf("complete after part %d: %v %v", b.Part, got, err)
		}
	}
	got, err := p.Add(birthPart(7, 2, 3, "c", "d"), 100, now)
	if err != nil || got == nil || got.Parts != 0 || len(got.Signals) != 5 || got.Signals[2].Signal != "c" || got.Signals[4].Signal != "e" {
		t.Fatalf("merged %+v, %v", got, err)
	}
	if len(p.pending) != 0 {
		t.Fatalf("%d pending after completion", len(p.pending))
	}
	p.Add(birthPart(1, 1, 2, "x"), 100, now)
	p.Add(birthPart(2, 1, 2, "x"), 100, now)
	p.Add(birthPart(3, 1, 2, "x"), 100, now) // evicts seq 1
	if got, _ := p.Add(birthPart(1, 2, 2, "y"), 100, now); got != nil {
		t.Fatal("an evicted birth completed")
	}
	if got, _ := p.Add(birthPart(3, 2, 2, "y"), 100, now); got == nil {
		t.Fatal("seq 3 did not complete")
	}
}

// The assembler's bounds beyond the count (review 3 B: one birth
// announcing parts: 1000000 grew the heap by 72 MB from 60 parts, and 10
// incomplete births were still held 6.5 minutes later): a birth announcing
// more than MaxBirthParts parts is refused, so is one whose parts exceed
// MaxBirthPartBytes; beyond MaxBirthPartsHeld in all the oldest is evicted,
// and one incomplete for BirthPartsTTL expires. Every drop is reported.
func TestBirthPartsBounded(t *testing.T) {
	drops := map[string]int{}
	p := NewBirthParts(256, func(r string) { drops[r]++ })
	now := time.Unix(1_763_812_345, 0)
	if _, err := p.Add(birthPart(1, 1, MaxBirthParts+1, "a"), 100, now); !errors.Is(err, ErrBounds) {
		t.Fatalf("parts %d: %v, want bounds", MaxBirthParts+1, err)
	}
	if _, err := p.Add(birthPart(2, 1, MaxBirthParts, "a"), 100, now); err != nil {
		t.Fatalf("parts %d refused: %v", MaxBirthParts, err)
	}
	// bytes of one birth: 2 parts of 700 KiB fit, the third does not (its
	// parts are dropped)
	for i := range 3 {
		_, err := p.Add(birthPart(3, i+1, 10, "a"), 700<<10, now)
		if i < 2 && err != nil || i == 2 && !errors.Is(err, ErrBounds) {
			t.Fatalf("part %d of 700 KiB: %v", i+1, err)
		}
	}
	if n, b := p.Held(); n != 1 || b != 100 {
		t.Fatalf("held %d births, %d bytes; want seq 2 alone (100 bytes)", n, b)
	}
	// the total: 12 births of 1 MiB each, parts 1 of 2; at most 8 MiB held
	for s := range 12 {
		if _, err := p.Add(birthPart(uint64(10+s), 1, 2, "a"), 1<<20, now.Add(time.Duration(s)*time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, b := p.Held(); b > MaxBirthPartsHeld {
			t.Fatalf("%d bytes held, more than %d", b, MaxBirthPartsHeld)
		}
	}
	// the newest completes, the oldest was evicted
	if got, _ := p.Add(birthPart(21, 2, 2, "b"), 100, now.Add(12*time.Second)); got == nil {
		t.Fatal("the newest birth did not complete")
	}
	if got, _ := p.Add(birthPart(10, 2, 2, "b"), 100, now.Add(12*time.Second)); got != nil {
		t.Fatal("an evicted birth completed")
	}
	// expiry: everything still held is older than the TTL later
	p.Expire(now.Add(12*time.Second + BirthPartsTTL))
	if n, b := p.Held(); n != 0 || b != 0 {
		t.Fatalf("held %d births, %d bytes after the TTL", n, b)
	}
	if drops[PartsDropParts] != 1 || drops[PartsDropBytes] != 1 || drops[PartsDropEvicted] < 4 || drops[PartsDropExpired] < 1 {
		t.Fatalf("drops %v", drops)
	}
}

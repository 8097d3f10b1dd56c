package ingest

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

func TestCheck(t *testing.T) {
	cat := catalog.Default()
	batch := func(seq uint64, class string) *telemetry.Batch {
		return &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: 1, Asset: telemetry.Asset{ID: "a-1", Class: class, Path: []string{"e", "s"}}}
	}
	subj := func(b *telemetry.Batch) string { return telemetry.AssetSubject(b.Asset, telemetry.KindData) }
	for _, tc := range []struct {
		name    string
		b       *telemetry.Batch
		subject string // "": the batch's own
		reason  Reason
		is      error
	}{
		{"first seq", batch(1, "motor"), "", "", nil},
		{"highest seq", batch(MaxSeq, "air_compressor"), "", "", nil},
		{"open class", batch(7, "generic"), "", "", nil},
		{"seq 0", batch(0, "motor"), "", ReasonSeqRange, ErrSeqRange},
		{"seq 2^53", batch(MaxSeq+1, "motor"), "", ReasonSeqRange, ErrSeqRange},
		{"seq 2^64-1", batch(math.MaxUint64, "motor"), "", ReasonSeqRange, ErrSeqRange},
		{"unknown class", batch(7, "foo_class"), "", ReasonUnknownClass, ErrUnknownClass},
		{"another site's subject", batch(7, "motor"), "smelter.v1.s2.motor.a-1.data", ReasonSubject, ErrSubject},
		{"another class's subject", batch(7, "motor"), "smelter.v1.s.pump.a-1.data", ReasonSubject, ErrSubject},
		{"another asset's subject", batch(7, "motor"), "smelter.v1.s.motor.a-2.data", ReasonSubject, ErrSubject},
		{"not a smelter subject", batch(7, "motor"), "telemetry.s.motor.a-1", ReasonSubject, ErrSubject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.subject
			if s == "" {
				s = subj(tc.b)
			}
			err := Check(s, tc.b, cat)
			if ReasonOf(err) != tc.reason {
				t.Fatalf("Check = %v (reason %q), want reason %q", err, ReasonOf(err), tc.reason)
			}
			if tc.is == nil {
				return
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			for _, other := range []error{ErrSeqRange, ErrUnknownClass, ErrSubject} {
				if !errors.Is(other, tc.is) && errors.Is(err, other) {
					t.Errorf("%v also matches %v", err, other)
				}
			}
		})
	}
	if ReasonOf(errors.New("other")) != "" {
		t.Error("ReasonOf of a foreign error")
	}
}

// TestCheckAssetNamesMissingPath (review6 F6): a death (or batch, or
// birth) without asset.path has no site and is refused on its subject;
// the reject detail says plainly that asset.path is missing, which the
// bare "asset _/class/id on subject" did not.
func TestCheckAssetNamesMissingPath(t *testing.T) {
	cat := catalog.Default()
	const subject = "smelter.v1.s1.air_compressor.ac-11.death"
	for _, path := range [][]string{nil, {"acme"}, {"acme", ""}} {
		err := CheckAsset(subject, "gw1", telemetry.Asset{ID: "ac-11", Class: "air_compressor", Path: path}, cat)
		if !errors.Is(err, ErrSubject) || !strings.Contains(err.Error(), "asset.path is missing") {
			t.Errorf("path %q: %v, want a subject rejection naming the missing asset.path", path, err)
		}
	}
	err := CheckAsset("smelter.v1.s2.air_compressor.ac-11.death", "gw1",
		telemetry.Asset{ID: "ac-11", Class: "air_compressor", Path: []string{"acme", "s1"}}, cat)
	if !errors.Is(err, ErrSubject) || strings.Contains(err.Error(), "asset.path is missing") {
		t.Errorf("another site's subject: %v", err)
	}
}

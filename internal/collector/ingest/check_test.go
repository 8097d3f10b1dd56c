package ingest

import (
	"errors"
	"math"
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

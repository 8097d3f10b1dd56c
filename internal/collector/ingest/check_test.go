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
	for _, tc := range []struct {
		name   string
		b      *telemetry.Batch
		reason Reason
		is     error
	}{
		{"first seq", batch(1, "motor"), "", nil},
		{"highest seq", batch(MaxSeq, "air_compressor"), "", nil},
		{"open class", batch(7, "generic"), "", nil},
		{"seq 0", batch(0, "motor"), ReasonSeqRange, ErrSeqRange},
		{"seq 2^53", batch(MaxSeq+1, "motor"), ReasonSeqRange, ErrSeqRange},
		{"seq 2^64-1", batch(math.MaxUint64, "motor"), ReasonSeqRange, ErrSeqRange},
		{"unknown class", batch(7, "foo_class"), ReasonUnknownClass, ErrUnknownClass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.b, cat)
			if ReasonOf(err) != tc.reason {
				t.Fatalf("Check = %v (reason %q), want reason %q", err, ReasonOf(err), tc.reason)
			}
			if tc.is == nil {
				return
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			for _, other := range []error{ErrSeqRange, ErrUnknownClass} {
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

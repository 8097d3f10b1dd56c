package ingest

import (
	"errors"
	"fmt"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// MaxSeq is the highest seq a batch may carry: 2^53-1, the largest integer
// every JSON implementation reads exactly (RFC 7493, I-JSON, section 2.2),
// so the seq a gateway wrote is the seq every consumer reads. A gateway
// numbering 10^6 batches a second reaches it after 285 years. Gateways
// start at 1 (the spool's first record), so 0 is out of range too.
const MaxSeq = 1<<53 - 1

// Reason is why Check rejected a batch; it is the value of the reason label
// of the collector's smelter_collector_malformed_total counter.
type Reason string

// Reasons.
const (
	ReasonSeqRange     Reason = "seq_range"     // seq outside 1..MaxSeq
	ReasonUnknownClass Reason = "unknown_class" // asset.class not in the catalog
)

// Rejections; use errors.Is.
var (
	ErrSeqRange     = errors.New("seq out of range")
	ErrUnknownClass = errors.New("unknown equipment class")
)

// RejectError is a batch Check refused. It matches ErrSeqRange or
// ErrUnknownClass with errors.Is.
type RejectError struct {
	Reason Reason
	Detail string
}

func (e *RejectError) Error() string { return "ingest: " + e.Detail }

// Is makes errors.Is match the sentinel of the reason.
func (e *RejectError) Is(target error) bool {
	switch e.Reason {
	case ReasonSeqRange:
		return target == ErrSeqRange
	case ReasonUnknownClass:
		return target == ErrUnknownClass
	}
	return false
}

// ReasonOf returns the reason of a Check error ("" when err is not one).
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// Check decides whether a decoded batch may enter the collector: its seq
// must lie in 1..MaxSeq and its asset class must be in cat. It runs before
// deduplication, so a rejected batch never touches the dedup state, the
// rules or the KPIs. The error is a *RejectError.
func Check(b *telemetry.Batch, cat *catalog.Catalog) error {
	if b.Seq == 0 || b.Seq > MaxSeq {
		return &RejectError{Reason: ReasonSeqRange,
			Detail: fmt.Sprintf("gateway %s: seq %d outside 1..%d", b.Gateway, b.Seq, uint64(MaxSeq))}
	}
	return CheckClass(b.Gateway, b.Asset.ID, b.Asset.Class, cat)
}

// CheckClass refuses an asset whose class is not in cat (ReasonUnknownClass);
// births and deaths go through it before they create any asset state.
func CheckClass(gateway, asset, class string, cat *catalog.Catalog) error {
	if _, ok := cat.Class(class); !ok {
		return &RejectError{Reason: ReasonUnknownClass,
			Detail: fmt.Sprintf("gateway %s asset %s: class %q is not in the catalog", gateway, asset, class)}
	}
	return nil
}

package ingest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

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
	ReasonSubject      Reason = "subject"       // site, class or asset id differ from the subject's
	ReasonBirth        Reason = "birth"         // a birth's ranges, intervals or nameplate are absurd
	ReasonBounds       Reason = "bounds"        // a string beyond the schema's bounds (telemetry.ValidSignal ...)
)

// Rejections; use errors.Is.
var (
	ErrSeqRange     = errors.New("seq out of range")
	ErrUnknownClass = errors.New("unknown equipment class")
	ErrSubject      = errors.New("payload does not match its subject")
	ErrBirth        = errors.New("implausible birth")
	ErrBounds       = errors.New("beyond the schema's bounds")
)

// RejectError is a message Check or CheckAsset refused. It matches
// ErrSeqRange, ErrUnknownClass, ErrSubject, ErrBirth or ErrBounds with
// errors.Is.
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
	case ReasonSubject:
		return target == ErrSubject
	case ReasonBirth:
		return target == ErrBirth
	case ReasonBounds:
		return target == ErrBounds
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

// Check decides whether a decoded batch received on subject may enter the
// collector: its seq must lie in 1..MaxSeq, and its asset must pass
// CheckAsset. It runs before deduplication, so a refused batch never
// touches the dedup state, the rules or the KPIs. The error is a
// *RejectError.
func Check(subject string, b *telemetry.Batch, cat *catalog.Catalog) error {
	if b.Seq == 0 || b.Seq > MaxSeq {
		return &RejectError{Reason: ReasonSeqRange,
			Detail: fmt.Sprintf("gateway %s: seq %d outside 1..%d", b.Gateway, b.Seq, uint64(MaxSeq))}
	}
	return CheckAsset(subject, b.Gateway, b.Asset, cat)
}

// CheckAsset decides whether a message about asset a (a batch, birth or
// death) received on subject may enter the collector: the class must be in
// cat (ReasonUnknownClass), its path within the schema's bounds
// (telemetry.CheckPath; ReasonBounds), and the site, class and asset id
// must be those of the subject (ReasonSubject). Subject permissions confine a gateway to
// its site's subjects (deploy/nats); this holds the payload to the subject,
// so a gateway cannot speak for another site's assets either.
func CheckAsset(subject, gateway string, a telemetry.Asset, cat *catalog.Catalog) error {
	if _, ok := cat.Class(a.Class); !ok {
		return &RejectError{Reason: ReasonUnknownClass,
			Detail: fmt.Sprintf("gateway %s asset %s: class %q is not in the catalog", gateway, a.ID, a.Class)}
	}
	if err := telemetry.CheckPath(a.Path); err != nil {
		return &RejectError{Reason: ReasonBounds,
			Detail: fmt.Sprintf("gateway %s asset %s: %v", gateway, a.ID, err)}
	}
	ps, err := telemetry.ParseSubject(subject)
	if err != nil || ps.Site != a.Site() || ps.Class != a.Class || ps.Asset != a.ID {
		detail := fmt.Sprintf("gateway %s: asset %s/%s/%s on subject %q", gateway, a.Site(), a.Class, a.ID, subject)
		if len(a.Path) < 2 || a.Path[1] == "" {
			// the site is asset.path[1]: data, births and deaths all need
			// the path (docs/schema.md; review6 F6)
			detail += ": asset.path is missing or has no site (path[1]); it is required: [enterprise, site, area, line, cell]"
		}
		return &RejectError{Reason: ReasonSubject, Detail: detail}
	}
	return nil
}

// MaxFuture is the default of how far a timestamp may lie ahead of the
// collector's clock (the collector's max_future): 5 minutes, for clock skew
// between a gateway or edge node and the collector (NTP keeps it far
// smaller). A later source time would pin its signal: it could never be
// superseded and never age into staleness.
const MaxFuture = 5 * time.Minute

// BoundBatch bounds b's times by now, the batch's arrival (its time in
// the stream, else the collector's clock), the latest time the collector
// judges by (review6 F1-F4): nothing the collector keeps, evaluates or
// shows may lie ahead of it, or KPI windows, staleness, the dashboard and
// alert times would follow a gateway's fast clock. With tol (max_future,
// > 0):
//   - a gateway time or source time later than now + tol is replaced by
//     now, as before; future counts the readings so replaced and gwFuture
//     reports the batch's ts_gw so replaced (the collector counts both in
//     smelter_collector_future_timestamps_total: before, a batch only its
//     ts_gw dated beyond tol was counted nowhere, review10 F3);
//   - a gateway time or source time later than now inside tol is set to
//     now, each on its own; ahead reports that one was (the collector's
//     smelter_collector_clock_ahead_total). A time not later than now is
//     kept: a reading's ts may be its device's (an OPC UA
//     SourceTimestamp, a Sparkplug metric's time) and right while only the
//     gateway's clock is fast, so moving every reading back by ts_gw's
//     lead dated true device times in the past (review7 F1). A time later
//     than the arrival is known to be wrong, and the arrival is the latest
//     it can truly be; samples of one signal ahead in one batch share it.
//
// It runs at ingest for every source (JetStream, MQTT, Sparkplug: one
// path). The caller skips it for tol 0 (max_future 0s: times as sent).
func BoundBatch(b *telemetry.Batch, now time.Time, tol time.Duration) (future int, gwFuture, ahead bool) {
	nowMS := now.UnixMilli()
	limit := now.Add(tol).UnixMilli()
	switch {
	case b.TSGW > limit:
		b.TSGW = nowMS
		gwFuture = true
	case b.TSGW > nowMS:
		b.TSGW = nowMS
		ahead = true
	}
	for i := range b.Readings {
		r := &b.Readings[i]
		switch {
		case r.TS > limit:
			r.TS = nowMS
			future++
		case r.TS > nowMS:
			r.TS = nowMS
			ahead = true
		}
	}
	return future, gwFuture, ahead
}

// BoundTSGW bounds *tsgw (a birth's or death's ts_gw, Unix ms) by now, the
// arrival time: a time later than now + tol (> 0) is replaced by now and
// reported as future; one later than now inside tol is set to now and
// reported as ahead. A birth or death dated in the future would otherwise
// order every later message of the asset before it (a death dated 2100
// would keep a live asset dead, a birth dated 2100 its signal list and
// ranges in force, until then: review4 F6), and inside the tolerance date
// its alerts (a death's raised_at, review6 F4) ahead of the clock.
func BoundTSGW(tsgw *int64, now time.Time, tol time.Duration) (future, ahead bool) {
	nowMS := now.UnixMilli()
	switch {
	case *tsgw > now.Add(tol).UnixMilli():
		*tsgw = nowMS
		return true, false
	case *tsgw > nowMS:
		*tsgw = nowMS
		return false, true
	}
	return false, false
}

// MaxBirthIntervalMS is the longest sampling interval a birth may declare:
// one day (86,400,000 ms). A longer one would make a signal's staleness
// limit (k x interval) too long to ever fire.
const MaxBirthIntervalMS = 86_400_000

// CheckBirth decides whether a birth's declarations are usable (after
// CheckAsset): every signal's min and max finite with min <= max, its
// interval_ms 0 (not declared) or 1..MaxBirthIntervalMS, and every
// nameplate value finite, and above 0 for the class's rated_* ratings
// (rated power, flow, speed: a rating of 0 or less is no rating; other
// nameplate values such as a PV module's temperature coefficient gamma are
// legitimately negative). A refused birth changes nothing the collector knows about the
// asset. The error is a *RejectError with ReasonBirth naming the field, or
// ReasonBounds when a string breaks the schema's bounds (docs/schema.md,
// "Bounds": a signal name, unit, enum or allowed label, nameplate key, or
// more labels or ratings than the bounds allow). It cuts every src and the
// protocol to telemetry.MaxSrcLen.
func CheckBirth(bi *telemetry.Birth, cat *catalog.Catalog) error {
	bad := func(format string, args ...any) error {
		return &RejectError{Reason: ReasonBirth,
			Detail: fmt.Sprintf("gateway %s asset %s birth: ", bi.Gateway, bi.Asset.ID) + fmt.Sprintf(format, args...)}
	}
	if err := CheckBirthBounds(bi); err != nil {
		return err
	}
	for _, s := range bi.Signals {
		if s.Min != nil && !finite(*s.Min) || s.Max != nil && !finite(*s.Max) {
			return bad("signal %s: min and max must be finite", s.Signal)
		}
		if s.Min != nil && s.Max != nil && *s.Min > *s.Max {
			return bad("signal %s: min %g above max %g", s.Signal, *s.Min, *s.Max)
		}
		if s.IntervalMS < 0 || s.IntervalMS > MaxBirthIntervalMS {
			return bad("signal %s: interval_ms %d outside 1..%d (0: not declared)", s.Signal, s.IntervalMS, MaxBirthIntervalMS)
		}
	}
	var ratings []string
	if cl, ok := cat.Class(bi.Asset.Class); ok {
		ratings = cl.Nameplate
	}
	for k, v := range bi.Nameplate {
		if !finite(v) {
			return bad("nameplate %s: %g is not finite", k, v)
		}
		if v <= 0 && strings.HasPrefix(k, "rated_") && slices.Contains(ratings, k) {
			return bad("nameplate %s: %g must be above 0", k, v)
		}
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// CheckBirthBounds is the part of CheckBirth that holds a birth's strings
// to the schema's bounds (telemetry's limit table, docs/schema.md
// "Bounds"): signal names, units, enum and allowed labels and their totals
// in this message, nameplate keys and count; it cuts every src and the
// protocol to telemetry.MaxSrcLen. Consumers that keep births without
// evaluating them (internal/history) call it to apply the same bounds. The
// error is a *RejectError with ReasonBounds.
func CheckBirthBounds(bi *telemetry.Birth) error {
	if err := birthBounds(bi); err != "" {
		return &RejectError{Reason: ReasonBounds,
			Detail: fmt.Sprintf("gateway %s asset %s birth: %s", bi.Gateway, bi.Asset.ID, err)}
	}
	return nil
}

// birthBounds checks bi's strings against the schema's bounds and cuts
// its free text; it returns what breaks them ("" when nothing).
func birthBounds(bi *telemetry.Birth) string {
	bi.Protocol = telemetry.CutText(bi.Protocol, telemetry.MaxSrcLen)
	if len(bi.Nameplate) > telemetry.MaxNameplate {
		return fmt.Sprintf("%d nameplate ratings, more than %d", len(bi.Nameplate), telemetry.MaxNameplate)
	}
	for k := range bi.Nameplate {
		if !telemetry.ValidToken(k) {
			return fmt.Sprintf("nameplate key %q is not a token of 1-64 [A-Za-z0-9_-]", telemetry.CutText(k, 64))
		}
	}
	for i := range bi.Signals {
		s := &bi.Signals[i]
		if !telemetry.ValidSignal(s.Signal) {
			return fmt.Sprintf("signals[%d]: name %q is not 1-%d [A-Za-z0-9_-]", i, telemetry.CutText(s.Signal, 64), telemetry.MaxSignalLen)
		}
		if !telemetry.ValidUnit(s.Unit) {
			return fmt.Sprintf("signal %s: unit %q is not 0-%d printable ASCII", s.Signal, telemetry.CutText(s.Unit, 64), telemetry.MaxUnitLen)
		}
		labels := [][]string{s.Enum}
		if s.Write != nil {
			labels = append(labels, s.Write.Allowed)
		}
		for _, ls := range labels {
			if len(ls) > telemetry.MaxLabels {
				return fmt.Sprintf("signal %s: %d labels, more than %d", s.Signal, len(ls), telemetry.MaxLabels)
			}
			for _, l := range ls {
				if !telemetry.ValidLabel(l) {
					return fmt.Sprintf("signal %s: label %q is not 1-%d bytes of UTF-8 without control characters", s.Signal, telemetry.CutText(l, 64), telemetry.MaxLabelLen)
				}
			}
		}
		s.Src = telemetry.CutText(s.Src, telemetry.MaxSrcLen)
	}
	return birthLabelTotals(bi)
}

// birthLabelTotals checks the labels of all of bi's signals together
// against telemetry.MaxBirthLabels and telemetry.MaxBirthLabelBytes; it
// returns what breaks them ("" when nothing).
func birthLabelTotals(bi *telemetry.Birth) string {
	n, size := 0, 0
	for i := range bi.Signals {
		s := &bi.Signals[i]
		n += len(s.Enum)
		for _, l := range s.Enum {
			size += len(l)
		}
		if s.Write != nil {
			n += len(s.Write.Allowed)
			for _, l := range s.Write.Allowed {
				size += len(l)
			}
		}
	}
	switch {
	case n > telemetry.MaxBirthLabels:
		return fmt.Sprintf("%d enum and allowed labels in all, more than %d", n, telemetry.MaxBirthLabels)
	case size > telemetry.MaxBirthLabelBytes:
		return fmt.Sprintf("%d bytes of enum and allowed labels in all, more than %d", size, telemetry.MaxBirthLabelBytes)
	}
	return ""
}

// CheckBirthTotals checks what CheckBirth cannot see in one part of a
// split birth: the labels of the merged birth against the schema's totals
// per birth (telemetry.MaxBirthLabels, telemetry.MaxBirthLabelBytes). The
// error is a *RejectError with ReasonBounds.
func CheckBirthTotals(bi *telemetry.Birth) error {
	if err := birthLabelTotals(bi); err != "" {
		return &RejectError{Reason: ReasonBounds,
			Detail: fmt.Sprintf("gateway %s asset %s birth: %s", bi.Gateway, bi.Asset.ID, err)}
	}
	return nil
}

// DropInvalid removes from b.Readings every reading whose signal name
// (telemetry.ValidSignal) or unit (telemetry.ValidUnit) breaks the
// schema's bounds, keeping the order of the rest, and cuts every reading's
// text to telemetry.MaxTextLen and src to telemetry.MaxSrcLen bytes. It
// returns how many readings it removed and the first one's name (cut to
// 64 bytes, a copy: a sample for the log). It allocates nothing when every
// reading is within the bounds.
func DropInvalid(b *telemetry.Batch) (n int, first string) {
	kept := b.Readings[:0]
	for i := range b.Readings {
		r := &b.Readings[i]
		if !telemetry.ValidSignal(r.Signal) || !telemetry.ValidUnit(r.Unit) {
			if n == 0 {
				first = strings.Clone(telemetry.CutText(r.Signal, 64))
			}
			n++
			continue
		}
		r.Text = telemetry.CutText(r.Text, telemetry.MaxTextLen)
		r.Src = telemetry.CutText(r.Src, telemetry.MaxSrcLen)
		if n > 0 {
			kept = append(kept, *r)
		} else {
			kept = kept[:len(kept)+1]
		}
	}
	clear(b.Readings[len(kept):]) // no views into the payload left behind
	b.Readings = kept
	return n, first
}

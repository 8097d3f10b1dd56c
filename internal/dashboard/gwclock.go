package dashboard

import (
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A gateway's clock, as the collector measures it (review7 F3: the
// collector bounded every time later than a message's arrival to the
// arrival, but nothing said which gateway's clock was off).
//
// Each live batch gives one sample: its ts_gw as the gateway sent it minus
// its arrival on the collector's clock, in ms. A batch is stamped before
// it travels (gateway spool, uplink, broker, the collector's fetch), so
// every delay only makes the sample smaller: sample = offset - delay,
// delay >= 0. The estimate is therefore the LARGEST sample of a recent
// window (the batch that travelled fastest), not a mean: it is a lower
// bound of the gateway's lead. A gateway shown ahead is ahead by at least
// that much; one shown behind is behind, or its batches were delayed, by
// at most that much (a collector that lags its stream by seconds shows
// every gateway that far behind).
//
// Only live batches are samples (Clock.Live): not a JetStream backlog
// read after an outage (the collector's liveLag) and not a batch the
// gateway flagged historical (replayed from its spool behind live data):
// they tell how old the data is, not how the clock stands now.

// ClockBucket is the span of one of the two buckets of the clock estimate:
// the estimate is the largest sample of the current bucket and the one
// before it (when that one had samples), so it covers the newest 30-60 s of
// a publishing gateway's live batches, and follows a clock corrected (NTP)
// within a minute. A gateway that sent no live batch for a whole bucket
// starts a fresh estimate with its next one; until then it keeps its last.
const ClockBucket = 30 * time.Second

// DefaultClockTolerance is how far a gateway's clock estimate may lie
// ahead of or behind the collector's clock before the API and dashboard
// mark it (clock_skew), unless WithClockTolerance says otherwise (the
// collector's http.gateway_clock_tolerance).
const DefaultClockTolerance = 2 * time.Second

// Clock is what the collector measured of one batch's gateway clock.
type Clock struct {
	// TSGW is the batch's ts_gw as sent (before the collector bounded it
	// by the arrival), Unix ms.
	TSGW int64
	// Arrival is when the batch arrived, on the collector's clock, Unix ms.
	Arrival int64
	// Live is true for a batch read as it came (not a backlog): only
	// those are samples of the estimate.
	Live bool
	// Bounded is true when the collector set one of the message's times
	// (ts_gw, a reading's ts) to its arrival: counted in
	// clock_ahead_total.
	Bounded bool
}

// clockEst is a gateway's clock estimate: the largest sample of the
// current ClockBucket (cur, bucket at) and of the one before (prev, when
// hasPrev). Constant size per gateway.
type clockEst struct {
	known     bool
	hasPrev   bool
	at        int64 // the current bucket: arrival / ClockBucket
	cur, prev int64 // ms, largest ts_gw - arrival in each
}

func (e *clockEst) add(sample, arrival int64) {
	b := arrival / ClockBucket.Milliseconds()
	switch {
	case e.known && b == e.at:
		e.cur = max(e.cur, sample)
	case e.known && b == e.at+1:
		e.prev, e.hasPrev = e.cur, true
		e.cur, e.at = sample, b
	default: // the first sample, one after a gap of a bucket or more, or the clock went back
		*e = clockEst{known: true, at: b, cur: sample}
	}
}

// offset is the estimate (ms; positive: the gateway's clock is ahead).
func (e *clockEst) offset() (int64, bool) {
	if !e.known {
		return 0, false
	}
	if e.hasPrev {
		return max(e.cur, e.prev), true
	}
	return e.cur, true
}

// skew is "ahead" or "behind" when the estimate lies beyond tol (> 0)
// either way, else "".
func (e *clockEst) skew(tol time.Duration) string {
	off, ok := e.offset()
	t := tol.Milliseconds()
	switch {
	case !ok || t <= 0:
		return ""
	case off > t:
		return "ahead"
	case off < -t:
		return "behind"
	}
	return ""
}

// WithClockTolerance sets how far a gateway's clock estimate may lie ahead
// of or behind the collector's before it is marked (clock_skew); 0 or
// less marks none (default DefaultClockTolerance).
func WithClockTolerance(d time.Duration) LiveOption {
	return func(l *Live) { l.clockTol = max(d, 0) }
}

// ClockTolerance is the store's clock tolerance (WithClockTolerance; 0:
// nothing marked): sent to clients as clock_tolerance_ms.
func (l *Live) ClockTolerance() time.Duration { return l.clockTol }

// ObserveBatchClock is ObserveBatch (late: ObserveLateBatch) with what the
// collector measured of the batch's gateway clock: a live batch not
// flagged historical is a sample of the gateway's clock estimate, and a
// bounded one counts in its clock_ahead_total.
func (l *Live) ObserveBatchClock(b *telemetry.Batch, late bool, c Clock) {
	l.observeBatch(b, !late, &c)
}

// ObserveClockBounded counts a birth or death of gateway id whose ts_gw the
// collector set to its arrival in the gateway's clock_ahead_total; called
// after ObserveBirth or ObserveDeath, so the gateway is in the store.
func (l *Live) ObserveClockBounded(id string) {
	now := l.now().UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.gateways[id]; g != nil {
		g.clockAhead++
		l.settle(g, now) // a counter: held for its refresh slot
	}
}

// ClockSkewed counts the gateways whose clock estimate lies beyond the
// tolerance, ahead and behind (both 0 with the tolerance off).
func (l *Live) ClockSkewed() (ahead, behind int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.gateways {
		switch g.clk.skew(l.clockTol) {
		case "ahead":
			ahead++
		case "behind":
			behind++
		}
	}
	return ahead, behind
}

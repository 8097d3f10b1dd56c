package dashboard

import (
	"slices"
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
// delay >= 0. The estimate is the MEDIAN (the lower one of an even count)
// of the gateway's last ClockSamples live samples that arrived within
// ClockWindow of its newest: as long as more than half of them are honest,
// it is at most an honest sample, so still a lower bound of the gateway's
// lead, and one outlying batch (a clock step, a batch forged by another
// publisher of the site, review10 F4) moves it by at most one place: it
// marks a gateway only while it is the only sample of the window, and the
// gateway's next correct batch clears it. Before, the estimate was the
// largest sample of the window, so one such batch marked a correct gateway
// for up to a minute. A gateway shown ahead is ahead by at least that
// much, unless most of its recent batches were forged or its clock
// stepped; one shown behind is behind, or its batches were delayed (the
// median delay, not the shortest), by at most that much (a collector that
// lags its stream by seconds shows every gateway that far behind).
//
// Only live batches are samples (Clock.Live): not a JetStream backlog
// read after an outage (the collector's liveLag) and not a batch the
// gateway flagged historical (replayed from its spool behind live data):
// they tell how old the data is, not how the clock stands now.
//
// The estimate is of the gateway's last live batches: a gateway shown
// silent or offline (GatewayView.Status) keeps its last clock_offset_ms,
// no longer current, but is not marked (clock_skew) nor counted in
// ClockSkewed (review10 F5: a gateway shut down kept the alert firing).

// ClockWindow is how far back a gateway's clock estimate looks: its live
// samples that arrived within ClockWindow before its newest. It follows
// a clock corrected (NTP) within a minute (or ClockSamples/2 + 1 batches,
// whichever comes first); a gateway that sent no live batch for
// ClockWindow starts a fresh estimate with its next one.
const ClockWindow = time.Minute

// ClockOffsetLimit bounds a gateway's clock samples, and so its estimate,
// either way (review10 F7: a batch dated 1970 or 2200, an edge box without
// a real-time clock or a forged batch, showed clock_offset_ms of about
// -1.76e12 or +7.3e12): a gateway shown that far ahead or behind is at
// least that far off, which is all an operator needs to act on (its clock
// is broken); the exact amount beyond says nothing more. Above the
// largest clock tolerance (24 h), so a clamped estimate is always marked.
const ClockOffsetLimit = 7 * 24 * time.Hour

// ClockSamples is how many of a gateway's newest live samples its clock
// estimate keeps: 5, 88 bytes a gateway with their arrivals (2.9 MB at
// MaxGateways; the largest-sample estimate before took 32).
const ClockSamples = 5

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

// clockEst is a gateway's clock estimate: its newest live samples (ms,
// ts_gw - arrival) and their arrivals (collector's clock, Unix ms), oldest
// first, n of them. Constant size per gateway.
type clockEst struct {
	n      int
	sample [ClockSamples]int64
	at     [ClockSamples]int64
}

// add takes a sample that arrived at arrival, bounded to
// ±ClockOffsetLimit: the samples that arrived ClockWindow or more away
// from it (before, or after: the collector's clock went back) are
// dropped, and the oldest when ClockSamples are held. The bound is
// monotone, so the median of bounded samples is the bounded median.
func (e *clockEst) add(sample, arrival int64) {
	lim := ClockOffsetLimit.Milliseconds()
	sample = min(max(sample, -lim), lim)
	win := ClockWindow.Milliseconds()
	k := 0
	for i := range e.n {
		if d := arrival - e.at[i]; d < win && d > -win {
			e.sample[k], e.at[k] = e.sample[i], e.at[i]
			k++
		}
	}
	if k == ClockSamples {
		copy(e.sample[:], e.sample[1:])
		copy(e.at[:], e.at[1:])
		k--
	}
	e.sample[k], e.at[k] = sample, arrival
	e.n = k + 1
}

// offset is the estimate (ms; positive: the gateway's clock is ahead): the
// lower median of the samples held.
func (e *clockEst) offset() (int64, bool) {
	if e.n == 0 {
		return 0, false
	}
	s := e.sample // a copy, on the stack
	slices.Sort(s[:e.n])
	return s[(e.n-1)/2], true
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
// tolerance, ahead and behind (both 0 with the tolerance off): only
// gateways shown online, not silent (SilentAfter) or offline, whose
// estimate is no longer current.
func (l *Live) ClockSkewed() (ahead, behind int) {
	now := l.now().UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	silentMS := l.silentAfter.Milliseconds()
	for _, g := range l.gateways {
		if g.status(now, silentMS) != "online" {
			continue
		}
		switch g.clk.skew(l.clockTol) {
		case "ahead":
			ahead++
		case "behind":
			behind++
		}
	}
	return ahead, behind
}

package ingest

import (
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Why a Smelter-Sent-At header was ignored (the collector's
// smelter_collector_sent_at_ignored_total{reason}).
const (
	SentAtMalformed       = "malformed"         // not 1-16 digits above 0
	SentAtBeforeTSGW      = "before_ts_gw"      // a publish before the message was stamped
	SentAtBeyondMaxFuture = "beyond_max_future" // a lead ahead beyond max_future
)

// SentAtReasons lists every reason SentAtLead gives.
var SentAtReasons = []string{SentAtMalformed, SentAtBeforeTSGW, SentAtBeyondMaxFuture}

// DefaultClockShiftTolerance is how far a gateway's measured clock lead
// (SentAtLead) may lie ahead before the collector moves the
// gateway's times by it (the collector's clock_shift_tolerance): 2 s,
// above a live message's delivery (gateway spool, broker, collector
// fetch: up to a few hundred ms) and far below the collapse of a spool
// backlog it undoes.
const DefaultClockShiftTolerance = 2 * time.Second

// SentAtLead measures the lead of a gateway's data clock over the
// collector's from a message's Smelter-Sent-At header (sentAt, "" when
// absent; telemetry.SentAtHeader) and its arrival (arrivedAt, the
// collector's clock): lead = sent-at - arrival, in ms, positive for a
// gateway clock ahead. Every delay between publish and arrival makes it
// smaller, so a clock that is right reads as slightly behind.
//
// lead is 0 (nothing to move) when the header is absent, when lead is at
// most tol (clock_shift_tolerance: delivery, not a clock error, or behind:
// a clock behind collapses no backlog, and the collector's own lag in
// reading live messages reads as a lead behind), and when
// the header is ignored; reason then says why (one of SentAtReasons):
// malformed (telemetry.ParseSentAt), before_ts_gw (sent-at before the
// message's ts_gw: one clock cannot publish before it stamps, so the
// header or ts_gw is forged or broken), beyond_max_future (lead above
// maxFuture, the collector's max_future: a header never moves times by
// more than the clock bound allows; such a clock is far wrong, and its
// times are bounded by BoundBatch as before). The header is no more
// trusted than the payload: a publisher of the site can forge both, and
// this bounds what the header adds to a forged ts_gw.
//
// The caller moves the message's gateway times back by lead (ShiftBatch,
// ShiftTSGW) before it bounds them by the arrival: with sent-at >= ts_gw,
// ts_gw - lead is at most the arrival, and a backlog the gateway stamped
// over 90 s and sent in one second keeps its 90 s.
func SentAtLead(sentAt string, tsgw int64, arrival time.Time, tol, maxFuture time.Duration) (lead int64, reason string) {
	if sentAt == "" {
		return 0, ""
	}
	at, ok := telemetry.ParseSentAt(sentAt)
	switch {
	case !ok:
		return 0, SentAtMalformed
	case at < tsgw:
		return 0, SentAtBeforeTSGW
	}
	lead = at - arrival.UnixMilli()
	switch {
	case lead > maxFuture.Milliseconds():
		return 0, SentAtBeyondMaxFuture
	case lead <= tol.Milliseconds():
		// Inside the tolerance, or behind: a clock behind never collapses
		// a backlog (its times are already before the arrival), and a
		// lead behind also measures the collector's own lag in reading
		// live messages (arrivedAt), which must not move a right clock.
		return 0, ""
	}
	return lead, ""
}

// ShiftBatch moves b's ts_gw and the times of its gateway-stamped readings
// (telemetry.GatewayStamped: Modbus, NMEA) back by lead ms (SentAtLead),
// keeping their spacing. A reading's device time (an OPC UA
// SourceTimestamp) is the device's clock, not the gateway's, and stays; so
// does a time of 0 or less (no time: nothing to move, and no overflow). It
// returns how many reading times moved.
func ShiftBatch(b *telemetry.Batch, lead int64) (moved int) {
	if lead == 0 {
		return 0
	}
	ShiftTSGW(&b.TSGW, lead)
	for i := range b.Readings {
		r := &b.Readings[i]
		if r.TS > 0 && telemetry.GatewayStamped(r.Src) {
			r.TS = max(r.TS-lead, 1)
			moved++
		}
	}
	return moved
}

// ShiftTSGW moves a ts_gw (a batch's, birth's or death's, Unix ms) back by
// lead ms (SentAtLead); a ts_gw stays above 0 (telemetry.Batch.Validate).
func ShiftTSGW(tsgw *int64, lead int64) {
	if lead != 0 && *tsgw > 0 {
		*tsgw = max(*tsgw-lead, 1)
	}
}

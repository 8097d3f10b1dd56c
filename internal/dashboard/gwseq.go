package dashboard

import (
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A gateway's last_seq (review11 F6). It is the highest seq of the
// gateway's messages, so one message with a forged seq far ahead (any
// publisher of the site may use the gateway's id; the collector accepts
// seqs up to 2^53-1) pinned it there, and the gateway's real batches then
// never followed it (telemetry.Batch.Follows: its data clock no longer
// followed its clock stepping back). Two bounds:
//   - a seq no gateway could have numbered by now is not taken: a
//     gateway numbers from 1 (spools of releases before the seq floor) or
//     from its clock in Unix microseconds when its spool was created
//     (docs/reliability.md, "Sequence numbers"), and uses fewer seqs than
//     the microseconds since, so its seqs stay below its clock in Unix
//     microseconds. One beyond the collector's clock in Unix microseconds
//     plus SeqAhead is suspect: counted in the gateway's seq_suspect_total
//     and not its last_seq (the message itself is handled as before);
//   - a live batch not flagged historical more than the seq window
//     (WithSeqWindow, the collector's dedup_window) behind last_seq
//     takes its place, as the rules' recorded seq does: the gateway
//     numbers from there now (a spool started over), or the seq before it
//     was forged. A forged seq below the first bound then holds last_seq
//     until the gateway's next live batch.

// SeqAhead is how far ahead of the collector's clock the Unix-microsecond
// time a gateway's seq may stand for lies before the seq is suspect: a
// spool created by a clock that ran fast by up to a day is still taken.
const SeqAhead = 24 * time.Hour

// DefaultSeqWindow is the seq window of a store made without
// WithSeqWindow: the collector's default dedup_window.
const DefaultSeqWindow = 16384

// WithSeqWindow sets how far behind a gateway's last_seq a live batch's seq
// must lie to take its place (the collector's dedup_window; default
// DefaultSeqWindow; 0 or less keeps the default).
func WithSeqWindow(n int) LiveOption {
	return func(l *Live) {
		if n > 0 {
			l.seqWindow = uint64(n)
		}
	}
}

// plausibleSeq reports whether a gateway could have numbered seq by now
// (Unix ms, the collector's clock): at most its time in Unix microseconds
// plus SeqAhead.
func plausibleSeq(seq uint64, now int64) bool {
	return seq <= uint64(max(now, 0)+SeqAhead.Milliseconds())*1000
}

// takeSeq records the seq of one of g's messages received at now (Unix
// ms); live: a live batch not flagged historical that the rules evaluated.
// It reports whether the message follows g's newest (Batch.Follows; only
// for a batch, b not nil).
func (l *Live) takeSeq(g *gatewayLive, b *telemetry.Batch, seq uint64, now int64, live bool) (follows bool) {
	switch {
	case !plausibleSeq(seq, now):
		g.seqSuspect++
	case seq > g.lastSeq:
		follows = b != nil && b.Follows(g.id, g.lastSeq)
		g.lastSeq = seq
	case live && seq != 0 && seq+l.seqWindow < g.lastSeq:
		g.lastSeq = seq // the gateway numbers from here now
	}
	return follows
}

package forward

import (
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// lanes is the forwarder's two-lane state machine, without I/O, goroutines
// or clocks: the forwarder feeds it what happened (records read by the
// durable reader, a live lane started or ended having confirmed up to some
// seq, a commit) and it answers what the durable (backfill) lane sends,
// which of those are marked historical, what to commit, and when the
// backfill lane has reached the live lane and takes over. It is owned by
// the goroutine running the durable lane; tests drive it step by step.
//
// Invariants: the durable cursor only ever moves over contiguous seqs that
// a broker confirmed (by either lane); a data batch is marked historical
// when its seq is below the start of the newest live lane, so that, for a
// consumer, an unmarked batch is never older than one it already has.
type lanes struct {
	liveFirst bool
	liveAfter time.Duration

	live      *liveSpan  // the running live lane; nil when none
	confirmed []seqRange // confirmed by finished live lanes, not yet committed
	histBelow uint64     // data batches below this seq are marked historical
}

type liveSpan struct{ from uint64 } // first seq the live lane publishes

type seqRange struct{ from, to uint64 }

// maxConfirmedRanges bounds what finished live lanes leave behind; the
// oldest range is forgotten beyond it (its batches are sent again, which
// consumers deduplicate).
const maxConfirmedRanges = 64

// item is one record the durable lane sends.
type item struct {
	idx  int  // index in the records given to plan
	hist bool // mark it historical
}

// plan is the durable lane's next step.
type plan struct {
	items []item
	// last is the seq of the last record this lane handled (sent, or
	// skipped because a live lane confirmed it): commit it once the items
	// are confirmed. 0 when the lane handled none.
	last uint64
	// reachedLive: the records from the live lane's start on were left
	// out; the backfill lane takes over from the live lane (takeOver).
	reachedLive bool
}

// wantLive reports whether a live lane should start: live_first, none
// running, the uplink ready and the durable reader's oldest unsent record
// at least liveAfter old.
func (l *lanes) wantLive(ready bool, oldest time.Duration) bool {
	return l.liveFirst && l.live == nil && ready && oldest >= l.liveAfter
}

// liveStarted records a live lane publishing from seq from on.
func (l *lanes) liveStarted(from uint64) {
	l.live = &liveSpan{from: from}
	l.histBelow = max(l.histBelow, from)
}

// liveRunning reports whether a live lane runs.
func (l *lanes) liveRunning() bool { return l.live != nil }

// liveEnded records that the live lane stopped having confirmed every seq
// from its start to to (to < its start: none). It returns to when the lane
// confirmed anything, else 0.
func (l *lanes) liveEnded(to uint64) uint64 {
	lv := l.live
	l.live = nil
	if lv == nil || to < lv.from {
		return 0
	}
	l.confirmed = append(l.confirmed, seqRange{lv.from, to})
	if len(l.confirmed) > maxConfirmedRanges {
		l.confirmed = l.confirmed[1:]
	}
	return to
}

// plan decides what the durable lane does with recs (consecutive records
// from its reader): records a finished live lane confirmed are skipped,
// records from the running live lane's start on are left to it, data
// batches below histBelow are marked historical.
func (l *lanes) plan(recs []spool.Record, items []item) plan {
	p := plan{items: items[:0]}
	for i := range recs {
		rec := &recs[i]
		if l.live != nil && rec.Seq >= l.live.from {
			p.reachedLive = true
			break
		}
		p.last = rec.Seq
		if l.confirmedByLive(rec.Seq) {
			continue
		}
		p.items = append(p.items, item{idx: i, hist: rec.Seq < l.histBelow && isData(rec.Subject)})
	}
	return p
}

// committed records that the durable cursor moved to seq: live-lane
// ranges it passed are forgotten.
func (l *lanes) committed(seq uint64) {
	for len(l.confirmed) > 0 && l.confirmed[0].to <= seq {
		l.confirmed = l.confirmed[1:]
	}
}

func (l *lanes) confirmedByLive(seq uint64) bool {
	for _, c := range l.confirmed {
		if seq >= c.from && seq <= c.to {
			return true
		}
	}
	return false
}

var (
	dataSuffix  = "." + string(telemetry.KindData)
	birthSuffix = "." + string(telemetry.KindBirth)
)

func isData(subject string) bool  { return strings.HasSuffix(subject, dataSuffix) }
func isBirth(subject string) bool { return strings.HasSuffix(subject, birthSuffix) }

package forward

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/spool"
)

// The lane state machine, driven step by step: no goroutines, no clocks.

const (
	dataSubj  = "smelter.v1.s.motor.m-1.data"
	birthSubj = "smelter.v1.s.motor.m-1.birth"
)

// recs returns records from..to (data, except the seqs in births).
func recs(from, to uint64, births ...uint64) []spool.Record {
	var out []spool.Record
	for s := from; s <= to; s++ {
		subj := dataSubj
		if slices.Contains(births, s) {
			subj = birthSubj
		}
		out = append(out, spool.Record{Seq: s, Subject: subj})
	}
	return out
}

// sent describes a plan: the seqs sent, "h" after historical ones.
func sent(rs []spool.Record, p plan) string {
	var s string
	for _, it := range p.items {
		if s != "" {
			s += " "
		}
		s += fmt.Sprint(rs[it.idx].Seq)
		if it.hist {
			s += "h"
		}
	}
	return s
}

func check(t *testing.T, step string, rs []spool.Record, p plan, wantSent string, wantLast uint64, wantReached bool) {
	t.Helper()
	if got := sent(rs, p); got != wantSent || p.last != wantLast || p.reachedLive != wantReached {
		t.Fatalf("%s: sent %q last %d reachedLive %v; want %q last %d reachedLive %v",
			step, got, p.last, p.reachedLive, wantSent, wantLast, wantReached)
	}
}

func TestLanesOldestFirstIsOneLane(t *testing.T) {
	l := lanes{liveAfter: time.Second}
	if l.wantLive(true, time.Hour) {
		t.Fatal("oldest_first started a live lane")
	}
	rs := recs(1, 5, 3)
	check(t, "plan", rs, l.plan(rs, nil), "1 2 3 4 5", 5, false)
}

func TestLanesWhenToStartLive(t *testing.T) {
	l := lanes{liveFirst: true, liveAfter: 2 * time.Second}
	for _, c := range []struct {
		ready  bool
		oldest time.Duration
		want   bool
	}{{false, time.Hour, false}, {true, time.Second, false}, {true, 2 * time.Second, true}} {
		if got := l.wantLive(c.ready, c.oldest); got != c.want {
			t.Errorf("ready %v oldest %v: want live %v, got %v", c.ready, c.oldest, c.want, got)
		}
	}
	l.liveStarted(10)
	if l.wantLive(true, time.Hour) {
		t.Fatal("a second live lane while one runs")
	}
}

// TestLanesBackfillTakesOver: the backlog 1..10 goes behind a live lane
// started at 11, marked historical (births are not marked); on reaching 11
// the backfill lane takes over what the live lane confirmed, and what
// follows is live again.
func TestLanesBackfillTakesOver(t *testing.T) {
	l := lanes{liveFirst: true, liveAfter: time.Second}
	l.liveStarted(11)
	rs := recs(1, 6, 4)
	check(t, "backlog part 1", rs, l.plan(rs, nil), "1h 2h 3h 4 5h 6h", 6, false)
	rs = recs(7, 14)
	check(t, "backlog reaches the live lane", rs, l.plan(rs, nil), "7h 8h 9h 10h", 10, true)
	if got := l.liveEnded(20); got != 20 {
		t.Fatalf("take-over commits %d, want 20", got)
	}
	l.committed(20)
	if len(l.confirmed) != 0 {
		t.Fatalf("confirmed ranges %v left after the commit passed them", l.confirmed)
	}
	rs = recs(21, 23)
	check(t, "after the take-over", rs, l.plan(rs, nil), "21 22 23", 23, false)
}

// TestLanesLiveLaneFails: a live lane confirms 11..14 and stops on a publish
// failure; the backfill lane skips 11..14 (committing over them), sends
// 15.. unmarked (newer than anything the consumer has), and a second live
// lane at 30 makes 21..29 historical.
func TestLanesLiveLaneFails(t *testing.T) {
	l := lanes{liveFirst: true, liveAfter: time.Second}
	l.liveStarted(11)
	if got := l.liveEnded(14); got != 14 {
		t.Fatalf("liveEnded = %d, want 14", got)
	}
	rs := recs(1, 20)
	check(t, "drain after the failure", rs, l.plan(rs, nil), "1h 2h 3h 4h 5h 6h 7h 8h 9h 10h 15 16 17 18 19 20", 20, false)
	l.committed(20)
	if !l.wantLive(true, time.Hour) {
		t.Fatal("no new live lane after another outage")
	}
	l.liveStarted(30)
	rs = recs(21, 31)
	check(t, "second backlog", rs, l.plan(rs, nil), "21h 22h 23h 24h 25h 26h 27h 28h 29h", 29, true)
}

// TestLanesSendFailureResends: a failed publish rewinds the reader; the
// same records planned again give the same step (nothing is committed
// in between).
func TestLanesSendFailureResends(t *testing.T) {
	l := lanes{liveFirst: true, liveAfter: time.Second}
	l.liveStarted(5)
	l.liveEnded(7)
	rs := recs(1, 9)
	first := sent(rs, l.plan(rs, nil))
	again := l.plan(rs, nil)
	check(t, "retry", rs, again, first, 9, false)
	if first != "1h 2h 3h 4h 8 9" {
		t.Fatalf("sent %q", first)
	}
}

// TestLanesNothingConfirmed: a live lane that confirmed nothing leaves no
// range and commits nothing on take-over.
func TestLanesNothingConfirmed(t *testing.T) {
	l := lanes{liveFirst: true, liveAfter: time.Second}
	l.liveStarted(5)
	rs := recs(5, 6)
	check(t, "at the live lane's start", rs, l.plan(rs, nil), "", 0, true)
	if got := l.liveEnded(4); got != 0 || len(l.confirmed) != 0 {
		t.Fatalf("liveEnded = %d, ranges %v", got, l.confirmed)
	}
	check(t, "alone again", rs, l.plan(rs, nil), "5 6", 6, false)
}

// TestLanesConfirmedRangesBounded: beyond maxConfirmedRanges the oldest
// range is forgotten: its batches are sent again (deduplicated
// downstream), never lost.
func TestLanesConfirmedRangesBounded(t *testing.T) {
	l := lanes{liveFirst: true, liveAfter: time.Second}
	for i := range uint64(maxConfirmedRanges + 1) {
		from := 10 + 3*i
		l.liveStarted(from)
		l.liveEnded(from) // one seq each, a gap of two between
	}
	if len(l.confirmed) != maxConfirmedRanges {
		t.Fatalf("%d ranges kept", len(l.confirmed))
	}
	rs := recs(10, 13)
	check(t, "forgotten range re-sent", rs, l.plan(rs, nil), "10h 11h 12h", 13, false)
}

package spool

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSeqFloor(t *testing.T) {
	for _, tc := range []struct {
		name string
		now  time.Time
		want uint64
		ok   bool
	}{
		{"now", time.Date(2026, 12, 1, 1, 2, 3, 456789000, time.UTC), 1_796_086_923_456_789, true},
		{"at the minimum", time.UnixMicro(int64(MinSeqFloor)), MinSeqFloor, true},
		{"no RTC: 1970", time.Unix(42, 0), MinSeqFloor, false},
		{"before 1970", time.Date(1901, 1, 1, 0, 0, 0, 0, time.UTC), MinSeqFloor, false},
		{"at the maximum", time.UnixMicro(int64(MaxSeqFloor)), MaxSeqFloor, true},
		{"year 2200", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), MaxSeqFloor, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := SeqFloor(tc.now)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("SeqFloor(%v) = %d, %v; want %d, %v", tc.now, got, ok, tc.want, tc.ok)
			}
		})
	}
	if MaxSeqFloor*2-1 != 1<<53-1 {
		t.Fatal("MaxSeqFloor leaves less than itself below 2^53-1")
	}
}

// A gateway whose spool directory is wiped (new disk, reinstall) keeps its
// id: the new spool's seqs must continue above every seq the old one used,
// or consumers deduplicating on (gateway, seq) drop the new batches as
// duplicates of the old ones (JetStream by Nats-Msg-Id within its window,
// the collector and history on (gateway, seq)).
func TestWipedSpoolContinuesAboveTheOldSeqs(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.zeroSeqFloor = false
	floor, _ := SeqFloor(time.Now())
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	old := h.append(300, 100)
	if old[0] <= floor {
		t.Fatalf("first seq of a new spool %d, want above the clock floor %d taken before Open", old[0], floor)
	}
	readAll(t, r, 300, 100, false)
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	// The documented bound: an old spool stays below the floor of a new one
	// while it used fewer seqs than microseconds passed since it was
	// created (300 appends take more than 300 µs, but the test does not
	// rely on the machine's speed).
	oldLast := old[len(old)-1]
	waitFor(t, time.Second, func() bool { return uint64(time.Now().UnixMicro()) > oldLast })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	h = open(t, cfg)
	r, err := h.s.Reader("nats")
	if err != nil {
		t.Fatal(err)
	}
	if last := h.s.LastSeq(); last <= oldLast {
		t.Fatalf("wiped spool starts after seq %d, at or below the old spool's last seq %d", last, oldLast)
	}
	fresh := h.append(10, 100)
	if fresh[0] <= oldLast {
		t.Fatalf("wiped spool's first seq %d is at or below the old spool's last %d", fresh[0], oldLast)
	}
	got := readAll(t, r, 10, 100, false)
	if got[0] != fresh[0] {
		t.Fatalf("a new reader starts at seq %d, want the first appended %d", got[0], fresh[0])
	}
	if lag := r.Lag(); lag.Records != 10 {
		t.Fatalf("lag %d records, want 10", lag.Records)
	}
}

// A spool written before the floor existed (seqs from 1) keeps its seqs:
// the floor is for a spool with nothing persisted, never a jump of a
// running one.
func TestExistingSpoolKeepsItsSeq(t *testing.T) {
	for _, tc := range []struct {
		name   string
		commit bool // every record committed and its segments deleted
	}{{"records spooled", false}, {"everything sent", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir) // as an older release: seqs from 1
			h := open(t, cfg)
			r, _ := h.s.Reader("nats")
			h.append(200, 2000)
			if tc.commit {
				readAll(t, r, 200, 2000, false)
				if err := r.Commit(200); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.s.Close(); err != nil {
				t.Fatal(err)
			}
			cfg.zeroSeqFloor = false
			h = open(t, cfg)
			if got := h.append(1, 10); got[0] != 201 {
				t.Fatalf("seq after the upgrade %d, want 201", got[0])
			}
		})
	}
}

// A new spool on a box whose clock is not plausible (no RTC: 1970) starts
// at MinSeqFloor, says so, and keeps its seqs across restarts like any
// spool, even once the clock is right.
func TestNewSpoolWithoutAClock(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.zeroSeqFloor = false
	cfg.seqClock = func() time.Time { return time.Unix(97, 0) }
	var logs bytes.Buffer
	s, err := Open(cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.LastSeq(); got != MinSeqFloor {
		t.Fatalf("new spool at 1970: last seq %d, want MinSeqFloor %d", got, MinSeqFloor)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "wall clock is not plausible") ||
		!strings.Contains(logs.String(), "clock=1970-01-01T00:01:37Z") {
		t.Fatalf("no warning naming the clock: %s", logs.String())
	}
	h := &harness{t: t, s: s}
	if got := h.append(3, 10); got[0] != MinSeqFloor+1 {
		t.Fatalf("first seq %d, want %d", got[0], MinSeqFloor+1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.seqClock = nil // the clock is right now: the spool keeps its seqs
	h = open(t, cfg)
	if got := h.append(1, 10); got[0] != MinSeqFloor+4 {
		t.Fatalf("seq after a restart %d, want %d", got[0], MinSeqFloor+4)
	}
}

// Only the segment files and cursors are gone (seq.hwm kept, not closed
// cleanly, same boot): the spool has nothing naming its last seq but the
// reservation, which a crash within the same boot does not trust; the
// floor still puts the new seqs above the old ones.
func TestSegmentsWipedWithoutACleanClose(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.zeroSeqFloor = false
	h := open(t, cfg)
	old := h.append(50, 100)
	// no Close: the hwm holds a reservation, not a clean last seq
	if err := h.s.closeFiles(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, s := range segs {
		if err := os.Remove(s); err != nil {
			t.Fatal(err)
		}
	}
	oldLast := old[len(old)-1]
	waitFor(t, time.Second, func() bool { return uint64(time.Now().UnixMicro()) > oldLast })
	h = open(t, cfg)
	if got := h.append(1, 10); got[0] <= oldLast {
		t.Fatalf("seq %d after the segments were wiped, at or below the old last %d", got[0], oldLast)
	}
}

package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		mod   func(*Config)
		field string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no dir", func(c *Config) { c.Dir = "" }, "dir"},
		{"tiny segment", func(c *Config) { c.SegmentBytes = 1000 }, "segment_bytes"},
		{"budget below two segments", func(c *Config) { c.MaxBytes = c.SegmentBytes }, "max_bytes"},
		{"negative age", func(c *Config) { c.MaxAge = -time.Second }, "max_age"},
		{"fsync typo", func(c *Config) { c.Fsync = "sometimes" }, "fsync"},
		{"fsync interval", func(c *Config) { c.FsyncInterval = time.Microsecond }, "fsync_interval"},
		{"when_full typo", func(c *Config) { c.WhenFull = "drop" }, "when_full"},
		{"negative replay", func(c *Config) { c.ReplayRate = -1 }, "replay_rate"},
		{"negative cache", func(c *Config) { c.CacheBytes = -1 }, "cache_bytes"},
		{"backlog typo", func(c *Config) { c.Backlog = "newest_first" }, "backlog"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Dir: "x"}
			c.SetDefaults()
			tc.mod(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
	c := Config{Dir: "x"}
	c.SetDefaults()
	if c.MaxBytes != 1<<30 || c.MaxAge != 7*24*time.Hour || c.SegmentBytes != 16<<20 || c.Fsync != "interval" ||
		c.FsyncInterval != time.Second || c.WhenFull != "discard_oldest" || c.ReplayRate != 0 ||
		c.Backlog != "oldest_first" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestAppendReadCommit(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	r, err := h.s.Reader("nats")
	if err != nil {
		t.Fatal(err)
	}
	seqs := h.appendSubj(100, 700)
	contiguous(t, seqs, 1)
	got := readAll(t, r, 100, 700, true)
	contiguous(t, got, 1)
	if l := r.Lag(); l.Records != 100 || l.Bytes <= 0 {
		t.Fatalf("lag before commit: %+v", l)
	}
	if err := r.Commit(60); err != nil {
		t.Fatal(err)
	}
	if l := r.Lag(); l.Records != 40 {
		t.Fatalf("lag after commit 60: %+v", l)
	}
	if err := r.Commit(101); err == nil {
		t.Fatal("commit beyond the log accepted")
	}
	// Rewind re-delivers what was not committed.
	r.Rewind()
	got = readAll(t, r, 40, 700, true)
	contiguous(t, got, 61)
	if err := r.Commit(100); err != nil {
		t.Fatal(err)
	}
	if l := r.Lag(); l != (Lag{}) {
		t.Fatalf("lag after commit all: %+v", l)
	}
	if n := counter(h.m.appendedRecords); n != 100 {
		t.Fatalf("appended_records_total = %v", n)
	}
	if _, err := h.s.Reader("nats"); !errors.Is(err, ErrReaderOpen) {
		t.Fatalf("second open of a reader: %v", err)
	}
	if _, err := h.s.Reader("bad name"); err == nil {
		t.Fatal("bad reader name accepted")
	}
}

func TestNextBlocksUntilAppend(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	r, err := h.s.Reader("mqtt")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		recs []Record
		err  error
	}
	done := make(chan result, 1)
	go func() {
		recs, err := r.Next(context.Background(), 10, 0)
		done <- result{append([]Record(nil), recs...), err}
	}()
	select {
	case res := <-done:
		t.Fatalf("Next returned before any append: %+v", res)
	default:
	}
	h.appendSubj(1, 100)
	var res result
	waitFor(t, 5*time.Second, func() bool {
		select {
		case res = <-done:
			return true
		default:
			return false
		}
	})
	if res.err != nil || len(res.recs) != 1 || res.recs[0].Seq != 1 {
		t.Fatalf("Next: %+v", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Next(ctx, 1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with cancelled ctx: %v", err)
	}
	// Close wakes a blocked Next.
	go func() {
		_, err := r.Next(context.Background(), 10, 0)
		done <- result{err: err}
	}()
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		select {
		case res = <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(res.err, ErrClosed) {
		t.Fatalf("Next after close: %v", res.err)
	}
}

func TestRestartResumesCursorsAndSeq(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	a, _ := h.s.Reader("nats")
	b, _ := h.s.Reader("mqtt")
	h.appendSubj(50, 2000)
	readAll(t, a, 50, 2000, true)
	if err := a.Commit(20); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(35); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}

	h = open(t, cfg)
	if h.s.LastSeq() != 50 {
		t.Fatalf("last seq after restart = %d", h.s.LastSeq())
	}
	a, _ = h.s.Reader("nats")
	b, _ = h.s.Reader("mqtt")
	contiguous(t, readAll(t, a, 30, 2000, true), 21)
	contiguous(t, readAll(t, b, 15, 2000, true), 36)
	seqs := h.appendSubj(5, 2000)
	contiguous(t, seqs, 51)
	contiguous(t, readAll(t, a, 5, 2000, true), 51)
}

func TestSeqNeverReusedAfterAllSegmentsDeleted(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	h.append(200, 2000) // several 64 KiB segments
	readAll(t, r, 200, 2000, false)
	if err := r.Commit(200); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("fully committed segments not deleted: %v", segs)
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen, commit everything (already), roll: only the active segment
	// (named for the next seq) remains; then delete every segment file by
	// hand as well. The seq must still continue.
	h = open(t, cfg)
	if got := h.appendSubj(1, 10); got[0] != 201 {
		t.Fatalf("seq after restart %d, want 201", got[0])
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ = filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, s := range segs {
		if err := os.Remove(s); err != nil {
			t.Fatal(err)
		}
	}
	h = open(t, cfg)
	if got := h.appendSubj(1, 10); got[0] != 202 {
		t.Fatalf("seq after every segment was deleted: %d, want 202", got[0])
	}
}

func TestTwoReadersIndependent(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	fast, _ := h.s.Reader("nats")
	slow, _ := h.s.Reader("mqtt")
	h.appendSubj(300, 1000)
	contiguous(t, readAll(t, fast, 300, 1000, true), 1)
	if err := fast.Commit(300); err != nil {
		t.Fatal(err)
	}
	// The slow reader still holds every segment.
	contiguous(t, readAll(t, slow, 100, 1000, true), 1)
	if err := slow.Commit(100); err != nil {
		t.Fatal(err)
	}
	if l := slow.Lag(); l.Records != 200 {
		t.Fatalf("slow lag %+v", l)
	}
	if l := fast.Lag(); l.Records != 0 {
		t.Fatalf("fast lag %+v", l)
	}
	contiguous(t, readAll(t, slow, 200, 1000, true), 101)
	if err := slow.Commit(300); err != nil {
		t.Fatal(err)
	}
	if n := counter(h.m.segments); n != 1 {
		t.Fatalf("segments after both committed: %v", n)
	}
}

func TestBacklogReadFromDisk(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CacheBytes = 32 << 10 // a few records: a reader behind reads the files
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	h.appendSubj(500, 3000)
	got := readAll(t, r, 500, 3000, true)
	contiguous(t, got, 1)
	disk := counter(h.m.diskReads.WithLabelValues("nats"))
	cache := counter(h.m.cacheReads.WithLabelValues("nats"))
	if disk < 480 || disk+cache != 500 {
		t.Fatalf("disk reads %v, cache reads %v", disk, cache)
	}
	// Rewind into the middle of a segment (sparse index + forward scan).
	if err := r.Commit(77); err != nil {
		t.Fatal(err)
	}
	r.Rewind()
	contiguous(t, readAll(t, r, 423, 3000, true), 78)
	// Live records after catching up come from the cache.
	h.appendSubj(3, 3000)
	contiguous(t, readAll(t, r, 3, 3000, true), 501)
	if c := counter(h.m.cacheReads.WithLabelValues("nats")); c < cache+3 {
		t.Fatalf("live reads not served from cache: %v", c)
	}
}

func TestLargeRecordAndByteLimit(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentBytes = 1 << 20
	cfg.CacheBytes = 1 << 10
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	h.appendSubj(1, 3<<20) // larger than a segment and than the read buffer
	h.appendSubj(4, 1000)
	ctx := context.Background()
	recs, err := r.Next(ctx, 10, 1)
	if err != nil || len(recs) != 1 || recs[0].Seq != 1 {
		t.Fatalf("first Next: %d records, %v", len(recs), err)
	}
	checkRecord(t, recs[0], 3<<20, true)
	recs, err = r.Next(ctx, 10, 2500)
	if err != nil || len(recs) != 2 {
		t.Fatalf("byte-limited Next: %d records, %v", len(recs), err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	r, _ := h.s.Reader("nats")
	const workers, each = 4, 300
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := h.s.Append(context.Background(), "smelter.v1.s.c.a.data", func(seq uint64, dst []byte) []byte {
					return payload(dst, seq, 500)
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	got := readAll(t, r, workers*each, 500, false)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	contiguous(t, got, 1)
}

func TestMaxBytesDiscardOldest(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxBytes = 4 * cfg.SegmentBytes
	cfg.CacheBytes = 16 << 10
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	h.appendSubj(20, 2000)
	first := readAll(t, r, 20, 2000, true) // read, never committed (uplink down)
	contiguous(t, first, 1)
	h.appendSubj(400, 2000) // ~840 KB into a 256 KiB budget
	if d := counter(h.m.diskBytes); d > float64(cfg.MaxBytes) {
		t.Fatalf("disk bytes %v over budget %d", d, cfg.MaxBytes)
	}
	discarded := counter(h.m.discarded)
	if discarded == 0 {
		t.Fatal("nothing counted as discarded")
	}
	// The reader goes on from where it was: the gap it sees must equal
	// its discarded counter.
	prev := uint64(20)
	var gap uint64
	ctx := context.Background()
	for prev < 420 {
		recs, err := r.Next(ctx, 50, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			checkRecord(t, rec, 2000, true)
			gap += rec.Seq - prev - 1
			prev = rec.Seq
		}
	}
	lost := counter(h.m.readerDiscarded.WithLabelValues("nats"))
	if gap == 0 || float64(gap) != lost {
		t.Fatalf("seq gap seen %d, reader_discarded %v", gap, lost)
	}
	// The total counts every record deleted unread by the reader
	// (committed cursor 0): those it had read and those it skipped.
	if discarded != float64(gap+20) {
		t.Fatalf("discarded_records_total %v, want gap %d + 20 read-but-uncommitted", discarded, gap)
	}
	// The skip moved the committed cursor past the deleted records: a
	// rewind does not count them twice.
	r.Rewind()
	recs, err := r.Next(ctx, 1, 0)
	if err != nil || recs[0].Seq != gap+21 {
		t.Fatalf("after rewind: %v %v", recs, err)
	}
	if l := counter(h.m.readerDiscarded.WithLabelValues("nats")); l != lost {
		t.Fatalf("rewind recounted the gap: %v", l)
	}
}

func TestBlockPolicy(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxBytes = 2 * cfg.SegmentBytes
	cfg.WhenFull = WhenFullBlock
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	// Fill the budget with unacknowledged data.
	var n int
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := h.s.Append(ctx, "s", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 4000) })
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n > 100 {
			t.Fatal("block policy never blocked")
		}
	}
	if d := counter(h.m.diskBytes); d > float64(cfg.MaxBytes) {
		t.Fatalf("disk %v over budget", d)
	}
	if counter(h.m.discarded) != 0 {
		t.Fatal("block policy discarded data")
	}
	if counter(h.m.blockedSeconds) <= 0 {
		t.Fatal("blocked time not counted")
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.s.Append(context.Background(), "s", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 4000) })
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("append did not block: %v", err)
	default:
	}
	// The uplink confirms everything: the append goes through.
	readAll(t, r, n, 4000, false)
	if err := r.Commit(uint64(n)); err != nil {
		t.Fatal(err)
	}
	var err error
	waitFor(t, 10*time.Second, func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	contiguous(t, readAll(t, r, 1, 4000, false), uint64(n+1))
}

func TestMaxAge(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxAge = time.Hour
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	clock := time.Now().Add(-3 * time.Hour)
	h.s.now = func() time.Time { return clock }
	h.appendSubj(100, 2000) // old records over several segments
	clock = time.Now()
	h.s.now = time.Now
	if l := r.Lag(); l.OldestAge < 2*time.Hour {
		t.Fatalf("oldest age %v", l.OldestAge)
	}
	h.s.enforceAge()
	if got := counter(h.m.discarded); got != 100 {
		t.Fatalf("discarded %v, want 100", got)
	}
	h.appendSubj(5, 2000)
	recs := readAll(t, r, 5, 2000, true)
	contiguous(t, recs, 101)
	if l := counter(h.m.readerDiscarded.WithLabelValues("nats")); l != 100 {
		t.Fatalf("reader discarded %v", l)
	}
}

func TestRemoveReaderReleasesSegments(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	a, _ := h.s.Reader("nats")
	if _, err := h.s.Reader("old"); err != nil {
		t.Fatal(err)
	}
	h.append(100, 2000)
	readAll(t, a, 100, 2000, false)
	_ = a.Commit(100)
	if counter(h.m.segments) < 2 {
		t.Fatal("segments deleted while a reader had not committed")
	}
	if err := h.s.RemoveReader("old"); err != nil {
		t.Fatal(err)
	}
	if n := counter(h.m.segments); n != 1 {
		t.Fatalf("segments after removing the lagging reader: %v", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "old.cursor")); !os.IsNotExist(err) {
		t.Fatalf("cursor file left: %v", err)
	}
}

func TestDirLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, testConfig(dir))
	if _, err := Open(testConfig(dir), nil, nil); err == nil {
		t.Fatal("second Open of the same dir succeeded")
	}
}

func TestLagMetrics(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	r, _ := h.s.Reader("nats")
	h.appendSubj(10, 100)
	_ = r.Commit(4)
	if v, ok := gathered(t, h.reg, "smelter_spool_reader_lag_records", "nats"); !ok || v != 6 {
		t.Fatalf("lag records metric %v %v", v, ok)
	}
	if v, ok := gathered(t, h.reg, "smelter_spool_reader_lag_bytes", "nats"); !ok || v <= 0 {
		t.Fatalf("lag bytes metric %v %v", v, ok)
	}
	if _, ok := gathered(t, h.reg, "smelter_spool_reader_lag_oldest_age_seconds", "nats"); !ok {
		t.Fatal("no oldest age metric")
	}
}

func TestReplayRateCap(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CacheBytes = 1 << 10
	cfg.ReplayRate = 2000 // burst: 200 records
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	h.appendSubj(600, 500)
	ctx := context.Background()
	var got []uint64
	for len(got) < 600 {
		recs, err := r.Next(ctx, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 200 {
			t.Fatalf("one Next returned %d backlog records, above the rate cap's burst", len(recs))
		}
		for _, rec := range recs {
			checkRecord(t, rec, 500, true)
			got = append(got, rec.Seq)
		}
	}
	contiguous(t, got, 1)
}

func TestSeqSkipsReservationAfterReboot(t *testing.T) {
	for _, tc := range []struct {
		fsync string
		want  uint64
	}{{FsyncInterval, 5000}, {FsyncAlways, 10}} {
		t.Run(tc.fsync, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.Fsync = tc.fsync
			h := open(t, cfg)
			h.appendSubj(10, 100)
			crash(t, h.s)
			// The hwm as a previous boot left it: seqs reserved up to 5000,
			// no clean close.
			sf, _, err := openSlotFile(filepath.Join(dir, hwmFileName))
			if err != nil {
				t.Fatal(err)
			}
			old := &Spool{hwm: sf, bootID: "00000000-previous-boot"}
			if err := old.writeHWM(5000, false); err != nil {
				t.Fatal(err)
			}
			sf.f.Close()
			h = open(t, cfg)
			if got := h.s.LastSeq(); got != tc.want {
				t.Fatalf("last seq after reboot %d, want %d", got, tc.want)
			}
		})
	}
}

// TestReadersListsCursorsFoundAtOpen: a cursor left in the directory by a
// reader not opened in this run is listed, so the gateway can remove it.
func TestReadersListsCursorsFoundAtOpen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	s, err := Open(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nats", "kafka"} {
		if _, err := s.Reader(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	h := open(t, cfg)
	if got := strings.Join(h.s.Readers(), " "); got != "kafka nats" {
		t.Fatalf("Readers() after reopen = %s", got)
	}
	if _, err := h.s.Reader("mqtt"); err != nil {
		t.Fatal(err)
	}
	if err := h.s.RemoveReader("kafka"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.s.Readers(), " "); got != "mqtt nats" {
		t.Fatalf("Readers() after RemoveReader = %s", got)
	}
}

// TestTailReader: a Tail reader starts after the last record, sees only
// what is appended later, and holds nothing back: segments a durable reader
// committed are deleted whatever the Tail reader's position, and closing it
// leaves the spool's readers unchanged.
func TestTailReader(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	d, err := h.s.Reader("nats")
	if err != nil {
		t.Fatal(err)
	}
	h.append(100, 2000)
	tail, err := h.s.Tail("nats-live")
	if err != nil {
		t.Fatal(err)
	}
	h.append(100, 2000)
	recs := readAll(t, tail, 100, 2000, false)
	contiguous(t, recs, 101)
	if strings.Join(h.s.Readers(), " ") != "nats" {
		t.Fatalf("Readers() lists the tail reader: %v", h.s.Readers())
	}
	readAll(t, d, 200, 2000, false)
	if err := d.Commit(200); err != nil {
		t.Fatal(err)
	}
	if n := counter(h.m.segments); n != 1 {
		t.Fatalf("%v segments after the durable reader committed everything", n)
	}
	tail.Close()
	h.append(1, 2000)
	if _, ok := gathered(t, h.reg, "smelter_spool_reader_lag_records", "nats-live"); ok {
		t.Fatal("the tail reader reports a lag metric")
	}
}

// TestValidateEveryProblem: every bad field at once (review finding 4).
func TestValidateEveryProblem(t *testing.T) {
	c := Config{Dir: "x", MaxBytes: -5, Fsync: "sometimes", WhenFull: "explode"}
	c.SetDefaults()
	err := c.Validate()
	for _, want := range []string{"max_bytes: -5 must be positive", `fsync: "sometimes"`, `when_full: "explode"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// TestNextKeepsNoStaleRecords: after Next returns, the reader's reused
// slice holds no record beyond those returned, from the cache or from
// disk. A stale entry kept its record's bytes reachable, and with them the
// whole arena chunk they sit in: a reader that once got hundreds of
// records pinned megabytes of old data for good.
func TestNextKeepsNoStaleRecords(t *testing.T) {
	for _, cache := range []int64{1 << 20, 1} { // 1: every read from disk
		cfg := testConfig(t.TempDir())
		cfg.CacheBytes = cache
		h := open(t, cfg)
		r, err := h.s.Reader("up")
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, n := range []int{50, 1} {
			seqs := h.append(n, 1000)
			recs, err := r.Next(ctx, 100, 0)
			if err != nil || len(recs) != n {
				t.Fatalf("cache %d: Next = %d records, %v; want %d", cache, len(recs), err, n)
			}
			if err := r.Commit(seqs[n-1]); err != nil {
				t.Fatal(err)
			}
		}
		for i, rec := range r.out[1:cap(r.out)] {
			if rec.Data != nil || rec.Subject != "" {
				t.Fatalf("cache %d: stale record %d (seq %d) still referenced", cache, i+1, rec.Seq)
			}
		}
	}
}

// TestDiskRecordsSurviveRewind: the bytes of records read from disk stay
// as they were after a Rewind and later reads. An MQTT client may still
// hold a message after a publish timed out (paho keeps it queued and in
// its session store, and sends it later): had the reader kept reusing its
// buffer, that message would go out carrying another record's bytes.
func TestDiskRecordsSurviveRewind(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CacheBytes = 1 // every read from disk
	h := open(t, cfg)
	r, err := h.s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	seqs := h.append(4, 2000)
	ctx := context.Background()
	first, err := r.Next(ctx, 2, 0)
	if err != nil || len(first) != 2 {
		t.Fatalf("Next = %d, %v", len(first), err)
	}
	held := first[1].Data // the second: a re-read from the first lands elsewhere
	want := string(held)
	r.Rewind() // the publish failed
	if err := r.Commit(seqs[0]); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.Next(ctx, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if string(held) != want {
		t.Fatalf("record %d's bytes were rewritten by reads after a Rewind", first[1].Seq)
	}
}

package spool

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// queued returns how many records wait for a write.
func (s *Spool) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pend == nil {
		return 0
	}
	return len(s.pend.recs)
}

// holdFirstWrite makes the spool's first record write wait until n more
// records are queued behind it, then lets later writes go through next
// (nil: the file's own write). It returns the number of writes seen.
func holdFirstWrite(t *testing.T, s *Spool, n int, next func(f *os.File, b []byte) (int, error)) *atomic.Int64 {
	var writes atomic.Int64
	if next == nil {
		next = (*os.File).Write
	}
	s.write = func(f *os.File, b []byte) (int, error) {
		if writes.Add(1) == 1 {
			deadline := time.Now().Add(10 * time.Second)
			for s.queued() < n {
				if time.Now().After(deadline) {
					t.Errorf("only %d records queued behind the first write, want %d", s.queued(), n)
					break
				}
				time.Sleep(time.Millisecond)
			}
			return f.Write(b)
		}
		return next(f, b)
	}
	return &writes
}

// TestGroupCommitCoalescesConcurrentAppends: appends that arrive while a
// write is in progress are written together by the next write, not one
// write each; every one returns its own seq, and the log holds them all.
func TestGroupCommitCoalescesConcurrentAppends(t *testing.T) {
	for _, policy := range []string{FsyncNever, FsyncAlways} {
		t.Run(policy, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.Fsync = policy
			h := open(t, cfg)
			const n = 100
			writes := holdFirstWrite(t, h.s, n-1, nil)
			seqs := make(chan uint64, n)
			var wg sync.WaitGroup
			app := func() {
				defer wg.Done()
				seq, err := h.s.Append(context.Background(), "a.data", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 200) })
				if err != nil {
					t.Error(err)
				}
				seqs <- seq
			}
			wg.Add(1)
			go app() // its write waits for the others
			waitFor(t, 5*time.Second, func() bool { return writes.Load() == 1 })
			for range n - 1 {
				wg.Add(1)
				go app()
			}
			wg.Wait()
			close(seqs)
			var got []uint64
			for seq := range seqs {
				got = append(got, seq)
			}
			sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
			contiguous(t, got, 1)
			if len(got) != n {
				t.Fatalf("%d seqs, want %d", len(got), n)
			}
			// One write for the first record, one for the 99 queued behind
			// it (two if they straddle an arena chunk).
			if w := writes.Load(); w > 3 {
				t.Fatalf("%d writes for %d concurrent appends, want at most 3", w, n)
			}
			if w, c := writesOf(h.s), counter(h.m.appendedRecords); w != float64(writes.Load()) || c != n {
				t.Fatalf("metrics: %v writes, %v records; want %d, %d", w, c, writes.Load(), n)
			}
			if err := h.s.Close(); err != nil {
				t.Fatal(err)
			}
			h2 := open(t, cfg)
			r, err := h2.s.Reader("r")
			if err != nil {
				t.Fatal(err)
			}
			contiguous(t, readAll(t, r, n, 200, false), 1)
		})
	}
}

// TestReadersNeverSeeUnwrittenRecords: with many concurrent appenders and
// two readers, no reader is handed a record before the
// write carrying it returned, and no Append returns before its record is
// written.
func TestReadersNeverSeeUnwrittenRecords(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	var written atomic.Uint64 // highest seq a completed write carried
	h.s.write = func(f *os.File, b []byte) (int, error) {
		n, err := f.Write(b)
		if err != nil {
			return n, err
		}
		var last uint64
		for off := 0; off < len(b); {
			rec, size, err := decodeRecord(b[off:])
			if err != nil {
				t.Errorf("a write carries a bad record at %d: %v", off, err)
				return n, nil
			}
			last, off = rec.seq, off+size
		}
		written.Store(last)
		return n, nil
	}
	const appenders, each = 50, 40
	const total = appenders * each
	durable, err := h.s.Reader("durable")
	if err != nil {
		t.Fatal(err)
	}
	other, err := h.s.Reader("other")
	if err != nil {
		t.Fatal(err)
	}
	read := func(r *Reader) {
		var seen uint64
		for seen < total {
			recs, err := r.Next(context.Background(), 7, 0)
			if err != nil {
				t.Error(err)
				return
			}
			w := written.Load()
			for _, rec := range recs {
				if rec.Seq > w {
					t.Errorf("reader %s got seq %d while writes carried up to %d", r.Name(), rec.Seq, w)
				}
				if rec.Seq != seen+1 {
					t.Errorf("reader %s got seq %d after %d", r.Name(), rec.Seq, seen)
				}
				checkRecord(t, rec, 100, false)
				seen = rec.Seq
			}
			if err := r.Commit(seen); err != nil {
				t.Error(err)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); read(durable) }()
	go func() { defer wg.Done(); read(other) }()
	var apps sync.WaitGroup
	for range appenders {
		apps.Add(1)
		go func() {
			defer apps.Done()
			for range each {
				seq, err := h.s.Append(context.Background(), "", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 100) })
				if err != nil {
					t.Error(err)
					return
				}
				if w := written.Load(); seq > w {
					t.Errorf("Append returned seq %d while writes carried up to %d", seq, w)
				}
			}
		}()
	}
	apps.Wait()
	wg.Wait()
	if w, c := writesOf(h.s), counter(h.m.appendedRecords); c != total || w > c {
		t.Fatalf("%v writes for %v records (want %d records)", w, c, total)
	}
	t.Logf("%d records in %v writes", total, writesOf(h.s))
}

// TestGroupWriteFailureLosesItsRecords: when the write carrying a group
// fails, every append in it returns ErrLost with the cause and its seq is
// used up; nothing of the group is left in the file; the appends before
// and after it are kept.
func TestGroupWriteFailureLosesItsRecords(t *testing.T) {
	dir := t.TempDir()
	h := open(t, testConfig(dir))
	const n = 20
	var fail atomic.Bool
	fail.Store(true)
	writes := holdFirstWrite(t, h.s, n-1, func(f *os.File, b []byte) (int, error) {
		if fail.Load() {
			// a partial write, then the error
			k, _ := f.Write(b[:len(b)/2])
			return k, syscall.ENOSPC
		}
		return f.Write(b)
	})
	errs := make([]error, n)
	var wg sync.WaitGroup
	app := func(i int) {
		defer wg.Done()
		_, errs[i] = h.s.Append(context.Background(), "", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 100) })
	}
	wg.Add(1)
	go app(0)
	waitFor(t, 5*time.Second, func() bool { return writes.Load() == 1 })
	for i := 1; i < n; i++ {
		wg.Add(1)
		go app(i)
	}
	wg.Wait()
	if errs[0] != nil {
		t.Fatalf("the first append (written alone): %v", errs[0])
	}
	for i := 1; i < n; i++ {
		if !errors.Is(errs[i], ErrLost) || !errors.Is(errs[i], syscall.ENOSPC) {
			t.Fatalf("append %d of the failed group: %v", i, errs[i])
		}
	}
	if v := counter(h.m.lostAppends); v != n-1 {
		t.Fatalf("lost counter %v, want %d", v, n-1)
	}
	fail.Store(false)
	if got := h.append(1, 100); got[0] != n+1 {
		t.Fatalf("the append after the failure got seq %d, want %d", got[0], n+1)
	}
	r, err := h.s.Reader("r")
	if err != nil {
		t.Fatal(err)
	}
	if got := readSeqs(t, r, 2); got[0] != 1 || got[1] != n+1 {
		t.Fatalf("read %v, want [1 %d]", got, n+1)
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	h2 := open(t, testConfig(dir))
	if v := counter(h2.m.droppedBytes); v != 0 {
		t.Fatalf("recovery dropped %v bytes: the failed group left a partial record", v)
	}
	r2, err := h2.s.Reader("r2")
	if err != nil {
		t.Fatal(err)
	}
	if got := readSeqs(t, r2, 2); got[0] != 1 || got[1] != n+1 {
		t.Fatalf("after reopen read %v, want [1 %d]", got, n+1)
	}
}

// TestGroupCommitRandomFailures: concurrent appenders while random writes
// fail part way. Every append that returned nil is in the log (read live
// and after reopening) with its own content; no append that returned
// ErrLost is; a reader never sees a lost seq.
func TestGroupCommitRandomFailures(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	var rmu sync.Mutex
	h.s.write = func(f *os.File, b []byte) (int, error) {
		rmu.Lock()
		fail, cut := rng.IntN(10) == 0, rng.IntN(len(b))
		rmu.Unlock()
		if fail {
			k, _ := f.Write(b[:cut])
			return k, syscall.EIO
		}
		return f.Write(b)
	}
	r, err := h.s.Reader("r")
	if err != nil {
		t.Fatal(err)
	}
	const appenders, each = 20, 50
	var mu sync.Mutex
	ok, lost := map[uint64]bool{}, map[uint64]bool{}
	var apps sync.WaitGroup
	for range appenders {
		apps.Add(1)
		go func() {
			defer apps.Done()
			for range each {
				var mine uint64
				seq, err := h.s.Append(context.Background(), "", func(seq uint64, dst []byte) []byte {
					mine = seq
					return payload(dst, seq, 50+int(seq%300))
				})
				mu.Lock()
				switch {
				case err == nil:
					ok[seq] = true
				case errors.Is(err, ErrLost) && errors.Is(err, syscall.EIO):
					lost[mine] = true
				default:
					t.Errorf("append: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	apps.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(ok)+len(lost) != appenders*each || len(lost) == 0 {
		t.Fatalf("%d ok, %d lost of %d appends", len(ok), len(lost), appenders*each)
	}
	check := func(r *Reader, stage string) {
		seen := 0
		for seen < len(ok) {
			recs, err := r.Next(context.Background(), 100, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				if !ok[rec.Seq] {
					t.Fatalf("%s: read seq %d, whose append did not succeed (lost: %v)", stage, rec.Seq, lost[rec.Seq])
				}
				if want := payload(nil, rec.Seq, 50+int(rec.Seq%300)); string(rec.Data) != string(want) {
					t.Fatalf("%s: seq %d carries %q", stage, rec.Seq, trunc(rec.Data))
				}
				seen++
			}
		}
	}
	check(r, "live")
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	h2 := open(t, cfg)
	if v := counter(h2.m.droppedBytes); v != 0 {
		t.Fatalf("recovery dropped %v bytes: a failed write left a partial record", v)
	}
	r2, err := h2.s.Reader("fresh")
	if err != nil {
		t.Fatal(err)
	}
	check(r2, "reopened")
	t.Logf("%d appended, %d lost, %v writes", len(ok), len(lost), writesOf(h.s))
}

// TestGroupCommitWritesFullQueueWhileLineNeverEmpties: with an appender
// forever in line (simulated), records are still written once maxGroup of
// them are queued: a line that never empties does not hold them back.
func TestGroupCommitWritesFullQueueWhileLineNeverEmpties(t *testing.T) {
	h := open(t, testConfig(t.TempDir()))
	h.s.inLine.Add(1) // someone always in line
	var done atomic.Int64
	for range maxGroup {
		go func() {
			if _, err := h.s.Append(context.Background(), "", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 100) }); err != nil {
				t.Error(err)
			}
			done.Add(1)
		}()
	}
	waitFor(t, 10*time.Second, func() bool { return done.Load() == maxGroup })
	if w := writesOf(h.s); w > 2 {
		t.Fatalf("%v writes for one full queue", w)
	}
	// Fewer than maxGroup queued behind someone in line wait for that one.
	var late atomic.Bool
	go func() {
		if _, err := h.s.Append(context.Background(), "", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 100) }); err != nil {
			t.Error(err)
		}
		late.Store(true)
	}()
	waitFor(t, 10*time.Second, func() bool { return h.s.queued() == 1 })
	if late.Load() {
		t.Fatal("an append returned while its record was queued")
	}
	if h.s.inLine.Add(-1) == 0 { // the one in line leaves
		h.s.flushPending()
	}
	waitFor(t, 10*time.Second, late.Load)
	if h.s.LastSeq() != maxGroup+1 {
		t.Fatalf("last seq %d", h.s.LastSeq())
	}
}

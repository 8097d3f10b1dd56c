package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/smelterio/smelter/internal/logging/logtest"
)

// readSeqs reads every record available to r (n of them) and returns their
// seqs.
func readSeqs(t *testing.T, r *Reader, n int) []uint64 {
	t.Helper()
	var out []uint64
	for len(out) < n {
		recs, err := r.Next(context.Background(), 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			out = append(out, rec.Seq)
		}
	}
	return out
}

// TestFailedAppendCostsItsSeq: while writes fail (ENOSPC injected in the
// file layer), every append returns ErrLost and uses up its seq, so the
// records after the failures carry seqs with a gap a consumer sees; the
// thousand failures cost two log lines and one counter; nothing is
// re-used after a restart.
func TestFailedAppendCostsItsSeq(t *testing.T) {
	dir := t.TempDir()
	var logs logtest.Buffer
	s, err := Open(testConfig(dir), slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, s: s}
	h.appendSubj(3, 100)
	if got := readSeqs(t, r, 3); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("read %v", got)
	}
	if err := r.Commit(3); err != nil {
		t.Fatal(err)
	}

	s.write = func(*os.File, []byte) (int, error) { return 0, syscall.ENOSPC }
	for i := range 1000 {
		_, err := s.Append(context.Background(), subjectOf(uint64(i)), func(seq uint64, dst []byte) []byte { return payload(dst, seq, 100) })
		if !errors.Is(err, ErrLost) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append %d during the failure: %v", i, err)
		}
	}
	if s.LastSeq() != 1003 {
		t.Fatalf("last seq %d after 1000 failed appends, want 1003", s.LastSeq())
	}
	if h := s.Health(); !h.Failing || h.LostRecords != 1000 || !strings.Contains(h.LastError, "no space left") || h.FailingSince.IsZero() {
		t.Fatalf("health while appends fail: %+v", h)
	}
	if l := r.Lag(); l.Records != 0 {
		t.Fatalf("lag %+v: lost records counted as unsent", l)
	}
	s.write = (*os.File).Write
	if got := h.appendSubj(2, 100); fmt.Sprint(got) != "[1004 1005]" {
		t.Fatalf("appends after the failure got seqs %v, want [1004 1005]", got)
	}
	if got := readSeqs(t, r, 2); fmt.Sprint(got) != "[1004 1005]" {
		t.Fatalf("the reader got %v after the gap", got)
	}
	if h := s.Health(); h.Failing || h.LostRecords != 1000 {
		t.Fatalf("health once appends succeed again: %+v", h)
	}
	if v := counter(s.m.lostAppends); v != 1000 {
		t.Fatalf("lost records counter %v, want 1000", v)
	}
	out := logs.String()
	if n := strings.Count(out, "append failed"); n != 1 {
		t.Fatalf("%d append-failure lines for 1000 failures, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, `"msg":"spool: appends succeed again"`) || !strings.Contains(out, `"lost_records":1000,"first_lost_seq":4,"last_lost_seq":1003`) {
		t.Fatalf("no recovery line with the count:\n%s", out)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, testConfig(dir))
	if s2.s.LastSeq() != 1005 {
		t.Fatalf("last seq %d after restart, want 1005", s2.s.LastSeq())
	}
	fresh, err := s2.s.Reader("fresh")
	if err != nil {
		t.Fatal(err)
	}
	if got := readSeqs(t, fresh, 5); fmt.Sprint(got) != "[1 2 3 1004 1005]" {
		t.Fatalf("a reader from the start got %v", got)
	}
}

// Appends lost at the end of the log, more of them than the tail cache
// has slots (256 with a 64 KiB cache), leave nothing to send: the lag is
// empty, not the count of lost seqs the cache no longer remembers (it was
// all 1000 here; TestArenaUnderLossDiscardAndTailReaders, whose readers
// stop when their lag is empty, hung for 90 s in 3 of 8 runs).
func TestLagSkipsLostAppendsBeyondTheCache(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CacheBytes = 64 << 10
	h := open(t, cfg)
	r, err := h.s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	h.appendSubj(3, 100)
	readSeqs(t, r, 3)
	if err := r.Commit(3); err != nil {
		t.Fatal(err)
	}
	h.s.FailWrites(syscall.ENOSPC)
	for i := range 1000 {
		if _, err := h.s.Append(context.Background(), subjectOf(uint64(i)), func(seq uint64, dst []byte) []byte { return payload(dst, seq, 100) }); !errors.Is(err, ErrLost) {
			t.Fatalf("append %d during the failure: %v", i, err)
		}
	}
	if l := r.Lag(); l != (Lag{}) {
		t.Fatalf("lag %+v after 1000 lost appends at the tail: nothing is left to send", l)
	}
	h.s.FailWrites(nil)
	h.appendSubj(1, 100)
	if l := r.Lag(); l.Records == 0 || l.Bytes == 0 {
		t.Fatalf("lag %+v with one record after the lost ones, want it counted with its bytes", l)
	}
	if got := readSeqs(t, r, 1); fmt.Sprint(got) != "[1004]" {
		t.Fatalf("read %v after the gap", got)
	}
}

// TestDiskFullOnTmpfs: the spool on a real 256 KiB tmpfs (root only; skipped
// when mounting is not allowed). Once the filesystem is full appends fail
// with ENOSPC and cost their seqs; after the reader commits (old segments
// are deleted, space is freed) appends succeed with the next seq.
func TestDiskFullOnTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	var logs logtest.Buffer
	s, err := Open(testConfig(dir), slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	r, err := s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	var written, lost []uint64
	for i := 0; len(lost) < 300; i++ {
		if i > 10000 {
			t.Fatal("the 256 KiB filesystem never filled")
		}
		seq, err := s.Append(context.Background(), subjectOf(uint64(i)), func(seq uint64, dst []byte) []byte { return payload(dst, seq, 1000) })
		switch {
		case err == nil:
			written = append(written, seq)
		case errors.Is(err, ErrLost) && errors.Is(err, syscall.ENOSPC):
			lost = append(lost, s.LastSeq())
		default:
			t.Fatalf("append: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "append failed"); n != 1 {
		t.Fatalf("%d failure lines for %d lost records", n, len(lost))
	}
	got := readSeqs(t, r, len(written))
	if fmt.Sprint(got) != fmt.Sprint(written) {
		t.Fatalf("read %d records, wrote %d", len(got), len(written))
	}
	// A fresh spool on the full filesystem opens (seq.hwm and its
	// cursor cannot be written yet) and counts its appends lost.
	fresh, err := Open(testConfig(filepath.Join(dir, "fresh")), nil, nil)
	if err != nil {
		t.Fatalf("open on a full filesystem: %v", err)
	}
	if _, err := fresh.Reader("up"); err != nil {
		t.Fatalf("a new reader on a full filesystem: %v", err)
	}
	if _, err := fresh.Append(context.Background(), "x.data", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 1000) }); !errors.Is(err, ErrLost) {
		t.Fatalf("append on the full filesystem: %v", err)
	}
	_ = fresh.Close() // its clean mark cannot be written either

	if err := r.Commit(got[len(got)-1]); err != nil {
		t.Fatal(err)
	}
	next, err := s.Append(context.Background(), "x.data", func(seq uint64, dst []byte) []byte { return payload(dst, seq, 1000) })
	if err != nil {
		t.Fatalf("append after space was freed: %v", err)
	}
	if next != lost[len(lost)-1]+1 {
		t.Fatalf("next seq %d, want %d (after the lost ones)", next, lost[len(lost)-1]+1)
	}
	if got := readSeqs(t, r, 1); got[0] != next {
		t.Fatalf("reader got %v, want %d", got, next)
	}
}

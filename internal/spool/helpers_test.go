package spool

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met before deadline")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testConfig(dir string) Config {
	// seqs from 1: the seq floor of a new spool has its own tests
	// (seqfloor_test.go)
	return Config{Dir: dir, SegmentBytes: minSegmentBytes, MaxBytes: 64 << 20, Fsync: FsyncNever, zeroSeqFloor: true}
}

type harness struct {
	t   *testing.T
	s   *Spool
	m   *Metrics
	reg *prometheus.Registry
}

func open(t *testing.T, cfg Config) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s, err := Open(cfg, testLogger(t), m)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &harness{t: t, s: s, m: m, reg: reg}
}

// payload is the deterministic content of record seq: it embeds the seq
// like the real encoder does, padded to size bytes.
func payload(dst []byte, seq uint64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"pad":"`...)
	for len(dst)-start < size-2 {
		dst = append(dst, byte('a'+seq%26))
	}
	return append(dst, `"}`...)
}

func subjectOf(seq uint64) string { return fmt.Sprintf("smelter.v1.site.cls.a%d.data", seq%7) }

func (h *harness) append(n, size int) []uint64 {
	h.t.Helper()
	seqs := make([]uint64, 0, n)
	for range n {
		var subj string
		seq, err := h.s.Append(context.Background(), "", func(seq uint64, dst []byte) []byte {
			subj = subjectOf(seq)
			return payload(dst, seq, size)
		})
		_ = subj
		if err != nil {
			h.t.Fatalf("append: %v", err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// appendSubj appends with the subject derived from the next seq.
func (h *harness) appendSubj(n, size int) []uint64 {
	h.t.Helper()
	seqs := make([]uint64, 0, n)
	for range n {
		next := h.s.LastSeq() + 1
		seq, err := h.s.Append(context.Background(), subjectOf(next), func(seq uint64, dst []byte) []byte {
			return payload(dst, seq, size)
		})
		if err != nil {
			h.t.Fatalf("append: %v", err)
		}
		if seq != next {
			h.t.Fatalf("append returned seq %d, want %d", seq, next)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func checkRecord(t *testing.T, r Record, size int, withSubject bool) {
	t.Helper()
	want := payload(nil, r.Seq, size)
	if !bytes.Equal(r.Data, want) {
		t.Fatalf("record %d: data %q, want %q", r.Seq, trunc(r.Data), trunc(want))
	}
	if withSubject && r.Subject != subjectOf(r.Seq) {
		t.Fatalf("record %d: subject %q, want %q", r.Seq, r.Subject, subjectOf(r.Seq))
	}
	if r.Appended <= 0 {
		t.Fatalf("record %d: no append time", r.Seq)
	}
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// readAll reads until n records arrived (or fails at the deadline) and
// returns their seqs after checking every record's content.
func readAll(t *testing.T, r *Reader, n, size int, withSubject bool) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seqs []uint64
	for len(seqs) < n {
		recs, err := r.Next(ctx, min(64, n-len(seqs)), 1<<20)
		if err != nil {
			t.Fatalf("next after %d of %d records: %v", len(seqs), n, err)
		}
		for _, rec := range recs {
			checkRecord(t, rec, size, withSubject)
			seqs = append(seqs, rec.Seq)
		}
	}
	return seqs
}

// counter reads the value of a single counter or gauge.
func counter(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// gathered returns the value of the metric name with label reader=reader.
func gathered(t *testing.T, reg *prometheus.Registry, name, reader string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "reader" && l.GetValue() == reader {
					if m.Counter != nil {
						return m.Counter.GetValue(), true
					}
					return m.Gauge.GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func contiguous(t *testing.T, seqs []uint64, from uint64) {
	t.Helper()
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("seq[%d] = %d, want %d (seqs %v...)", i, s, from+uint64(i), seqs[:min(len(seqs), 10)])
		}
	}
}

// writesOf returns the write syscalls that appended records.
func writesOf(s *Spool) float64 { return counter(s.m.appendWrites) }

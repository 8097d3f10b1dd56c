package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func sealed(seq uint64, subject, data string) []byte {
	rec := make([]byte, headerSize, headerSize+len(subject)+len(data))
	rec = append(rec, subject...)
	rec = append(rec, data...)
	sealRecord(rec, seq, 1763812345123, len(subject))
	return rec
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(sealed(1, "smelter.v1.s.c.a.data", `{"seq":1}`))
	f.Add(sealed(18231, "", ""))
	f.Add(append(sealed(2, "x", "y"), sealed(3, "x", "z")...))
	f.Add([]byte("SMLR\xff\xff\xff\xff"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, n, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errShort) && !errors.Is(err, errCorrupt) {
				t.Fatalf("unexpected error %v", err)
			}
			off, short := resync(b, 0, true)
			if short || off >= len(b) {
				t.Fatalf("resync at EOF returned %d %v", off, short)
			}
			return
		}
		if n < headerSize || n > len(b) {
			t.Fatalf("size %d of %d bytes", n, len(b))
		}
		again := sealed(rec.seq, string(rec.subject), string(rec.data))
		sealRecord(again, rec.seq, rec.appended, len(rec.subject))
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b[:n])
		}
	})
}

// FuzzRecovery writes arbitrary bytes after (or instead of) valid records as
// a segment file and opens the spool: Open never fails on content, what it
// keeps decodes with increasing seqs, the repair is stable across a second
// open, and appends go on after the highest seq.
func FuzzRecovery(f *testing.F) {
	var valid []byte
	for seq := uint64(1); seq <= 5; seq++ {
		valid = append(valid, sealed(seq, "smelter.v1.s.c.a.data", `{"seq":`+string(rune('0'+seq))+`}`)...)
	}
	f.Add(valid, []byte{})
	f.Add(valid[:len(valid)-7], []byte{})
	f.Add(valid, []byte("SMLR garbage"))
	f.Add([]byte{}, bytes.Repeat([]byte("SMLR"), 20))
	mid := append(append([]byte(nil), valid[:70]...), 0xde, 0xad)
	f.Add(mid, valid[70:])
	f.Fuzz(func(t *testing.T, head, tail []byte) {
		dir := t.TempDir()
		data := append(append([]byte(nil), head...), tail...)
		if err := os.WriteFile(segPath(dir, 1), data, 0o640); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(dir)
		s, err := Open(cfg, nil, nil)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		r, err := s.Reader("r")
		if err != nil {
			t.Fatal(err)
		}
		var prev uint64
		count := 0
		for {
			s.mu.Lock()
			done := r.pos > s.last
			s.mu.Unlock()
			if done {
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			recs, err := r.Next(ctx, 100, 0)
			cancel()
			if err != nil {
				t.Fatalf("next: %v", err)
			}
			for _, rec := range recs {
				if rec.Seq <= prev {
					t.Fatalf("seq %d after %d", rec.Seq, prev)
				}
				prev = rec.Seq
				count++
			}
		}
		last := s.LastSeq()
		seq, err := s.Append(context.Background(), "s", func(_ uint64, dst []byte) []byte { return append(dst, 'x') })
		if err != nil || seq != last+1 || seq <= prev {
			t.Fatalf("append after recovery: seq %d err %v (last %d, prev %d)", seq, err, last, prev)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		m := NewMetrics(nil)
		s, err = Open(cfg, nil, m)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s.Close()
		if d := counter(m.droppedBytes); d != 0 {
			segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			t.Fatalf("second open dropped %v bytes (segments %v)", d, segs)
		}
		if got := counter(m.recoveredRecords); got != float64(count+1) {
			t.Fatalf("second open recovered %v records, want %d", got, count+1)
		}
	})
}

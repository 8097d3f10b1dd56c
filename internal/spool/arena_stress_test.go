package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestArenaUnderLossDiscardAndTailReaders (review8): the arena's
// holder counts under the paths the steady-flow tests do not take at once:
// appends that fail (ErrLost: a queued record's hold dropped without a
// cache entry, lost cache slots), segments discarded (discard_oldest) or
// waited for (block) under the readers, a live-lane style Tail reader
// opened and closed over and over, a durable reader that rewinds, and one
// that keeps up. Every record a reader gets must keep its own bytes until
// that reader's next Next, records handed out before a Rewind or Close for
// good, and the free list must never hold a chunk twice or one still held.
func TestArenaUnderLossDiscardAndTailReaders(t *testing.T) {
	for _, whenFull := range []string{WhenFullDiscardOldest, WhenFullBlock} {
		t.Run(whenFull, func(t *testing.T) {
			cfg := arenaConfig(t)
			cfg.SegmentBytes = minSegmentBytes
			cfg.MaxBytes = 8 * minSegmentBytes
			cfg.WhenFull = whenFull
			h := open(t, cfg)
			review8Stress(t, h)
		})
	}
}

func review8Stress(t *testing.T, h *harness) {
	sizeOf := func(seq uint64) int { return 60 + int(seq*2654435761%3000) }
	check := func(rec Record) bool { return bytes.Equal(rec.Data, payload(nil, rec.Seq, sizeOf(rec.Seq))) }
	fast, err := h.s.Reader("fast")
	if err != nil {
		t.Fatal(err)
	}
	rewinder, err := h.s.Reader("rewinder")
	if err != nil {
		t.Fatal(err)
	}
	const appenders, each = 4, 1500
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var appendWG, wg sync.WaitGroup
	var done atomic.Bool
	errs := make(chan string, 64)
	report := func(format string, a ...any) {
		select {
		case errs <- fmt.Sprintf(format, a...):
		default:
		}
	}
	for range appenders {
		appendWG.Go(func() {
			for range each {
				_, err := h.s.Append(ctx, "smelter.v1.s.c.a.data", func(seq uint64, dst []byte) []byte {
					return payload(dst, seq, sizeOf(seq))
				})
				if err != nil && !errors.Is(err, ErrLost) {
					report("append: %v", err)
					return
				}
			}
		})
	}
	// a disk that fails now and then
	wg.Go(func() {
		for i := 0; !done.Load(); i++ {
			if i%3 == 0 {
				h.s.FailWrites(errors.New("review8: disk full"))
			} else {
				h.s.FailWrites(nil)
			}
			time.Sleep(2 * time.Millisecond)
		}
		h.s.FailWrites(nil)
	})
	// read runs a reader until the appenders are done and it reached the
	// end; every rewindEvery-th batch is not committed but rewound.
	read := func(r *Reader, rewindEvery int) {
		var kept [][]Record
		var held []Record
		for i := 1; ; i++ {
			for _, rec := range held {
				if !check(rec) {
					report("%s: record %d rewritten before the reader's next Next", r.Name(), rec.Seq)
					return
				}
			}
			// At the end when nothing is left to send: appends lost at
			// the tail (ErrLost) use up seqs no reader ever commits,
			// so Committed may stay below LastSeq; Lag skips them.
			if done.Load() && r.Lag().Records == 0 {
				break
			}
			if ctx.Err() != nil {
				report("%s: not at the end after %v: committed %d, last %d, lag %+v", r.Name(), 90*time.Second, r.Committed(), h.s.LastSeq(), r.Lag())
				return
			}
			nctx, ncancel := context.WithTimeout(ctx, 50*time.Millisecond)
			recs, err := r.Next(nctx, 1+i%50, 0)
			ncancel()
			if errors.Is(err, context.DeadlineExceeded) {
				held = held[:0]
				continue
			}
			if err != nil {
				report("%s: %v", r.Name(), err)
				return
			}
			held = append(held[:0], recs...)
			for _, rec := range held {
				if !check(rec) {
					report("%s: record %d read with the wrong bytes", r.Name(), rec.Seq)
					return
				}
			}
			runtime.Gosched()
			if rewindEvery > 0 && i%rewindEvery == 0 {
				kept = append(kept, append([]Record(nil), held...))
				r.Rewind()
				held = held[:0]
				continue
			}
			if err := r.Commit(held[len(held)-1].Seq); err != nil {
				report("%s: commit: %v", r.Name(), err)
				return
			}
		}
		for _, recs := range kept {
			for _, rec := range recs {
				if !check(rec) {
					report("%s: record %d handed out before a Rewind was rewritten", r.Name(), rec.Seq)
					return
				}
			}
		}
	}
	wg.Go(func() { read(fast, 0) })
	wg.Go(func() { read(rewinder, 7) })
	// live lanes: a Tail reader opened, read a few times, closed, again
	wg.Go(func() {
		var closed [][]Record
		for !done.Load() {
			tail, err := h.s.Tail("live")
			if err != nil {
				report("tail: %v", err)
				return
			}
			var held []Record
			for j := range 1 + len(closed)%5 {
				nctx, ncancel := context.WithTimeout(ctx, 20*time.Millisecond)
				recs, err := tail.Next(nctx, 1+j*7, 0)
				ncancel()
				if err != nil {
					// the call that failed ended the validity of the
					// previous records (Next's contract): nothing handed
					// out is held now
					held = held[:0]
					break
				}
				held = append(held[:0], recs...)
				for _, rec := range held {
					if !check(rec) {
						report("live: record %d read with the wrong bytes", rec.Seq)
					}
				}
				runtime.Gosched()
			}
			tail.Close()
			if len(held) > 0 {
				closed = append(closed, held)
			}
		}
		for _, recs := range closed {
			for _, rec := range recs {
				if !check(rec) {
					report("live: record %d handed out before Close was rewritten", rec.Seq)
					return
				}
			}
		}
	})
	appendWG.Wait()
	done.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	seen := map[*arenaChunk]bool{}
	free := 0
	for _, c := range h.s.freeChunks {
		free += len(c.buf)
		if seen[c] {
			t.Error("a chunk is on the free list twice")
		}
		seen[c] = true
		if c.refs != 0 || c.kept || c == h.s.arena {
			t.Errorf("a free chunk is held: refs %d kept %v appenders' %v", c.refs, c.kept, c == h.s.arena)
		}
	}
	if free != h.s.freeBytes || free > maxFreeChunks*h.s.arenaChunk {
		t.Errorf("free chunks of %d bytes (counted %d), budget %d", free, h.s.freeBytes, maxFreeChunks*h.s.arenaChunk)
	}
	t.Logf("%d chunks allocated, %d reused, %d lost appends", h.s.chunksNew, h.s.chunksReused, h.s.health.LostRecords)
	if h.s.chunksReused == 0 {
		t.Error("no chunk was reused: the test shows nothing")
	}
}

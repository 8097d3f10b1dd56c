package spool

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// arenaConfig has a 64 KiB tail cache, so 64 KiB arena chunks: with 1 KB
// records a chunk is full after ~60 records and the cache holds about one.
func arenaConfig(t *testing.T) Config {
	cfg := testConfig(t.TempDir())
	cfg.CacheBytes = 64 << 10
	cfg.SegmentBytes = 4 << 20
	return cfg
}

func chunkCounts(s *Spool) (allocated, reused uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chunksNew, s.chunksReused
}

func next(t *testing.T, r *Reader, n int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := r.Next(ctx, n, 0)
	if err != nil {
		t.Fatal(err)
	}
	return append([]Record(nil), recs...) // the slice is reused; the bytes are what is checked
}

// A reader's records from the tail cache keep their bytes until its next
// Next however many records are appended meanwhile: their arena chunk is
// not reused while the reader holds it (an uplink may be sending them).
func TestArenaChunkNotReusedWhileReaderHoldsIt(t *testing.T) {
	h := open(t, arenaConfig(t))
	r, err := h.s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	h.appendSubj(10, 1000)
	held := next(t, r, 10)
	if reads, _ := gathered(t, h.reg, "smelter_spool_reader_cache_records_total", "up"); reads != 10 {
		t.Fatalf("%v records read from the cache, want 10", reads)
	}
	h.appendSubj(2000, 1000) // ~30 chunks through the arena
	if _, reused := chunkCounts(h.s); reused == 0 {
		t.Fatal("no arena chunk was reused: the test shows nothing")
	}
	for _, rec := range held {
		checkRecord(t, rec, 1000, true)
	}
	// once the reader moved on (to records only on disk now), it holds
	// no chunk
	_ = next(t, r, 1)
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if len(r.held) != 0 {
		t.Fatalf("reader holds %d chunks after reading from disk", len(r.held))
	}
}

// Records handed out before a Rewind (or a Tail reader's Close) stay valid
// for good: their chunk is never reused, whatever the reader reads next.
func TestArenaChunkKeptAfterRewindAndClose(t *testing.T) {
	h := open(t, arenaConfig(t))
	r, err := h.s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	tail, err := h.s.Tail("up-live")
	if err != nil {
		t.Fatal(err)
	}
	h.appendSubj(10, 1000)
	rewound := next(t, r, 10)
	closed := next(t, tail, 10)
	r.Rewind()
	tail.Close()
	for range 20 {
		h.appendSubj(100, 1000)
		// each Next would release the old hold had Rewind not kept it
		for last := h.s.LastSeq(); ; {
			if recs := next(t, r, 64); recs[len(recs)-1].Seq == last {
				break
			}
		}
	}
	if _, reused := chunkCounts(h.s); reused == 0 {
		t.Fatal("no arena chunk was reused: the test shows nothing")
	}
	for _, rec := range append(rewound, closed...) {
		checkRecord(t, rec, 1000, true)
	}
}

// In a steady flow (appends and a reader keeping up) the arena reuses its
// chunks instead of allocating one per ~60 records.
func TestArenaChunksReusedInSteadyFlow(t *testing.T) {
	h := open(t, arenaConfig(t))
	r, err := h.s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		h.appendSubj(30, 1000)
		got := 0
		for got < 30 {
			recs := next(t, r, 30-got)
			for _, rec := range recs {
				checkRecord(t, rec, 1000, true)
			}
			got += len(recs)
			if err := r.Commit(recs[len(recs)-1].Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	allocated, reused := chunkCounts(h.s)
	t.Logf("3,000 records of 1 KB: %d chunks allocated, %d reused", allocated, reused)
	if allocated > 10 || reused < 30 {
		t.Fatalf("%d chunks allocated and %d reused for 3,000 records of 1 KB in 64 KiB chunks", allocated, reused)
	}
}

// Appenders and readers at once (run it with -race): every record a reader
// gets has its own bytes, and still has them right before the reader's
// next Next (while an uplink would be sending it); the records before each
// Rewind keep them to the end. Record sizes vary so records straddle chunk
// ends and some are framed outside the arena.
func TestArenaReuseUnderConcurrentAppendsAndReaders(t *testing.T) {
	cfg := arenaConfig(t)
	h := open(t, cfg)
	sizeOf := func(seq uint64) int { return 100 + int(seq*7919%5000) }
	check := func(rec Record) bool { return bytes.Equal(rec.Data, payload(nil, rec.Seq, sizeOf(rec.Seq))) }
	const appenders, each = 4, 600
	total := uint64(appenders * each)
	readers := make([]*Reader, 2)
	for i := range readers {
		var err error
		if readers[i], err = h.s.Reader([]string{"a", "b"}[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range appenders {
		wg.Go(func() {
			for range each {
				if _, err := h.s.Append(context.Background(), "smelter.v1.s.c.a.data", func(seq uint64, dst []byte) []byte {
					return payload(dst, seq, sizeOf(seq))
				}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan string, 16)
	for ri, r := range readers {
		wg.Go(func() {
			var kept [][]Record
			var held []Record
			read := uint64(0)
			for i := 0; read < total; i++ {
				for _, rec := range held { // still ours until the next Next
					if !check(rec) {
						errs <- "a held record was rewritten before the next Next"
						return
					}
				}
				recs, err := r.Next(ctx, 1+i%40, 0)
				if err != nil {
					errs <- err.Error()
					return
				}
				held = append(held[:0], recs...)
				for _, rec := range held {
					if !check(rec) {
						errs <- "a record read with the wrong bytes"
						return
					}
				}
				runtime.Gosched() // the uplink sends them meanwhile
				if (i+ri)%25 == 24 {
					kept = append(kept, append([]Record(nil), held...))
					r.Rewind()
					held = held[:0]
					continue
				}
				read = held[len(held)-1].Seq
				if err := r.Commit(read); err != nil {
					errs <- err.Error()
					return
				}
			}
			for _, recs := range kept {
				for _, rec := range recs {
					if !check(rec) {
						errs <- "a record handed out before a Rewind was rewritten"
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	allocated, reused := chunkCounts(h.s)
	t.Logf("%d chunks allocated, %d reused", allocated, reused)
	if reused == 0 {
		t.Fatal("no arena chunk was reused: the test shows nothing")
	}
}

// Records larger than a fifth of an arena chunk (an OPC UA device's
// 1,000-reading batch is ~150 KB) get chunks of their own size class; in a
// steady flow those are reused like the default-size ones, within the free
// list's budget, so appending such a batch allocates next to nothing (it
// allocated a fresh ~0.8 MB chunk every four records).
func TestArenaLargeRecordsReuseChunks(t *testing.T) {
	cfg := testConfig(t.TempDir()) // the default 1 MiB tail cache: 256 KiB chunks
	cfg.SegmentBytes = 64 << 20
	cfg.MaxBytes = 1 << 30
	h := open(t, cfg)
	r, err := h.s.Reader("up")
	if err != nil {
		t.Fatal(err)
	}
	// batches of about the same size, as twenty devices' cycles are
	sizeOf := func(seq uint64) int { return 150_000 + int(seq*7919%7500) }
	var want []byte
	flow := func(n int) {
		for range n {
			seq, err := h.s.Append(context.Background(), "smelter.v1.s.c.a.data", func(seq uint64, dst []byte) []byte {
				return payload(dst, seq, sizeOf(seq))
			})
			if err != nil {
				t.Fatal(err)
			}
			recs, err := r.Next(context.Background(), 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			want = payload(want[:0], seq, sizeOf(seq))
			if recs[0].Seq != seq || !bytes.Equal(recs[0].Data, want) {
				t.Fatalf("record %d read back wrong", seq)
			}
			if err := r.Commit(seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	flow(50) // the chunk size settles
	allocated0, reused0 := chunkCounts(h.s)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 400
	flow(n)
	runtime.ReadMemStats(&after)
	allocated, reused := chunkCounts(h.s)
	perRecord := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d records of ~150 KB: %d chunks allocated, %d reused; %d bytes allocated per record",
		n, allocated-allocated0, reused-reused0, perRecord)
	if allocated-allocated0 > 2 || reused == reused0 {
		t.Errorf("%d chunks allocated and %d reused in a steady flow of %d large records",
			allocated-allocated0, reused-reused0, n)
	}
	h.s.mu.Lock()
	free, budget := h.s.freeBytes, maxFreeChunks*h.s.arenaChunk
	h.s.mu.Unlock()
	if free > budget {
		t.Errorf("%d bytes of free chunks kept, more than the %d budget", free, budget)
	}
	if perRecord > 16<<10 {
		t.Errorf("%d bytes allocated per ~150 KB record in a steady flow, want at most 16 KiB", perRecord)
	}
}

package spool

import (
	"math/bits"
	"slices"
)

// The append arena: records are framed back to back in chunks of
// arenaChunk bytes, so records queued together are written with one write,
// and a chunk is reused once nothing can read a record in it any more.
//
// A chunk counts its holders (refs, guarded by Spool.mu):
//
//   - the appenders, while it is the chunk being filled (one ref);
//   - each record in it that is queued and not yet written (or lost);
//   - each tail cache entry of a record in it;
//   - each reader that handed out records in it from the cache, from that
//     Next until its next Next. A reader that rewinds or closes while it
//     holds the chunk marks it kept: records handed out before a Rewind
//     stay valid for good (an uplink may still hold a message that failed),
//     so a kept chunk is never reused and is left to the garbage collector.
//
// Only a chunk with no holder that is not kept goes back to the free list,
// from which the appenders take their next chunk; every read of a record's
// bytes (the group write, a reader's caller until its next Next) happens
// under one of these holds, so a record is never rewritten while anything
// can still read it. Records outside the arena (larger than what was left
// of a chunk, grown by encode's append) belong to nobody and are never
// reused.
type arenaChunk struct {
	buf  []byte
	refs int
	kept bool
}

// maxFreeChunks bounds the chunks kept for reuse, and maxFreeChunks
// default-size chunks' bytes (the tail cache's budget at the default
// sizes) bound their bytes: a freed chunk that would not fit takes the
// place of the oldest ones.
const maxFreeChunks = 4

// chunkSize is the size of a new chunk for records of about est bytes: the
// default arenaChunk while it holds two such records or more, else two
// records' worth rounded up to a size class (4, 5, 6 or 7 x 2^k bytes), so
// that chunks for batches of about the same size (an OPC UA device's 1,000
// readings, ~150 KB) are of one size and reused like the default ones.
func (s *Spool) chunkSize(est int) int {
	n := 2 * est
	if n <= s.arenaChunk {
		return s.arenaChunk
	}
	k := bits.Len(uint(n-1)) - 3 // n-1 >> k is 4..7
	return ((n-1)>>k + 1) << k
}

// ref adds a holder to c (nil: a record outside the arena). Caller holds
// s.mu.
func (c *arenaChunk) ref() {
	if c != nil {
		c.refs++
	}
}

// unrefLocked drops a holder of c and recycles it when it was the last.
// Caller holds s.mu.
func (s *Spool) unrefLocked(c *arenaChunk) {
	if c == nil {
		return
	}
	c.refs--
	budget := maxFreeChunks * s.arenaChunk
	if c.refs > 0 || c.kept || len(c.buf) > budget {
		return
	}
	for len(s.freeChunks) == maxFreeChunks || s.freeBytes+len(c.buf) > budget {
		s.freeBytes -= len(s.freeChunks[0].buf)
		s.freeChunks = slices.Delete(s.freeChunks, 0, 1)
	}
	s.freeChunks = append(s.freeChunks, c)
	s.freeBytes += len(c.buf)
}

// newChunkLocked returns a chunk of size bytes (chunkSize) for the
// appenders: the smallest free chunk of size to twice size bytes, or a new
// one. Caller holds s.mu.
func (s *Spool) newChunkLocked(size int) *arenaChunk {
	best := -1
	for i, c := range s.freeChunks {
		if n := len(c.buf); n >= size && n <= 2*size && (best < 0 || n < len(s.freeChunks[best].buf)) {
			best = i
		}
	}
	if best < 0 {
		s.chunksNew++
		return &arenaChunk{buf: make([]byte, size), refs: 1}
	}
	c := s.freeChunks[best]
	s.freeChunks = slices.Delete(s.freeChunks, best, best+1)
	s.freeBytes -= len(c.buf)
	s.chunksReused++
	c.refs = 1
	return c
}

// holdLocked makes r hold the chunk of a record it hands out. Caller holds
// s.mu.
func (r *Reader) holdLocked(c *arenaChunk) {
	if c == nil || (len(r.held) > 0 && r.held[len(r.held)-1] == c) {
		return
	}
	c.ref()
	r.held = append(r.held, c)
}

// releaseLocked drops r's holds on the chunks of the records it handed out
// last; keep marks those chunks kept (never reused: the records stay valid
// for good). Caller holds s.mu.
func (r *Reader) releaseLocked(keep bool) {
	for i, c := range r.held {
		if keep {
			c.kept = true
		}
		r.s.unrefLocked(c)
		r.held[i] = nil
	}
	r.held = r.held[:0]
}

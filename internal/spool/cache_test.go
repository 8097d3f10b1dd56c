package spool

import "testing"

// The tail cache's ring grows to the records it holds: large records (an
// OPC UA device's batches) fill the byte budget with a few slots, and the
// ring of the full record count (4,096 at the default 1 MiB, 80 bytes a
// slot) is made only for small ones. Order and eviction are the same.
func TestTailCacheRingGrowsToWhatItHolds(t *testing.T) {
	var c tailCache
	c.init(4096, 1<<20, func(*arenaChunk) {})
	seq := uint64(1)
	for range 50 {
		c.add(cacheEntry{seq: seq, size: 150_000})
		seq++
	}
	if c.n != 6 || len(c.ring) > 16 {
		t.Fatalf("150 KB records: %d cached in a ring of %d slots, want 6 in at most 16", c.n, len(c.ring))
	}
	for range 10_000 {
		c.add(cacheEntry{seq: seq, size: 10})
		seq++
	}
	if c.n != 4096 || len(c.ring) != 4096 {
		t.Fatalf("10-byte records: %d cached in a ring of %d slots, want 4096 in 4096", c.n, len(c.ring))
	}
	for s := seq - 4096; s < seq; s++ {
		if e, ok := c.get(s); !ok || e.seq != s {
			t.Fatalf("seq %d: cached %v", s, ok)
		}
	}
	if _, ok := c.get(seq - 4097); ok {
		t.Fatal("an evicted seq is still cached")
	}
}

package spool

// cacheEntry is a record in the tail cache. data points into an append arena
// chunk that is never written again, so readers may hold it without a lock.
type cacheEntry struct {
	seq      uint64
	appended int64
	subject  string
	data     []byte
	size     int64
	lost     bool // a seq used up by a failed append: no record
}

// tailCache holds the most recent records (contiguous seqs) within a record
// count and a byte budget. Guarded by Spool.mu.
type tailCache struct {
	ring     []cacheEntry
	head, n  int
	first    uint64
	bytes    int64
	maxBytes int64
}

func (c *tailCache) init(slots int, maxBytes int64) {
	c.ring = make([]cacheEntry, slots)
	c.maxBytes = maxBytes
}

func (c *tailCache) add(e cacheEntry) {
	if c.n > 0 && e.seq != c.first+uint64(c.n) {
		c.reset() // not contiguous (cannot happen with one appender); start over
	}
	for c.n > 0 && (c.n == len(c.ring) || c.bytes+e.size > c.maxBytes) {
		old := &c.ring[c.head]
		c.bytes -= old.size
		*old = cacheEntry{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
		c.first++
	}
	if e.size > c.maxBytes {
		return
	}
	if c.n == 0 {
		c.first = e.seq
	}
	c.ring[(c.head+c.n)%len(c.ring)] = e
	c.n++
	c.bytes += e.size
}

func (c *tailCache) reset() {
	clear(c.ring)
	c.head, c.n, c.bytes = 0, 0, 0
}

func (c *tailCache) get(seq uint64) (*cacheEntry, bool) {
	if c.n == 0 || seq < c.first || seq >= c.first+uint64(c.n) {
		return nil, false
	}
	return &c.ring[(c.head+int(seq-c.first))%len(c.ring)], true
}

package spool

// cacheEntry is a record in the tail cache. data points into chunk, which
// the entry holds (arena.go) while it is cached; a reader that hands the
// record out holds the chunk itself.
type cacheEntry struct {
	seq      uint64
	appended int64
	subject  string
	data     []byte
	chunk    *arenaChunk // nil: data is outside the arena
	size     int64
	lost     bool // a seq used up by a failed append: no record
}

// tailCache holds the most recent records (contiguous seqs) within a record
// count and a byte budget. Its ring grows to the count it needs (records of
// an OPC UA device's 1,000 readings fill the byte budget with a few slots;
// the count is for the smallest records). Guarded by Spool.mu.
type tailCache struct {
	ring     []cacheEntry
	slots    int // the record count
	head, n  int
	first    uint64
	bytes    int64
	maxBytes int64
	unref    func(*arenaChunk) // drops an entry's hold on its chunk
}

func (c *tailCache) init(slots int, maxBytes int64, unref func(*arenaChunk)) {
	c.slots = slots
	c.maxBytes = maxBytes
	c.unref = unref
}

func (c *tailCache) add(e cacheEntry) {
	if c.n > 0 && e.seq != c.first+uint64(c.n) {
		c.reset() // not contiguous (cannot happen with one appender); start over
	}
	for c.n > 0 && (c.n == c.slots || c.bytes+e.size > c.maxBytes) {
		old := &c.ring[c.head]
		c.bytes -= old.size
		c.unref(old.chunk)
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
	if c.n == len(c.ring) {
		c.grow()
	}
	e.chunk.ref()
	c.ring[(c.head+c.n)%len(c.ring)] = e
	c.n++
	c.bytes += e.size
}

// grow makes the ring twice as long (16 slots at first), up to c.slots;
// the entries keep their order from the head on.
func (c *tailCache) grow() {
	ring := make([]cacheEntry, min(c.slots, max(16, 2*len(c.ring))))
	for i := range c.n {
		ring[i] = c.ring[(c.head+i)%len(c.ring)]
	}
	c.ring, c.head = ring, 0
}

func (c *tailCache) reset() {
	for i := 0; i < c.n; i++ {
		c.unref(c.ring[(c.head+i)%len(c.ring)].chunk)
	}
	clear(c.ring)
	c.head, c.n, c.bytes = 0, 0, 0
}

func (c *tailCache) get(seq uint64) (*cacheEntry, bool) {
	if c.n == 0 || seq < c.first || seq >= c.first+uint64(c.n) {
		return nil, false
	}
	return &c.ring[(c.head+int(seq-c.first))%len(c.ring)], true
}

// Package ingest brings telemetry into the collector: deduplication on
// (gateway, seq), a JetStream durable pull consumer and an MQTT shared
// subscription. Sources hand every message to a Handler and acknowledge it
// only after the handler returned.
package ingest

// Dedup remembers, per gateway, which of the last Window sequence numbers
// were seen. Batches reordered within the window are accepted once; a batch
// older than the window is accepted and reported as late (it can no longer
// be checked). Not safe for concurrent use.
type Dedup struct {
	window uint64
	gws    map[string]*seqWindow

	// Parts of split batches (docs/schema.md), by (gateway, seq, part,
	// parts), the last window of them in arrival order.
	parts     map[partKey]struct{}
	partOrder []partKey
}

type partKey struct {
	gateway     string
	seq         uint64
	part, parts int
}

type seqWindow struct {
	hi   uint64
	bits []uint64
}

// NewDedup returns a deduplicator remembering window sequence numbers per
// gateway (rounded up to a multiple of 64; at least 64).
func NewDedup(window int) *Dedup {
	w := uint64(max(window, 64))
	w = (w + 63) / 64 * 64
	return &Dedup{window: w, gws: map[string]*seqWindow{}, parts: map[partKey]struct{}{}}
}

// SeenPart is Seen for a batch that may be one part of a split batch (part
// of parts, 1-based; parts 0 for a whole batch): each part is identified by
// (gateway, seq, part, parts), so the parts of one seq are not taken for
// duplicates of each other, and a part delivered twice is.
func (d *Dedup) SeenPart(gateway string, seq uint64, part, parts int) (dup, late bool) {
	if parts == 0 {
		return d.Seen(gateway, seq)
	}
	k := partKey{gateway, seq, part, parts}
	if _, ok := d.parts[k]; ok {
		return true, false
	}
	_, late = d.Seen(gateway, seq) // moves the window; the seq is seen from its first part on
	d.parts[k] = struct{}{}
	d.partOrder = append(d.partOrder, k)
	if uint64(len(d.partOrder)) > d.window {
		delete(d.parts, d.partOrder[0])
		d.partOrder = d.partOrder[1:]
	}
	return false, late
}

// Seen records (gateway, seq) and reports whether it was seen before (dup)
// and whether it fell behind the window (late, not checked).
func (d *Dedup) Seen(gateway string, seq uint64) (dup, late bool) {
	g := d.gws[gateway]
	if g == nil {
		g = &seqWindow{hi: seq, bits: make([]uint64, d.window/64)}
		d.gws[gateway] = g
		g.set(seq, d.window)
		return false, false
	}
	switch {
	case seq > g.hi:
		if seq-g.hi >= d.window {
			clear(g.bits)
		} else {
			for s := g.hi + 1; s < seq; s++ {
				g.unset(s, d.window)
			}
		}
		g.hi = seq
		g.set(seq, d.window)
		return false, false
	case g.hi-seq >= d.window:
		return false, true
	}
	i := seq % d.window
	if g.bits[i/64]&(1<<(i%64)) != 0 {
		return true, false
	}
	g.set(seq, d.window)
	return false, false
}

func (g *seqWindow) set(seq, w uint64) {
	i := seq % w
	g.bits[i/64] |= 1 << (i % 64)
}

func (g *seqWindow) unset(seq, w uint64) {
	i := seq % w
	g.bits[i/64] &^= 1 << (i % 64)
}

// Gateways returns how many gateways are tracked.
func (d *Dedup) Gateways() int { return len(d.gws) }

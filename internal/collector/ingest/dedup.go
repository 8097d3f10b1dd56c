// Package ingest brings telemetry into the collector: batch checks
// (Check), deduplication on (gateway, seq), a JetStream durable pull
// consumer and an MQTT shared subscription. Sources hand every message to a
// Handler and acknowledge it only after the handler returned.
package ingest

import "strings"

// MaxRuns is how many seq runs Dedup tracks per gateway. A gateway has up to
// two live runs (the live lane at the head of its sequence and the
// historical lane replaying its spool behind it); the others absorb a jump
// (discarded spool data, a restored or reset gateway, a bogus seq) without
// displacing the runs in use. See docs/collector.md, "Deduplication".
const MaxRuns = 4

// MaxGateways bounds how many gateways Dedup tracks: the gateway id is
// the payload's, so whoever may publish can invent any number of them. At
// the limit a new gateway replaces one tracked gateway taken at random,
// whose next batch then starts a new run (counted in
// DedupStats.GatewaysEvicted). With the default window of 16384 a
// gateway's first run takes 2 KiB, so the bound is 64 MiB of first runs.
const MaxGateways = 1 << 15

// Dedup remembers, per gateway, which sequence numbers were seen, in up to
// MaxRuns runs of Window consecutive numbers each. A seq within a run's
// window (behind its highest, or at most Window ahead of it) is checked and
// recorded there; any other seq starts a new run, replacing the run used
// least recently, and cannot be checked: it is reported as late when it lies
// behind every run, and counted as a jump when it lies ahead. A bogus seq far
// ahead therefore costs one run and never moves the window the gateway's
// real batches are checked against. Memory: Window/8 bytes per run, at most
// MaxRuns runs per gateway and MaxGateways gateways. Not safe for
// concurrent use.
type Dedup struct {
	window uint64
	maxGW  int
	gws    map[string]*gwRuns
	stats  DedupStats

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

// DedupStats counts what Dedup did since it was created.
type DedupStats struct {
	Jumps   uint64 // a seq ahead of every run by more than the window started a new run
	Late    uint64 // a seq behind every run by more than the window started a new run
	Evicted uint64 // runs dropped to make room for a new one

	GatewaysEvicted uint64 // gateways dropped at MaxGateways to make room for a new one
}

type gwRuns struct {
	runs []*seqRun // most recently used first
}

type seqRun struct {
	hi   uint64
	bits []uint64
}

// NewDedup returns a deduplicator remembering window sequence numbers per
// run (rounded up to a multiple of 64; at least 64).
func NewDedup(window int) *Dedup {
	w := uint64(max(window, 64))
	w = (w + 63) / 64 * 64
	return &Dedup{window: w, maxGW: MaxGateways, gws: map[string]*gwRuns{}, parts: map[partKey]struct{}{}}
}

// Seen records (gateway, seq) and reports whether it was seen before (dup)
// and whether it fell behind every tracked run (late: accepted unchecked).
// Any uint64 is handled without overflow; Check rejects the values a
// gateway never sends before they get here.
func (d *Dedup) Seen(gateway string, seq uint64) (dup, late bool) {
	g := d.gws[gateway]
	if g == nil {
		if len(d.gws) >= d.maxGW {
			for k := range d.gws { // map order: a gateway taken at random
				delete(d.gws, k)
				d.stats.GatewaysEvicted++
				break
			}
		}
		g = &gwRuns{}
		d.gws[strings.Clone(gateway)] = g // not a view into a payload
		d.start(g, seq)
		return false, false
	}
	// inside a run: checked against every run that covers seq, so runs
	// that came to overlap still agree on what was seen
	found := -1
	for i, r := range g.runs {
		if seq <= r.hi && r.hi-seq < d.window {
			if r.has(seq, d.window) {
				g.touch(i)
				return true, false
			}
			if found < 0 {
				found = i
			}
		}
	}
	if found >= 0 {
		g.runs[found].set(seq, d.window)
		g.touch(found)
		return false, false
	}
	// just ahead of a run: advance the closest one
	best, gap := -1, d.window
	for i, r := range g.runs {
		if seq > r.hi && seq-r.hi < gap {
			best, gap = i, seq-r.hi
		}
	}
	if best >= 0 {
		r := g.runs[best]
		for s := r.hi + 1; s < seq; s++ {
			r.unset(s, d.window)
		}
		r.hi = seq
		r.set(seq, d.window)
		g.touch(best)
		return false, false
	}
	late = true
	for _, r := range g.runs {
		if seq > r.hi {
			late = false
		}
	}
	if late {
		d.stats.Late++
	} else {
		d.stats.Jumps++
	}
	d.start(g, seq)
	return false, late
}

// start opens a new run at seq in front of g's runs, dropping the least
// recently used run when MaxRuns are tracked.
func (d *Dedup) start(g *gwRuns, seq uint64) {
	var r *seqRun
	if len(g.runs) == MaxRuns {
		r = g.runs[MaxRuns-1]
		clear(r.bits)
		g.runs = g.runs[:MaxRuns-1]
		d.stats.Evicted++
	} else {
		r = &seqRun{bits: make([]uint64, d.window/64)}
	}
	r.hi = seq
	r.set(seq, d.window)
	g.runs = append(g.runs, nil)
	copy(g.runs[1:], g.runs)
	g.runs[0] = r
}

// touch moves run i to the front (most recently used).
func (g *gwRuns) touch(i int) {
	if i == 0 {
		return
	}
	r := g.runs[i]
	copy(g.runs[1:i+1], g.runs[:i])
	g.runs[0] = r
}

func (r *seqRun) has(seq, w uint64) bool {
	i := seq % w
	return r.bits[i/64]&(1<<(i%64)) != 0
}

func (r *seqRun) set(seq, w uint64) {
	i := seq % w
	r.bits[i/64] |= 1 << (i % 64)
}

func (r *seqRun) unset(seq, w uint64) {
	i := seq % w
	r.bits[i/64] &^= 1 << (i % 64)
}

// Gateways returns how many gateways are tracked.
func (d *Dedup) Gateways() int { return len(d.gws) }

// Stats returns the counters.
func (d *Dedup) Stats() DedupStats { return d.stats }

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
	k.gateway = strings.Clone(gateway)
	d.parts[k] = struct{}{}
	d.partOrder = append(d.partOrder, k)
	if uint64(len(d.partOrder)) > d.window {
		delete(d.parts, d.partOrder[0])
		d.partOrder = d.partOrder[1:]
	}
	return false, late
}

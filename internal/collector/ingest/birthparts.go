package ingest

import (
	"fmt"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Bounds on the parts of split births the collector holds until complete
// (docs/schema.md, "Split batches"). A part carries at least one signal,
// and an asset holds at most 1024 (the highest max_signals_per_asset), so
// no real birth has more parts than MaxBirthParts; a complete birth within
// the schema's bounds is at most about 1.5 MB on the wire (1024 signals
// with every string at its bound, the labels at their totals, the
// nameplate repeated in every part), so MaxBirthPartBytes holds any real
// one. The parts arrive back to back (the gateway publishes them in one
// go), so one incomplete for BirthPartsTTL will not complete.
const (
	MaxBirthParts     = 1024
	MaxBirthPartBytes = 2 << 20
	// MaxBirthPartsHeld bounds the wire bytes of all incomplete births of
	// one assembler (one partition) together.
	MaxBirthPartsHeld = 8 << 20
	BirthPartsTTL     = 2 * time.Minute
)

// Why BirthParts dropped an incomplete birth (the reason label of
// smelter_collector_birth_parts_dropped_total).
const (
	PartsDropParts   = "parts"   // it announced more than MaxBirthParts parts
	PartsDropBytes   = "bytes"   // its parts came to more than MaxBirthPartBytes
	PartsDropEvicted = "evicted" // the oldest, to make room (count or MaxBirthPartsHeld)
	PartsDropExpired = "expired" // incomplete for BirthPartsTTL
)

// PartsDropReasons are every reason, for a metric present at 0.
var PartsDropReasons = []string{PartsDropParts, PartsDropBytes, PartsDropEvicted, PartsDropExpired}

// BirthParts reassembles births a gateway split into parts to fit its
// broker's message size limit (docs/schema.md): parts are kept until all
// of a (gateway, seq) arrived, then merged into the birth. It holds at most
// max incomplete births, MaxBirthPartBytes of parts for each and
// MaxBirthPartsHeld for all; beyond the count or the total the oldest
// waiting one is dropped, and one incomplete for BirthPartsTTL is dropped
// (its gateway publishes a birth again when the asset restarts or
// changes). A birth announcing more than MaxBirthParts parts, or whose parts
// exceed MaxBirthPartBytes, is refused. Every drop is passed to onDrop. Not
// safe for concurrent use.
type BirthParts struct {
	max     int
	held    int // wire bytes of every pending part
	pending map[birthKey]*pendingBirth
	order   []birthKey // oldest first
	onDrop  func(reason string)
}

type birthKey struct {
	gateway string
	seq     uint64
}

type pendingBirth struct {
	parts []*telemetry.Birth
	bytes int
	first time.Time
}

// NewBirthParts returns an assembler holding at most limit incomplete births
// (at least 1); onDrop (may be nil) learns of every birth it drops.
func NewBirthParts(limit int, onDrop func(reason string)) *BirthParts {
	if onDrop == nil {
		onDrop = func(string) {}
	}
	return &BirthParts{max: max(limit, 1), pending: map[birthKey]*pendingBirth{}, onDrop: onDrop}
}

// Held returns how many incomplete births, and how many wire bytes of their
// parts, the assembler holds.
func (p *BirthParts) Held() (births, bytes int) { return len(p.pending), p.held }

// Add takes one part of size wire bytes, arrived at now, and returns the
// merged birth when it completed one (nil while parts are missing; a part
// seen before is ignored). b must have Parts > 0. An error means the part
// was refused (a *RejectError with ReasonBounds: too many parts, or too
// many bytes for one birth) or the parts of its seq do not fit together;
// the parts of its seq are dropped.
func (p *BirthParts) Add(b *telemetry.Birth, size int, now time.Time) (*telemetry.Birth, error) {
	p.Expire(now)
	k := birthKey{b.Gateway, b.Seq}
	if b.Parts > MaxBirthParts {
		p.drop(k, PartsDropParts)
		return nil, &RejectError{Reason: ReasonBounds,
			Detail: fmt.Sprintf("gateway %s asset %s birth: %d parts, more than %d", b.Gateway, b.Asset.ID, b.Parts, MaxBirthParts)}
	}
	pb, ok := p.pending[k]
	if ok {
		for _, q := range pb.parts {
			if q.Part == b.Part && q.Parts == b.Parts {
				return nil, nil
			}
		}
		if pb.bytes+size > MaxBirthPartBytes {
			p.drop(k, PartsDropBytes)
			return nil, &RejectError{Reason: ReasonBounds,
				Detail: fmt.Sprintf("gateway %s asset %s birth: parts of more than %d bytes", b.Gateway, b.Asset.ID, MaxBirthPartBytes)}
		}
	} else {
		if size > MaxBirthPartBytes {
			p.onDrop(PartsDropBytes)
			return nil, &RejectError{Reason: ReasonBounds,
				Detail: fmt.Sprintf("gateway %s asset %s birth: parts of more than %d bytes", b.Gateway, b.Asset.ID, MaxBirthPartBytes)}
		}
		pb = &pendingBirth{first: now}
		p.pending[k] = pb
		p.order = append(p.order, k)
	}
	pb.parts = append(pb.parts, b)
	pb.bytes += size
	p.held += size
	if len(pb.parts) >= b.Parts {
		p.forget(k)
		return telemetry.MergeBirth(pb.parts)
	}
	// room for this one: evict the oldest others
	for (len(p.pending) > p.max || p.held > MaxBirthPartsHeld) && len(p.order) > 1 {
		o := p.order[0]
		if o == k {
			o = p.order[1]
		}
		p.drop(o, PartsDropEvicted)
	}
	return nil, nil
}

// Expire drops the births incomplete since before now - BirthPartsTTL.
func (p *BirthParts) Expire(now time.Time) {
	for len(p.order) > 0 {
		pb := p.pending[p.order[0]]
		if now.Sub(pb.first) < BirthPartsTTL {
			return
		}
		p.drop(p.order[0], PartsDropExpired)
	}
}

// drop forgets k's parts (if any are held) and reports it as reason.
func (p *BirthParts) drop(k birthKey, reason string) {
	if _, ok := p.pending[k]; ok {
		p.forget(k)
	}
	p.onDrop(reason)
}

func (p *BirthParts) forget(k birthKey) {
	if pb, ok := p.pending[k]; ok {
		p.held -= pb.bytes
	}
	delete(p.pending, k)
	for i, o := range p.order {
		if o == k {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

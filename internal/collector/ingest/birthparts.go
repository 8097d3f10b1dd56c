package ingest

import "github.com/smelterio/smelter/internal/telemetry"

// BirthParts reassembles births a gateway split into parts to fit its
// broker's message size limit (docs/schema.md): parts are kept until all
// of a (gateway, seq) arrived, then merged into the birth. At most Max
// births wait at once; beyond that the oldest waiting one is dropped (its
// gateway publishes a birth again when the asset restarts or changes). Not
// safe for concurrent use.
type BirthParts struct {
	max     int
	pending map[birthKey][]*telemetry.Birth
	order   []birthKey
}

type birthKey struct {
	gateway string
	seq     uint64
}

// NewBirthParts returns an assembler holding at most limit incomplete births
// (at least 1).
func NewBirthParts(limit int) *BirthParts {
	return &BirthParts{max: max(limit, 1), pending: map[birthKey][]*telemetry.Birth{}}
}

// Add takes one part and returns the merged birth when it completed one
// (nil while parts are missing; a part seen before is ignored). b must have
// Parts > 0. An error means the parts of its seq do not fit together; they
// are dropped.
func (p *BirthParts) Add(b *telemetry.Birth) (*telemetry.Birth, error) {
	k := birthKey{b.Gateway, b.Seq}
	parts, ok := p.pending[k]
	if !ok {
		for len(p.order) >= p.max {
			delete(p.pending, p.order[0])
			p.order = p.order[1:]
		}
		p.order = append(p.order, k)
	}
	for _, q := range parts {
		if q.Part == b.Part && q.Parts == b.Parts {
			return nil, nil
		}
	}
	parts = append(parts, b)
	if len(parts) < b.Parts {
		p.pending[k] = parts
		return nil, nil
	}
	p.forget(k)
	return telemetry.MergeBirth(parts)
}

func (p *BirthParts) forget(k birthKey) {
	delete(p.pending, k)
	for i, o := range p.order {
		if o == k {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

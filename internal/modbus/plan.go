package modbus

import (
	"errors"
	"fmt"
	"slices"

	"github.com/smelterio/smelter/internal/sample"
)

// Plan is the set of read requests that covers a list of points, one per
// poll group (Pool.Source builds them; NewPlan also checks a group at
// configuration time).
type Plan struct {
	points  []Point
	reqs    []request
	maxRegs int
	maxBits int
	maxGap  int
}

// request is one read: a contiguous range of one table covering its points.
type request struct {
	table  Table
	start  uint16
	count  uint16
	points []int // indices into Plan.points, by address
}

// Span describes one planned request, for tests, logs and status pages.
type Span struct {
	Table   Table
	Address uint16
	Count   uint16 // registers, or bits on a bit table
	Points  int
}

// NewPlan validates points against cfg's request caps and merges them into
// requests: points of the same table are joined while the request stays
// within max_registers (max_bits for coils and discrete inputs) and the unused
// gap between neighbours is at most max_gap registers (16*max_gap bits on a
// bit table, the same bytes on the wire). A point is never split across
// requests. Zero caps in cfg mean the protocol limits.
func NewPlan(points []Point, cfg Config) (*Plan, error) {
	p := &Plan{points: slices.Clone(points), maxRegs: cfg.MaxRegisters, maxBits: cfg.MaxBits, maxGap: cfg.MaxGap}
	if p.maxRegs == 0 {
		p.maxRegs = maxRegisters
	}
	if p.maxBits == 0 {
		p.maxBits = maxBits
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	limit(bad, "max_registers", p.maxRegs, maxRegisters)
	limit(bad, "max_bits", p.maxBits, maxBits)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if p.maxGap < 0 {
		return nil, fmt.Errorf("max_gap: %d must not be negative", p.maxGap)
	}
	for i, pt := range p.points {
		if err := pt.Validate(); err != nil {
			return nil, fmt.Errorf("points[%d]: %w", i, err)
		}
		if n := pt.Registers(); !pt.Table.IsBit() && n > p.maxRegs {
			return nil, fmt.Errorf("points[%d]: %s of %d registers above max_registers %d", i, pt.Type, n, p.maxRegs)
		}
	}
	all := make([]int, len(p.points))
	for i := range all {
		all[i] = i
	}
	p.reqs = p.merge(all)
	return p, nil
}

// Len returns the number of points.
func (p *Plan) Len() int { return len(p.points) }

// Points returns a copy of the plan's points, in the order given to NewPlan.
func (p *Plan) Points() []Point { return slices.Clone(p.points) }

// Spans lists the planned requests.
func (p *Plan) Spans() []Span {
	out := make([]Span, len(p.reqs))
	for i, r := range p.reqs {
		out[i] = r.span()
	}
	return out
}

func (r *request) span() Span {
	return Span{Table: r.table, Address: r.start, Count: r.count, Points: len(r.points)}
}

// capGap returns the request cap and bridgeable gap of table t.
func (p *Plan) capGap(t Table) (int, int) {
	if t.IsBit() {
		return p.maxBits, p.maxGap * 16
	}
	return p.maxRegs, p.maxGap
}

// merge plans requests for the points idx (any order).
func (p *Plan) merge(idx []int) []request {
	idx = slices.Clone(idx)
	slices.SortStableFunc(idx, func(a, b int) int {
		pa, pb := p.points[a], p.points[b]
		if pa.Table != pb.Table {
			return int(pa.Table) - int(pb.Table)
		}
		return int(pa.Address) - int(pb.Address)
	})
	var reqs []request
	for i := 0; i < len(idx); {
		first := p.points[idx[i]]
		limit, gap := p.capGap(first.Table)
		start := int(first.Address)
		end := start + first.Registers()
		j := i + 1
		for ; j < len(idx); j++ {
			q := p.points[idx[j]]
			if q.Table != first.Table {
				break
			}
			qend := int(q.Address) + q.Registers()
			newEnd := max(end, qend)
			if int(q.Address)-end > gap || newEnd-start > limit {
				break
			}
			end = newEnd
		}
		reqs = append(reqs, request{table: first.Table, start: uint16(start), count: uint16(end - start), points: idx[i:j:j]})
		i = j
	}
	return reqs
}

// single returns the request that reads point i alone.
func (p *Plan) single(i int) request {
	pt := p.points[i]
	return request{table: pt.Table, start: pt.Address, count: uint16(pt.Registers()), points: []int{i}}
}

// cover returns the request spanning exactly the points idx (one table, by address).
func (p *Plan) cover(idx []int) request {
	first := p.points[idx[0]]
	start, end := int(first.Address), int(first.Address)+first.Registers()
	for _, i := range idx[1:] {
		pt := p.points[i]
		start = min(start, int(pt.Address))
		end = max(end, int(pt.Address)+pt.Registers())
	}
	return request{table: first.Table, start: uint16(start), count: uint16(end - start), points: idx}
}

// decodeInto decodes every point of r from data, the reply to r.
func (p *Plan) decodeInto(r *request, data []byte, out []sample.Sample) {
	for _, i := range r.points {
		pt := &p.points[i]
		// the common case, a big-endian 16-bit register, without Decode's
		// dispatch (TestDecodeIntoMatchesDecode)
		if off := 2 * (int(pt.Address) - int(r.start)); pt.Order == ABCD && (pt.Type == Uint16 || pt.Type == Int16) &&
			!pt.Table.IsBit() && off+2 <= len(data) {
			w := uint16(data[off])<<8 | uint16(data[off+1])
			if pt.Type == Int16 {
				out[i] = good(float64(int16(w)))
			} else {
				out[i] = good(float64(w))
			}
			continue
		}
		out[i] = p.decodeOne(r, i, data)
	}
}

func (p *Plan) decodeOne(r *request, i int, data []byte) sample.Sample {
	pt := p.points[i]
	off := int(pt.Address) - int(r.start)
	if pt.Table.IsBit() {
		if off/8 >= len(data) {
			return bad(StatusBadLength)
		}
		b := [1]byte{data[off/8] >> (off % 8) & 1}
		return Decode(pt, b[:])
	}
	n := pt.Registers()
	if 2*(off+n) > len(data) {
		return bad(StatusBadLength)
	}
	return Decode(pt, data[2*off:2*(off+n)])
}

package telemetry

import (
	"encoding/json"
	"fmt"
)

// Split divides b into parts whose wire form (AppendJSON) is at most limit
// bytes each, so that a batch larger than a broker's message size limit
// (NATS max_payload, an MQTT broker's maximum packet size) still travels.
//
// A batch that fits is returned alone and unchanged (Parts 0). Otherwise
// the readings are packed in order, greedily, into parts that repeat b's
// header (gateway, seq, asset, ts_gw, historical) with Part 1..Parts set;
// the parts share b's Readings array (a copy when readings were left out). The
// split depends only on b and limit: re-sending the same batch under the
// same limit gives the same parts (and message ids).
//
// A reading whose part would exceed limit even alone cannot be sent: it is
// left out and its index returned in dropped. When nothing can be sent
// (every reading dropped, or a batch without readings whose header alone
// exceeds limit), parts is empty. limit <= 0 means no limit.
func (b *Batch) Split(limit int, parts []Batch) (out []Batch, dropped []int) {
	out = parts[:0]
	var scratch []byte
	whole := b.AppendJSON(scratch)
	if limit <= 0 || len(whole) <= limit {
		return append(out, *b), nil
	}
	// The header as a part writes it, with the widest part numbers possible.
	h := *b
	h.Readings = nil
	h.Part, h.Parts = max(len(b.Readings), 1), max(len(b.Readings), 1)
	header := len(h.AppendJSON(scratch[:0]))
	sizes := make([]int, len(b.Readings))
	var ts lastTS
	for i := range b.Readings {
		scratch = b.Readings[i].appendJSON(scratch[:0], &ts)
		sizes[i] = len(scratch)
		if header+sizes[i] > limit {
			dropped = append(dropped, i)
		}
	}
	src := b
	if len(dropped) > 0 {
		// Leave out what cannot fit; the rest still packs densely.
		kept := *b
		kept.Readings = make([]Reading, 0, len(b.Readings)-len(dropped))
		ks := sizes[:0:0]
		for i, r := range b.Readings {
			if header+sizes[i] <= limit {
				kept.Readings = append(kept.Readings, r)
				ks = append(ks, sizes[i])
			}
		}
		src, sizes = &kept, ks
	}
	start, size := 0, header
	for i, n := range sizes {
		if i > start {
			n++ // the comma
		}
		if size+n > limit {
			out = appendPart(out, src, start, i)
			start, size = i, header+sizes[i]
			continue
		}
		size += n
	}
	if start < len(sizes) {
		out = appendPart(out, src, start, len(sizes))
	}
	for i := range out {
		out[i].Part, out[i].Parts = i+1, len(out)
	}
	return out, dropped
}

func appendPart(out []Batch, b *Batch, from, to int) []Batch {
	p := *b
	p.Readings = b.Readings[from:to:to]
	return append(out, p)
}

// SplitBirth divides b into parts whose wire form (MarshalBirth) is at most
// limit bytes each, as Batch.Split does for readings: the signals are
// packed in order into parts that repeat the header and nameplate, with
// Part 1..Parts set. A birth that fits is returned alone and unchanged.
// A signal that does not fit in a part even alone is left out and its index
// returned in dropped; parts is empty when nothing fits. limit <= 0 means
// no limit.
func SplitBirth(b *Birth, limit int) (parts []Birth, dropped []int, err error) {
	whole, err := MarshalBirth(b)
	if err != nil {
		return nil, nil, err
	}
	if limit <= 0 || len(whole) <= limit {
		return []Birth{*b}, nil, nil
	}
	h := *b
	h.Signals = []SignalInfo{}
	h.Part, h.Parts = max(len(b.Signals), 1), max(len(b.Signals), 1)
	hdr, err := MarshalBirth(&h)
	if err != nil {
		return nil, nil, err
	}
	header := len(hdr)
	size := header
	var cur []SignalInfo
	flush := func() {
		if len(cur) > 0 {
			p := *b
			p.Signals = cur
			parts = append(parts, p)
		}
		cur, size = nil, header
	}
	for i := range b.Signals {
		enc, err := json.Marshal(&b.Signals[i])
		if err != nil {
			return nil, nil, err
		}
		n := len(enc)
		if header+n > limit {
			dropped = append(dropped, i)
			continue
		}
		if len(cur) > 0 {
			n++ // the comma
		}
		if size+n > limit {
			flush()
			n = len(enc)
		}
		cur = append(cur, b.Signals[i])
		size += n
	}
	flush()
	for i := range parts {
		parts[i].Part, parts[i].Parts = i+1, len(parts)
	}
	return parts, dropped, nil
}

// MergeBirth joins the parts of a split birth (any order, each once) into
// the birth they were split from. It fails unless parts holds exactly parts
// 1..Parts of one (gateway, seq).
func MergeBirth(parts []*Birth) (*Birth, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: no birth parts", ErrInvalid)
	}
	n := parts[0].Parts
	if n != len(parts) {
		return nil, fmt.Errorf("%w: %d birth parts of %d", ErrInvalid, len(parts), n)
	}
	byPart := make([]*Birth, n)
	for _, p := range parts {
		if p.Parts != n || p.Part < 1 || p.Part > n || byPart[p.Part-1] != nil ||
			p.Gateway != parts[0].Gateway || p.Seq != parts[0].Seq {
			return nil, fmt.Errorf("%w: birth part %d/%d does not belong to %s", ErrInvalid, p.Part, p.Parts, MsgID(parts[0].Gateway, parts[0].Seq))
		}
		byPart[p.Part-1] = p
	}
	out := *byPart[0]
	out.Part, out.Parts = 0, 0
	out.Signals = nil
	for _, p := range byPart {
		out.Signals = append(out.Signals, p.Signals...)
	}
	return &out, nil
}

package telemetry

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
	for i := range b.Readings {
		scratch = b.Readings[i].appendJSON(scratch[:0])
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

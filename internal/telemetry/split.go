package telemetry

// Split divides b into parts whose wire form (AppendJSON) is at most limit
// bytes each, so that a batch larger than a broker's message size limit
// (NATS max_payload, an MQTT broker's maximum packet size) still travels.
//
// A batch that fits is returned alone and unchanged (Parts 0). Otherwise
// the readings are packed in order, greedily, into parts that repeat b's
// header (gateway, seq, asset, ts_gw, historical) with Part 1..Parts set;
// the parts share b's Readings array, so they are valid while b is. The
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
	start, size := 0, header
	for i := range b.Readings {
		scratch = b.Readings[i].appendJSON(scratch[:0])
		n := len(scratch)
		if header+n > limit {
			if i > start {
				out = appendPart(out, b, start, i)
			}
			dropped = append(dropped, i)
			start, size = i+1, header
			continue
		}
		if i > start {
			n++ // the comma
		}
		if size+n > limit {
			out = appendPart(out, b, start, i)
			start, size = i, header+n-1
			continue
		}
		size += n
	}
	if start < len(b.Readings) {
		out = appendPart(out, b, start, len(b.Readings))
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

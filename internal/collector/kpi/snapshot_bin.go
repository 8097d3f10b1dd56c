package kpi

import (
	"slices"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
)

// AppendBinary appends s in the checkpoint's binary form (statebin);
// ReadBinary reads it back into an equal AssetState.
func (s *AssetState) AppendBinary(b []byte) []byte {
	b = statebin.AppendString(b, s.Site)
	b = statebin.AppendString(b, s.ID)
	b = statebin.AppendString(b, s.Class)
	b = statebin.AppendFloatMap(b, s.Nameplate)
	b = statebin.AppendVarint(b, s.Start)
	b = statebin.AppendVarint(b, s.LastTS)
	b = statebin.AppendFloat(b, s.Covered)
	b = statebin.AppendFloats(b, s.Acc)
	b = statebin.AppendFloats(b, s.Sample)
	b = statebin.AppendUvarint(b, uint64(len(s.SampleOK)))
	for _, ok := range s.SampleOK {
		b = statebin.AppendBool(b, ok)
	}
	b = statebin.AppendUvarint(b, uint64(len(s.Latches)))
	if len(s.Latches) > 0 {
		keys := make([]string, 0, len(s.Latches))
		for k := range s.Latches {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = statebin.AppendString(b, k)
			b = statebin.AppendLatch(b, s.Latches[k])
		}
	}
	r := s.Last
	if r == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	for _, x := range [...]string{r.Schema, r.Site, r.Class, r.Asset} {
		b = statebin.AppendString(b, x)
	}
	b = statebin.AppendVarint(b, r.Start)
	b = statebin.AppendVarint(b, r.End)
	b = statebin.AppendFloat(b, r.Coverage)
	b = statebin.AppendUvarint(b, uint64(len(r.KPIs)))
	for i := range r.KPIs {
		v := &r.KPIs[i]
		b = statebin.AppendString(b, v.Name)
		b = statebin.AppendFloat(b, v.Value)
		b = statebin.AppendString(b, v.Unit)
		b = statebin.AppendOptFloat(b, v.Ref)
		b = statebin.AppendOptFloat(b, v.Limit)
		b = statebin.AppendString(b, v.Status)
		b = statebin.AppendString(b, v.Message)
	}
	return statebin.AppendString(b, r.Group)
}

// ReadBinary reads an AssetState that AppendBinary wrote from r (absent
// lists and maps are nil, as encoding/json leaves them).
func ReadBinary(r *statebin.Reader) AssetState {
	s := AssetState{Site: r.String(), ID: r.String(), Class: r.String(), Nameplate: r.FloatMap()}
	s.Start, s.LastTS, s.Covered = r.Varint(), r.Varint(), r.Float()
	s.Acc, s.Sample = r.Floats(), r.Floats()
	if n := r.Count(1); n > 0 {
		s.SampleOK = make([]bool, n)
		for i := range s.SampleOK {
			s.SampleOK[i] = r.Bool()
		}
	}
	if n := r.Count(6); n > 0 {
		s.Latches = make(map[string]alert.LatchState, n)
		for range n {
			k := r.String()
			s.Latches[k] = r.Latch()
		}
	}
	if r.Bool() {
		res := &Result{Schema: r.String(), Site: r.String(), Class: r.String(), Asset: r.String(), Start: r.Varint(), End: r.Varint(), Coverage: r.Float()}
		if n := r.Count(14); n > 0 {
			res.KPIs = make([]Value, n)
			for i := range res.KPIs {
				res.KPIs[i] = Value{Name: r.String(), Value: r.Float(), Unit: r.String(), Ref: r.OptFloat(), Limit: r.OptFloat(), Status: r.String(), Message: r.String()}
			}
		}
		res.Group = r.String()
		s.Last = res
	}
	return s
}

// SnapshotInto is Snapshot into st, reusing its accumulator list and
// latch map: valid until the next call with the same st. Nameplate and the
// held sample are the tracker's own (read only).
func (t *Tracker) SnapshotInto(st *AssetState, site, id string) bool {
	a, ok := t.assets[[2]string{site, id}]
	if !ok {
		return false
	}
	acc, latches := st.Acc[:0], st.latchBuf
	clear(latches)
	*st = AssetState{Site: a.site, ID: a.id, Class: a.class, Nameplate: a.np, Start: a.start, LastTS: a.lastTS, Covered: a.covered,
		Acc: append(acc, a.a[:]...), Sample: a.s.v, SampleOK: a.s.ok, Last: a.last, latchBuf: latches}
	for k, l := range a.latches {
		if !l.Zero() {
			if st.latchBuf == nil {
				st.latchBuf = map[string]alert.LatchState{}
			}
			st.latchBuf[k] = l.State()
		}
	}
	if len(st.latchBuf) > 0 {
		st.Latches = st.latchBuf
	}
	return true
}

package rules

import (
	"encoding/binary"
	"slices"

	"github.com/smelterio/smelter/internal/collector/statebin"
)

// AppendBinary appends a tracked asset's state in the checkpoint's binary
// form, the bytes (*AssetState).AppendBinary writes for what SnapshotInto
// gives (the birth list sorted by signal; ReadBinary reads either into an
// equal AssetState), straight from the engine's state: no copy of its
// signals, rules and evaluator memory first. The part a birth sets (site,
// id, class, path, nameplate, birth list) is encoded once per birth or
// restore and kept with the asset. False when the asset is not tracked.
func (e *Engine) AppendBinary(b []byte, site, id string) ([]byte, bool) {
	a, ok := e.lookup(site, id)
	if !ok {
		return b, false
	}
	if a.birthBin == nil {
		a.birthBin = a.appendBirthBinary(make([]byte, 0, 64+64*len(a.birth)))
	}
	b = append(b, a.birthBin...)
	b = statebin.AppendVarint(b, a.lastTSGW)
	b = statebin.AppendVarint(b, a.lastTS)
	b = statebin.AppendVarint(b, a.interval)
	b = statebin.AppendUvarint(b, a.batches)
	b = statebin.AppendString(b, a.dead)
	b = statebin.AppendBool(b, a.running)
	b = statebin.AppendString(b, a.gateway)
	b = statebin.AppendUvarint(b, a.seq)
	b = statebin.AppendVarint(b, int64(a.part))
	b = statebin.AppendVarint(b, a.lifeTSGW)
	b = statebin.AppendUvarint(b, uint64(len(a.list)))
	for _, s := range a.list {
		iv := s.interval
		if s.birthIV { // SnapshotInto leaves a birth's interval out: the birth has it
			iv = 0
		}
		b = appendSignalBinary(b, s.name, s.unit, s.value, s.text, byte(s.quality), s.valid, s.implaus,
			[...]int64{s.ts, s.seen, s.first, s.arr, s.good, s.firstArr, iv})
		b = e.appendInstsBinary(b, s.insts, s.stale, s.plaus)
	}
	return e.appendInstsBinary(b, a.insts, a.silence, nil), true
}

// appendInstsBinary appends the rules with state among insts, then x and
// y (when not nil), as appendRulesBinary does for appendRule's RuleStates.
func (e *Engine) appendInstsBinary(b []byte, insts []*inst, x, y *inst) []byte {
	at := len(b)
	b = append(b, 0) // the count: one byte below 128, fixed below
	n := 0
	add := func(in *inst) {
		e.slab = e.slab[:0]
		if in.impl != nil {
			e.slab = appendEval(e.slab, in.impl)
		}
		if in.latch.Zero() && len(e.slab) == 0 {
			return
		}
		b = statebin.AppendString(b, in.r.Name)
		b = statebin.AppendLatch(b, in.latch.State())
		b = statebin.AppendFloats(b, e.slab)
		n++
	}
	for _, in := range insts {
		add(in)
	}
	for _, in := range [2]*inst{x, y} {
		if in != nil {
			add(in)
		}
	}
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	return slices.Replace(b, at, at+1, binary.AppendUvarint(nil, uint64(n))...)
}

// appendBirthBinary appends the part of the record a birth sets, as
// (*AssetState).AppendBinary writes it, the birth list sorted by signal.
func (a *assetState) appendBirthBinary(b []byte) []byte {
	b = statebin.AppendString(b, a.site)
	b = statebin.AppendString(b, a.id)
	b = statebin.AppendString(b, a.class)
	b = statebin.AppendStrings(b, a.path)
	b = statebin.AppendFloatMap(b, a.nameplate)
	names := make([]string, 0, len(a.birth))
	for k := range a.birth {
		names = append(names, k)
	}
	slices.Sort(names)
	b = statebin.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		si := a.birth[k]
		b = appendSignalInfoBinary(b, &si)
	}
	return b
}

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
	// first the instances that may have state, each signal's ended by a
	// nil: a short loop whose loads of the instances (cold in memory in a
	// large fleet) the processor overlaps, instead of one miss at a time
	// between the encoding of the ones before
	kept := e.kept[:0]
	for _, s := range a.list {
		kept = append(mayHaveState(kept, s.insts, s.stale, s.plaus), nil)
	}
	kept = append(mayHaveState(kept, a.insts, a.silence, nil), nil)
	e.kept = kept
	for _, s := range a.list {
		iv := s.interval
		if s.birthIV { // SnapshotInto leaves a birth's interval out: the birth has it
			iv = 0
		}
		b = appendSignalBinary(b, s.name, s.unit, s.value, s.text, byte(s.quality), s.valid, s.implaus,
			[...]int64{s.ts, s.seen, s.first, s.arr, s.good, s.firstArr, iv})
		b, kept = appendInstsBinary(b, kept)
	}
	b, _ = appendInstsBinary(b, kept)
	clear(e.kept) // no instance of a dropped asset held
	return b, true
}

// mayHaveState appends the instances among insts, then x and y (when not
// nil), that may have state to keep: a latch that is not clear, or an
// evaluator (appendInstBinary leaves out one without memory).
func mayHaveState(dst, insts []*inst, x, y *inst) []*inst {
	for _, in := range insts {
		if in.impl != nil || !in.latch.Zero() {
			dst = append(dst, in)
		}
	}
	for _, in := range [2]*inst{x, y} {
		if in != nil && (in.impl != nil || !in.latch.Zero()) {
			dst = append(dst, in)
		}
	}
	return dst
}

// appendInstsBinary appends the rules with state among the instances of
// kept up to its first nil, as appendRulesBinary does for appendRule's
// RuleStates (each rule's evaluator memory written straight into b:
// appendEvalBinary), and returns kept after that nil.
func appendInstsBinary(b []byte, kept []*inst) ([]byte, []*inst) {
	at := len(b)
	b = append(b, 0) // the count: one byte below 128, fixed below
	n := 0
	for kept[0] != nil {
		b = appendInstBinary(b, kept[0], &n)
		kept = kept[1:]
	}
	kept = kept[1:]
	if n < 0x80 {
		b[at] = byte(n)
		return b, kept
	}
	return slices.Replace(b, at, at+1, binary.AppendUvarint(nil, uint64(n))...), kept
}

// appendInstBinary appends in's name, latch and evaluator memory and
// counts it in n, unless it has no state (a clear latch, no memory): then
// b is left as it was.
func appendInstBinary(b []byte, in *inst, n *int) []byte {
	start := len(b)
	b = statebin.AppendString(b, in.r.Name)
	b = statebin.AppendLatch(b, in.latch.State())
	mem := len(b)
	b = appendEvalBinary(b, in.impl)
	if len(b) == mem+1 && in.latch.Zero() { // a count of 0: no memory
		return b[:start]
	}
	*n++
	return b
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

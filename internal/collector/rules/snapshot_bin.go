package rules

import (
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// AppendBinary appends s in the checkpoint's binary form (statebin):
// every field in declaration order, numbers exact, the birth's write
// limits included. ReadBinary reads it back into an equal AssetState.
func (s *AssetState) AppendBinary(b []byte) []byte {
	b = statebin.AppendString(b, s.Site)
	b = statebin.AppendString(b, s.ID)
	b = statebin.AppendString(b, s.Class)
	b = statebin.AppendStrings(b, s.Path)
	b = statebin.AppendFloatMap(b, s.Nameplate)
	b = statebin.AppendUvarint(b, uint64(len(s.Birth)))
	for i := range s.Birth {
		b = appendSignalInfoBinary(b, &s.Birth[i])
	}
	b = statebin.AppendVarint(b, s.LastTSGW)
	b = statebin.AppendVarint(b, s.LastTS)
	b = statebin.AppendVarint(b, s.Interval)
	b = statebin.AppendUvarint(b, s.Batches)
	b = statebin.AppendString(b, s.Dead)
	b = statebin.AppendBool(b, s.Running)
	b = statebin.AppendString(b, s.Gateway)
	b = statebin.AppendUvarint(b, s.Seq)
	b = statebin.AppendVarint(b, int64(s.Part))
	b = statebin.AppendVarint(b, s.LifeTSGW)
	b = statebin.AppendUvarint(b, uint64(len(s.Signals)))
	for i := range s.Signals {
		ss := &s.Signals[i]
		b = appendSignalBinary(b, ss.Name, ss.Unit, ss.Value, ss.Text, byte(ss.Quality), ss.Valid, ss.Implaus,
			[...]int64{ss.TS, ss.Seen, ss.First, ss.Arr, ss.Good, ss.FirstArr, ss.Interval})
		b = appendRulesBinary(b, ss.Rules)
	}
	return appendRulesBinary(b, s.Rules)
}

// appendSignalBinary appends a signal's fields before its rules, in the
// record's order: name, unit, value, text, quality, flags (1 valid, 2
// implausible), then the times ts, seen, first, arr, good, firstArr and
// interval as varints. Both encoders of the record (from a snapshot and
// straight from the engine) write a signal through it.
func appendSignalBinary(b []byte, name, unit string, value float64, text string, quality byte, valid, implaus bool, times [7]int64) []byte {
	b = statebin.AppendString(b, name)
	b = statebin.AppendString(b, unit)
	b = statebin.AppendFloat(b, value)
	b = statebin.AppendString(b, text)
	var flags byte
	if valid {
		flags |= 1
	}
	if implaus {
		flags |= 2
	}
	b = append(b, quality, flags)
	for _, v := range times {
		b = statebin.AppendVarint(b, v)
	}
	return b
}

func appendRulesBinary(b []byte, rs []RuleState) []byte {
	b = statebin.AppendUvarint(b, uint64(len(rs)))
	for i := range rs {
		b = statebin.AppendString(b, rs[i].Rule)
		b = statebin.AppendLatch(b, rs[i].Latch)
		b = statebin.AppendFloats(b, rs[i].Eval)
	}
	return b
}

func readRulesBinary(r *statebin.Reader) []RuleState {
	n := r.Count(7) // name, latch, eval: at least 7 bytes
	if n == 0 {
		return nil
	}
	out := make([]RuleState, n)
	for i := range out {
		out[i].Rule = r.String()
		out[i].Latch = r.Latch()
		out[i].Eval = r.Floats()
	}
	return out
}

func appendSignalInfoBinary(b []byte, si *telemetry.SignalInfo) []byte {
	b = statebin.AppendString(b, si.Signal)
	b = statebin.AppendString(b, si.Unit)
	b = statebin.AppendOptFloat(b, si.Min)
	b = statebin.AppendOptFloat(b, si.Max)
	b = statebin.AppendVarint(b, si.IntervalMS)
	b = statebin.AppendString(b, si.Src)
	b = statebin.AppendStrings(b, si.Enum)
	w := si.Write
	if w == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = statebin.AppendOptFloat(b, w.Min)
	b = statebin.AppendOptFloat(b, w.Max)
	b = statebin.AppendStrings(b, w.Allowed)
	b = statebin.AppendFloat(b, w.MaxStep)
	return statebin.AppendVarint(b, w.MinIntervalMS)
}

func readSignalInfoBinary(r *statebin.Reader) telemetry.SignalInfo {
	si := telemetry.SignalInfo{Signal: r.String(), Unit: r.String(), Min: r.OptFloat(), Max: r.OptFloat(), IntervalMS: r.Varint(),
		Src: r.String(), Enum: r.Strings()}
	if r.Bool() {
		si.Write = &telemetry.WriteLimits{Min: r.OptFloat(), Max: r.OptFloat(), Allowed: r.Strings(), MaxStep: r.Float(), MinIntervalMS: r.Varint()}
	}
	return si
}

// ReadBinary reads an AssetState that AppendBinary wrote from r (absent
// lists and maps are nil, as encoding/json leaves them).
func ReadBinary(r *statebin.Reader) AssetState { return readBinary(r, true) }

// ReadBinaryV2 reads the rule state of a binary record of the layout
// before LifeTSGW (record version byte 0x02): the same fields, without
// it (left 0).
func ReadBinaryV2(r *statebin.Reader) AssetState { return readBinary(r, false) }

func readBinary(r *statebin.Reader, life bool) AssetState {
	s := AssetState{Site: r.String(), ID: r.String(), Class: r.String(), Path: r.Strings(), Nameplate: r.FloatMap()}
	if n := r.Count(8); n > 0 {
		s.Birth = make([]telemetry.SignalInfo, n)
		for i := range s.Birth {
			s.Birth[i] = readSignalInfoBinary(r)
		}
	}
	s.LastTSGW, s.LastTS, s.Interval = r.Varint(), r.Varint(), r.Varint()
	s.Batches = r.Uvarint()
	s.Dead, s.Running, s.Gateway = r.String(), r.Bool(), r.String()
	s.Seq = r.Uvarint()
	s.Part = int(r.Varint())
	if life {
		s.LifeTSGW = r.Varint()
	}
	if n := r.Count(21); n > 0 {
		s.Signals = make([]SignalState, n)
		for i := range s.Signals {
			ss := &s.Signals[i]
			ss.Name, ss.Unit, ss.Value, ss.Text = r.String(), r.String(), r.Float(), r.String()
			ss.Quality = telemetry.Quality(r.Byte())
			flags := r.Byte()
			ss.Valid, ss.Implaus = flags&1 != 0, flags&2 != 0
			ss.TS, ss.Seen, ss.First, ss.Arr, ss.Good, ss.FirstArr, ss.Interval = r.Varint(), r.Varint(), r.Varint(), r.Varint(), r.Varint(), r.Varint(), r.Varint()
			ss.Rules = readRulesBinary(r)
		}
	}
	s.Rules = readRulesBinary(r)
	return s
}

package rules

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// AppendJSON appends the JSON encoding of s, byte for byte what
// encoding/json's Marshal writes for it (field order, omitempty, string
// escaping, number formats, sorted nameplate keys), without reflection:
// the checkpoint writes one per changed asset. A value json.Marshal
// refuses (a NaN or infinite number) is an error here too.
func (s *AssetState) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"site":`...)
	b = appendStr(b, s.Site)
	b = append(b, `,"id":`...)
	b = appendStr(b, s.ID)
	b = append(b, `,"class":`...)
	b = appendStr(b, s.Class)
	b = appendStrs(b, `,"path":[`, s.Path)
	if len(s.Nameplate) > 0 {
		b = append(b, `,"np":{`...)
		keys := make([]string, 0, len(s.Nameplate))
		for k := range s.Nameplate {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStr(b, k)
			b = append(b, ':')
			if b, err = appendNum(b, s.Nameplate[k]); err != nil {
				return b, err
			}
		}
		b = append(b, '}')
	}
	if len(s.Birth) > 0 {
		b = append(b, `,"birth":[`...)
		for i := range s.Birth {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendSignalInfo(b, &s.Birth[i]); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	b = appendInt(b, `,"ts_gw":`, s.LastTSGW)
	b = appendInt(b, `,"ts":`, s.LastTS)
	b = appendInt(b, `,"iv":`, s.Interval)
	if s.Batches != 0 {
		b = strconv.AppendUint(append(b, `,"n":`...), s.Batches, 10)
	}
	b = appendOptStr(b, `,"dead":`, s.Dead)
	if s.Running {
		b = append(b, `,"run":true`...)
	}
	b = appendOptStr(b, `,"gw":`, s.Gateway)
	if s.Seq != 0 {
		b = strconv.AppendUint(append(b, `,"seq":`...), s.Seq, 10)
	}
	b = appendInt(b, `,"part":`, int64(s.Part))
	b = appendInt(b, `,"life_ts_gw":`, s.LifeTSGW)
	if len(s.Signals) > 0 {
		b = append(b, `,"sigs":[`...)
		for i := range s.Signals {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = s.Signals[i].appendJSON(b); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	b = appendRules(b, s.Rules)
	return append(b, '}'), nil
}

func (s *SignalState) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"s":`...)
	b = appendStr(b, s.Name)
	b = appendOptStr(b, `,"u":`, s.Unit)
	if s.Value != 0 || math.IsNaN(s.Value) {
		var err error
		if b, err = appendNum(append(b, `,"v":`...), s.Value); err != nil {
			return b, err
		}
	}
	b = appendOptStr(b, `,"t":`, s.Text)
	if s.Quality != 0 {
		b = strconv.AppendUint(append(b, `,"q":`...), uint64(s.Quality), 10)
	}
	if s.Valid {
		b = append(b, `,"ok":true`...)
	}
	if s.Implaus {
		b = append(b, `,"ip":true`...)
	}
	b = appendInt(b, `,"ts":`, s.TS)
	b = appendInt(b, `,"seen":`, s.Seen)
	b = appendInt(b, `,"first":`, s.First)
	b = appendInt(b, `,"arr":`, s.Arr)
	b = appendInt(b, `,"good":`, s.Good)
	b = appendInt(b, `,"farr":`, s.FirstArr)
	b = appendInt(b, `,"iv":`, s.Interval)
	b = appendRules(b, s.Rules)
	return append(b, '}'), nil
}

func appendRules(b []byte, rs []RuleState) []byte {
	if len(rs) == 0 {
		return b
	}
	b = append(b, `,"rules":[`...)
	for i := range rs {
		r := &rs[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"r":`...)
		b = appendStr(b, r.Rule)
		b = append(b, `,"l":{`...)
		n := len(b)
		b = appendSeverity(b, `,"l":`, r.Latch.Level)
		b = appendSeverity(b, `,"p":`, r.Latch.Pending)
		b = appendInt(b, `,"s":`, r.Latch.Since)
		b = appendInt(b, `,"d":`, int64(r.Latch.Dir))
		b = appendInt(b, `,"r":`, r.Latch.Raised)
		if len(b) > n { // the first field's comma is the object's opening
			b = append(b[:n], b[n+1:]...)
		}
		b = append(b, '}')
		if len(r.Eval) > 0 {
			b = append(b, `,"e":"`...)
			b = r.Eval.appendBase64(b)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendBase64 appends the base64 of the little-endian float64s, 15 at a
// time (120 bytes: whole 3-byte groups, so the chunks' encodings join up).
func (f Floats) appendBase64(b []byte) []byte {
	var raw [8 * 15]byte
	for len(f) > 0 {
		n := min(len(f), 15)
		for i, x := range f[:n] {
			binary.LittleEndian.PutUint64(raw[8*i:], math.Float64bits(x))
		}
		b = base64.StdEncoding.AppendEncode(b, raw[:8*n])
		f = f[n:]
	}
	return b
}

func appendSignalInfo(b []byte, si *telemetry.SignalInfo) ([]byte, error) {
	var err error
	b = append(b, `{"signal":`...)
	b = appendStr(b, si.Signal)
	b = appendOptStr(b, `,"unit":`, si.Unit)
	if si.Min != nil {
		if b, err = appendNum(append(b, `,"min":`...), *si.Min); err != nil {
			return b, err
		}
	}
	if si.Max != nil {
		if b, err = appendNum(append(b, `,"max":`...), *si.Max); err != nil {
			return b, err
		}
	}
	b = appendInt(b, `,"interval_ms":`, si.IntervalMS)
	b = appendOptStr(b, `,"src":`, si.Src)
	b = appendStrs(b, `,"enum":[`, si.Enum)
	if si.Write != nil { // rare: through encoding/json
		w, err := json.Marshal(si.Write)
		if err != nil {
			return b, err
		}
		b = append(append(b, `,"write":`...), w...)
	}
	return append(b, '}'), nil
}

// appendStrs appends key (ending in '[') and the strings unless there are
// none (omitempty).
func appendStrs(b []byte, key string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	b = append(b, key...)
	for i, x := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, x)
	}
	return append(b, ']')
}

func appendSeverity(b []byte, key string, s alert.Severity) []byte {
	if s == alert.None {
		return b
	}
	return appendStr(append(b, key...), s.String())
}

// appendInt appends key and v unless v is 0 (omitempty).
func appendInt(b []byte, key string, v int64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), v, 10)
}

func appendOptStr(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendStr(append(b, key...), s)
}

// appendStr appends s as a JSON string: plain ASCII as it is, anything
// encoding/json escapes (quotes, backslashes, control characters, <, >, &,
// non-ASCII) through encoding/json itself.
func appendStr(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendNum appends f as encoding/json does: shortest representation,
// exponent form below 1e-6 and from 1e21, "e-07" written "e-7".
func appendNum(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

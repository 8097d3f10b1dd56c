package telemetry

import (
	"strconv"
	"strings"
)

// decodeBirthFast decodes s into b when it is in the form MarshalBirth
// (encoding/json) writes: the keys of Birth, SignalInfo and WriteLimits
// each at most once and in their declaration order, no white space, no
// null (but for signals, which MarshalBirth writes for nil), strings without escapes or bytes beyond ASCII, integers and
// numbers that parse (batchDecoder's helpers). For anything else it
// reports false and b holds garbage: DecodeBirth then decodes the message
// with encoding/json, which reports its error. For a message it takes it
// gives what encoding/json gives (FuzzDecodeBirthFast): the same values,
// nil where encoding/json leaves nil and empty where it makes empty.
//
// The strings are copied into one string per birth (compact): a birth's
// signal list is kept per asset, and views into the payload would keep
// the whole payload, keys and punctuation included.
func decodeBirthFast(s string, b *Birth) bool {
	d := birthFast{s: s}
	if !d.birth(b) || d.i != len(s) {
		return false
	}
	d.compact(b)
	return true
}

type birthFast struct {
	s      string
	i      int
	floats []float64 // backing of Min and Max, one array per birth
	np     []npEntry // nameplate entries in order (the map is made at the end)
	npSet  bool      // a nameplate object was there (empty: an empty map)
	bytes  int       // total length of the strings, for compact
}

type npEntry struct {
	k string
	v float64
}

// keys walks the object whose '{' is at d.i: for each of names, in
// order, that is the object's next key, value(k) decodes its value at d.i.
// It reports whether the object ends after them ('}' consumed).
func (d *birthFast) keys(names []string, value func(k int) bool) bool {
	s := d.s
	if d.i >= len(s) || s[d.i] != '{' {
		return false
	}
	d.i++
	first := true
	for k, name := range names {
		j := d.i
		if !first {
			if j >= len(s) || s[j] != ',' {
				break
			}
			j++
		}
		if !strings.HasPrefix(s[j:], name) {
			continue
		}
		d.i = j + len(name)
		first = false
		if !value(k) {
			return false
		}
	}
	if d.i >= len(s) || s[d.i] != '}' {
		return false
	}
	d.i++
	return true
}

func (d *birthFast) str() (string, bool) {
	if d.i >= len(d.s) || d.s[d.i] != '"' {
		return "", false
	}
	v, next, ok := plainString(d.s, d.i+1)
	if ok {
		d.i = next
		d.bytes += len(v)
	}
	return v, ok
}

// strs decodes an array of strings: empty, not nil, for [].
func (d *birthFast) strs() ([]string, bool) {
	s := d.s
	if d.i >= len(s) || s[d.i] != '[' {
		return nil, false
	}
	d.i++
	out := []string{}
	if d.i < len(s) && s[d.i] == ']' {
		d.i++
		return out, true
	}
	for {
		v, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		if d.i >= len(s) {
			return nil, false
		}
		switch s[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return out, true
		default:
			return nil, false
		}
	}
}

// float decodes a number as encoding/json does into a float64
// (strconv.ParseFloat; out of range: false).
func (d *birthFast) float() (float64, bool) {
	v, j, ok := scanNumber(d.s, d.i)
	if !ok {
		if j = numberEnd(d.s, d.i); j == d.i {
			return 0, false
		}
		var err error
		if v, err = strconv.ParseFloat(d.s[d.i:j], 64); err != nil {
			return 0, false
		}
	}
	d.i = j
	return v, true
}

func (d *birthFast) floatPtr() (*float64, bool) {
	v, ok := d.float()
	if !ok {
		return nil, false
	}
	if len(d.floats) == cap(d.floats) {
		d.floats = make([]float64, 0, max(8, 2*cap(d.floats)))
	}
	d.floats = append(d.floats, v)
	return &d.floats[len(d.floats)-1], true
}

func (d *birthFast) int64() (int64, bool) {
	v, j, ok := fastInt(d.s, d.i)
	d.i = j
	return v, ok
}

// int decodes an int (fastInt's 18 digits fit an int64; a 32-bit int is
// checked).
func (d *birthFast) int() (int, bool) {
	v, ok := d.int64()
	return int(v), ok && int64(int(v)) == v
}

func (d *birthFast) uint64() (uint64, bool) {
	if d.i < len(d.s) && d.s[d.i] == '-' { // even -0 is not a uint64
		return 0, false
	}
	v, ok := d.int64()
	return uint64(v), ok
}

var (
	birthKeys = []string{`"schema":`, `"gateway":`, `"seq":`, `"asset":`, `"ts_gw":`, `"signals":`, `"nameplate":`,
		`"protocol":`, `"part":`, `"parts":`}
	assetKeys  = []string{`"id":`, `"class":`, `"path":`}
	signalKeys = []string{`"signal":`, `"unit":`, `"min":`, `"max":`, `"interval_ms":`, `"src":`, `"enum":`, `"write":`}
	writeKeys  = []string{`"min":`, `"max":`, `"allowed":`, `"max_step":`, `"min_interval_ms":`}
)

func (d *birthFast) birth(b *Birth) bool {
	return d.keys(birthKeys, func(k int) bool {
		var ok bool
		switch k {
		case 0:
			b.Schema, ok = d.str()
		case 1:
			b.Gateway, ok = d.str()
		case 2:
			b.Seq, ok = d.uint64()
		case 3:
			ok = d.keys(assetKeys, func(k int) bool {
				var ok bool
				switch k {
				case 0:
					b.Asset.ID, ok = d.str()
				case 1:
					b.Asset.Class, ok = d.str()
				case 2:
					b.Asset.Path, ok = d.strs()
				}
				return ok
			})
		case 4:
			b.TSGW, ok = d.int64()
		case 5:
			ok = d.signals(b)
		case 6:
			d.npSet = true
			ok = d.nameplate()
		case 7:
			b.Protocol, ok = d.str()
		case 8:
			b.Part, ok = d.int()
		case 9:
			b.Parts, ok = d.int()
		}
		return ok
	})
}

func (d *birthFast) signals(b *Birth) bool {
	s := d.s
	if strings.HasPrefix(s[d.i:], "null") { // a birth without signals (nil)
		d.i += 4
		return true
	}
	if d.i >= len(s) || s[d.i] != '[' {
		return false
	}
	d.i++
	b.Signals = make([]SignalInfo, 0, strings.Count(s[d.i:], `{"signal":`))
	if d.i < len(s) && s[d.i] == ']' {
		d.i++
		return true
	}
	for {
		b.Signals = append(b.Signals, SignalInfo{})
		if !d.signal(&b.Signals[len(b.Signals)-1]) || d.i >= len(s) {
			return false
		}
		switch s[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return true
		default:
			return false
		}
	}
}

func (d *birthFast) signal(si *SignalInfo) bool {
	return d.keys(signalKeys, func(k int) bool {
		var ok bool
		switch k {
		case 0:
			si.Signal, ok = d.str()
		case 1:
			si.Unit, ok = d.str()
		case 2:
			si.Min, ok = d.floatPtr()
		case 3:
			si.Max, ok = d.floatPtr()
		case 4:
			si.IntervalMS, ok = d.int64()
		case 5:
			si.Src, ok = d.str()
		case 6:
			si.Enum, ok = d.strs()
		case 7:
			w := &WriteLimits{}
			si.Write = w
			ok = d.keys(writeKeys, func(k int) bool {
				var ok bool
				switch k {
				case 0:
					w.Min, ok = d.floatPtr()
				case 1:
					w.Max, ok = d.floatPtr()
				case 2:
					w.Allowed, ok = d.strs()
				case 3:
					w.MaxStep, ok = d.float()
				case 4:
					w.MinIntervalMS, ok = d.int64()
				}
				return ok
			})
		}
		return ok
	})
}

// nameplate decodes the nameplate's entries into d.np (repeated keys are
// kept: the map is made from them in order, the last one wins as with
// encoding/json).
func (d *birthFast) nameplate() bool {
	s := d.s
	if d.i >= len(s) || s[d.i] != '{' {
		return false
	}
	d.i++
	if d.i < len(s) && s[d.i] == '}' {
		d.i++
		return true
	}
	for {
		k, ok := d.str()
		if !ok || d.i >= len(s) || s[d.i] != ':' {
			return false
		}
		d.i++
		v, ok := d.float()
		if !ok || d.i >= len(s) {
			return false
		}
		d.np = append(d.np, npEntry{k, v})
		switch s[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// compact copies b's strings (views into the payload) into one string
// and makes the nameplate map. The schema, which DecodeBirth checks is
// SchemaBirth, is the constant when it is.
func (d *birthFast) compact(b *Birth) {
	var sb strings.Builder
	sb.Grow(d.bytes)
	one := func(p *string) {
		if *p == "" {
			return
		}
		n := sb.Len()
		sb.WriteString(*p)
		*p = sb.String()[n:]
	}
	all := func(v []string) {
		for i := range v {
			one(&v[i])
		}
	}
	if b.Schema == SchemaBirth {
		b.Schema = SchemaBirth
	} else {
		one(&b.Schema)
	}
	one(&b.Gateway)
	one(&b.Asset.ID)
	one(&b.Asset.Class)
	all(b.Asset.Path)
	one(&b.Protocol)
	for i := range b.Signals {
		si := &b.Signals[i]
		one(&si.Signal)
		one(&si.Unit)
		one(&si.Src)
		all(si.Enum)
		if si.Write != nil {
			all(si.Write.Allowed)
		}
	}
	if d.npSet {
		b.Nameplate = make(map[string]float64, len(d.np))
		for _, e := range d.np {
			one(&e.k)
			b.Nameplate[e.k] = e.v
		}
	}
}

// Package statebin is the binary form of the collector's checkpoint
// records: unsigned and zig-zag varints, length-prefixed strings and
// little-endian IEEE 754 float64s appended to a byte slice, and a Reader
// whose first error sticks (a truncated or corrupt record is an error,
// never a panic or a huge allocation). Fields have no tags: a record's
// layout is fixed by its version byte.
package statebin

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"

	"github.com/smelterio/smelter/internal/collector/alert"
)

// ErrCorrupt: a record ends early, a count exceeds what is left of it, or
// a value is out of range.
var ErrCorrupt = errors.New("statebin: corrupt record")

// AppendUvarint appends v as an unsigned varint.
func AppendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

// AppendVarint appends v as a zig-zag varint.
func AppendVarint(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

// AppendString appends len(s) and s.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendStrings appends the count and every string.
func AppendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = AppendString(b, s)
	}
	return b
}

// AppendFloat appends f's 8 bytes (exact, NaN and infinities included).
func AppendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

// AppendFloats appends the count and every value.
func AppendFloats(b []byte, fs []float64) []byte {
	return AppendRawFloats(binary.AppendUvarint(b, uint64(len(fs))), fs)
}

// AppendRawFloats appends every value (8 bytes each, as AppendFloat)
// without a count, b grown once: for a caller that wrote the count.
func AppendRawFloats(b []byte, fs []float64) []byte {
	at := len(b)
	b = slices.Grow(b, 8*len(fs))[:at+8*len(fs)]
	d := b[at:]
	for i, f := range fs {
		binary.LittleEndian.PutUint64(d[8*i:], math.Float64bits(f))
	}
	return b
}

// AppendFloatMap appends the count, then every key and value with the keys
// sorted (the same map gives the same bytes).
func AppendFloatMap(b []byte, m map[string]float64) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	if len(m) == 0 {
		return b
	}
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = AppendString(b, k)
		b = AppendFloat(b, m[k])
	}
	return b
}

// AppendOptFloat appends 0 for nil, else 1 and the value.
func AppendOptFloat(b []byte, f *float64) []byte {
	if f == nil {
		return append(b, 0)
	}
	return AppendFloat(append(b, 1), *f)
}

// AppendBool appends 0 or 1.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// AppendLatch appends a rule latch's persisted state.
func AppendLatch(b []byte, l alert.LatchState) []byte {
	b = append(b, byte(l.Level), byte(l.Pending))
	b = binary.AppendVarint(b, l.Since)
	b = append(b, byte(l.Dir))
	return binary.AppendVarint(b, l.Raised)
}

// Reader reads what the Append functions wrote, in the same order. After
// the first error every read returns the zero value and Err reports it.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err returns the first error.
func (r *Reader) Err() error { return r.err }

// Done returns the first error, or ErrCorrupt when bytes are left over.
func (r *Reader) Done() error {
	if r.err == nil && len(r.b) > 0 {
		r.fail()
	}
	return r.err
}

func (r *Reader) fail() {
	if r.err == nil {
		r.err = ErrCorrupt
	}
	r.b = nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a zig-zag varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Count reads a count of elements that take at least size bytes each:
// more than the rest of the record holds is an error (so a corrupt count
// never makes a caller allocate).
func (r *Reader) Count(size int) int {
	n := r.Uvarint()
	if n > uint64(len(r.b)/size) {
		r.fail()
		return 0
	}
	return int(n)
}

// String reads a string (a copy).
func (r *Reader) String() string {
	n := r.Count(1)
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// Strings reads a count and the strings; nil for none.
func (r *Reader) Strings() []string {
	n := r.Count(1)
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = r.String()
	}
	return out
}

// Float reads a float64.
func (r *Reader) Float() float64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return f
}

// Floats reads a count and the values; nil for none.
func (r *Reader) Floats() []float64 {
	n := r.Count(8)
	if n == 0 {
		return nil
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = r.Float()
	}
	return out
}

// FloatMap reads what AppendFloatMap wrote (nil when empty).
func (r *Reader) FloatMap() map[string]float64 {
	n := r.Count(9)
	if n == 0 {
		return nil
	}
	m := make(map[string]float64, n)
	for range n {
		k := r.String()
		m[k] = r.Float()
	}
	return m
}

// OptFloat reads what AppendOptFloat wrote.
func (r *Reader) OptFloat() *float64 {
	switch r.Byte() {
	case 0:
		return nil
	case 1:
		f := r.Float()
		return &f
	}
	r.fail()
	return nil
}

// Bool reads what AppendBool wrote.
func (r *Reader) Bool() bool {
	switch r.Byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail()
	return false
}

// Latch reads what AppendLatch wrote.
func (r *Reader) Latch() alert.LatchState {
	var l alert.LatchState
	l.Level, l.Pending = alert.Severity(r.Byte()), alert.Severity(r.Byte())
	if l.Level > alert.Trip || l.Pending > alert.Trip {
		r.fail()
	}
	l.Since = r.Varint()
	l.Dir = int8(r.Byte())
	l.Raised = r.Varint()
	return l
}

// Bytes reads a length and that many bytes (a view into the record).
func (r *Reader) Bytes() []byte {
	n := r.Count(1)
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

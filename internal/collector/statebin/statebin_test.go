package statebin

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
)

// TestGoldenBytes pins the encoding: records written by one version are
// read by the next.
func TestGoldenBytes(t *testing.T) {
	one := 1.5
	var b []byte
	b = AppendUvarint(b, 300)
	b = AppendVarint(b, -3)
	b = AppendString(b, "ab")
	b = AppendStrings(b, []string{"x"})
	b = AppendFloat(b, 1)
	b = AppendFloats(b, []float64{-2})
	b = AppendOptFloat(b, nil)
	b = AppendOptFloat(b, &one)
	b = AppendBool(b, true)
	b = AppendLatch(b, alert.LatchState{Level: alert.Warn, Pending: alert.Alarm, Since: 1, Dir: -1, Raised: 2})
	want := []byte{0xac, 0x02, 0x05, 2, 'a', 'b', 1, 1, 'x',
		0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
		1, 0, 0, 0, 0, 0, 0, 0, 0xc0,
		0, 1, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,
		1,
		2, 3, 2, 0xff, 4}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("got  % x\nwant % x", b, want)
	}
	r := NewReader(b)
	if v := r.Uvarint(); v != 300 {
		t.Fatal(v)
	}
	if v := r.Varint(); v != -3 {
		t.Fatal(v)
	}
	if s := r.String(); s != "ab" {
		t.Fatal(s)
	}
	if s := r.Strings(); !reflect.DeepEqual(s, []string{"x"}) {
		t.Fatal(s)
	}
	if f := r.Float(); f != 1 {
		t.Fatal(f)
	}
	if f := r.Floats(); !reflect.DeepEqual(f, []float64{-2}) {
		t.Fatal(f)
	}
	if f := r.OptFloat(); f != nil {
		t.Fatal(f)
	}
	if f := r.OptFloat(); f == nil || *f != 1.5 {
		t.Fatal(f)
	}
	if !r.Bool() {
		t.Fatal("bool")
	}
	if l := r.Latch(); l != (alert.LatchState{Level: alert.Warn, Pending: alert.Alarm, Since: 1, Dir: -1, Raised: 2}) {
		t.Fatal(l)
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
}

func TestCorrupt(t *testing.T) {
	for name, read := range map[string]func(*Reader){
		"count beyond the record": func(r *Reader) { r.Floats() },
		"string beyond":           func(r *Reader) { _ = r.String() },
		"bool 2":                  func(r *Reader) { r.Bool() },
		"severity 9":              func(r *Reader) { r.Latch() },
	} {
		t.Run(name, func(t *testing.T) {
			r := NewReader([]byte{9, 0, 0, 0})
			read(r)
			if !errors.Is(r.Err(), ErrCorrupt) {
				t.Fatalf("err %v", r.Err())
			}
		})
	}
	if err := NewReader([]byte{1}).Done(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("left over: %v", err)
	}
	r := NewReader(AppendFloat(nil, math.NaN()))
	if f := r.Float(); !math.IsNaN(f) || r.Done() != nil {
		t.Fatal("NaN")
	}
}

// FuzzReader: any input is read without a panic, and a count never
// allocates beyond the input.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0xac, 0x02, 0x05, 2, 'a', 'b'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(b)
		for r.Err() == nil && len(r.b) > 0 {
			switch r.Byte() % 6 {
			case 0:
				if fs := r.Floats(); len(fs)*8 > len(b) {
					t.Fatalf("%d floats from %d bytes", len(fs), len(b))
				}
			case 1:
				if ss := r.Strings(); len(ss) > len(b) {
					t.Fatalf("%d strings from %d bytes", len(ss), len(b))
				}
			case 2:
				r.Latch()
			case 3:
				r.OptFloat()
			case 4:
				r.Varint()
			default:
				r.Bytes()
			}
		}
	})
}

package telemetry

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"
)

// decodeBirthStd is DecodeBirth as it was before decodeBirthFast: the
// tests check both agree.
func decodeBirthStd(data []byte) (*Birth, error) {
	var b Birth
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return checkBirth(&b)
}

// sameBirth fails unless DecodeBirth and decodeBirthStd give the same
// birth or the same error for data, and, when decodeBirthFast takes data,
// encoding/json takes it too with the same value. It reports whether the
// fast path took it.
func sameBirth(t testing.TB, data []byte) bool {
	t.Helper()
	got, err := DecodeBirth(data)
	want, werr := decodeBirthStd(data)
	switch {
	case (err == nil) != (werr == nil):
		t.Fatalf("%q:\nDecodeBirth error %v\nencoding/json error %v", data, err, werr)
	case err != nil && err.Error() != werr.Error():
		t.Fatalf("%q:\nDecodeBirth error %v\nencoding/json error %v", data, err, werr)
	case !reflect.DeepEqual(got, want):
		t.Fatalf("%q:\nDecodeBirth %+v\nencoding/json %+v", data, got, want)
	}
	var fast Birth
	if !decodeBirthFast(string(data), &fast) {
		return false
	}
	var std Birth
	if err := json.Unmarshal(data, &std); err != nil {
		t.Fatalf("%q: the fast path took what encoding/json refuses: %v", data, err)
	}
	if !reflect.DeepEqual(&fast, &std) {
		t.Fatalf("%q:\nfast %+v\nencoding/json %+v", data, &fast, &std)
	}
	return true
}

// birthEdges are births in forms besides the encoder's: what the fast
// path takes (empty lists and objects, null signals, numbers with
// exponents) and what it leaves to encoding/json (white space, escapes,
// nulls, other key orders and cases, repeated and unknown keys, numbers
// out of range) or both refuse.
var birthEdges = []string{
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":null}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor","path":[]},"ts_gw":1,"signals":[],"nameplate":{}}`,
	`{"schema":"smelter.birth/1","gateway":"gw","seq":0,"asset":{"id":"m1","class":"motor","path":["a"]},"ts_gw":-0,"signals":[{"signal":"x","enum":[],"write":{}}],"part":0,"parts":0}`,
	`{"schema":"smelter.birth/1","gateway":"gw","seq":7,"asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x","min":-1e+21,"max":1e-7,"write":{"min":-0,"max":1.5E3,"allowed":["a","b"],"max_step":0.000001234567890123456789,"min_interval_ms":5}}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[],"nameplate":{"a":1,"b":2,"a":3}}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x","min":1e400}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x","interval_ms":1.5}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":12345678901234567890,"signals":[]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","seq":-0,"asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","seq":-1,"asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","seq":1234567890123456789,"asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"part":1,"parts":2}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"part":3,"parts":2}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"part":99999999999,"parts":2}`,
	`{"schema":"smelter.birth/2","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"g w","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1} `,
	` {"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1}x`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1}{}`,
	`{"schema":"smelter.birth/1", "gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"gateway":"gw","schema":"smelter.birth/1","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","Gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","gateway":"gx","asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","extra":[1,{"a":null}],"asset":{"id":"m1","class":"motor"},"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"g\u0077","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"\u00e9"}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"é\xff"}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":null,"ts_gw":1}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[null]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x","unit":null,"min":null}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":{}}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":"1"}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":01}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x","min":01}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x","min":1.}]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"signals":[{"signal":"x"},]}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"nameplate":{"a":"1"}}`,
	`{"schema":"smelter.birth/1","gateway":"gw","asset":{"id":"m1","class":"motor"},"ts_gw":1,"protocol":true}`,
	`{}`, `null`, `[]`, ``, `{`, `"x"`,
}

// TestDecodeBirthMatchesStd compares DecodeBirth with encoding/json on
// births of every catalog class as MarshalBirth writes them (the fast path
// must take them all), on every prefix of one and on the edge forms.
func TestDecodeBirthMatchesStd(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		for _, b := range classBirths(t, rng) {
			data, err := MarshalBirth(b)
			if err != nil {
				t.Fatal(err)
			}
			if !sameBirth(t, data) {
				t.Fatalf("the fast path refused the encoder's %s", data)
			}
		}
	}
	births := classBirths(t, rng)
	data, _ := MarshalBirth(births[0])
	for i := range data {
		sameBirth(t, data[:i])
	}
	for _, s := range birthEdges {
		sameBirth(t, []byte(s))
	}
}

// TestDecodeBirthMutations compares both decoders on encoder output with
// one byte replaced, inserted or deleted at random.
func TestDecodeBirthMutations(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var all [][]byte
	for _, b := range classBirths(t, rng) {
		data, _ := MarshalBirth(b)
		all = append(all, data)
	}
	const alphabet = `{}[]:,"\ 0123456789-+.eEnultrfasx` + "\x00\x7f\xc3\xa9\xff"
	for range 20_000 {
		data := all[rng.IntN(len(all))]
		i := rng.IntN(len(data))
		c := alphabet[rng.IntN(len(alphabet))]
		var m []byte
		switch rng.IntN(3) {
		case 0:
			m = append(append(append([]byte{}, data[:i]...), c), data[i+1:]...)
		case 1:
			m = append(append(append([]byte{}, data[:i]...), c), data[i:]...)
		default:
			m = append(append([]byte{}, data[:i]...), data[i+1:]...)
		}
		sameBirth(t, m)
	}
}

// TestDecodeBirthCompact checks the decoded strings are no views into the
// payload (a birth's signal list is kept per asset) but parts of one
// string besides it.
func TestDecodeBirthCompact(t *testing.T) {
	b := classBirths(t, rand.New(rand.NewPCG(7, 8)))[0]
	data, _ := MarshalBirth(b)
	s := string(data)
	var got Birth
	if !decodeBirthFast(s, &got) {
		t.Fatal("the fast path refused the encoder's output")
	}
	within := func(x, in string) bool {
		p, lo := uintptr(unsafe.Pointer(unsafe.StringData(x))), uintptr(unsafe.Pointer(unsafe.StringData(in)))
		return p >= lo && p+uintptr(len(x)) <= lo+uintptr(len(in))
	}
	first, last := got.Gateway, got.Signals[len(got.Signals)-1].Signal
	for _, x := range []string{first, got.Asset.ID, got.Signals[0].Signal, last} {
		if within(x, s) {
			t.Fatalf("%q is a view into the payload", x)
		}
	}
	if p0, p1 := uintptr(unsafe.Pointer(unsafe.StringData(first))), uintptr(unsafe.Pointer(unsafe.StringData(last))); p1 <= p0 || p1-p0 > uintptr(len(s)) {
		t.Fatalf("%q and %q are not parts of one string", first, last)
	}
	if got.Schema != SchemaBirth || unsafe.StringData(got.Schema) != unsafe.StringData(SchemaBirth) {
		t.Fatalf("schema %q is not the constant", got.Schema)
	}
}

// FuzzDecodeBirthFast checks DecodeBirth against encoding/json on any
// input; the seeds are births of every catalog class and the edge forms.
func FuzzDecodeBirthFast(f *testing.F) {
	for _, b := range classBirths(f, rand.New(rand.NewPCG(9, 10))) {
		data, _ := MarshalBirth(b)
		f.Add(data)
	}
	for _, s := range birthEdges {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameBirth(t, data)
	})
}

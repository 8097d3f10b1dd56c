package telemetry

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// bothWays decodes s with and without readingFast and fails unless both
// give the same batch or the same error.
func bothWays(t testing.TB, s string) {
	t.Helper()
	var fast, general Batch
	ferr := decodeBatchWith(&fast, s, true)
	gerr := decodeBatchWith(&general, s, false)
	if (ferr == nil) != (gerr == nil) || (ferr != nil && ferr.Error() != gerr.Error()) {
		t.Fatalf("with the fast path: %v, general: %v\n%s", ferr, gerr, s)
	}
	if ferr == nil && !reflect.DeepEqual(&fast, &general) {
		t.Fatalf("with the fast path:\n%+v\ngeneral:\n%+v\n%s", fast, general, s)
	}
}

// readingVariety is readings of every form the encoder writes: with and
// without value, text, unit, status and source, every quality, strings
// with escapes and beyond ASCII, values of every magnitude.
func readingVariety(rng *rand.Rand, n int) []Reading {
	strs := []string{"", "x", "signal_01", `a"b`, `back\slash`, "tab\there", "é", "\u2028", "\x01", "modbus:3:hr:40001"}
	vals := []float64{0, -0.5, 1, 1e15, 123.456, 1e-7, -1e300, math.MaxFloat64, 5e-324, 1234567.0625}
	var out []Reading
	for range n {
		r := Reading{Signal: strs[rng.IntN(len(strs))], Value: vals[rng.IntN(len(vals))] * (1 + rng.Float64()),
			Unit: strs[rng.IntN(len(strs))], Quality: Quality(rng.IntN(4)), TS: rng.Int64N(1 << 42), Src: strs[rng.IntN(len(strs))]}
		if rng.IntN(3) == 0 {
			r.Text = strs[rng.IntN(len(strs))]
		}
		if rng.IntN(4) == 0 {
			r.NoValue = true
		}
		if rng.IntN(3) == 0 {
			r.Status = rng.Uint32()
		}
		if math.IsInf(r.Value, 0) {
			r.Value = math.MaxFloat64
		}
		out = append(out, r)
	}
	return out
}

// TestReadingFastMatchesGeneral: on what the encoder writes, and on edits of
// it (white space, keys moved, duplicated or cut, bytes changed), decoding
// with readingFast gives what the general path gives, error for error.
func TestReadingFastMatchesGeneral(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	edits := []func(s string) string{
		func(s string) string { return s },
		func(s string) string { return strings.Replace(s, `,"ts":`, ` ,"ts" : `, 1) },
		func(s string) string { return strings.Replace(s, `{"signal":`, `{"ts":1,"signal":`, 1) },
		func(s string) string { return strings.Replace(s, `,"quality":`, `,"unit":"V","quality":`, 1) },
		func(s string) string { return strings.Replace(s, `"value":`, `"value":null,"value":`, 1) },
		func(s string) string { return strings.Replace(s, `"value":`, `"value":-`, 1) },
		func(s string) string { return strings.Replace(s, `"good"`, `"gooD"`, 1) },
		func(s string) string { return strings.Replace(s, `,"ts":`, `,"ts":1.5,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `,"ts":`, `,"ts":9223372036854775808,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `,"status":`, `,"status":4294967296,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `,"src":`, `,"src":null,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `}`, ` }`, 2) },
		func(s string) string { return strings.Replace(s, `"value":`, `"value":1e400,"v":`, 1) },
		func(s string) string { return strings.Replace(s, `"value":`, `"value":01,"v":`, 1) },
		func(s string) string { return strings.Replace(s, `,"ts":`, `,"status":-0,"ts":`, 1) },
		func(s string) string { return strings.Replace(s, `,"src":`, `,"status":-0,"src":`, 1) },
		func(s string) string { return strings.Replace(s, `,"ts":`, `,"ts":-0,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `,"ts":`, `,"ts":00,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `,"ts":`, `,"ts":1234567890123456789,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `"value":`, `"value":-0.000000000000001,"v":`, 1) },
	}
	for i := range 3000 {
		b := sampleBatch(0)
		b.Readings = readingVariety(rng, 1+rng.IntN(6))
		enc := string(b.AppendJSON(nil))
		bothWays(t, enc)
		bothWays(t, edits[i%len(edits)](enc))
		if len(enc) > 0 {
			j := rng.IntN(len(enc))
			bothWays(t, enc[:j])                                          // cut
			bothWays(t, enc[:j]+string(rune(' '+rng.IntN(95)))+enc[j+1:]) // one byte changed
		}
	}
}

// TestReadingFastTakesEncoderOutput: every reading as Reading.appendJSON
// writes it without escapes or non-ASCII text decodes on the fast path.
func TestReadingFastTakesEncoderOutput(t *testing.T) {
	for i, r := range sampleBatch(40).Readings {
		for _, status := range []uint32{0, 1 << 31} {
			r.Status = status
			enc := string(r.appendJSON(nil, &lastTS{}))
			d := batchDecoder{s: enc}
			var got Reading
			if !d.readingFast(&got) || d.i != len(enc) {
				t.Fatalf("reading %d: fast path not taken for %s", i, enc)
			}
			want := r
			if !want.Quality.HasValue() {
				want.Value, want.Text = 0, ""
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("reading %d: got %+v, want %+v", i, got, want)
			}
		}
	}
}

// FuzzReadingFast: any input decodes alike with and without readingFast.
func FuzzReadingFast(f *testing.F) {
	for _, c := range decodeCorpus {
		f.Add(c)
	}
	f.Add(string(sampleBatch(20).AppendJSON(nil)))
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		b := sampleBatch(0)
		b.Readings = readingVariety(rng, 4)
		f.Add(string(b.AppendJSON(nil)))
	}
	f.Fuzz(func(t *testing.T, s string) { bothWays(t, s) })
}

// TestFastNumbersMatchStrconv: fastFloat and fastInt give what strconv
// gives for the JSON numbers they take, on random decimals of up to 19
// digits with and without fraction and sign.
func TestFastNumbersMatchStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 200_000 {
		digits := 1 + rng.IntN(19)
		var sb strings.Builder
		if rng.IntN(2) == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(byte('1' + rng.IntN(9)))
		if rng.IntN(8) == 0 {
			sb.Reset()
			sb.WriteByte('0')
		}
		point := rng.IntN(digits + 1)
		for k := 1; k < digits; k++ {
			if k == point {
				sb.WriteByte('.')
			}
			sb.WriteByte(byte('0' + rng.IntN(10)))
		}
		num := sb.String()
		if end := numberEnd(num, 0); end != len(num) {
			continue // not a JSON number
		}
		if v, ok := fastFloat(num); ok {
			want, err := strconv.ParseFloat(num, 64)
			if err != nil || math.Float64bits(v) != math.Float64bits(want) {
				t.Fatalf("fastFloat(%s) = %v, strconv %v (%v)", num, v, want, err)
			}
		} else if n := strings.Count(num, "") - 1 - strings.Count(num, "-") - strings.Count(num, "."); n <= 19 {
			t.Fatalf("fastFloat(%s) not taken (%d digits)", num, n)
		}
		if v, next, ok := fastInt(num+",", 0); ok {
			want, err := strconv.ParseInt(num, 10, 64)
			if err != nil || v != want || next != len(num) {
				t.Fatalf("fastInt(%s) = %d at %d, strconv %d (%v)", num, v, next, want, err)
			}
		}
	}
}

// plainStringBytewise is plainString as it was before it looked at 8 bytes
// at a time: the reference.
func plainStringBytewise(s string, i int) (string, int, bool) {
	for j := i; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i:j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", i, false
		}
	}
	return "", i, false
}

// plainString answers as the byte-by-byte reference for every byte value
// at every position of strings of 0-40 bytes, after a run of plain bytes
// of every length (the 8-byte steps meet the byte in each lane), and for
// strings with no closing quote.
func TestPlainStringWords(t *testing.T) {
	check := func(s string, i int) {
		t.Helper()
		gs, gn, gok := plainString(s, i)
		ws, wn, wok := plainStringBytewise(s, i)
		if gs != ws || gn != wn || gok != wok {
			t.Fatalf("plainString(%q, %d) = %q, %d, %v; byte by byte %q, %d, %v", s, i, gs, gn, gok, ws, wn, wok)
		}
	}
	plain := "abcdefghijklmnopqrstuvwxyz0123456789:_-./ABC"
	for n := range 41 {
		for c := range 256 {
			s := plain[:n] + string([]byte{byte(c)}) + plain[:n%7] + `"` + "tail"
			check(s, 0)
			check(`{"signal":"`+s, len(`{"signal":"`))
			check(plain[:n]+string([]byte{byte(c)}), 0) // no closing quote
		}
		check(plain[:n], 0)
	}
	rng := rand.New(rand.NewPCG(7, 9))
	for range 20000 {
		b := make([]byte, rng.IntN(40))
		for k := range b {
			if rng.IntN(6) == 0 {
				b[k] = byte(rng.IntN(256))
			} else {
				b[k] = plain[rng.IntN(len(plain))]
			}
		}
		check(string(b), rng.IntN(len(b)+1))
	}
}

// BenchmarkPlainString reads the strings of a reading as the benchmarks
// of the collector send them, 8 bytes at a time and byte by byte.
func BenchmarkPlainString(b *testing.B) {
	s := `{"signal":"exhaust_temp_cyl_4","value":412.0,"unit":"Cel","quality":"good","ts":1764550000000,"src":"modbus:1:hr:40017"}`
	var at []int
	for _, k := range []string{`{"signal":"`, `"unit":"`, `"quality":"`, `"src":"`} {
		at = append(at, strings.Index(s, k)+len(k))
	}
	for _, c := range []struct {
		name string
		f    func(string, int) (string, int, bool)
	}{{"words", plainString}, {"bytewise", plainStringBytewise}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				for _, i := range at {
					c.f(s, i)
				}
			}
		})
	}
}

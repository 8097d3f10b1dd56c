package telemetry

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// appendFloatStrconv is appendFloat before its fast path: the reference
// the fast path must match byte for byte.
func appendFloatStrconv(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, '0')
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendInt(dst, int64(v), 10)
	}
	abs := math.Abs(v)
	if abs < 1e-6 || abs >= 1e21 {
		return strconv.AppendFloat(dst, v, 'e', -1, 64)
	}
	return strconv.AppendFloat(dst, v, 'f', -1, 64)
}

func checkFloat(t testing.TB, v float64) {
	t.Helper()
	got := appendFloat([]byte("x"), v)
	want := appendFloatStrconv([]byte("x"), v)
	if !bytes.Equal(got, want) {
		t.Fatalf("appendFloat(%v) (bits %#x) = %q, strconv writes %q", v, math.Float64bits(v), got[1:], want[1:])
	}
}

// TestAppendFloatMatchesStrconv compares the encoder's float formatting
// with the strconv path over the values a gateway writes (registers scaled
// by powers of ten, either way round, with offsets and unit conversions),
// their neighbours one ulp away, edge cases and random bit patterns.
func TestAppendFloatMatchesStrconv(t *testing.T) {
	edge := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1),
		math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 5e-324, 1e-7, 1e-6, 9.99999e-7,
		1.0000000000000002e-6, 0.1, 0.2, 0.3, 0.7, 1e15, 1e15 + 0.5, 1e14 + 0.5, 1<<50 + 0.5, 1<<49 + 0.5,
		1<<53 - 1, 1e21, 1e21 - 65536, 1e20 + 0.5, 123456789.0001, 0.0001, 0.00015, 0.99995, 9.9999, 99999.99995,
		1.0e-5, 1.5e-6, 2.5e-6, 1125899906842.5, 112589990684.25, 11258999068.425, 1125899906.8425,
		112589990684.2625, 3.0517578125e-05, 0.5, 0.25, 0.125, 0.0625}
	for _, v := range edge {
		checkFloat(t, v)
		checkFloat(t, -v)
		checkFloat(t, math.Nextafter(v, math.Inf(1)))
		checkFloat(t, math.Nextafter(v, math.Inf(-1)))
	}
	scales := []float64{0.1, 0.01, 0.001, 0.0001, 0.5, 0.25, 0.05, 1.0 / 3, 0.00001, 1.8, 3.6}
	for raw := int64(-70000); raw <= 70000; raw++ {
		r := float64(raw)
		for _, s := range scales {
			checkFloat(t, r*s)
			checkFloat(t, r*s+0.5)
			checkFloat(t, r*s*1.8+32) // a °C -> °F conversion
		}
		for _, p := range []float64{10, 100, 1000, 10000, 100000} {
			checkFloat(t, r/p)
			checkFloat(t, math.Nextafter(r/p, 0))
			checkFloat(t, math.Nextafter(r/p, math.Inf(1)))
		}
	}
	rng := rand.New(rand.NewPCG(17, 2026))
	for range 500_000 {
		checkFloat(t, math.Float64frombits(rng.Uint64()))                                  // any double
		checkFloat(t, float64(rng.Int64N(1<<53)-1<<52)/math.Pow(10, float64(rng.IntN(9)))) // decimals of every size
		checkFloat(t, float64(int32(rng.Uint32()))*0.1)                                    // 32-bit registers x 0.1
		checkFloat(t, rng.Float64()*math.Pow(10, float64(rng.IntN(40)-20)))                // every magnitude
		m := float64(rng.Int64N(1 << 50))                                                  // near the fast path's bound
		checkFloat(t, m/10)
		checkFloat(t, m/10000)
	}
}

func FuzzAppendFloat(f *testing.F) {
	for _, v := range []float64{0, 1234.5, -0.25, 0.003, 100.10000000000001, 1e-7, 1e21, 1<<50 + 0.5, math.NaN()} {
		f.Add(math.Float64bits(v))
	}
	f.Fuzz(func(t *testing.T, bits uint64) {
		v := math.Float64frombits(bits)
		checkFloat(t, v)
		// the same digits as a short decimal: the fast path's own case
		checkFloat(t, math.Round(v*1e3)/1e3)
	})
}

// BenchmarkAppendFloat formats register values scaled by 0.1 (a third of
// them come out with 17 significant digits, as 0.1 is not exact), divided
// by 10, and arbitrary doubles.
func BenchmarkAppendFloat(b *testing.B) {
	vals := map[string][]float64{"x0.1": nil, "div10": nil, "random": nil}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1024 {
		raw := float64(rng.IntN(65536))
		vals["x0.1"] = append(vals["x0.1"], raw*0.1)
		vals["div10"] = append(vals["div10"], raw/10)
		vals["random"] = append(vals["random"], rng.Float64()*1000)
	}
	for _, name := range []string{"x0.1", "div10", "random"} {
		vs := vals[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 64)
			i := 0
			for b.Loop() {
				buf = appendFloat(buf[:0], vs[i&1023])
				i++
			}
		})
	}
}

// TestAppendShortDecimalTaken pins which values take the fast path, so
// that the comparison above covers it and the benchmark measures it.
func TestAppendShortDecimalTaken(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string // "" : left to strconv
	}{
		{1234.5, "1234.5"}, {-1234.5, "-1234.5"}, {0.25, "0.25"}, {-0.003, "-0.003"}, {6553.5, "6553.5"},
		{0.0001, "0.0001"}, {1.0005, "1.0005"}, {112589990684.2, "112589990684.2"},
		{100.10000000000001, ""}, // 1001 x 0.1: 17 digits
		{0.30000000000000004, ""},
		{0.00001, ""}, // 5 places
		{1e-7, ""},    // e format
		{1.0 / 3, ""},
		{1<<50 + 0.5, ""},
	} {
		got, ok := appendShortDecimal(nil, tc.v)
		if string(got) != tc.want || ok != (tc.want != "") {
			t.Errorf("appendShortDecimal(%v) = %q, %v; want %q", tc.v, got, ok, tc.want)
		}
	}
}

// BenchmarkBatchAppendJSON encodes a batch of 100 registers scaled by 0.1,
// as the gateway does every poll of a 100-register device.
func BenchmarkBatchAppendJSON(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	bt := Batch{Gateway: "gw-1", Seq: 123456, Asset: Asset{ID: "press-01", Class: "generic", Path: []string{"acme", "plant1", "_", "_", "_"}},
		TSGW: 1764484800000}
	for i := range 100 {
		bt.Readings = append(bt.Readings, Reading{Signal: "s" + strconv.Itoa(i), Value: float64(rng.IntN(65536)) * 0.1, Unit: "kW",
			TS: 1764484800000, Src: "modbus:1:hr:" + strconv.Itoa(i)})
	}
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = bt.AppendJSON(buf[:0])
	}
}

package telemetry

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// sameAsStrconv fails unless fastFloat gives strconv.ParseFloat's value,
// bit for bit, for the JSON number num; want reports whether fastFloat
// must take it.
func sameAsStrconv(t testing.TB, num string, take bool) {
	t.Helper()
	v, ok := fastFloat(num)
	if !ok {
		if take {
			t.Fatalf("fastFloat(%s) not taken", num)
		}
		return
	}
	want, err := strconv.ParseFloat(num, 64)
	if err != nil || math.Float64bits(v) != math.Float64bits(want) {
		t.Fatalf("fastFloat(%s) = %v (%#x), strconv %v (%#x, %v)", num, v, math.Float64bits(v), want, math.Float64bits(want), err)
	}
}

// TestLongDecimal: numbers of 16 to 19 digits, the ones longDecimal
// converts, against strconv.ParseFloat: float64 values printed in full
// (17 digits, as the gateway writes a float64 reading), the same with
// digits added or cut, the exact midpoints between neighbouring float64
// values (the ties, rounded to even) and their neighbours one unit of the
// last digit away, and decimals with every number of places.
func TestLongDecimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 19))
	for range 100_000 {
		// a float64 of any magnitude longDecimal sees, printed shortest
		// and with 16 to 19 significant digits
		x := math.Ldexp(1+rng.Float64(), rng.IntN(120)-60)
		for _, prec := range []int{-1, 15, 16, 17, 18} {
			num := strconv.FormatFloat(x, 'e', prec, 64)
			f, _ := strconv.ParseFloat(num, 64)
			plain := strconv.FormatFloat(f, 'f', -1, 64)
			sameAsStrconv(t, plain, digitCount(plain) <= 19)
			sameAsStrconv(t, "-"+plain, digitCount(plain) <= 19)
		}
	}
	// ties: (2m+1) * 2^(s-1) lies halfway between m * 2^s and (m+1) * 2^s,
	// neighbours in float64 when m has 53 bits; integers of 17 to 19
	// digits, and x.5 for the doubles of spacing 1 (2^52..2^53)
	for range 100_000 {
		m := uint64(1)<<52 | rng.Uint64N(1<<52)
		s := 1 + rng.IntN(11)
		tie := (2*m + 1) << (s - 1)
		if tie < 1e19 {
			for _, n := range []uint64{tie - 1, tie, tie + 1} {
				sameAsStrconv(t, strconv.FormatUint(n, 10), true)
			}
		}
		half := strconv.FormatUint(m, 10) + ".5"
		sameAsStrconv(t, half, true)
		sameAsStrconv(t, strconv.FormatUint(m, 10)+".49", true)
		sameAsStrconv(t, strconv.FormatUint(m, 10)+".51", true)
	}
	// every place count, leading zeros included
	for range 100_000 {
		digits := 16 + rng.IntN(4)
		var sb strings.Builder
		sb.WriteByte(byte('1' + rng.IntN(9)))
		for range digits - 1 {
			sb.WriteByte(byte('0' + rng.IntN(10)))
		}
		ds := sb.String()
		places := rng.IntN(digits + 1)
		var num string
		switch places {
		case 0:
			num = ds
		case digits:
			num = "0." + ds
		default:
			num = ds[:digits-places] + "." + ds[digits-places:]
		}
		sameAsStrconv(t, num, digitCount(num) <= 19)
	}
	for _, num := range []string{
		"9007199254740993", "9007199254740995", "18446744073709551615",
		"9999999999999999999", "1000000000000000000", "0.0000000000000000001",
		"0.9999999999999999999", "0000000000000000000", "0.000000000000000000",
		"-0.000000000000000000", "4503599627370496.5", "4503599627370497.5",
		// rounded up to the next power of two: the mantissa carries over
		"9007199254740991.5", "9007199254740991.9", "18014398509481983",
		"0.99999999999999999", "99999999999999999.9", "1.9999999999999999999",
	} {
		sameAsStrconv(t, num, false)
	}
}

// digitCount is how many digits num has, leading zeros included.
func digitCount(num string) int {
	return len(num) - strings.Count(num, "-") - strings.Count(num, ".")
}

func FuzzFastFloat(f *testing.F) {
	for _, s := range []string{"1", "-0", "0.5", "123.45678901234567", "9007199254740993", "4503599627370496.5", "0.0000000000000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, num string) {
		if num == "" || numberEnd(num, 0) != len(num) {
			return // not a JSON number: the decoder never asks
		}
		sameAsStrconv(t, num, false)
	})
}

// BenchmarkFastFloat converts values as BenchmarkIngest's gateway writes
// them: a float64 mean times noise, printed in full (16 to 17 digits).
func BenchmarkFastFloat(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	nums := make([]string, 1024)
	for i := range nums {
		nums[i] = strconv.FormatFloat(230*(1+0.005*rng.NormFloat64()), 'f', -1, 64)
	}
	for _, c := range []struct {
		name string
		conv func(string) (float64, bool)
	}{
		{"fastFloat", fastFloat},
		{"strconv", func(s string) (float64, bool) {
			v, err := strconv.ParseFloat(s, 64)
			return v, err == nil
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var sum float64
			i := 0
			for b.Loop() {
				v, _ := c.conv(nums[i&1023])
				sum += v
				i++
			}
			if sum == 0 {
				b.Fatal(sum)
			}
		})
	}
}

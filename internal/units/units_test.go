package units

import (
	"math"
	"strings"
	"testing"
)

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		in, want float64
	}{
		{"[degF]", "Cel", 212, 100},
		{"degF", "Cel", 32, 0},
		{"K", "Cel", 273.15, 0},
		{"Cel", "Cel", 21.5, 21.5},
		{"bar", "MPa", 7, 0.7},
		{"psi", "MPa", 100, 0.6894757293168361},
		{"kPa", "MPa", 850, 0.85},
		{"W", "kW", 1500, 1.5},
		{"m3/h", "m3/min", 600, 10},
		{"cfm", "m3/min", 1000, 28.316846592},
		{"kg/h", "t/h", 2500, 2.5},
		{"%", "1", 85, 0.85},
		{"rpm", "/min", 1500, 1500},
		{"Wh", "kW.h", 2500, 2.5},
		{"kOhm", "MOhm", 2500, 2.5},
		{"in/s", "mm/s", 1, 25.4},
	} {
		c, err := Convert(tc.from, tc.to)
		if err != nil {
			t.Fatalf("Convert(%s,%s): %v", tc.from, tc.to, err)
		}
		if got := c.Apply(tc.in); math.Abs(got-tc.want) > 1e-9*math.Max(1, math.Abs(tc.want)) {
			t.Errorf("%v %s -> %s = %v, want %v", tc.in, tc.from, tc.to, got, tc.want)
		}
	}
}

func TestConvertErrors(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"furlong", "m", `unknown unit "furlong"`},
		{"m", "parsec", `unknown unit "parsec"`},
		{"bar", "Cel", `cannot convert "bar" (pressure) to "Cel" (temperature)`},
		{"", "Cel", `cannot convert "" to "Cel"`},
	} {
		_, err := Convert(tc.from, tc.to)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Convert(%q,%q) = %v, want %q", tc.from, tc.to, err, tc.want)
		}
	}
}

func TestAliasesResolveToKnownCodes(t *testing.T) {
	for a, c := range aliases {
		if _, ok := known[c]; !ok {
			t.Errorf("alias %q -> %q, which is not a known code", a, c)
		}
	}
}

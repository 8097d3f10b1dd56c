package gateway

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/units"
)

// TestCanonicalInverse: the value a command writes is the exact inverse of
// the normalizer's path (raw*scale + offset, then the unit conversion), so
// reading back what was written gives the command's value.
func TestCanonicalInverse(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	convs := []struct{ from, to string }{{"bar", "MPa"}, {"degF", "Cel"}, {"K", "Cel"}, {"psi", "MPa"}, {"MPa", "MPa"}}
	for _, cv := range convs {
		conv, err := units.Convert(cv.from, cv.to)
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			np := normPoint{Scale: math.Pow(10, float64(r.IntN(7)-3)), Offset: r.NormFloat64() * 10, Conv: conv}
			if r.IntN(4) == 0 {
				np.Scale = 0 // read as 1
			}
			v := r.NormFloat64() * 100
			if got := toCanonical(np, fromCanonical(np, v)); math.Abs(got-v) > 1e-9*math.Max(1, math.Abs(v)) {
				t.Fatalf("%s->%s scale %v offset %v: %v comes back as %v", cv.from, cv.to, np.Scale, np.Offset, v, got)
			}
		}
	}
}

// TestStateCodes: a state label's device code is the point's enum code
// when it has one, else the label's index; and back.
func TestStateCodes(t *testing.T) {
	plain := normPoint{Labels: &normalize.Labels{States: []string{"off", "unloaded", "loaded"}}}
	if c, ok := stateCode(plain, "loaded"); !ok || c != 2 || stateLabel(plain, 2) != "loaded" {
		t.Errorf("plain: %v %v", c, ok)
	}
	enum := normPoint{Labels: &normalize.Labels{States: plain.States(), Enum: map[int64]string{10: "off", 20: "unloaded", 30: "loaded"}}}
	if c, ok := stateCode(enum, "unloaded"); !ok || c != 20 || stateLabel(enum, 20) != "unloaded" {
		t.Errorf("enum: %v %v", c, ok)
	}
	if _, ok := stateCode(enum, "tripped"); ok {
		t.Error("unknown label has a code")
	}
	if stateLabel(plain, 1.5) != "" || stateLabel(plain, 7) != "" {
		t.Error("label for a code that is no state")
	}
}

// TestBelow: limits admit values equal to them up to float rounding.
func TestBelow(t *testing.T) {
	if below(0.1, 0.8-0.7) || !below(0.1, 0.1001) || below(0.9, 0.9) || !below(0.6, 0.7) {
		t.Error("below")
	}
}

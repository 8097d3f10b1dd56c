package telemetry_test

import (
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// The bounds table, one case per bound and side.
func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(string) bool
		in   string
		want bool
	}{
		{"signal catalog", telemetry.ValidSignal, "discharge_temp", true},
		{"signal at bound", telemetry.ValidSignal, strings.Repeat("s", telemetry.MaxSignalLen), true},
		{"signal beyond", telemetry.ValidSignal, strings.Repeat("s", telemetry.MaxSignalLen+1), false},
		{"signal empty", telemetry.ValidSignal, "", false},
		{"signal dash digits", telemetry.ValidSignal, "PT-101_a", true},
		{"signal dot", telemetry.ValidSignal, "temp.1", false},
		{"signal space", telemetry.ValidSignal, "temp 1", false},
		{"signal utf8", telemetry.ValidSignal, "température", false},
		{"unit empty", telemetry.ValidUnit, "", true},
		{"unit ucum", telemetry.ValidUnit, "[in_i'H2O]", true},
		{"unit at bound", telemetry.ValidUnit, strings.Repeat("u", telemetry.MaxUnitLen), true},
		{"unit beyond", telemetry.ValidUnit, strings.Repeat("u", telemetry.MaxUnitLen+1), false},
		{"unit space", telemetry.ValidUnit, "deg C", false},
		{"unit control", telemetry.ValidUnit, "m\n", false},
		{"label", telemetry.ValidLabel, "Not ready", true},
		{"label utf8", telemetry.ValidLabel, "prêt", true},
		{"label at bound", telemetry.ValidLabel, strings.Repeat("l", telemetry.MaxLabelLen), true},
		{"label beyond", telemetry.ValidLabel, strings.Repeat("l", telemetry.MaxLabelLen+1), false},
		{"label empty", telemetry.ValidLabel, "", false},
		{"label control", telemetry.ValidLabel, "a\tb", false},
		{"label bad utf8", telemetry.ValidLabel, "a\xffb", false},
		{"path elem empty", telemetry.ValidPathElem, "", true},
		{"path elem", telemetry.ValidPathElem, "ironmaking", true},
		{"path elem beyond", telemetry.ValidPathElem, strings.Repeat("p", 65), false},
		{"path elem slash", telemetry.ValidPathElem, "a/b", false},
	} {
		if got := tc.f(tc.in); got != tc.want {
			t.Errorf("%s: %q gives %v, want %v", tc.name, tc.in, got, tc.want)
		}
	}
	if err := telemetry.CheckPath([]string{"acme", "s1", "", "_", "_"}); err != nil {
		t.Error(err)
	}
	if err := telemetry.CheckPath(make([]string, telemetry.MaxPathElems+1)); err == nil {
		t.Error("a path beyond MaxPathElems passed")
	}
	if err := telemetry.CheckPath([]string{"acme", strings.Repeat("x", 60000)}); err == nil || len(err.Error()) > 200 {
		t.Errorf("a long element: %v", err)
	}
}

func TestCutText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is 2 bytes: not split
		{"\xff\xff\xff", 2, "\xff\xff"},
	} {
		if got := telemetry.CutText(tc.in, tc.n); got != tc.want {
			t.Errorf("CutText(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// Real data is within the bounds: every catalog signal name, unit and
// state label, every unit the gateway may publish (units.Known, the
// canonical codes), every nameplate rating's name.
func TestCatalogWithinLimits(t *testing.T) {
	cat := catalog.Default()
	for _, cl := range cat.Classes {
		// a gateway's birth carries labels only for catalog state signals
		// (enum, and write.allowed a subset of them): the whole class,
		// every state twice, is within the totals per birth
		n, size := 0, 0
		for _, s := range cl.Signals {
			n += 2 * len(s.States)
			for _, l := range s.States {
				size += 2 * len(l)
			}
		}
		if n > telemetry.MaxBirthLabels || size > telemetry.MaxBirthLabelBytes {
			t.Errorf("%s: %d labels, %d bytes in a birth of every signal", cl.Name, n, size)
		}
		for _, s := range cl.Signals {
			if !telemetry.ValidSignal(s.Name) || !telemetry.ValidUnit(s.Unit) {
				t.Errorf("%s.%s (unit %q) breaks the bounds", cl.Name, s.Name, s.Unit)
			}
			for _, l := range s.States {
				if !telemetry.ValidLabel(l) {
					t.Errorf("%s.%s: state %q breaks the bounds", cl.Name, s.Name, l)
				}
			}
			if len(s.States) > telemetry.MaxLabels {
				t.Errorf("%s.%s: %d states", cl.Name, s.Name, len(s.States))
			}
		}
		if len(cl.Nameplate) > telemetry.MaxNameplate {
			t.Errorf("%s: %d nameplate ratings", cl.Name, len(cl.Nameplate))
		}
	}
	for k := range cat.Ratings {
		if !telemetry.ValidToken(k) {
			t.Errorf("rating %q breaks the bounds", k)
		}
	}
	for _, u := range units.Known() {
		if c, _ := units.Canonical(u); !telemetry.ValidUnit(c) {
			t.Errorf("unit %q (canonical %q) breaks the bounds", u, c)
		}
	}
}

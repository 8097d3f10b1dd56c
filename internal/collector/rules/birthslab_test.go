package rules

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// dumpSignals describes an asset's signal states as Birth leaves them:
// slot, name, unit, range, interval and the rules bound to each.
func dumpSignals(a *assetState) string {
	var sb strings.Builder
	for _, s := range a.list {
		fmt.Fprintf(&sb, "%d %s %s %v/%v %v/%v %d/%v", s.slot, s.name, s.unit, s.min, s.hasMin, s.max, s.hasMax, s.interval, s.birthIV)
		for _, in := range []*inst{s.stale, s.plaus} {
			if in != nil {
				fmt.Fprintf(&sb, " %s", in.r.Name)
			}
		}
		for _, in := range s.insts {
			fmt.Fprintf(&sb, " %s/%T", in.r.Name, in.impl)
		}
		sb.WriteByte('\n')
	}
	for _, in := range a.insts {
		fmt.Fprintf(&sb, "asset %s\n", in.r.Name)
	}
	return sb.String()
}

// TestBirthFirstTouchSameStates checks an asset's first birth, whose
// signal states Birth allocates at once (reserve), leaves the states that
// births adding one signal at a time leave, for every catalog class with
// the default packs, a signal listed twice and one the catalog lacks; and
// that the names kept are no views into the birth.
func TestBirthFirstTouchSameStates(t *testing.T) {
	cat := catalog.Default()
	for _, class := range cat.ClassNames() {
		cl, _ := cat.Class(class)
		names := cl.SignalNames()
		if len(names) > 1 {
			names = append(names, names[1]) // listed twice
		}
		names = append(names, "not_in_catalog")
		var sigs []telemetry.SignalInfo
		for i, n := range names {
			si := telemetry.SignalInfo{Signal: n, IntervalMS: int64(1000 * (1 + i%3))}
			if cs, ok := cl.Signals[n]; ok {
				si.Unit = cs.Unit
			}
			sigs = append(sigs, si)
		}
		birth := func(sigs []telemetry.SignalInfo) *telemetry.Birth {
			// names in a buffer of their own, as a decoded birth's
			var buf strings.Builder
			for _, si := range sigs {
				buf.WriteString(si.Signal)
			}
			all, k := buf.String(), 0
			own := make([]telemetry.SignalInfo, len(sigs))
			for i, si := range sigs {
				si.Signal, k = all[k:k+len(si.Signal)], k+len(si.Signal)
				own[i] = si
			}
			return &telemetry.Birth{Gateway: "gw", TSGW: t0, Asset: telemetry.AssetJSON{ID: "a-1", Class: class}, Signals: own}
		}
		at := newHarness(t, true, "")
		whole := birth(sigs)
		at.e.Birth(whole, 0, nil)
		one := newHarness(t, true, "")
		for i := 1; i <= len(sigs); i++ {
			one.e.Birth(birth(sigs[:i]), 0, nil)
		}
		a, _ := at.e.lookup(whole.Asset.FromJSON().Site(), "a-1")
		b, _ := one.e.lookup(whole.Asset.FromJSON().Site(), "a-1")
		if got, want := dumpSignals(a), dumpSignals(b); got != want {
			t.Fatalf("%s: first birth\n%s\none signal at a time\n%s", class, got, want)
		}
		lo := uintptr(unsafe.Pointer(unsafe.StringData(whole.Signals[0].Signal)))
		hi := lo + uintptr(len(strings.Join(names, "")))
		for _, s := range a.list {
			if p := uintptr(unsafe.Pointer(unsafe.StringData(s.name))); p >= lo && p < hi {
				t.Fatalf("%s: signal %s is a view into the birth", class, s.name)
			}
		}
	}
}

package rules

import (
	"fmt"
	"slices"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
)

// TestSelectRulesMatchesSelect checks the engine's Select cache gives what
// Set.Select gives, for assets some rule lists and the rest, glob and
// exact signal rules, asset-level rules (signal "") and "*", also after
// the cache started over.
func TestSelectRulesMatchesSelect(t *testing.T) {
	cat := catalog.Default()
	packs, err := DefaultPacks(cat)
	if err != nil {
		t.Fatal(err)
	}
	over, err := Parse("over.yaml", []byte(`version: 1
rules:
  - {name: hot, kind: threshold, class: motor, assets: [m-9], signal: winding_temp, above: 100}
  - {name: hot, kind: threshold, class: motor, signal: winding_temp, above: 120}
  - {name: globbed, kind: threshold, class: "*", signal: "*_temp", above: 500}
  - {name: globbed, kind: threshold, class: motor, assets: [m-7], signal: "bearing_*", above: 90}
  - {name: stale, kind: stale, class: motor, signal: vibration, enabled: false}
  - {name: stale, kind: stale, class: motor, assets: [m-9], signal: vibration, enabled: true}
`), cat)
	if err != nil {
		t.Fatal(err)
	}
	set := Merge(append(packs, over)...)
	e := New(set, cat, Options{})
	assets := []string{"m-1", "m-7", "m-9", "m-10"}
	for round := range 2 {
		for _, class := range cat.ClassNames() {
			cl, _ := cat.Class(class)
			sigs := append(cl.SignalNames(), "", "*", "winding_temp", "bearing_temp", "other_temp", "x")
			for _, id := range assets {
				for _, sig := range sigs {
					got, want := e.selectRules(class, id, sig), set.Select(class, id, sig)
					if !slices.Equal(got, want) {
						t.Fatalf("round %d: %s %s %q: cached %v, Select %v", round, class, id, sig, ruleIDs(got), ruleIDs(want))
					}
				}
			}
		}
		for i := range maxSelected + 1 { // fill it: it starts over
			e.selectRules("motor", "m-1", fmt.Sprintf("s%d", i))
		}
	}
	if len(e.selected) > maxSelected {
		t.Fatalf("the cache holds %d entries, more than %d", len(e.selected), maxSelected)
	}
}

func ruleIDs(rs []*Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s/%s/%v", r.Name, r.Signal, r.Assets))
	}
	return out
}

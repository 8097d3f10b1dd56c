package kpi

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
)

// TestEveryKPIHasADirection: every KPI a calculator emits (f.add / f.na in
// this package) has its direction defined, and every class's key KPI is
// one of them; a new KPI without a direction would rank the wrong way.
func TestEveryKPIHasADirection(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	re := regexp.MustCompile(`\.(?:add|na)\("([a-z0-9_]+)"`)
	emitted := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			emitted[m[1]] = true
		}
	}
	if len(emitted) < 20 {
		t.Fatalf("found only %d KPI names in the calculators: %v", len(emitted), emitted)
	}
	for name := range emitted {
		if _, ok := directions[name]; !ok {
			t.Errorf("KPI %s has no direction", name)
		}
	}
	for _, class := range catalog.Default().ClassNames() {
		if k := KeyKPI(class); class != "generic" && !emitted[k] {
			t.Errorf("class %s: key KPI %q is not emitted by any calculator", class, k)
		}
	}
	for name, want := range map[string]string{"sfoc": WorseHigh, "co2": WorseHigh, "eeoi": WorseHigh, "cii": WorseHigh,
		"fuel_per_nm": WorseHigh, "oee": WorseLow, "leg_distance": WorseNone} {
		if got := Worse(name); got != want {
			t.Errorf("Worse(%s) = %s, want %s", name, got, want)
		}
	}
}

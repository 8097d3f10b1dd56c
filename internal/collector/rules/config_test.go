package rules

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
)

func TestParseErrorsNameFileLineReason(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"unknown kind", "version: 1\nrules:\n  - name: x\n    kind: magic\n    signal: a\n", "r.yaml:4: rules[0].kind: unknown kind \"magic\""},
		{"missing version", "rules: []\n", "r.yaml:1: version: missing"},
		{"unknown field", "version: 1\nrules:\n  - name: x\n    kind: stale\n    signal: '*'\n    treshold: 3\n", "r.yaml:6: rules[0].treshold: unknown field for a stale rule"},
		{"unknown class", "version: 1\nrules:\n  - name: x\n    kind: stale\n    class: toaster\n    signal: '*'\n", "r.yaml:5: rules[0] (x).class: unknown equipment class \"toaster\""},
		{"unknown signal", "version: 1\nrules:\n  - name: x\n    kind: threshold\n    class: motor\n    signal: windng_temp\n    above: 3\n", "r.yaml:6: rules[0] (x).signal: class motor has no signal matching \"windng_temp\""},
		{"bad duration", "version: 1\nrules:\n  - name: x\n    kind: threshold\n    signal: a\n    above: 3\n    on_delay: 5 minutes\n", "r.yaml:7: rules[0] (x).on_delay: \"5 minutes\" is not a non-negative duration"},
		{"levels order", "version: 1\nrules:\n  - name: x\n    kind: threshold\n    signal: a\n    levels: [{severity: warn, above: 10}, {severity: alarm, above: 5}]\n", "r.yaml:6: rules[0] (x).levels: alarm limit 5 must be beyond warn limit 10"},
		{"mixed directions", "version: 1\nrules:\n  - name: x\n    kind: threshold\n    signal: a\n    levels:\n      - {severity: warn, above: 10}\n      - {severity: alarm, below: 5}\n", "r.yaml:8: rules[0] (x).levels[1].below: every level"},
		{"expr syntax", "version: 1\nrules:\n  - name: x\n    kind: expr\n    expr: \"a > (b\"\n", "r.yaml:5: rules[0] (x).expr: expression \"a > (b\" column 7: missing )"},
		{"expr signal", "version: 1\nrules:\n  - name: x\n    kind: expr\n    class: boiler\n    expr: \"flue_o3 > 5\"\n", "r.yaml:6: rules[0] (x).expr: class boiler has no signal \"flue_o3\""},
		{"expr function", "version: 1\nrules:\n  - name: x\n    kind: expr\n    expr: \"exp(a) > 5\"\n", "unknown function \"exp\""},
		{"glob outside aggregate", "version: 1\nrules:\n  - name: x\n    kind: expr\n    expr: \"cyl_* > 5\"\n", "only allowed inside an aggregate"},
		{"rate without window", "version: 1\nrules:\n  - name: x\n    kind: rate\n    signal: a\n    limit: 3\n", "r.yaml:3: rules[0] (x).window: missing"},
		{"stuck without resolution", "version: 1\nrules:\n  - name: x\n    kind: stuck\n    signal: a\n", "resolution: missing"},
		{"bad name", "version: 1\nrules:\n  - name: X Y\n    kind: stale\n    signal: a\n", "r.yaml:3: rules[0].name: \"X Y\" must be"},
		{"duplicate", "version: 1\nrules:\n  - {name: x, kind: stale, signal: a}\n  - {name: x, kind: stale, signal: a}\n", "r.yaml:4: rules[1]: rule \"x\" duplicates the one on line 3"},
		{"bad severity", "version: 1\nrules:\n  - {name: x, kind: stale, signal: a, severity: fatal}\n", "unknown severity \"fatal\""},
		{"lambda range", "version: 1\nrules:\n  - {name: x, kind: ewma, signal: a, lambda: 1.5}\n", "lambda: 1.5 must be in (0, 1]"},
		{"running class", "version: 1\nclasses:\n  motor:\n    running_when: \"power > 1\"\n", "r.yaml:4: classes.motor.running_when: unknown field"},
		{"yaml syntax", "version: 1\nrules:\n\t- {name: x}\n", "r.yaml:3: found character that cannot start any token"},
		{"peer glob", "version: 1\nrules:\n  - {name: x, kind: peer, signal: 'a*', group_by: inverter}\n", "a peer rule compares one exact signal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("r.yaml", []byte(tc.doc), catalog.Default())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestExprEval(t *testing.T) {
	cases := []struct {
		src  string
		want float64
		ok   bool
	}{
		{"1 + 2 * 3", 7, true},
		{"(1 + 2) * 3 / 4", 2.25, true},
		{"-a + b", 1, true},
		{"a < b and b <= 3", 1, true},
		{"a > b or nameplate.k == 7", 1, true},
		{"not (a == 2)", 0, true},
		{"abs(a - 5)", 3, true},
		{"mean(c*) + max(a, b) - min(a, b)", 4, true}, // mean(2,3,4)=3, 3-2=1
		{"maxdev(c*)", 1, true},
		{"median(c1, c2, c3, a)", 2.5, true},
		{"spread(c*) + count(c*, missing)", 5, true},
		{"missing > 1", 0, false},
		{"missing > 1 or a == 2", 1, true},
		{"missing > 1 and a == 3", 0, true},
		{"a / 0", 0, false},
		{"nameplate.absent * 2", 0, false},
		{"1e3 > 999.5 && a != 1", 1, true},
	}
	a := &assetState{sigs: map[string]*signalState{}, nameplate: map[string]float64{"k": 7}}
	a.e = &Engine{set: &Set{}, cat: catalog.Default()}
	a.class = "generic"
	for name, v := range map[string]float64{"a": 2, "b": 3, "c1": 2, "c2": 3, "c3": 4} {
		s := a.signal(name)
		s.value, s.valid = v, true
	}
	a.signal("missing")
	for _, tc := range cases {
		t.Run(tc.src, func(t *testing.T) {
			x, err := ParseExpr(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := a.eval(a.bind(x))
			if ok != tc.ok || ok && got != tc.want {
				t.Fatalf("got %v %v, want %v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestSelectMostSpecific(t *testing.T) {
	cat := catalog.Default()
	base, err := Parse("a.yaml", []byte("version: 1\nrules:\n  - {name: hot, kind: threshold, class: motor, signal: winding_temp, above: 130}\n"), cat)
	if err != nil {
		t.Fatal(err)
	}
	over, err := Parse("b.yaml", []byte("version: 1\nrules:\n  - {name: hot, kind: threshold, class: motor, assets: [m-9], signal: winding_temp, above: 100}\n  - {name: stale, kind: stale, class: motor, signal: vibration, enabled: false}\n"), cat)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DefaultPacks(cat)
	if err != nil {
		t.Fatal(err)
	}
	s := Merge(append(d, base, over)...)
	var lim float64
	for _, r := range s.Select("motor", "m-1", "winding_temp") {
		if r.Name == "hot" {
			lim = r.Levels[0].Limit
		}
	}
	if lim != 130 {
		t.Fatalf("class rule: %v", lim)
	}
	for _, r := range s.Select("motor", "m-9", "winding_temp") {
		if r.Name == "hot" {
			lim = r.Levels[0].Limit
		}
	}
	if lim != 100 {
		t.Fatalf("asset override not applied: %v", lim)
	}
	// Disabling stale for motor vibration leaves the other rules on that
	// signal and stale on the other signals.
	vib := names(s.Select("motor", "m-1", "vibration"))
	if slices.Contains(vib, "stale") {
		t.Fatalf("disabled rule selected: %v", vib)
	}
	if !slices.Contains(vib, "plausibility") {
		t.Fatalf("vibration lost its other rules: %v", vib)
	}
	if wt := names(s.Select("motor", "m-1", "winding_temp")); !slices.Contains(wt, "stale") {
		t.Fatalf("stale disabled beyond vibration: %v", wt)
	}
}

func names(rs []*Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func TestConfigRuleFilesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../../configs/rules/*.yaml")
	for _, f := range files {
		_, err := LoadFile(f, catalog.Default())
		if strings.HasSuffix(f, ".bad.yaml") {
			want, rerr := os.ReadFile(strings.TrimSuffix(f, ".bad.yaml") + ".bad.err")
			if rerr != nil {
				t.Fatalf("%s: needs a .bad.err file with the expected message", f)
			}
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Errorf("%s: got %v, want %s", f, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

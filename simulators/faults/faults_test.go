package faults

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestParseScenarioMessages pins the whole message of each decoding and
// validation error: file, line of the offending fault, field, reason.
func TestParseScenarioMessages(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"", "s.yaml: file is empty"},
		{"faults: [\n", "s.yaml:1: did not find expected node content"},
		{"scenario: x\nfaults:\n  - {device: a, kind: silent, colour: red}\n", "s.yaml:3: faults[0].colour: unknown field"},
		{"faults:\n  - {device: a, kind: stuck, signal: x, at: soon}\n", `s.yaml:2: faults[0].at: want a duration such as 500ms, 30s or 15m, got "soon"`},
		{"faults:\n  - {device: a, kind: silent}\n\n  - {device: a, kind: noise, signal: x}\n", "s.yaml:4: faults[1] (s2): sigma: required (positive) for a noise fault"},
		{"faults:\n  - {id: x, device: a, kind: silent}\n  - {id: x, device: a, kind: silent}\n", `s.yaml:3: faults[1].id: "x" used twice`},
		{"faults:\n  - kind: silent\n", "s.yaml:2: faults[0] (s1): device: required"},
	} {
		if _, err := ParseScenario("s.yaml", []byte(tc.doc)); err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.doc, err, tc.want)
		}
	}
}

func TestLoadScenario(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(path, []byte("scenario: cooling\nfaults:\n  - {device: b1, kind: drift, signal: flue_o2, rate: 0.5, at: 1h}\n  - {id: cut, device: b1, kind: drop, at: 2h, duration: 5m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sc, err := LoadScenario(path)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "cooling" || len(sc.Faults) != 2 || sc.Faults[0].ID != "s1" || sc.Faults[1].ID != "cut" ||
		sc.Faults[0].At.D() != time.Hour || sc.Faults[1].Duration.D() != 5*time.Minute {
		t.Errorf("loaded %+v", sc)
	}
	if _, err := LoadScenario(filepath.Join(dir, "nope.yaml")); err == nil || !strings.HasSuffix(err.Error(), "nope.yaml: open: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}

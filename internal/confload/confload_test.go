package confload

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type testCfg struct {
	Name    string `yaml:"name"`
	Devices []struct {
		ID     string `yaml:"id"`
		Points []struct {
			Address int `yaml:"address"`
		} `yaml:"points"`
	} `yaml:"devices"`
}

const doc = `name: gw
devices:
  - id: a
    points:
      - address: 1
      - address: 2
  - id: b
`

func TestLineOfPath(t *testing.T) {
	var c testCfg
	d, err := Decode("gw.yaml", []byte(doc), &c)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		line int
	}{
		{"name", 1},
		{"devices", 2},
		{"devices[0].id", 3},
		{"devices[0].points[1].address", 6},
		{"devices[1].id", 7},
		{"devices[1].points", 7}, // missing: closest parent
		{"nothing.here", 1},
	} {
		if got := d.Line(tc.path); got != tc.line {
			t.Errorf("Line(%s) = %d, want %d", tc.path, got, tc.line)
		}
	}
	e := d.Errorf("devices[0].points[1].address", "must be below %d", 2)
	if e.Error() != "gw.yaml:6: devices[0].points[1].address: must be below 2" {
		t.Errorf("got %q", e.Error())
	}
}

// TestRelease: a released list keeps its own line and gives it for the
// fields it held; an anchored list and a list reached through an alias are
// kept (an alias may still be decoded from them); the rest of the tree is
// untouched.
func TestRelease(t *testing.T) {
	text := doc + "    points: &p\n      - address: 3\n  - id: c\n    points: *p\n"
	var c testCfg
	d, err := Decode("gw.yaml", []byte(text), &c)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Release("devices[0].points") {
		t.Fatal("devices[0].points not released")
	}
	if d.Release("devices[0].points") || d.Release("devices[0].missing") || d.Release("devices[0].id") {
		t.Error("released twice, a missing field or a scalar")
	}
	if d.Release("devices[1].points") || d.Release("devices[2].points") {
		t.Error("released an anchored list or one reached through an alias")
	}
	for _, tc := range []struct {
		path string
		line int
		has  bool
	}{
		{"devices[0].points", 4, true},
		{"devices[0].points[1].address", 4, false}, // released: the list's line
		{"devices[0].id", 3, true},
		{"devices[1].points[0].address", 9, true},
		{"devices[2].points[0].address", 9, true}, // the alias's target
	} {
		if got := d.Line(tc.path); got != tc.line {
			t.Errorf("Line(%s) = %d, want %d", tc.path, got, tc.line)
		}
		if got := d.Has(tc.path); got != tc.has {
			t.Errorf("Has(%s) = %v, want %v", tc.path, got, tc.has)
		}
	}
	var nilDoc *Doc
	if nilDoc.Release("devices") || d.WithoutTree().Release("devices") {
		t.Error("released from a doc without a tree")
	}
}

func TestDecodeErrorsCarryLines(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"name: gw\nbogus: 1\n", "gw.yaml:2: bogus: unknown field (known: devices, name)"},
		{"name: gw\ndevices:\n  - idd: a\n", "gw.yaml:3: devices[0].idd: unknown field (did you mean id?)"},
		{"name: gw\ndevices:\n  - colour: a\n", "gw.yaml:3: devices[0].colour: unknown field (known: id, points)"},
		{"name: gw\ndevices:\n  - points:\n      - address: x\n", `gw.yaml:4: devices[0].points[0].address: want a whole number, got "x"`},
		{"devices:\n  - points:\n      - address: 1.5\n", `gw.yaml:3: devices[0].points[0].address: want a whole number, got "1.5"`},
		{"devices:\n  - points:\n      - address: 1.0\n      - address: 1e3\n    bogus: 1\n", "gw.yaml:5: devices[0].bogus: unknown field (known: id, points)"}, // whole numbers
		{"name: gw\nname: gx\n", "gw.yaml:2: name: given twice (first at line 1)"},
		{"name: gw\ndevices:\n  - {id: [a]}\n", "gw.yaml:3: devices[0].id: want a string, got a list"},
		{"name: gw\ndevices: {id: a}\n", "gw.yaml:2: devices: want a list, got a mapping"},
		{"name: [gw]\n", "gw.yaml:1: name: want a string, got a list"},
		{"name: [\n", "gw.yaml:1: did not find expected node content"},
		{"", "gw.yaml: file is empty"},
	} {
		var c testCfg
		_, err := Decode("gw.yaml", []byte(tc.doc), &c)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Decode(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestReadFileMissing(t *testing.T) {
	var c testCfg
	_, err := ReadFile("/nonexistent/gw.yaml", &c)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/gw.yaml: open: no such file or directory") {
		t.Errorf("got %v", err)
	}
}

// TestDecodeReportsEveryErrorAndKeepsTheRest: one bad value hides neither
// the other errors nor the values that decoded; no Go type is named.
func TestDecodeReportsEveryErrorAndKeepsTheRest(t *testing.T) {
	type small struct {
		Unit  uint8         `yaml:"unit"`
		Every time.Duration `yaml:"every"`
		Name  string        `yaml:"name"`
	}
	var v small
	doc, err := Decode("c.yaml", []byte("unit: 300\nevery: fast\nname: ok\nnme: x\n"), &v)
	want := []string{
		`c.yaml:1: unit: want a whole number in 0..255, got "300"`,
		`c.yaml:2: every: want a duration such as 500ms, 30s or 15m, got "fast"`,
		`c.yaml:4: nme: unknown field (did you mean name?)`,
	}
	if err == nil || strings.Count(err.Error(), "\n")+1 != len(want) {
		t.Fatalf("got %v, want %d errors", err, len(want))
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), "uint8") || strings.Contains(err.Error(), "Duration") || strings.Contains(err.Error(), "small") {
		t.Errorf("error names a Go type: %v", err)
	}
	if v.Name != "ok" {
		t.Errorf("the good value was not kept: %+v", v)
	}
	if !doc.Broken("unit") || !doc.Broken("every") || doc.Broken("name") {
		t.Errorf("Broken: unit %v every %v name %v", doc.Broken("unit"), doc.Broken("every"), doc.Broken("name"))
	}
}

func TestReportPlacesProblems(t *testing.T) {
	var c testCfg
	d, err := Decode("gw.yaml", []byte(doc), &c)
	if err != nil {
		t.Fatal(err)
	}
	verr := errors.Join(Problemf("points[1].address", "too big"), fmt.Errorf("checking: %w", Problemf("id", "bad")),
		errors.New("legacy_field: old style"), errors.New("Something went wrong: badly"))
	got := d.Report("devices[0]", verr).Error()
	for _, w := range []string{"gw.yaml:6: devices[0].points[1].address: too big", "gw.yaml:3: devices[0].id: bad",
		"gw.yaml:3: devices[0].legacy_field: old style", "gw.yaml:3: devices[0]: Something went wrong: badly"} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
}

func TestMergeKeysAreFields(t *testing.T) {
	var c testCfg
	_, err := Decode("m.yaml", []byte("name: gw\ndefaults: &d {id: a}\ndevices:\n  - {<<: *d}\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "m.yaml:2: defaults: unknown field") || strings.Contains(err.Error(), "<<") {
		t.Errorf("got %v", err)
	}
	type withDefaults struct {
		testCfg  `yaml:",inline"`
		Defaults map[string]string `yaml:"defaults"`
	}
	var w withDefaults
	if _, err := Decode("m.yaml", []byte("name: gw\ndefaults: &d {id: a}\ndevices:\n  - {<<: *d, points: []}\n"), &w); err != nil || w.Devices[0].ID != "a" {
		t.Errorf("merge key: %v %+v", err, w)
	}
}

// FuzzDecode: any input gives a decoded value or errors that carry the file
// name, never a panic and never a Go type name.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte("name: [\n"))
	f.Add([]byte("devices: {id: [a]}\nbogus: 1\n"))
	f.Add([]byte("d: &d {id: a}\ndevices:\n  - {<<: *d}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c testCfg
		_, err := Decode("f.yaml", data, &c)
		for _, e := range AsErrors(err) {
			if e.File != "f.yaml" {
				t.Fatalf("error without its file: %v", e)
			}
			if strings.Contains(e.Reason, "confload.") {
				t.Fatalf("error names a Go type: %v", e)
			}
		}
	})
}

// TestTabErrorAtTheTabLine: yaml.v3 reports a tab in the indentation at the
// line where the enclosing mapping began; the error must name the tab's
// line (review finding 12).
func TestTabErrorAtTheTabLine(t *testing.T) {
	for _, c := range []struct {
		text string
		line int
	}{
		{"gateway:\n  id: x\n  site: y\n\n\n\tdata_dir: z\n", 6},
		{"gateway:\n  id: x\n\tsite: y\n", 3},
		{"a: 1\nb:\n  c: 2\n  d:\n    e: 3\n \tf: 4\n", 6},
	} {
		var v map[string]any
		_, err := Decode("tab.yaml", []byte(c.text), &v)
		es := AsErrors(err)
		if len(es) != 1 || es[0].Line != c.line || !strings.Contains(es[0].Reason, "tab character") {
			t.Errorf("%q: got %v, want the tab error at line %d", c.text, err, c.line)
		}
	}
}

// TestFileSizeCap: a file above MaxFileSize is refused before parsing, by
// Read and by Decode, with a clear reason; a file at the cap is parsed.
func TestFileSizeCap(t *testing.T) {
	path := t.TempDir() + "/big.yaml"
	big := make([]byte, MaxFileSize+1)
	for i := range big {
		big[i] = ' '
	}
	copy(big, "name: x\n#")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	var c testCfg
	_, err := ReadFile(path, &c)
	if err == nil || err.Error() != path+": file is 16777217 bytes, above the 16 MiB limit of a configuration file" {
		t.Fatalf("ReadFile: %v", err)
	}
	if _, err := Decode("big.yaml", big, &c); err == nil || !strings.Contains(err.Error(), "above the 16 MiB limit") {
		t.Fatalf("Decode: %v", err)
	}
	if _, err := Decode("ok.yaml", big[:MaxFileSize], &c); err != nil || c.Name != "x" {
		t.Fatalf("Decode at the cap: %v, name %q", err, c.Name)
	}
}

// TestDecodeNodeBuildsFieldTablesOnce: a loader that decodes each of many
// nodes on its own (a driver's points) builds a struct's field table once
// per document, not once per node, and the cached tables still name every
// unknown key and misfit value of a later node.
func TestDecodeNodeBuildsFieldTablesOnce(t *testing.T) {
	type point struct {
		Address int    `yaml:"address"`
		Signal  string `yaml:"signal"`
	}
	var raw struct {
		Points []yaml.Node `yaml:"points"`
	}
	d, err := Decode("gw.yaml", []byte("points:\n  - {address: 1, signal: a}\n  - {address: 2, signal: b}\n  - {address: x, signl: c}\n"), &raw)
	if err != nil {
		t.Fatal(err)
	}
	tables := len(d.fields)
	for i := range raw.Points[:2] {
		var p point
		if err := d.DecodeNode(&raw.Points[i], fmt.Sprintf("points[%d]", i), &p); err != nil || p.Address != i+1 {
			t.Fatalf("points[%d]: %+v, %v", i, p, err)
		}
	}
	if len(d.fields) != tables+1 {
		t.Errorf("%d field tables after decoding two points of one type, want %d", len(d.fields), tables+1)
	}
	var p point
	err = d.DecodeNode(&raw.Points[2], "points[2]", &p)
	es := AsErrors(err)
	if len(es) != 2 || !strings.Contains(err.Error(), "points[2].address") || !strings.Contains(err.Error(), "points[2].signl") {
		t.Fatalf("errors of the third point: %v", err)
	}
	if len(d.fields) != tables+1 {
		t.Errorf("%d field tables after a third point, want %d", len(d.fields), tables+1)
	}
}

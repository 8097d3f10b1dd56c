package confload

import (
	"strings"
	"testing"
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

func TestDecodeErrorsCarryLines(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"name: gw\nbogus: 1\n", "gw.yaml:2: field bogus not found in type confload.testCfg"},
		{"name: gw\ndevices:\n  - points:\n      - address: x\n", "gw.yaml:4: cannot unmarshal !!str `x` into int"},
		{"name: [\n", "gw.yaml:1: did not find expected node content"},
		{"", "gw.yaml: file is empty"},
	} {
		var c testCfg
		_, err := Decode("gw.yaml", []byte(tc.doc), &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
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

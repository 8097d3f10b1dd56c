package confload

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// span is a duration type decoded by its own UnmarshalYAML that reports a
// bad value as a *yaml.TypeError worded after Go (as the yaml package's
// own errors are), so decoding goes on; Want says what it takes.
type span time.Duration

func (s *span) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s `%s` into confload.span", n.Line, n.ShortTag(), n.Value)}}
	}
	*s = span(v)
	return nil
}

func (span) Want() string { return WantDuration }

// level decodes itself with a plain error and has no Want: its own words
// are reported.
type level int

func (l *level) UnmarshalYAML(n *yaml.Node) error {
	switch n.Value {
	case "low":
		*l = 1
	case "high":
		*l = 2
	default:
		return fmt.Errorf("want low or high")
	}
	return nil
}

// opaque decodes itself with a Go-worded *yaml.TypeError and has no Want.
type opaque struct{ v string }

func (o *opaque) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{"cannot unmarshal !!map into confload.opaque"}}
	}
	o.v = n.Value
	return nil
}

type selfCfg struct {
	Window  span            `yaml:"window"`
	MaxAge  span            `yaml:"max_age"`
	Windows map[string]span `yaml:"windows"`
	Level   level           `yaml:"level"`
	Addr    netip.Addr      `yaml:"addr"`
	Opaque  opaque          `yaml:"opaque"`
	Every   []time.Duration `yaml:"every"`
	Count   uint16          `yaml:"count"`
	Name    string          `yaml:"name"`
	Pair    [2]int          `yaml:"pair"`
}

// TestSelfDecodingTypesAreCheckedByField: a value of a type that decodes
// itself is decoded on its own, so every one of its errors is reported at
// its field path (none dropped when other errors exist, none stopping the
// rest), in the Wanter's words or the type's own, never a Go type name;
// good values around them are kept.
func TestSelfDecodingTypesAreCheckedByField(t *testing.T) {
	const src = `window: a week
max_age: 15
windows: {motor: 30s, pump: soon}
level: medium
addr: 10.0.0.300
opaque: {a: 1}
every: [1s, never, 2m]
count: 2.5
name: kept
pair: [1, 2, 3]
bogus: 1
`
	v := selfCfg{MaxAge: span(time.Hour), Count: 7}
	doc, err := Decode("s.yaml", []byte(src), &v)
	want := []string{
		`s.yaml:1: window: want a duration such as 500ms, 30s or 15m, got "a week"`,
		`s.yaml:2: max_age: want a duration such as 500ms, 30s or 15m, got "15"`,
		`s.yaml:3: windows.pump: want a duration such as 500ms, 30s or 15m, got "soon"`,
		`s.yaml:4: level: "medium" is not valid: want low or high`,
		`s.yaml:5: addr: "10.0.0.300" is not valid: ParseAddr("10.0.0.300"): IPv4 field has value >255`,
		`s.yaml:6: opaque: a mapping is not valid`,
		`s.yaml:7: every[1]: want a duration such as 500ms, 30s or 15m, got "never"`,
		`s.yaml:8: count: want a whole number in 0..65535, got "2.5"`,
		`s.yaml:10: pair: want a list of 2, got 3`,
		`s.yaml:11: bogus: unknown field`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if v.Name != "kept" || time.Duration(v.Windows["motor"]) != 30*time.Second || len(v.Every) != 3 || v.Every[2] != 2*time.Minute {
		t.Errorf("good values lost: %+v", v)
	}
	if time.Duration(v.MaxAge) != time.Hour || v.Count != 7 {
		t.Errorf("a broken value replaced the default: %+v", v)
	}
	for _, f := range []string{"window", "max_age", "windows.pump", "level", "addr", "opaque", "every[1]", "count"} {
		if !doc.Broken(f) {
			t.Errorf("%s not Broken", f)
		}
	}
	if doc.Broken("windows.motor") || doc.Broken("name") {
		t.Error("a good field is Broken")
	}
}

// TestOneErrorHidesNoOther: with a single error of a self-decoding type
// (the case where the decoder's own error used to be dropped or, for a
// TextUnmarshaler, stop the decoding), it is reported and the rest decodes.
func TestOneErrorHidesNoOther(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"window: 15\nname: kept\n", `s.yaml:1: window: want a duration such as 500ms, 30s or 15m, got "15"`},
		{"addr: x\nname: kept\n", `s.yaml:1: addr: "x" is not valid: ParseAddr("x"): unable to parse IP`},
		{"level: x\nname: kept\n", `s.yaml:1: level: "x" is not valid: want low or high`},
	} {
		var v selfCfg
		_, err := Decode("s.yaml", []byte(tc.src), &v)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: got %v, want %s", tc.src, err, tc.want)
		}
		if v.Name != "kept" {
			t.Errorf("%q: name not decoded: %+v", tc.src, v)
		}
	}
}

func TestUnknownWording(t *testing.T) {
	many := []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"}
	for _, tc := range []struct {
		name  string
		known []string
		want  string
	}{
		{"ulr", []string{"url", "stream"}, "unknown field (did you mean url?)"},
		{"unit", []string{"unit_id", "address"}, "unknown field (did you mean unit_id?)"},
		{"colour", []string{"level", "format"}, "unknown field (known: format, level)"},
		{"x", []string{"id"}, "unknown field (known: id)"}, // "id" is not offered for "x"
		{"zzz", many, "unknown field"},
		{"a10", many, "unknown field (did you mean a1?)"},
		{"zzz", nil, "unknown field"},
	} {
		if got := Unknown(tc.name, tc.known); got != tc.want {
			t.Errorf("Unknown(%q, %v) = %q, want %q", tc.name, tc.known, got, tc.want)
		}
	}
}

// TestAliasesAreCheckedOnce: a document of aliases of aliases is checked
// in time linear in its size, and an error in an anchored value is reported
// once, at its line.
type nest []nest

func TestAliasesAreCheckedOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x]\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1)
	}
	type deep struct {
		Levels map[string]nest `yaml:",inline"`
	}
	var v deep
	_, err := Decode("a.yaml", []byte(b.String()), &v)
	es := AsErrors(err)
	if len(es) == 0 || es[0].Error() != `a.yaml:1: a0[0]: want a list, got "x"` || strings.Count(err.Error(), `got "x"`) != 1 {
		t.Errorf("got %v", err)
	}
	type ints struct {
		D     []int `yaml:"d"`
		Use   []int `yaml:"use"`
		Twice []int `yaml:"twice"`
	}
	var w ints
	_, err = Decode("a.yaml", []byte("d: &d [1, x]\nuse: *d\ntwice: *d\n"), &w)
	if err == nil || err.Error() != `a.yaml:1: d[1]: want a whole number, got "x"` {
		t.Errorf("got %v", err)
	}
}

// TestBadListItemKeepsIndexes: a bad item stays in its place as a zero
// value, so the items after it keep their indexes (and their field paths
// in validation errors).
func TestBadListItemKeepsIndexes(t *testing.T) {
	var c testCfg
	_, err := Decode("l.yaml", []byte("devices:\n  - x\n  - {id: b, points: [{address: 1}, {address: y}, {address: 3}]}\n"), &c)
	want := "l.yaml:2: devices[0]: want a mapping, got \"x\"\n" +
		"l.yaml:3: devices[1].points[1].address: want a whole number, got \"y\""
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if len(c.Devices) != 2 || c.Devices[1].ID != "b" || len(c.Devices[1].Points) != 3 || c.Devices[1].Points[2].Address != 3 {
		t.Errorf("indexes moved: %+v", c.Devices)
	}
}

package catalog

import (
	"strings"
	"testing"
)

func TestDefaultCatalogHasEveryDomainClass(t *testing.T) {
	c := Default()
	for _, class := range []string{"blast_furnace", "boiler", "diesel_engine", "air_compressor", "motor",
		"wind_turbine", "pv_string", "cnc_machine", "engineering_machine", "generic"} {
		if _, ok := c.Class(class); !ok {
			t.Errorf("class %s missing", class)
		}
	}
	s, err := c.Lookup("blast_furnace", "hot_blast_temp")
	if err != nil || s.Unit != "Cel" || *s.Min != 900 {
		t.Fatalf("hot_blast_temp = %+v, %v", s, err)
	}
	ls, err := c.Lookup("air_compressor", "load_state")
	if err != nil || !ls.IsState() || ls.States[2] != "loaded" {
		t.Fatalf("load_state = %+v, %v", ls, err)
	}
}

func TestLookupErrors(t *testing.T) {
	c := Default()
	if _, err := c.Lookup("furnace", "x"); err == nil || !strings.Contains(err.Error(), `unknown equipment class "furnace"`) {
		t.Errorf("unknown class: %v", err)
	}
	if _, err := c.Lookup("motor", "speedd"); err == nil || !strings.Contains(err.Error(), `class motor has no signal "speedd"`) {
		t.Errorf("unknown signal: %v", err)
	}
	if s, err := c.Lookup("generic", "anything"); err != nil || s.Name != "anything" {
		t.Errorf("generic: %v %v", s, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"version: 2\n", "version 2 not supported"},
		{"version: 1\nclasses:\n  x:\n    signals:\n      a: {unit: furlong}\n", `classes.x.signals.a.unit: "furlong" is not a known UCUM code`},
		{"version: 1\nclasses:\n  x:\n    signals:\n      a: {unit: degC}\n", `"degC" is not a known UCUM code`},
		{"version: 1\nclasses:\n  x:\n    signals:\n      a: {min: 5, max: 1}\n", "min 5 above max 1"},
		{"version: [\n", "catalog:"},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

package catalog

import (
	"strings"
	"testing"
)

func TestDefaultCatalogHasEveryDomainClass(t *testing.T) {
	c := Default()
	for _, class := range []string{"blast_furnace", "boiler", "diesel_engine", "air_compressor", "motor",
		"wind_turbine", "pv_string", "cnc_machine", "engineering_machine", "ship", "generic"} {
		if _, ok := c.Class(class); !ok {
			t.Errorf("class %s missing", class)
		}
	}
	s, err := c.Lookup("blast_furnace", "hot_blast_temp")
	if err != nil || s.Unit != "Cel" || *s.Min != 900 {
		t.Fatalf("hot_blast_temp = %+v, %v", s, err)
	}
	if s, err := c.Lookup("ship", "sog"); err != nil || s.Unit != "[kn_i]" || *s.Max != 40 {
		t.Fatalf("ship sog = %+v, %v", s, err)
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

// TestParseRejects: bad catalogs fail with the field and reason. Decoding
// is strict: an unknown key is an error with its line, such as the "vol)"
// key a description cut at a comma in a flow mapping once produced.
func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"version: 2\n", "version 2 not supported"},
		{"version: 1\nclasses:\n  x:\n    signals:\n      a: {unit: \"%\", description: O2 in flue gas (dry, vol)}\n",
			// "vol)" is not a field name: reported by line, its text not echoed
			`catalog.yaml:5: classes.x.signals.a: unknown field at line 5 that is not a field name`},
		{"version: 1\nclasses:\n  x:\n    summary: typo\n", `catalog.yaml:4: classes.x.summary: unknown field`},
		{"version: 1\nfuels:\n  0: {name: gas, uses: [boiler], siegert_a2: 0.66, siegert_b: 0.009, excess_air_max: 1.3}\n", "fuels.0: codes start at 1"},
		{"version: 1\nfuels:\n  1: {name: gas, uses: [boiler], siegert_a2: 0.66, siegert_b: 0.009}\n", "fuels.1: use boiler: siegert_a2 > 0, siegert_b >= 0 and excess_air_max > 1 are required"},
		{"version: 1\nfuels:\n  1: {name: gas, uses: [boiler], siegert_a2: 0.66, siegert_b: 0.009, excess_air_max: 1.3, colour: blue}\n", "fuels.1.colour: unknown field"},
		{"version: 1\nfuels:\n  1: {name: gas, siegert_a2: 0.66, siegert_b: 0.009, excess_air_max: 1.3}\n", "fuels.1.uses: missing"},
		{"version: 1\nfuels:\n  1: {name: gas, uses: [kiln]}\n", `fuels.1.uses: unknown use "kiln"`},
		{"version: 1\nfuels:\n  3: {name: hfo, uses: [ship], carbon_factor: 3.114}\n", "fuels.3: use ship: carbon_factor (t CO2/t fuel, 0..4) and lcv (MJ/kg, 0..130) are required"},
		{"version: 1\nfuels:\n  3: {name: hfo, uses: [ship], carbon_factor: 31.14, lcv: 40.2}\n", "fuels.3: use ship: carbon_factor"},
		{"version: 1\nfuels:\n  3: {name: hfo, uses: [ship], carbon_factor: 3.114, lcv: 40.2, siegert_a2: 0.7}\n", "fuels.3: siegert_a2, siegert_b and excess_air_max need use boiler"},
		{"version: 1\nfuels:\n  1: {name: gas, uses: [boiler], siegert_a2: 0.66, siegert_b: 0.009, excess_air_max: 1.3, lcv: 48}\n", "fuels.1: carbon_factor and lcv need use ship"},
		{"version: 1\nclasses:\n  x:\n    nameplate: [size]\n", `classes.x.nameplate: rating "size" is not listed under ratings`},
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

// TestFuelCodes: the catalog is the one definition of fuel_type codes; 1 is
// natural gas (the simulators' boilers and the demo fleet burn it), 2 fuel
// oil, with the Siegert coefficients of each.
func TestFuelCodes(t *testing.T) {
	c := Default()
	gas, ok := c.Fuel(1)
	if !ok || gas.Name != "natural_gas" || gas.SiegertA2 != 0.66 || gas.SiegertB != 0.009 || gas.ExcessAirMax != 1.3 {
		t.Errorf("fuel 1 = %+v, %v", gas, ok)
	}
	oil, ok := c.Fuel(2)
	if !ok || oil.Name != "fuel_oil" || oil.SiegertA2 != 0.68 || oil.SiegertB != 0.007 {
		t.Errorf("fuel 2 = %+v, %v", oil, ok)
	}
	for _, bad := range []float64{0, 1.5, 99} {
		if f, ok := c.Fuel(bad); ok {
			t.Errorf("Fuel(%v) = %+v", bad, f)
		}
	}
	if code, ok := c.FuelCode("natural_gas"); !ok || code != 1 {
		t.Errorf("FuelCode(natural_gas) = %d, %v", code, ok)
	}
	// ship fuels: IMO carbon factors C_F (t CO2/t fuel) and lower calorific
	// values (MJ/kg), MEPC.308(73) 2.2.1 / MEPC.364(79) 2.2.1
	for _, tc := range []struct {
		code    float64
		name    string
		cf, lcv float64
	}{{3, "hfo", 3.114, 40.2}, {4, "lfo", 3.151, 41.2}, {5, "mdo_mgo", 3.206, 42.7}, {6, "lng", 2.750, 48.0}} {
		f, ok := c.Fuel(tc.code)
		if !ok || f.Name != tc.name || f.CarbonFactor != tc.cf || f.LCV != tc.lcv || !f.Has(UseShip) || f.Has(UseBoiler) {
			t.Errorf("fuel %v = %+v, %v; want %s C_F %v LCV %v", tc.code, f, ok, tc.name, tc.cf, tc.lcv)
		}
	}
	if !gas.Has(UseBoiler) || gas.Has(UseShip) {
		t.Errorf("natural_gas uses %v", gas.Uses)
	}
	s, _ := c.Lookup("boiler", "flue_o2")
	if s.Description != "O2 in flue gas (dry, by volume)" {
		t.Errorf("flue_o2 description %q", s.Description)
	}
}

// TestRatingsHaveUnits: every nameplate rating of every class has a unit,
// so the dashboard never shows a bare "poles 4.00".
func TestRatingsHaveUnits(t *testing.T) {
	c := Default()
	for _, name := range c.ClassNames() {
		cl, _ := c.Class(name)
		for _, r := range cl.Nameplate {
			if rt, ok := c.Ratings[r]; !ok || rt.Unit == "" || rt.Description == "" {
				t.Errorf("%s nameplate %s: rating %+v", name, r, rt)
			}
		}
	}
	if c.Ratings["poles"].Unit != "1" || c.Ratings["rated_power"].Unit != "kW" {
		t.Errorf("poles %+v, rated_power %+v", c.Ratings["poles"], c.Ratings["rated_power"])
	}
}

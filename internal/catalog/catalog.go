// Package catalog holds Smelter's equipment catalog: for every equipment
// class, its canonical signals with UCUM units, typical ranges and state
// labels, and the nameplate ratings its KPIs need. The catalog is data
// (catalog.yaml, embedded) decoded by a pure function.
package catalog

import (
	_ "embed"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/units"
)

//go:embed catalog.yaml
var catalogYAML []byte

// Signal is one canonical signal of a class.
type Signal struct {
	Name        string
	Unit        string // UCUM code; "" for states
	Min, Max    *float64
	States      []string // labels of a state signal, index = value
	Description string
}

// IsState reports whether the signal is an enumerated state.
func (s *Signal) IsState() bool { return len(s.States) > 0 }

// Class is one equipment class.
type Class struct {
	Name        string
	Description string
	Nameplate   []string
	Signals     map[string]*Signal
	Open        bool // any signal name is accepted (class "generic")
}

// SignalNames returns the class's signal names, sorted.
func (c *Class) SignalNames() []string {
	out := make([]string, 0, len(c.Signals))
	for n := range c.Signals {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Catalog is the set of known classes.
type Catalog struct {
	Version int
	Classes map[string]*Class
	// Fuels maps a fuel code (the boiler nameplate rating fuel_type, the
	// ship signals *_fuel_type) to its fuel: the one definition the
	// simulators, the KPIs and the docs share.
	Fuels map[int]*Fuel
	// Ratings gives the unit and meaning of every nameplate rating.
	Ratings map[string]*Rating
}

// Rating is one nameplate rating (rated_power, poles ...).
type Rating struct {
	Name        string
	Unit        string // UCUM code; "1" for counts and codes
	Description string
	Positive    bool           // the value must be > 0
	Codes       map[int]string // a code: the value must be one of these (code -> meaning); nil: any
	FuelUse     string         // a fuel code: the value must be a catalog fuel with this use
}

// Check reports why v is not a valid value of the rating, or nil: every
// rating is a finite number; a positive rating is > 0; a code is one of
// Codes, or a fuel code of a fuel with use FuelUse.
func (r *Rating) Check(c *Catalog, v float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Errorf("%v is not a finite number", v)
	case r.Positive && v <= 0:
		return fmt.Errorf("%v must be > 0 %s", v, r.Unit)
	case r.Codes != nil:
		if _, ok := r.Codes[int(v)]; !ok || v != math.Trunc(v) {
			return fmt.Errorf("%v is not a code of %s (%s)", v, r.Name, r.codeList())
		}
	case r.FuelUse != "":
		if f, ok := c.Fuel(v); !ok || !f.Has(r.FuelUse) {
			var codes []string
			for _, code := range slices.Sorted(maps.Keys(c.Fuels)) {
				if c.Fuels[code].Has(r.FuelUse) {
					codes = append(codes, fmt.Sprintf("%d %s", code, c.Fuels[code].Name))
				}
			}
			return fmt.Errorf("%v is not a fuel code with use %s (%s)", v, r.FuelUse, strings.Join(codes, ", "))
		}
	}
	return nil
}

func (r *Rating) codeList() string {
	var out []string
	for _, code := range slices.Sorted(maps.Keys(r.Codes)) {
		out = append(out, fmt.Sprintf("%d %s", code, r.Codes[code]))
	}
	return strings.Join(out, ", ")
}

// Fuel uses: what a fuel's coefficients serve. A fuel lists its uses and
// carries the fields each use needs; the loader checks them per use.
const (
	// UseBoiler: burnt in a boiler, judged by the Siegert stack loss
	// (siegert_a2, siegert_b, excess_air_max).
	UseBoiler = "boiler"
	// UseShip: burnt on board, counted as CO2 with the IMO carbon factor
	// (carbon_factor, lcv).
	UseShip = "ship"
)

// Fuel is one fuel a combustion asset may burn, with the coefficients its
// KPIs need.
type Fuel struct {
	Code        int
	Name        string // natural_gas, fuel_oil, hfo, ...
	Description string
	Uses        []string // UseBoiler, UseShip
	// SiegertA2 and SiegertB are the coefficients of the Siegert stack loss
	// q_A = (t_flue - t_air) (A2 / (21 - O2) + B) in % of fuel input
	// (UseBoiler).
	SiegertA2, SiegertB float64
	// ExcessAirMax is the air ratio lambda above which the KPI warns
	// (UseBoiler).
	ExcessAirMax float64
	// CarbonFactor C_F is the mass of CO2 per mass of fuel burnt, t CO2/t
	// fuel (UseShip; IMO MEPC.308(73) and MEPC.364(79), 2.2.1).
	CarbonFactor float64
	// LCV is the lower calorific value in MJ/kg (UseShip; same source).
	LCV float64
}

// Has reports whether the fuel serves use (UseBoiler, UseShip).
func (f *Fuel) Has(use string) bool { return slices.Contains(f.Uses, use) }

// Fuel returns the fuel of a fuel_type code.
func (c *Catalog) Fuel(code float64) (*Fuel, bool) {
	if code != float64(int(code)) {
		return nil, false
	}
	f, ok := c.Fuels[int(code)]
	return f, ok
}

// FuelCode returns the fuel_type code of a fuel name.
func (c *Catalog) FuelCode(name string) (int, bool) {
	for code, f := range c.Fuels {
		if f.Name == name {
			return code, true
		}
	}
	return 0, false
}

// Class returns a class by name.
func (c *Catalog) Class(name string) (*Class, bool) {
	cl, ok := c.Classes[name]
	return cl, ok
}

// ClassNames returns every class name, sorted.
func (c *Catalog) ClassNames() []string {
	out := make([]string, 0, len(c.Classes))
	for n := range c.Classes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

type signalYAML struct {
	Unit        string   `yaml:"unit"`
	Min         *float64 `yaml:"min"`
	Max         *float64 `yaml:"max"`
	States      []string `yaml:"states"`
	Description string   `yaml:"description"`
}

type classYAML struct {
	Description string                `yaml:"description"`
	Nameplate   []string              `yaml:"nameplate"`
	Open        bool                  `yaml:"open"`
	Signals     map[string]signalYAML `yaml:"signals"`
}

type fuelYAML struct {
	Name         string   `yaml:"name"`
	Description  string   `yaml:"description"`
	Uses         []string `yaml:"uses"`
	SiegertA2    float64  `yaml:"siegert_a2"`
	SiegertB     float64  `yaml:"siegert_b"`
	ExcessAirMax float64  `yaml:"excess_air_max"`
	CarbonFactor float64  `yaml:"carbon_factor"`
	LCV          float64  `yaml:"lcv"`
}

// check validates a fuel per use: the fields of every listed use are
// required and the fields of an unlisted use must be absent.
func (fy *fuelYAML) check(code int) error {
	boiler, ship := false, false
	for _, u := range fy.Uses {
		switch u {
		case UseBoiler:
			boiler = true
		case UseShip:
			ship = true
		default:
			return fmt.Errorf("catalog: fuels.%d.uses: unknown use %q (want %s or %s)", code, u, UseBoiler, UseShip)
		}
	}
	switch {
	case !boiler && !ship:
		return fmt.Errorf("catalog: fuels.%d.uses: missing (%s, %s or both)", code, UseBoiler, UseShip)
	case boiler && (fy.SiegertA2 <= 0 || fy.SiegertB < 0 || fy.ExcessAirMax <= 1):
		return fmt.Errorf("catalog: fuels.%d: use %s: siegert_a2 > 0, siegert_b >= 0 and excess_air_max > 1 are required", code, UseBoiler)
	case !boiler && (fy.SiegertA2 != 0 || fy.SiegertB != 0 || fy.ExcessAirMax != 0):
		return fmt.Errorf("catalog: fuels.%d: siegert_a2, siegert_b and excess_air_max need use %s", code, UseBoiler)
	case ship && (fy.CarbonFactor <= 0 || fy.CarbonFactor > 4 || fy.LCV <= 0 || fy.LCV > 130):
		return fmt.Errorf("catalog: fuels.%d: use %s: carbon_factor (t CO2/t fuel, 0..4) and lcv (MJ/kg, 0..130) are required", code, UseShip)
	case !ship && (fy.CarbonFactor != 0 || fy.LCV != 0):
		return fmt.Errorf("catalog: fuels.%d: carbon_factor and lcv need use %s", code, UseShip)
	}
	return nil
}

type ratingYAML struct {
	Unit        string         `yaml:"unit"`
	Description string         `yaml:"description"`
	Positive    bool           `yaml:"positive"`
	Codes       map[int]string `yaml:"codes"`
	FuelUse     string         `yaml:"fuel_use"`
}

type catalogFile struct {
	Version int                   `yaml:"version"`
	Fuels   map[int]fuelYAML      `yaml:"fuels"`
	Ratings map[string]ratingYAML `yaml:"ratings"`
	Classes map[string]classYAML  `yaml:"classes"`
}

// Parse decodes and checks a catalog document. Decoding is strict: an
// unknown key (a typo, or a description cut at a comma in a flow mapping)
// is an error naming its line.
func Parse(data []byte) (*Catalog, error) {
	var f catalogFile
	if _, err := confload.Decode("catalog.yaml", data, &f); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("catalog: version %d not supported (want 1)", f.Version)
	}
	c := &Catalog{Version: f.Version, Classes: make(map[string]*Class, len(f.Classes)), Fuels: make(map[int]*Fuel, len(f.Fuels))}
	names := map[string]int{}
	for code, fy := range f.Fuels {
		switch {
		case code < 1:
			return nil, fmt.Errorf("catalog: fuels.%d: codes start at 1 (nameplate ratings are positive)", code)
		case fy.Name == "":
			return nil, fmt.Errorf("catalog: fuels.%d.name: missing", code)
		case names[fy.Name] != 0:
			return nil, fmt.Errorf("catalog: fuels.%d.name: %q is also code %d", code, fy.Name, names[fy.Name])
		}
		if err := fy.check(code); err != nil {
			return nil, err
		}
		names[fy.Name] = code
		c.Fuels[code] = &Fuel{Code: code, Name: fy.Name, Description: fy.Description, Uses: fy.Uses, SiegertA2: fy.SiegertA2,
			SiegertB: fy.SiegertB, ExcessAirMax: fy.ExcessAirMax, CarbonFactor: fy.CarbonFactor, LCV: fy.LCV}
	}
	c.Ratings = make(map[string]*Rating, len(f.Ratings))
	for name, ry := range f.Ratings {
		if ry.Unit == "" {
			return nil, fmt.Errorf("catalog: ratings.%s.unit: missing (\"1\" for a count or a code)", name)
		}
		c.Ratings[name] = &Rating{Name: name, Unit: ry.Unit, Description: ry.Description, Positive: ry.Positive,
			Codes: ry.Codes, FuelUse: ry.FuelUse}
	}
	for name, cy := range f.Classes {
		for _, r := range cy.Nameplate {
			if _, ok := c.Ratings[r]; !ok {
				return nil, fmt.Errorf("catalog: classes.%s.nameplate: rating %q is not listed under ratings", name, r)
			}
		}
		cl := &Class{Name: name, Description: cy.Description, Nameplate: cy.Nameplate, Open: cy.Open,
			Signals: make(map[string]*Signal, len(cy.Signals))}
		for sn, sy := range cy.Signals {
			if sy.Unit != "" {
				if canon, ok := units.Canonical(sy.Unit); !ok || canon != sy.Unit {
					return nil, fmt.Errorf("catalog: classes.%s.signals.%s.unit: %q is not a known UCUM code", name, sn, sy.Unit)
				}
			}
			if sy.Min != nil && sy.Max != nil && *sy.Min > *sy.Max {
				return nil, fmt.Errorf("catalog: classes.%s.signals.%s: min %v above max %v", name, sn, *sy.Min, *sy.Max)
			}
			cl.Signals[sn] = &Signal{Name: sn, Unit: sy.Unit, Min: sy.Min, Max: sy.Max, States: sy.States, Description: sy.Description}
		}
		c.Classes[name] = cl
	}
	return c, nil
}

// Default returns the embedded catalog. It is parsed once; the result is
// shared and must not be modified.
var Default = sync.OnceValue(func() *Catalog {
	c, err := Parse(catalogYAML)
	if err != nil {
		panic(err) // the embedded catalog is tested; this cannot happen in a release
	}
	return c
})

// Lookup resolves a signal of a class. For open classes it returns a
// signal with no unit constraint.
func (c *Catalog) Lookup(class, signal string) (*Signal, error) {
	cl, ok := c.Classes[class]
	if !ok {
		return nil, fmt.Errorf("unknown equipment class %q (known: %v)", class, c.ClassNames())
	}
	if s, ok := cl.Signals[signal]; ok {
		return s, nil
	}
	if cl.Open {
		return &Signal{Name: signal}, nil
	}
	return nil, fmt.Errorf("class %s has no signal %q (known: %v)", class, signal, cl.SignalNames())
}

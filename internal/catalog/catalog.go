// Package catalog holds Smelter's equipment catalog: for every equipment
// class, its canonical signals with UCUM units, typical ranges and state
// labels, and the nameplate ratings its KPIs need. The catalog is data
// (catalog.yaml, embedded) decoded by a pure function.
package catalog

import (
	_ "embed"
	"fmt"
	"sort"
	"sync"

	"gopkg.in/yaml.v3"

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

type catalogFile struct {
	Version int                  `yaml:"version"`
	Classes map[string]classYAML `yaml:"classes"`
}

// Parse decodes and checks a catalog document.
func Parse(data []byte) (*Catalog, error) {
	var f catalogFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("catalog: version %d not supported (want 1)", f.Version)
	}
	c := &Catalog{Version: f.Version, Classes: make(map[string]*Class, len(f.Classes))}
	for name, cy := range f.Classes {
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

// Package model holds Smelter's equipment models: one per catalog class, each
// producing the class's canonical signals (catalog names and units) with
// coupled, physically plausible behaviour.
//
// Models are protocol independent and know nothing of wall-clock time: a
// model is advanced with Step(now, dt) in simulated time and is deterministic
// for a given seed, nameplate and sequence of steps. A model is not safe for
// concurrent use; its owner steps it and copies Values out.
package model

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
)

// Model is one simulated asset.
type Model interface {
	// Class is the catalog class, e.g. "air_compressor".
	Class() string
	// Signals lists the canonical signal names, in the order of Values.
	Signals() []string
	// Step advances the model by dt of simulated time ending at now.
	Step(now time.Time, dt time.Duration)
	// Values returns the current values in canonical units, indexed like
	// Signals. The slice is owned by the model and changes on Step.
	Values() []float64
	// Nameplate returns the asset's ratings (defaults filled in).
	Nameplate() map[string]float64
	// Degradations lists the efficiency degradation kinds the model supports
	// with the maximum level of each.
	Degradations() map[string]float64
	// Degrade sets the level of a degradation kind (0 clears it).
	Degrade(kind string, level float64) error
}

// Setter is implemented by models with setpoints a command may change
// (docs/commands.md): the compressor's unload pressure.
type Setter interface {
	// Setpoints lists the signals Set accepts.
	Setpoints() []string
	// Set changes a setpoint, in canonical units, from the next step on
	// (the value itself shows at once). Errors: ErrNotSettable,
	// ErrSetpointRange.
	Set(signal string, v float64) error
}

// Errors of Setter.Set.
var (
	ErrNotSettable   = errors.New("model: signal is not a setpoint")
	ErrSetpointRange = errors.New("model: setpoint out of range")
)

// setpoint is the one check of every model's Set: signal must be the
// model's setpoint name and v within lo..hi (unit for the message). On
// success it stores v in *dst and shows it at once in the model's output
// slot out.
func setpoint(signal, name string, v, lo, hi float64, unit string, dst *float64, out *float64) error {
	if signal != name {
		return fmt.Errorf("%w: %s", ErrNotSettable, signal)
	}
	if math.IsNaN(v) || v < lo || v > hi {
		return fmt.Errorf("%w: %s %v outside %v..%v %s", ErrSetpointRange, name, v, lo, hi, unit)
	}
	*dst, *out = v, v
	return nil
}

// Options parameterise a model.
type Options struct {
	ID        string             // asset id; part of the random stream's identity
	Seed      uint64             // fleet seed
	Nameplate map[string]float64 // ratings; missing entries take class defaults
	Start     time.Time          // simulated time of the initial state
}

// constructor builds one class's model.
type constructor func(b *base) Model

type classDef struct {
	signals   []string
	nameplate map[string]float64 // defaults
	degrade   map[string]float64 // supported kinds and their maximum level
	build     constructor
}

// classes is the fixed table of models (data, not an init registry).
func classes() map[string]classDef {
	return map[string]classDef{
		"air_compressor":      compressorDef,
		"motor":               motorDef,
		"boiler":              boilerDef,
		"pv_string":           pvDef,
		"wind_turbine":        windDef,
		"diesel_engine":       dieselDef,
		"blast_furnace":       furnaceDef,
		"cnc_machine":         cncDef,
		"engineering_machine": machineDef,
		"ship":                shipDef,
	}
}

// Classes returns the classes that have a model, sorted.
func Classes() []string {
	out := make([]string, 0, 9)
	for c := range classes() {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// DefaultNameplate returns the default ratings of a class.
func DefaultNameplate(class string) (map[string]float64, error) {
	def, ok := classes()[class]
	if !ok {
		return nil, fmt.Errorf("model: no model for class %q (have %v)", class, Classes())
	}
	out := make(map[string]float64, len(def.nameplate))
	for k, v := range def.nameplate {
		out[k] = v
	}
	return out, nil
}

// New builds the model of class for one asset. Nameplate keys must be ratings
// the class knows; values must be positive (gamma may be negative).
func New(class string, opt Options) (Model, error) {
	def, ok := classes()[class]
	if !ok {
		return nil, fmt.Errorf("model: no model for class %q (have %v)", class, Classes())
	}
	np := make(map[string]float64, len(def.nameplate))
	for k, v := range def.nameplate {
		np[k] = v
	}
	for k, v := range opt.Nameplate {
		if _, ok := def.nameplate[k]; !ok {
			return nil, fmt.Errorf("model: %s nameplate.%s: unknown rating (known: %v)", class, k, sortedKeys(def.nameplate))
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || (v <= 0 && k != "gamma") {
			return nil, fmt.Errorf("model: %s nameplate.%s: %v must be a positive number", class, k, v)
		}
		if k == "fuel_type" {
			if f, ok := catalog.Default().Fuel(v); !ok || !f.Has(catalog.UseBoiler) {
				return nil, fmt.Errorf("model: %s nameplate.fuel_type: %v is not a fuel code of the catalog (%s)", class, v, fuelCodes())
			}
		}
		np[k] = v
	}
	start := opt.Start
	if start.IsZero() {
		start = time.Date(2025, 6, 21, 0, 0, 0, 0, time.UTC)
	}
	b := &base{
		class:   class,
		id:      opt.ID,
		seed:    opt.Seed,
		names:   def.signals,
		v:       make([]float64, len(def.signals)),
		np:      np,
		degrade: def.degrade,
		level:   map[string]float64{},
		rng:     NewRand(opt.Seed, "device/"+opt.ID),
		start:   start,
	}
	m := def.build(b)
	m.Step(start, 0) // initial state
	return m, nil
}

// NewRand returns a PCG-backed generator for a named stream under a seed.
func NewRand(seed uint64, stream string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(stream))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// base carries what every model shares.
type base struct {
	class   string
	id      string
	seed    uint64
	names   []string
	v       []float64
	np      map[string]float64
	degrade map[string]float64
	level   map[string]float64
	rng     *rand.Rand
	start   time.Time
}

func (b *base) Class() string     { return b.class }
func (b *base) Signals() []string { return b.names }
func (b *base) Values() []float64 { return b.v }

func (b *base) Nameplate() map[string]float64 {
	out := make(map[string]float64, len(b.np))
	for k, v := range b.np {
		out[k] = v
	}
	return out
}

func (b *base) Degradations() map[string]float64 {
	out := make(map[string]float64, len(b.degrade))
	for k, v := range b.degrade {
		out[k] = v
	}
	return out
}

func (b *base) Degrade(kind string, level float64) error {
	limit, ok := b.degrade[kind]
	if !ok {
		return fmt.Errorf("model: %s has no degradation %q (supported: %v)", b.class, kind, sortedKeys(b.degrade))
	}
	if math.IsNaN(level) || level < 0 || level > limit {
		return fmt.Errorf("model: %s degradation %s: level %v outside [0, %v]", b.class, kind, level, limit)
	}
	if level == 0 {
		delete(b.level, kind)
	} else {
		b.level[kind] = level
	}
	return nil
}

// deg returns the current level of a degradation kind.
func (b *base) deg(kind string) float64 { return b.level[kind] }

// norm draws a standard normal variate.
func (b *base) norm() float64 { return b.rng.NormFloat64() }

// noise returns a zero-mean normal with deviation sigma.
func (b *base) noise(sigma float64) float64 { return sigma * b.rng.NormFloat64() }

// fuelCodes lists the catalog's boiler fuel codes as "1 natural_gas, 2 fuel_oil".
func fuelCodes() string {
	fuels := catalog.Default().Fuels
	codes := make([]int, 0, len(fuels))
	for c, f := range fuels {
		if f.Has(catalog.UseBoiler) {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d %s", c, fuels[c].Name)
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// lag moves cur toward target as a first-order lag with time constant tau.
func lag(cur, target float64, dt, tau time.Duration) float64 {
	if tau <= 0 {
		return target
	}
	a := 1 - math.Exp(-dt.Seconds()/tau.Seconds())
	return cur + (target-cur)*a
}

// ou is a mean-reverting (Ornstein-Uhlenbeck) process with unit stationary
// variance: x(t+dt) = x e^{-dt/tau} + sqrt(1-e^{-2dt/tau}) N.
type ou struct {
	x   float64
	tau time.Duration
}

func (o *ou) step(r *rand.Rand, dt time.Duration) float64 {
	if dt <= 0 {
		return o.x
	}
	a := math.Exp(-dt.Seconds() / o.tau.Seconds())
	o.x = o.x*a + math.Sqrt(1-a*a)*r.NormFloat64()
	return o.x
}

// hourOfDay returns the simulated local hour in [0, 24).
func hourOfDay(t time.Time) float64 {
	h, m, s := t.Clock()
	return float64(h) + float64(m)/60 + (float64(s)+float64(t.Nanosecond())/1e9)/3600
}

// ambient is a daily air temperature curve (coolest near 05:00, warmest
// near 15:00) around mean with half-amplitude amp.
func ambient(t time.Time, mean, amp float64) float64 {
	h := hourOfDay(t)
	return mean + amp*math.Sin(2*math.Pi*(h-9)/24)
}

// smoothstep ramps from 0 at a to 1 at b.
func smoothstep(a, b, x float64) float64 {
	if x <= a {
		return 0
	}
	if x >= b {
		return 1
	}
	u := (x - a) / (b - a)
	return u * u * (3 - 2*u)
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// shiftDemand is a plant load profile in [0, 1]: low at night, two day shifts
// with a dip at lunch.
func shiftDemand(t time.Time) float64 {
	h := hourOfDay(t)
	day := smoothstep(5.5, 7, h) * (1 - smoothstep(21.5, 23, h))
	lunch := 1 - 0.25*smoothstep(11.8, 12.1, h)*(1-smoothstep(12.8, 13.1, h))
	return 0.35 + 0.65*day*lunch
}

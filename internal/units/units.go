// Package units converts device units to Smelter's canonical UCUM units.
//
// Every known unit belongs to a dimension and converts linearly to that
// dimension's base unit: base = value*factor + offset. A conversion between
// two units of one dimension is therefore itself linear, and the hot path
// applies it as one multiply-add.
package units

import (
	"fmt"
	"sort"
	"strings"
)

type unit struct {
	dim    string
	factor float64
	offset float64
}

// known lists UCUM codes (case-sensitive) with their dimension and linear
// relation to the base unit.
var known = map[string]unit{
	// temperature, base K
	"K":      {"temperature", 1, 0},
	"Cel":    {"temperature", 1, 273.15},
	"[degF]": {"temperature", 5.0 / 9.0, 273.15 - 32*5.0/9.0},
	// temperature difference, base K
	// pressure, base Pa
	"Pa":     {"pressure", 1, 0},
	"hPa":    {"pressure", 100, 0},
	"kPa":    {"pressure", 1e3, 0},
	"MPa":    {"pressure", 1e6, 0},
	"bar":    {"pressure", 1e5, 0},
	"mbar":   {"pressure", 100, 0},
	"[psi]":  {"pressure", 6894.757293168361, 0},
	"atm":    {"pressure", 101325, 0},
	"mm[Hg]": {"pressure", 133.322387415, 0},
	"m[H2O]": {"pressure", 9806.65, 0},
	// power, base W
	"W":       {"power", 1, 0},
	"kW":      {"power", 1e3, 0},
	"MW":      {"power", 1e6, 0},
	"[HP]":    {"power", 745.6998715822702, 0},
	"kV.A":    {"apparent_power", 1e3, 0},
	"V.A":     {"apparent_power", 1, 0},
	"kV.A{r}": {"reactive_power", 1e3, 0},
	// energy, base J
	"J":    {"energy", 1, 0},
	"kJ":   {"energy", 1e3, 0},
	"MJ":   {"energy", 1e6, 0},
	"GJ":   {"energy", 1e9, 0},
	"W.h":  {"energy", 3600, 0},
	"kW.h": {"energy", 3.6e6, 0},
	"MW.h": {"energy", 3.6e9, 0},
	// volume flow, base m3/s
	"m3/s":        {"volume_flow", 1, 0},
	"m3/min":      {"volume_flow", 1.0 / 60, 0},
	"m3/h":        {"volume_flow", 1.0 / 3600, 0},
	"L/s":         {"volume_flow", 1e-3, 0},
	"L/min":       {"volume_flow", 1e-3 / 60, 0},
	"L/h":         {"volume_flow", 1e-3 / 3600, 0},
	"[cft_i]/min": {"volume_flow", 0.028316846592 / 60, 0},
	// mass flow, base kg/s
	"kg/s":   {"mass_flow", 1, 0},
	"kg/h":   {"mass_flow", 1.0 / 3600, 0},
	"g/h":    {"mass_flow", 1e-3 / 3600, 0},
	"t/h":    {"mass_flow", 1e3 / 3600, 0},
	"kg/min": {"mass_flow", 1.0 / 60, 0},
	// specific mass, base kg/kg
	"kg/t": {"mass_ratio", 1e-3, 0},
	"g/kg": {"mass_ratio", 1e-3, 0},
	// ratio, base 1
	"1":     {"ratio", 1, 0},
	"%":     {"ratio", 1e-2, 0},
	"[ppm]": {"ratio", 1e-6, 0},
	// length, base m
	"m":      {"length", 1, 0},
	"cm":     {"length", 1e-2, 0},
	"mm":     {"length", 1e-3, 0},
	"um":     {"length", 1e-6, 0},
	"[in_i]": {"length", 0.0254, 0},
	// velocity, base m/s
	"m/s":      {"velocity", 1, 0},
	"km/h":     {"velocity", 1.0 / 3.6, 0},
	"mm/s":     {"velocity", 1e-3, 0},
	"mm/min":   {"velocity", 1e-3 / 60, 0},
	"m/min":    {"velocity", 1.0 / 60, 0},
	"[in_i]/s": {"velocity", 0.0254, 0},
	"[kn_i]":   {"velocity", 1852.0 / 3600, 0},
	// rotational speed / frequency of events, base 1/s
	"/min": {"rate", 1.0 / 60, 0},
	"/s":   {"rate", 1, 0},
	// frequency, base Hz
	"Hz":  {"frequency", 1, 0},
	"kHz": {"frequency", 1e3, 0},
	// electrical
	"V":    {"voltage", 1, 0},
	"mV":   {"voltage", 1e-3, 0},
	"kV":   {"voltage", 1e3, 0},
	"A":    {"current", 1, 0},
	"mA":   {"current", 1e-3, 0},
	"kA":   {"current", 1e3, 0},
	"Ohm":  {"resistance", 1, 0},
	"kOhm": {"resistance", 1e3, 0},
	"MOhm": {"resistance", 1e6, 0},
	"GOhm": {"resistance", 1e9, 0},
	// angle, base rad
	"rad": {"angle", 1, 0},
	"deg": {"angle", 3.141592653589793 / 180, 0},
	// irradiance, base W/m2
	"W/m2":  {"irradiance", 1, 0},
	"kW/m2": {"irradiance", 1e3, 0},
	// time, base s
	"s":   {"time", 1, 0},
	"min": {"time", 60, 0},
	"h":   {"time", 3600, 0},
	"d":   {"time", 86400, 0},
	// volume, base m3
	"m3":       {"volume", 1, 0},
	"L":        {"volume", 1e-3, 0},
	"[gal_us]": {"volume", 3.785411784e-3, 0},
	// mass, base kg
	"kg": {"mass", 1, 0},
	"g":  {"mass", 1e-3, 0},
	"t":  {"mass", 1e3, 0},
	// specific fuel consumption, base kg/J
	"g/(kW.h)": {"specific_fuel", 1e-3 / 3.6e6, 0},
	// specific power of compressed air, base W/(m3/s) = J/m3
	"kW/(m3/min)": {"specific_power", 1e3 * 60, 0},
	"kW/(m3/h)":   {"specific_power", 1e3 * 3600, 0},
}

// aliases maps spellings that devices and people use to UCUM codes.
var aliases = map[string]string{
	"degC": "Cel", "°C": "Cel", "C": "Cel", "celsius": "Cel",
	"degF": "[degF]", "°F": "[degF]", "fahrenheit": "[degF]",
	"kelvin": "K",
	"psi":    "[psi]", "mmHg": "mm[Hg]", "mH2O": "m[H2O]",
	"hp": "[HP]", "HP": "[HP]",
	"kWh": "kW.h", "Wh": "W.h", "MWh": "MW.h", "kVA": "kV.A", "VA": "V.A", "kvar": "kV.A{r}",
	"m³/min": "m3/min", "m³/h": "m3/h", "m³/s": "m3/s", "Nm3/h": "m3/h", "l/min": "L/min", "l/s": "L/s", "l/h": "L/h",
	"cfm": "[cft_i]/min", "CFM": "[cft_i]/min",
	"ppm": "[ppm]", "percent": "%",
	"rpm": "/min", "RPM": "/min", "r/min": "/min", "1/min": "/min",
	"ohm": "Ohm", "Ω": "Ohm", "kΩ": "kOhm", "MΩ": "MOhm", "kohm": "kOhm", "Mohm": "MOhm",
	"°": "deg", "degree": "deg", "degrees": "deg",
	"W/m²": "W/m2", "in/s": "[in_i]/s", "knot": "[kn_i]", "kn": "[kn_i]",
	"l": "L", "gal": "[gal_us]", "m³": "m3",
	"g/kWh": "g/(kW.h)",
}

// Canonical returns the UCUM code for a unit name or alias, and whether it
// is known. The empty string is the unit of dimensionless states and counts.
func Canonical(name string) (string, bool) {
	if name == "" {
		return "", true
	}
	if _, ok := known[name]; ok {
		return name, true
	}
	if c, ok := aliases[name]; ok {
		return c, true
	}
	return "", false
}

// Conversion is a linear map from one unit to another: out = in*Scale + Offset.
type Conversion struct {
	Scale  float64
	Offset float64
}

// Identity leaves values unchanged.
var Identity = Conversion{Scale: 1}

// Apply converts v.
func (c Conversion) Apply(v float64) float64 { return v*c.Scale + c.Offset }

// IsIdentity reports whether c changes nothing.
func (c Conversion) IsIdentity() bool { return c.Scale == 1 && c.Offset == 0 }

// Convert returns the conversion from unit from to unit to; both may be
// aliases. It fails when either is unknown or their dimensions differ.
func Convert(from, to string) (Conversion, error) {
	f, ok := Canonical(from)
	if !ok {
		return Conversion{}, fmt.Errorf("unknown unit %q", from)
	}
	t, ok := Canonical(to)
	if !ok {
		return Conversion{}, fmt.Errorf("unknown unit %q", to)
	}
	if f == t {
		return Identity, nil
	}
	if f == "" || t == "" {
		return Conversion{}, fmt.Errorf("cannot convert %q to %q", from, to)
	}
	uf, ut := known[f], known[t]
	if uf.dim != ut.dim {
		return Conversion{}, fmt.Errorf("cannot convert %q (%s) to %q (%s)", from, uf.dim, to, ut.dim)
	}
	return Conversion{Scale: uf.factor / ut.factor, Offset: (uf.offset - ut.offset) / ut.factor}, nil
}

// Known returns every UCUM code this package converts, sorted; for docs.
func Known() []string {
	out := make([]string, 0, len(known))
	for k := range known {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Dimension returns the dimension name of a unit ("" when unknown).
func Dimension(name string) string {
	c, ok := Canonical(name)
	if !ok || c == "" {
		return ""
	}
	return known[c].dim
}

// Normalize trims spaces; used when reading units from configs and devices.
func Normalize(name string) string { return strings.TrimSpace(name) }

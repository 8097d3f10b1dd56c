package kpi

// Which way a KPI gets worse, for rankings (the dashboard's KPI rollup sorts
// the worst asset first) and the UI's "worse when" note.
const (
	WorseHigh = "high" // a higher value is worse (specific power, SFOC, CO2 ...)
	WorseLow  = "low"  // a lower value is worse (efficiency, OEE ...)
	WorseNone = "none" // neither: a quantity, not a merit (leg distance); ranked highest first
)

// directions is the one definition of every KPI's direction; a test keeps
// it complete for every KPI the calculators emit.
var directions = map[string]string{
	// air compressor
	"specific_power": WorseHigh, "system_specific_power": WorseHigh, "loaded_ratio": WorseLow,
	// motor
	"load_factor": WorseLow, "ie_class": WorseLow, "current_unbalance": WorseHigh,
	// boiler
	"efficiency_direct": WorseLow, "stack_loss": WorseHigh, "efficiency_indirect": WorseLow, "excess_air": WorseHigh,
	// blast furnace
	"fuel_rate": WorseHigh, "co_utilisation": WorseLow,
	// diesel engine
	"bsfc": WorseHigh,
	// wind turbine
	"power_curve_index": WorseLow,
	// PV string
	"performance_ratio": WorseLow, "performance_ratio_temp": WorseLow,
	// CNC machine
	"spindle_utilisation": WorseLow, "oee": WorseLow,
	// engineering machine
	"idle_ratio": WorseHigh, "fuel_per_hour": WorseHigh,
	// ship: fuel and emissions per unit of work are worse when high
	"sfoc": WorseHigh, "fuel_per_nm": WorseHigh, "co2": WorseHigh, "eeoi": WorseHigh, "cii": WorseHigh,
	"leg_distance": WorseNone,
}

// Worse returns which way the named KPI gets worse: WorseHigh, WorseLow or
// WorseNone (also for an unknown name).
func Worse(name string) string {
	if d, ok := directions[name]; ok {
		return d
	}
	return WorseNone
}

// keyKPIs is each class's key KPI, the one the dashboard shows first.
var keyKPIs = map[string]string{
	"air_compressor": "specific_power", "motor": "ie_class", "pv_string": "performance_ratio_temp",
	"boiler": "efficiency_direct", "diesel_engine": "bsfc", "wind_turbine": "power_curve_index",
	"blast_furnace": "fuel_rate", "cnc_machine": "oee", "engineering_machine": "idle_ratio", "ship": "eeoi",
}

// KeyKPI returns the class's key KPI, or "" when it has none.
func KeyKPI(class string) string { return keyKPIs[class] }

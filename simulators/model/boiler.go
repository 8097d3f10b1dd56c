package model

import (
	"math"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
)

// Boiler: a gas-fired fire-tube/water-tube steam boiler under load following.
//
// Steam flow follows the plant load; drum pressure is held at 1.25 MPa; steam is saturated at the drum pressure
// (Tsat ~ 100 * p_abs[bar]^0.25). Flue O2 is trimmed around 3 %, flue gas
// temperature rises with load. Efficiency is computed by the indirect method
// (stack loss (t_flue - t_air)(A2/(21-O2)+B) with the fuel's A2 and B from the
// catalog's fuel codes (fuel_type 1 natural gas: A2 = 0.66, B = 0.009), plus
// 2.5 % radiation and other losses) and fuel flow = useful heat /
// (efficiency x NCV), so the direct and indirect efficiencies agree.
// Degradation "fouling" (level 0-1) raises flue temperature by up to 80 K
// (fouled heat transfer surfaces) and with it the fuel flow. Real fouling
// builds over weeks; the fault is a time-lapse, so the fouled share of the
// flue temperature settles with the gas side's short time constant (2 min;
// the gas passes the boiler in seconds) rather than the 8 min of the
// water-side heat capacity that governs load changes: level 1 crosses the
// 200 Cel warning of the default pack within about 5 minutes at any load.
var boilerDef = classDef{
	signals: []string{"steam_pressure", "steam_temp", "steam_flow", "feedwater_temp", "drum_level",
		"flue_gas_temp", "flue_o2", "flue_co", "fuel_flow", "ambient_temp", "o2_setpoint"},
	nameplate: map[string]float64{
		"rated_steam_flow": 20,   // t/h
		"fuel_ncv":         35.8, // MJ/m3 (natural gas, normal m3)
		"fuel_type":        1,    // catalog fuel code: 1 natural gas
	},
	degrade: map[string]float64{"fouling": 1},
	build:   func(b *base) Model { return &boiler{base: b} },
}

type boiler struct {
	*base
	init  bool
	flow  float64
	p     float64
	flue  float64 // clean-surface flue gas temperature
	foul  float64 // flue temperature added by fouling, K
	o2    ou
	o2sp  float64 // O2 trim setpoint, % (3 until a command sets it)
	loadN ou
	level float64
	prevF float64
}

// boilerEfficiency returns the indirect-method efficiency (fraction) for a
// fuel's Siegert coefficients a2 and b.
func boilerEfficiency(flue, air, o2, a2, b float64) float64 {
	stack := (flue - air) * (a2/(21-o2) + b) / 100
	return 1 - stack - 0.025
}

// satTemp approximates the saturation temperature (Cel) at gauge pressure p (MPa).
func satTemp(p float64) float64 {
	return 100 * math.Pow((p+0.101325)*10, 0.25)
}

func (b *boiler) Step(now time.Time, dt time.Duration) {
	np := b.np
	rated := np["rated_steam_flow"]
	const pset = 1.25 // MPa gauge, drum pressure setpoint
	amb := ambient(now, 20, 5)
	if !b.init {
		b.init = true
		b.o2.tau = 2 * time.Minute
		b.loadN.tau = 5 * time.Minute
		b.flow = 0.6 * rated
		b.prevF = b.flow
		b.p = pset
		b.flue = 140
	}
	load := clamp(0.3+0.6*shiftDemand(now)+0.05*b.loadN.step(b.rng, dt), 0.2, 1)
	b.flow = lag(b.flow, load*rated, dt, 90*time.Second)
	// pressure sags when steam demand rises faster than firing follows
	df := 0.0
	if s := dt.Seconds(); s > 0 {
		df = (b.flow - b.prevF) / s
	}
	b.prevF = b.flow
	b.p = lag(b.p, pset-0.8*df/rated*60, dt, 60*time.Second)
	b.p = clamp(b.p, 0.5*pset, 1.1*pset)
	// drum level: swell on rising demand, controller brings it back
	b.level = lag(b.level, 2000*df/rated, dt, 3*time.Minute)
	if b.o2sp == 0 {
		b.o2sp = 3
	}
	o2 := clamp(b.o2sp+0.35*b.o2.step(b.rng, dt)+0.6*(1-load), 1.2, 8)
	foul := b.deg("fouling")
	b.flue = lag(b.flue, 118+30*load+0.3*(amb-20), dt, 8*time.Minute)
	b.foul = lag(b.foul, 80*foul, dt, 2*time.Minute)
	flue := b.flue + b.foul
	a2, bb := 0.66, 0.009 // natural gas
	if f, ok := catalog.Default().Fuel(np["fuel_type"]); ok && f.Has(catalog.UseBoiler) {
		a2, bb = f.SiegertA2, f.SiegertB
	}
	eta := boilerEfficiency(flue, amb, o2, a2, bb)
	tfw := 105.0
	hSteam := 2778 + 0.01*(satTemp(b.p)-190)
	heat := b.flow * 1000 / 3600 * (hSteam - 4.19*tfw)  // kW
	fuel := heat * 3600 / (eta * np["fuel_ncv"] * 1000) // m3/h
	co := 25 + 400*math.Exp(-(o2-1)*3) + 30*foul
	v := b.v
	v[0] = b.p + b.noise(0.003)
	v[1] = satTemp(b.p) + 2 + b.noise(0.2)
	v[2] = math.Max(0, b.flow+b.noise(0.003*rated))
	v[3] = tfw + b.noise(0.3)
	v[4] = clamp(b.level+b.noise(4), -280, 280)
	v[5] = flue + b.noise(0.3)
	v[6] = o2
	v[7] = math.Max(0, co+b.noise(2))
	v[8] = math.Max(0, fuel*(1+b.noise(0.004)))
	v[9] = amb + b.noise(0.1)
	v[10] = b.o2sp
}

// Setpoints implements Setter.
func (b *boiler) Setpoints() []string { return []string{"o2_setpoint"} }

// Set implements Setter: the O2 trim setpoint, 1.5 to 6 % (below, CO rises
// steeply; above, the stack loss does): flue O2, CO and fuel flow follow
// from the next step.
func (b *boiler) Set(signal string, v float64) error {
	return setpoint(signal, "o2_setpoint", v, 1.5, 6, "%", &b.o2sp, &b.v[10])
}

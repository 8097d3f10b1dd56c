package model

import (
	"math"
	"time"
)

// Motor: a three-phase induction motor on a variable-speed drive driving a
// process load (pump or fan); speed_reference (100 % until a command sets
// it) sets the drive frequency and, by the affinity laws, the load.
//
// Shaft load follows the plant shift profile. Efficiency follows a part-load
// curve anchored at the nameplate efficiency, power factor falls at part load,
// and phase current is P/(sqrt3 V pf). Winding temperature rises with I^2 with
// a 20-minute thermal time constant; bearing temperature and vibration follow
// load. Degradations: "unbalance" (level = fractional current unbalance with
// balanced voltages: phase A +level, B and C -level/2) and "bearing_wear"
// (level 0-1: vibration up to +8 mm/s, bearing temperature up to +30 K,
// friction losses up to +1.5 % of rated power).
var motorDef = classDef{
	signals: []string{"voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c",
		"power_factor", "power", "frequency", "winding_temp", "bearing_temp", "vibration", "speed_reference"},
	nameplate: map[string]float64{
		"rated_power":      160,  // kW shaft
		"rated_efficiency": 95.8, // % (IE3, 4-pole 160 kW)
		"rated_voltage":    400,  // V line-to-line
		"rated_current":    0,    // A; 0 = derived from the other ratings
		"poles":            4,
	},
	degrade: map[string]float64{"unbalance": 0.5, "bearing_wear": 1},
	build:   func(b *base) Model { return &motor{base: b} },
}

const motorRatedPF = 0.86

type motor struct {
	*base
	init    bool
	load    float64
	loadN   ou
	winding float64
	bearing float64
	ref     float64 // drive speed reference, % of rated speed (100 until a command sets it)
}

// motorEfficiency is the part-load efficiency curve (fraction) for load x.
func motorEfficiency(rated, x float64) float64 {
	if x <= 0 {
		return 0
	}
	// flat from 60 % to 100 % load, falling below 40 %
	return rated * (1 - 0.12*math.Pow(math.Max(0, 0.6-x)/0.6, 2)*2.5)
}

func motorPF(x float64) float64 {
	return clamp(motorRatedPF*(1-0.55*math.Exp(-4.5*x)), 0.1, 0.95)
}

// RatedCurrent returns the full-load current of a motor nameplate.
func motorRatedCurrent(np map[string]float64) float64 {
	if np["rated_current"] > 0 {
		return np["rated_current"]
	}
	eta := np["rated_efficiency"] / 100
	return np["rated_power"] * 1000 / eta / (math.Sqrt(3) * np["rated_voltage"] * motorPF(1))
}

func (m *motor) Step(now time.Time, dt time.Duration) {
	np := m.np
	first := !m.init
	if first {
		m.init = true
		m.np["rated_current"] = motorRatedCurrent(np)
		m.loadN.tau = 90 * time.Second
	}
	amb := ambient(now, 25, 4)
	if m.ref == 0 {
		m.ref = 100
	}
	speed := m.ref / 100
	// a centrifugal load on a variable-speed drive: power goes with speed
	// cubed (affinity laws), the drive's output frequency with speed
	target := clamp(0.45+0.4*shiftDemand(now)+0.04*m.loadN.step(m.rng, dt), 0.2, 1.05) * speed * speed * speed
	if first {
		// the simulation starts a motor that has been running for hours:
		// load and temperatures at their steady state, so an adaptive
		// rule's warm-up learns the running motor, not one warming up
		m.load = target
	}
	m.load = lag(m.load, target, dt, 20*time.Second)
	x := m.load
	wear := m.deg("bearing_wear")
	eta := motorEfficiency(np["rated_efficiency"]/100, x)
	pr := np["rated_power"]
	pin := x*pr/eta + 0.015*wear*pr
	pf := motorPF(x)
	vr := np["rated_voltage"]
	va, vb, vc := vr*(1+m.noise(0.002)), vr*(1+m.noise(0.002)), vr*(1+m.noise(0.002))
	vavg := (va + vb + vc) / 3
	i := pin * 1000 / (math.Sqrt(3) * vavg * pf)
	u := m.deg("unbalance")
	ia, ib, ic := i*(1+u), i*(1-u/2), i*(1-u/2)
	ir := np["rated_current"]
	rise := 80 * (i / ir) * (i / ir) * (1 + 0.5*u*u)
	if first {
		m.winding, m.bearing = amb+rise, amb+12+15*x+30*wear
	}
	m.winding = lag(m.winding, amb+rise, dt, 20*time.Minute)
	m.bearing = lag(m.bearing, amb+12+15*x+30*wear, dt, 30*time.Minute)
	v := m.v
	v[0], v[1], v[2] = va, vb, vc
	v[3] = ia * (1 + m.noise(0.003))
	v[4] = ib * (1 + m.noise(0.003))
	v[5] = ic * (1 + m.noise(0.003))
	v[6] = pf
	v[7] = pin
	v[8] = 50*speed + m.noise(0.01)
	v[9] = m.winding + m.noise(0.1)
	v[10] = m.bearing + m.noise(0.1)
	v[11] = math.Max(0.1, 1.2+0.6*x+8*wear*wear+m.noise(0.05))
	v[12] = m.ref
}

// Setpoints implements Setter.
func (m *motor) Setpoints() []string { return []string{"speed_reference"} }

// Set implements Setter: the drive's speed reference, 30 to 100 % of rated
// speed; frequency at once from the next step, load and power within the
// load's 20 s lag.
func (m *motor) Set(signal string, v float64) error {
	return setpoint(signal, "speed_reference", v, 30, 100, "%", &m.ref, &m.v[12])
}

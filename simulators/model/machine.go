package model

import (
	"math"
	"time"
)

// Engineering machine: an excavator on a construction site.
//
// It works 07:00-12:00 and 13:00-18:00 and is off otherwise. While on it
// alternates between digging (engine ~1900 /min, ~18 L/h per 100 kW rated)
// and idling (~900 /min, ~2.5 L/h per 100 kW) segments; about a quarter of
// engine time is idle. engine_hours, idle_hours and fuel_used are counters;
// hydraulic oil temperature lags the work. The position wanders a few metres
// around the site. A fault code (1-5 min) appears about once per 10 engine
// hours. Degradation "excess_idle" (level 0-1) stretches idle segments, the
// waste pattern the idle-ratio KPI flags.
var machineDef = classDef{
	signals: []string{"engine_hours", "idle_hours", "fuel_used", "hydraulic_oil_temp", "latitude", "longitude", "fault_code", "engine_speed"},
	nameplate: map[string]float64{
		"rated_power": 120, // kW
	},
	degrade: map[string]float64{"excess_idle": 1},
	build:   func(b *base) Model { return &machine{base: b} },
}

type machine struct {
	*base
	init      bool
	working   bool // digging (vs idling) while on
	left      time.Duration
	hours     float64
	idle      float64
	fuel      float64
	oil       float64
	speed     float64
	fault     float64
	faultLeft time.Duration
	dx, dy    ou
}

func (m *machine) Step(now time.Time, dt time.Duration) {
	if !m.init {
		m.init = true
		m.hours, m.idle, m.fuel = 3400, 850, 61000
		m.oil = ambient(now, 20, 6)
		m.dx.tau, m.dy.tau = 30*time.Minute, 30*time.Minute
	}
	amb := ambient(now, 20, 6)
	h := hourOfDay(now)
	on := (h >= 7 && h < 12) || (h >= 13 && h < 18)
	rated := m.np["rated_power"]
	m.left -= dt
	if on && m.left <= 0 {
		m.working = !m.working
		if m.working {
			m.left = time.Duration(8+20*m.rng.Float64()) * time.Minute
		} else {
			m.left = time.Duration((2+6*m.rng.Float64())*(1+4*m.deg("excess_idle"))) * time.Minute
		}
	}
	speed, lph, oilT := 0.0, 0.0, amb
	if on {
		m.hours += dt.Hours()
		if m.working {
			speed, lph, oilT = 1900, 0.18*rated, 72
		} else {
			speed, lph, oilT = 900, 0.025*rated, 55
			m.idle += dt.Hours()
		}
		speed += m.noise(10)
		m.fuel += lph * dt.Hours()
		if m.fault == 0 && m.rng.Float64() < dt.Hours()/10 {
			m.fault = float64(100 + m.rng.IntN(20))
			m.faultLeft = time.Duration(1+4*m.rng.Float64()) * time.Minute
		}
	}
	if m.fault != 0 {
		m.faultLeft -= dt
		if m.faultLeft <= 0 {
			m.fault = 0
		}
	}
	m.speed = lag(m.speed, speed, dt, 2*time.Second)
	if !on && m.speed < 1 {
		m.speed = 0
	}
	m.oil = lag(m.oil, oilT, dt, 25*time.Minute)
	// ~30 m wander around the site at 36.65 N 117.12 E while working
	lat := 36.6512 + 0.0003*m.dx.step(m.rng, dt)
	lon := 117.1201 + 0.0003*m.dy.step(m.rng, dt)/math.Cos(36.65*math.Pi/180)
	v := m.v
	v[0] = m.hours
	v[1] = m.idle
	v[2] = m.fuel
	v[3] = m.oil + m.noise(0.1)
	v[4] = lat
	v[5] = lon
	v[6] = m.fault
	v[7] = m.speed
}

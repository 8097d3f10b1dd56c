package model

import (
	"math"
	"time"
)

// Diesel engine: a high-speed, six-cylinder generator set at 1500 /min.
//
// The set runs from 06:00 to 22:00 (simulated local time) and is on standby
// otherwise. While running, load steps between 35 % and 90 % every 15-40
// minutes with small fluctuation. Fuel follows a BSFC curve of 205 g/kWh at
// rated load rising to ~225 g/kWh at 35 % load. Exhaust temperatures per
// cylinder follow load (about 420 C at rated) with a fixed per-cylinder
// offset; coolant and lube oil have thermal inertia. Degradation
// "injector_fault" (level 0-1) makes cylinder 3 run up to 80 K cold and raises
// BSFC by up to 4 %.
var dieselDef = classDef{
	signals: []string{"speed", "load", "fuel_rate", "lube_oil_pressure", "coolant_temp",
		"exhaust_temp_cyl_1", "exhaust_temp_cyl_2", "exhaust_temp_cyl_3", "exhaust_temp_cyl_4",
		"exhaust_temp_cyl_5", "exhaust_temp_cyl_6", "boost_pressure", "power", "run_hours"},
	nameplate: map[string]float64{
		"rated_power": 1000, // kW electrical
		"rated_speed": 1500, // /min
	},
	degrade: map[string]float64{"injector_fault": 1},
	build:   func(b *base) Model { return &diesel{base: b} },
}

type diesel struct {
	*base
	init     bool
	running  bool
	speed    float64
	load     float64 // fraction, lagged
	setpoint float64
	nextStep time.Duration // until next load change
	coolant  float64
	oil      float64
	exh      [6]float64
	offs     [6]float64
	hours    float64
}

// DieselBSFC returns brake-specific fuel consumption (g/kWh) at load x.
func DieselBSFC(x float64) float64 {
	return 205 + 40*(1-x)*(1-x)
}

func (d *diesel) Step(now time.Time, dt time.Duration) {
	np := d.np
	amb := ambient(now, 22, 5)
	if !d.init {
		d.init = true
		for i := range d.offs {
			d.offs[i] = d.noise(6)
		}
		d.coolant, d.oil = amb, amb
		for i := range d.exh {
			d.exh[i] = amb
		}
		d.hours = 12000
		d.setpoint = 0.6
	}
	h := hourOfDay(now)
	want := h >= 6 && h < 22
	if want != d.running {
		d.running = want
		d.setpoint = 0.6
		d.nextStep = 0
	}
	d.nextStep -= dt
	if d.nextStep <= 0 {
		d.setpoint = 0.35 + 0.55*d.rng.Float64()
		d.nextStep = time.Duration(15+25*d.rng.Float64()) * time.Minute
	}
	rated := np["rated_speed"]
	target, spd := 0.0, 0.0
	if d.running {
		target = clamp(d.setpoint+0.02*d.norm(), 0.3, 1.0)
		spd = rated * (1 + 0.001*d.norm())
	}
	d.load = lag(d.load, target, dt, 5*time.Second)
	d.speed = lag(d.speed, spd, dt, 2*time.Second)
	if d.speed < 1 {
		d.speed = 0
	}
	inj := d.deg("injector_fault")
	x := d.load
	power := x * np["rated_power"]
	fuel := 0.0
	if d.running && power > 0 {
		fuel = DieselBSFC(x) * (1 + 0.04*inj) * power / 1000
		d.hours += dt.Hours()
	}
	if d.running {
		d.coolant = lag(d.coolant, 82+5*x, dt, 8*time.Minute)
		d.oil = lag(d.oil, 90+8*x, dt, 12*time.Minute)
	} else {
		d.coolant = lag(d.coolant, amb, dt, 40*time.Minute)
		d.oil = lag(d.oil, amb, dt, 60*time.Minute)
	}
	for i := range d.exh {
		t := amb + 40
		if d.running {
			t = 250 + 170*x + d.offs[i]
			if i == 2 {
				t -= 80 * inj
			}
		}
		d.exh[i] = lag(d.exh[i], t, dt, 40*time.Second)
	}
	lube := 0.0
	if d.speed > 0 {
		lube = (d.speed / rated) * (480 - 1.2*(d.oil-60))
	}
	boost := 0.0
	if d.running {
		boost = 230 * math.Pow(x, 1.3)
	}
	v := d.v
	v[0] = d.speed
	v[1] = x * 100
	v[2] = fuel
	if lube > 0 {
		lube = math.Max(0, lube+d.noise(2))
	}
	v[3] = lube
	v[4] = d.coolant + d.noise(0.1)
	for i := range d.exh {
		v[5+i] = d.exh[i] + d.noise(0.5)
	}
	v[11] = math.Max(0, boost+d.noise(1))
	v[12] = power
	v[13] = d.hours
}

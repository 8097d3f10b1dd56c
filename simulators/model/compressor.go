package model

import (
	"math"
	"time"
)

// Air compressor: an oil-injected screw compressor with load/unload control
// feeding an air receiver.
//
// The receiver pressure integrates delivered air minus plant demand. The
// controller loads below sp-0.1 MPa and unloads at sp, the unload pressure
// setpoint (unload_pressure_setpoint; rated_pressure until a command sets it,
// Set accepts 0.3 MPa up to rated_pressure + 0.1 MPa);
// after 10 minutes unloaded the motor stops, and it restarts when pressure
// falls to the load point. Input power when loaded follows the nameplate
// specific power and rises slightly with pressure; unloaded power is 25 % of
// loaded power. A "leak" degradation (level = fraction of compressed air lost
// through a leaking blow-down / minimum-pressure valve before the flow meter)
// cuts measured FAD at unchanged power, so specific power rises by 1/(1-level)
// and the loaded ratio grows.
var compressorDef = classDef{
	signals: []string{"discharge_pressure", "discharge_temp", "input_power", "free_air_delivery", "load_state", "dew_point",
		"unload_pressure_setpoint"},
	nameplate: map[string]float64{
		"rated_power":          75,   // kW shaft
		"rated_fad":            13,   // m3/min at rated pressure
		"rated_specific_power": 6.2,  // kW/(m3/min) loaded at rated pressure
		"rated_pressure":       0.75, // MPa gauge (unload point)
	},
	degrade: map[string]float64{"leak": 0.6},
	build:   func(b *base) Model { return &compressor{base: b} },
}

const (
	csOff      = 0
	csUnloaded = 1
	csLoaded   = 2
)

type compressor struct {
	*base
	init     bool
	sp       float64 // unload pressure setpoint, MPa gauge
	p        float64 // receiver pressure, MPa gauge
	state    int
	unloaded time.Duration // time spent unloaded
	temp     float64       // discharge temperature
	power    float64
	demandN  ou // demand fluctuation
	dew      float64
}

func (c *compressor) Step(now time.Time, dt time.Duration) {
	np := c.np
	fad := np["rated_fad"]
	if c.sp == 0 {
		c.sp = np["rated_pressure"]
	}
	pr := c.sp
	pLoad := pr - 0.1
	amb := ambient(now, 22, 5)
	if !c.init {
		c.init = true
		c.p = pr - 0.05
		c.state = csUnloaded
		c.temp = 75
		c.demandN.tau = 3 * time.Minute
		c.dew = 3
	}
	sec := dt.Seconds()
	// plant demand, m3/min of free air
	demand := fad * clamp(0.78*shiftDemand(now)+0.06*c.demandN.step(c.rng, dt), 0.05, 0.98)
	leak := c.deg("leak")
	// controller
	switch c.state {
	case csLoaded:
		if c.p >= pr {
			c.state, c.unloaded = csUnloaded, 0
		}
	case csUnloaded:
		c.unloaded += dt
		switch {
		case c.p <= pLoad:
			c.state = csLoaded
		case c.unloaded >= 10*time.Minute:
			c.state = csOff
		}
	case csOff:
		if c.p <= pLoad {
			c.state = csLoaded
		}
	}
	// delivered free air at the current pressure (slightly less at higher pressure)
	gen := 0.0
	if c.state == csLoaded {
		gen = fad * (1 + 0.08*(pr-c.p)/pr)
	}
	delivered := gen * (1 - leak)
	// receiver: V = 0.5 m3 per m3/min of rated FAD
	const pAtm = 0.101325
	vol := 0.5 * fad
	c.p += (delivered - demand) / 60 * sec * pAtm / vol
	c.p = clamp(c.p, 0, pr+0.05)
	loadedPower := np["rated_specific_power"] * fad * (0.9 + 0.1*(c.p+pAtm)/(pr+pAtm))
	target, tt := 0.0, amb+4
	switch c.state {
	case csLoaded:
		target = loadedPower
		tt = 78 + 0.25*(amb-20) + 12*c.p/pr
	case csUnloaded:
		target = 0.25 * loadedPower
		tt = 70 + 0.2*(amb-20)
	}
	c.power = lag(c.power, target, dt, 2*time.Second)
	tau := 4 * time.Minute
	if c.state == csOff {
		tau = 15 * time.Minute
	}
	c.temp = lag(c.temp, tt, dt, tau)
	c.dew = lag(c.dew, 3+0.05*(amb-20), dt, 20*time.Minute)
	pm := c.p
	if c.state == csLoaded {
		pm += 0.02 // discharge is above the receiver while delivering
	}
	v := c.v
	v[0] = math.Max(0, pm+c.noise(0.002))
	v[1] = c.temp + c.noise(0.1)
	v[2] = math.Max(0, c.power+c.noise(0.003*c.power))
	v[3] = math.Max(0, delivered+c.noise(0.002*delivered))
	v[4] = float64(c.state)
	v[5] = c.dew + c.noise(0.05)
	v[6] = c.sp
}

// Setpoints implements Setter.
func (c *compressor) Setpoints() []string { return []string{"unload_pressure_setpoint"} }

// Set implements Setter: the unload pressure setpoint, 0.3 MPa up to
// rated_pressure + 0.1 MPa (the receiver's safety margin); the controller
// follows from the next step. The value is visible at once.
func (c *compressor) Set(signal string, v float64) error {
	return setpoint(signal, "unload_pressure_setpoint", v, 0.3, c.np["rated_pressure"]+0.1, "MPa", &c.sp, &c.v[6])
}

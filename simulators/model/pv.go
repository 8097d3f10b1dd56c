package model

import (
	"fmt"
	"math"
	"time"
)

// PV string: a string of 450 Wp modules on a south-facing plane tilted at the
// site latitude (36.7 N), behind an MPPT inverter.
//
// Plane-of-array irradiance is clear-sky (solar geometry from day of year and
// hour, Meinel air-mass attenuation, 12 % diffuse) times a cloud clearness
// index. The cloud process belongs to the inverter: every string with the same
// "inverter" nameplate number draws it from the same random stream, so peers
// on one inverter see the same sky. Module temperature lags T_amb +
// G(NOCT-20)/800 (NOCT 45 C). Current ~ G and slightly up with temperature,
// voltage ~ temperature coefficient (gamma) and log irradiance; AC power is
// DC power x 97 % inverter efficiency; energy integrates AC power.
// Degradation "soiling" (level = fraction of light lost, 0-0.6) cuts the
// string's current against its peers.
var pvDef = classDef{
	signals: []string{"string_current", "string_voltage", "irradiance_poa", "module_temp", "ac_power", "energy", "insulation_resistance"},
	nameplate: map[string]float64{
		"rated_power": 10.8,  // kWp of the string (24 x 450 Wp)
		"gamma":       -0.35, // %/K power temperature coefficient
		"inverter":    1,     // inverter number; strings on one inverter share weather
	},
	degrade: map[string]float64{"soiling": 0.6},
	build: func(b *base) Model {
		return &pvString{base: b, sky: NewRand(b.seed, fmt.Sprintf("weather/inverter/%g", b.np["inverter"]))}
	},
}

const (
	pvLatitude = 36.7
	pvImpp     = 10.8 // A per module at STC
	pvModuleW  = 450.0
)

type pvString struct {
	*base
	init   bool
	sky    interface{ NormFloat64() float64 }
	cloud  ou
	tmod   float64
	energy float64
}

// clearSkyPOA returns the clear-sky plane-of-array irradiance (W/m2) at t for
// a south-facing plane tilted at the latitude.
func clearSkyPOA(t time.Time) float64 {
	n := float64(t.YearDay())
	decl := 23.45 * math.Pi / 180 * math.Sin(2*math.Pi*(284+n)/365)
	lat := pvLatitude * math.Pi / 180
	omega := (hourOfDay(t) - 12) * 15 * math.Pi / 180
	sinEl := math.Sin(lat)*math.Sin(decl) + math.Cos(lat)*math.Cos(decl)*math.Cos(omega)
	if sinEl <= 0.01 {
		return 0
	}
	am := math.Min(1/sinEl, 38)
	dni := 1353 * math.Pow(0.7, math.Pow(am, 0.678))
	cosInc := math.Cos(decl) * math.Cos(omega) // tilt = latitude
	return math.Max(0, dni*math.Max(0, cosInc)+0.12*dni*(1+math.Cos(lat))/2)
}

func (p *pvString) Step(now time.Time, dt time.Duration) {
	np := p.np
	amb := ambient(now, 24, 6)
	if !p.init {
		p.init = true
		p.cloud.tau = 20 * time.Minute
		p.tmod = amb
		p.energy = np["rated_power"] * 1000
	}
	// the cloud process draws from the inverter's stream (shared by peers)
	x := p.cloud.x
	if dt > 0 {
		a := math.Exp(-dt.Seconds() / p.cloud.tau.Seconds())
		x = x*a + math.Sqrt(1-a*a)*p.sky.NormFloat64()
		p.cloud.x = x
	}
	k := clamp(0.82+0.25*x, 0.15, 1.05)
	g := clearSkyPOA(now) * k
	p.tmod = lag(p.tmod, amb+g*25/800, dt, 6*time.Minute)
	n := math.Max(1, math.Round(np["rated_power"]*1000/pvModuleW))
	vmpp := np["rated_power"] * 1000 / (n * pvImpp)
	soil := p.deg("soiling")
	var i, u float64
	if g > 15 {
		i = pvImpp * g / 1000 * (1 + 0.0005*(p.tmod-25)) * (1 - soil) * 0.98
		u = n * vmpp * (1 + (np["gamma"]/100-0.0005)*(p.tmod-25)) * (1 + 0.04*math.Log(g/1000))
		u = math.Max(0, u)
	}
	ac := i * u * 0.97 / 1000
	p.energy += ac * dt.Hours()
	h := hourOfDay(now)
	riso := 35 - 18*math.Exp(-(h-6)*(h-6)/3)
	v := p.v
	v[0] = math.Max(0, i+p.noise(0.005*i))
	v[1] = math.Max(0, u+p.noise(0.002*u))
	v[2] = math.Max(0, g+p.noise(0.003*g))
	v[3] = p.tmod + p.noise(0.1)
	v[4] = math.Max(0, ac)
	v[5] = p.energy
	v[6] = clamp(riso+p.noise(0.3), 0.5, 100)
}

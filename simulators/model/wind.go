package model

import (
	"math"
	"time"
)

// Wind turbine: a variable-speed, pitch-regulated horizontal-axis turbine.
//
// Wind speed has a Weibull marginal (k = 2, scale 8 m/s): a slow Gaussian
// process (40 min) is mapped through the normal CDF and the Weibull inverse
// CDF, then a fast turbulence term (10 %, 8 s) is added. Power is
// 0.5 rho A Cp v^3 cos^3(yaw error), with Cp sized so the turbine reaches
// rated power at rated wind with rho0 = 1.225 kg/m3, softly capped at rated,
// zero below cut-in and stopped above cut-out (restart 5 m/s below). Air
// density rho = p/(R T) follows ambient pressure and temperature. Rotor speed
// follows a tip-speed ratio of 8 up to its rated speed; pitch opens above
// rated wind and feathers (90 deg) when stopped. Degradation
// "yaw_misalignment" (level = degrees, 0-30) adds a static yaw error.
var windDef = classDef{
	signals: []string{"wind_speed", "power", "rotor_speed", "pitch_angle", "yaw_error", "ambient_temp",
		"air_pressure", "gearbox_temp", "generator_temp"},
	nameplate: map[string]float64{
		"rated_power":      2000, // kW
		"rotor_diameter":   90,   // m
		"cut_in_speed":     3,    // m/s
		"rated_wind_speed": 11.5, // m/s
		"cut_out_speed":    25,   // m/s
	},
	degrade: map[string]float64{"yaw_misalignment": 30},
	build:   func(b *base) Model { return &windTurbine{base: b} },
}

type windTurbine struct {
	*base
	init      bool
	slow      ou
	turb      ou
	yawN      ou
	presN     ou
	stopped   bool
	power     float64
	gear, gen float64
}

// weibullWind maps a standard normal z to a Weibull(k, scale) speed.
func weibullWind(z, k, scale float64) float64 {
	u := 0.5 * math.Erfc(-z/math.Sqrt2) // normal CDF
	u = math.Min(u, 1-1e-12)
	return scale * math.Pow(-math.Log(1-u), 1/k)
}

// WindPowerCurve returns the reference power (kW) of a turbine nameplate at
// density-normalised wind speed v (rho0 = 1.225 kg/m3, no yaw error).
func WindPowerCurve(np map[string]float64, v float64) float64 {
	return windPower(np, v, 1.225)
}

func windPower(np map[string]float64, v, rho float64) float64 {
	if v < np["cut_in_speed"] || v >= np["cut_out_speed"] {
		return 0
	}
	pr := np["rated_power"]
	area := math.Pi * np["rotor_diameter"] * np["rotor_diameter"] / 4
	vr := np["rated_wind_speed"]
	cp := math.Min(0.48, pr*1000/(0.5*1.225*area*vr*vr*vr))
	x := 0.5 * rho * area * cp * v * v * v / 1000 / pr
	return pr * x / math.Pow(1+math.Pow(x, 8), 1.0/8)
}

func (w *windTurbine) Step(now time.Time, dt time.Duration) {
	np := w.np
	amb := ambient(now, 12, 6)
	if !w.init {
		w.init = true
		w.slow.tau = 40 * time.Minute
		w.turb.tau = 8 * time.Second
		w.yawN.tau = 30 * time.Second
		w.presN.tau = 6 * time.Hour
		w.gear, w.gen = amb+30, amb+40
	}
	vmean := weibullWind(w.slow.step(w.rng, dt), 2, 8)
	v := math.Max(0, vmean*(1+0.1*w.turb.step(w.rng, dt)))
	pres := 100.5 + 1.0*w.presN.step(w.rng, dt) // kPa
	rho := pres * 1000 / (287.05 * (amb + 273.15))
	yaw := 4*w.yawN.step(w.rng, dt) + w.deg("yaw_misalignment")
	if v >= np["cut_out_speed"] {
		w.stopped = true
	} else if w.stopped && v < np["cut_out_speed"]-5 {
		w.stopped = false
	}
	target := -5.0 // standby consumption
	rpm, pitch := 0.0, 90.0
	radius := np["rotor_diameter"] / 2
	ratedRPM := 8 * np["rated_wind_speed"] / radius * 60 / (2 * math.Pi)
	if !w.stopped && v >= np["cut_in_speed"] {
		c := math.Cos(yaw * math.Pi / 180)
		target = windPower(np, v*c, rho)
		rpm = clamp(8*v/radius*60/(2*math.Pi), 0.35*ratedRPM, ratedRPM)
		pitch = 0
		if v > np["rated_wind_speed"] {
			pitch = math.Min(30, 2.2*(v-np["rated_wind_speed"]))
		}
	}
	w.power = lag(w.power, target, dt, 3*time.Second)
	frac := math.Max(0, w.power) / np["rated_power"]
	w.gear = lag(w.gear, amb+20+40*frac, dt, 30*time.Minute)
	w.gen = lag(w.gen, amb+15+70*frac, dt, 15*time.Minute)
	out := w.v
	out[0] = v
	out[1] = w.power
	out[2] = rpm
	out[3] = pitch
	out[4] = clamp(yaw, -180, 180)
	out[5] = amb + w.noise(0.1)
	out[6] = pres
	out[7] = w.gear + w.noise(0.1)
	out[8] = w.gen + w.noise(0.1)
}

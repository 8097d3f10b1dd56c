package model

import (
	"math"
	"time"
)

// Ship: an Ultramax bulk carrier (63 500 DWT) with a six-cylinder
// slow-speed two-stroke main engine (SMCR 8 600 kW at 117 /min, shop-test
// SFOC 167 g/kWh), trading between two ports of the Yellow Sea, Qingdao and
// Incheon (about 300 nm), laden one way and in ballast back.
//
// Voyage profile, driven by position: sea passage at service speed (engine
// at 103 /min on the propeller curve, ~13.5 kn laden), manoeuvring within
// 8 nm of the port (40 /min, ~5 kn; engine stopped 2 nm out, the ship
// coasting below 1 kn before tugs take her alongside), at berth for 6 h
// with the engine stopped (cargo loaded or discharged, draught following),
// then manoeuvring out for 45 min and the next passage. The model starts at sea, 40 nm out
// of Qingdao, laden.
//
// Coupled signals: shaft power follows the propeller law P = 0.9 P_MCR
// (n/n_MCR)^3 (1 + 0.5 a) and speed through water V = 15.5 kn (n/n_MCR)
// (1 - 0.3 a), where a is the added resistance of weather (a mean-reverting
// sea state, the weather margin, 0-25 %) and hull fouling (2 % at the start,
// growing 3 % a month: fuel per mile slowly rises). So P ~ V^3 at a given
// sea state, and fuel per mile = P x SFOC / V rises with a. Engine speed
// follows its set point with a load-up limit of 6 /min per minute, ship
// speed lags with the ship's inertia (8 min). SFOC follows a part-load curve
// around the shop test, on the fuel's LCV (HFO at sea, MGO manoeuvring and
// at berth). Auxiliary engines carry the hotel and cargo load (450 kW at
// sea, 700 kW manoeuvring, 900 kW at berth with the cranes, 215 g/kWh); the
// boiler burns MGO at berth and manoeuvring (the exhaust gas economiser
// covers steam at sea). Exhaust per cylinder follows load with a fixed
// offset per cylinder; scavenge air pressure follows load; jacket water
// and lube oil are temperature controlled while running.
//
// Degradations: "fouling" (level 0-0.5) adds hull resistance; "injector_fault"
// (0-1) makes cylinder 4 run up to 70 K hot and raises SFOC by up to 5 %;
// "heavy_weather" (0-0.6) adds the resistance of a storm (with fouling it
// drives the engine past its load diagram's torque limit).
var shipDef = classDef{
	signals: []string{"me_speed", "shaft_power", "me_fuel_flow", "ae_fuel_flow", "boiler_fuel_flow",
		"me_fuel_type", "ae_fuel_type", "boiler_fuel_type", "sog", "stw", "cog", "heading", "latitude", "longitude",
		"water_depth", "draught", "cargo",
		"exhaust_temp_cyl_1", "exhaust_temp_cyl_2", "exhaust_temp_cyl_3", "exhaust_temp_cyl_4",
		"exhaust_temp_cyl_5", "exhaust_temp_cyl_6", "scavenge_air_pressure", "jacket_water_temp",
		"jacket_water_pressure", "lube_oil_temp", "lube_oil_pressure"},
	nameplate: map[string]float64{
		"rated_power": 8600,  // kW, SMCR
		"rated_speed": 117,   // /min at SMCR
		"rated_sfoc":  167,   // g/kWh at ISO LCV, shop test
		"capacity":    63500, // DWT
		"ship_type":   1,     // bulk carrier
	},
	degrade: map[string]float64{"fouling": 0.5, "injector_fault": 1, "heavy_weather": 0.6},
	build:   func(b *base) Model { return &ship{base: b} },
}

// Ship phases.
const (
	phaseSea = iota
	phaseManoeuvre
	phaseBerth
	phaseDepart
)

// Ship fuel codes (catalog fuels) and their lower calorific values, MJ/kg.
const (
	fuelHFO    = 3
	fuelMGO    = 5
	lcvHFO     = 40.2
	lcvMGO     = 42.7
	shipCargo  = 58000.0 // t laden
	berthStay  = 6 * time.Hour
	departTime = 45 * time.Minute
	serviceRPM = 103.0
	manRPM     = 40.0
)

// ports: Qingdao and Incheon approaches (decimal degrees).
var shipPorts = [2][2]float64{{36.00, 120.45}, {37.35, 126.45}}

type ship struct {
	*base
	init            bool
	phase           int
	dest            int // index into shipPorts
	left            time.Duration
	lat, lon        float64
	rpm, stw        float64
	cargo           float64
	sea, cur        ou // sea state and current
	exh             [6]float64
	offs            [6]float64
	jw, lo          float64
	aeKW, boilerKgH float64
	elapsed         time.Duration
}

// ShipSFOC returns the main engine's SFOC at ISO LCV for load x (fraction
// of MCR) around the shop-test value rated: lowest near 80 % load.
func ShipSFOC(rated, x float64) float64 { return rated * (1 + 0.15*(x-0.8)*(x-0.8)) }

// distNM is the rhumb-line-approximate distance in nautical miles.
func distNM(lat1, lon1, lat2, lon2 float64) float64 {
	dLat := (lat2 - lat1) * 60
	dLon := (lon2 - lon1) * 60 * math.Cos((lat1+lat2)/2*math.Pi/180)
	return math.Hypot(dLat, dLon)
}

func bearing(lat1, lon1, lat2, lon2 float64) float64 {
	dLat := lat2 - lat1
	dLon := (lon2 - lon1) * math.Cos((lat1+lat2)/2*math.Pi/180)
	b := math.Atan2(dLon, dLat) * 180 / math.Pi
	return math.Mod(b+360, 360)
}

func (s *ship) Step(now time.Time, dt time.Duration) {
	np := s.np
	if !s.init {
		s.init = true
		s.sea.tau, s.cur.tau = 3*time.Hour, 2*time.Hour
		for i := range s.offs {
			s.offs[i] = s.noise(5)
		}
		// 40 nm out of port 0 towards port 1, laden, at service speed
		f := 40 / distNM(shipPorts[0][0], shipPorts[0][1], shipPorts[1][0], shipPorts[1][1])
		s.lat = shipPorts[0][0] + f*(shipPorts[1][0]-shipPorts[0][0])
		s.lon = shipPorts[0][1] + f*(shipPorts[1][1]-shipPorts[0][1])
		s.dest, s.phase, s.cargo = 1, phaseSea, shipCargo
		s.rpm = serviceRPM
		s.stw = 15.5 * serviceRPM / np["rated_speed"] * 0.99
		s.jw, s.lo = 82, 45
		s.aeKW = 450
		for i := range s.exh {
			s.exh[i] = 330
		}
	}
	s.elapsed += dt
	sec := dt.Seconds()
	dest := shipPorts[s.dest]
	toGo := distNM(s.lat, s.lon, dest[0], dest[1])
	// phase transitions
	switch s.phase {
	case phaseSea:
		if toGo < 8 {
			s.phase = phaseManoeuvre
		}
	case phaseManoeuvre:
		// engine stopped within 2 nm; tugs take her alongside below 1 kn
		if toGo < 2 && s.stw < 1 {
			s.phase, s.left = phaseBerth, berthStay
		}
	case phaseBerth:
		s.left -= dt
		// loading at port 0, discharging at port 1, spread over the stay
		rate := shipCargo / (berthStay.Hours() * 0.8) * dt.Hours()
		if s.dest == 0 {
			s.cargo = math.Min(shipCargo, s.cargo+rate)
		} else {
			s.cargo = math.Max(0, s.cargo-rate)
		}
		if s.left <= 0 {
			s.dest = 1 - s.dest
			s.phase, s.left = phaseDepart, departTime
		}
	case phaseDepart:
		s.left -= dt
		if s.left <= 0 {
			s.phase = phaseSea
		}
	}
	// engine speed set point with the load-up limit
	set := 0.0
	switch s.phase {
	case phaseSea:
		set = serviceRPM
	case phaseManoeuvre:
		if toGo >= 2 {
			set = manRPM
		}
	case phaseDepart:
		set = manRPM
	}
	if set > 0 && s.rpm < 25 {
		s.rpm = 25 // started on air to the lowest steady speed
	}
	step := 6.0 / 60 * sec
	s.rpm += clamp(set-s.rpm, -3*step, step)
	if set == 0 && s.rpm < 25 {
		s.rpm = 0
	}
	rated := np["rated_speed"]
	x := s.rpm / rated
	// added resistance: weather (OU sea state, ~0-25 %), fouling, faults
	seaState := clamp(0.1+0.06*s.sea.step(s.rng, dt), 0, 0.25)
	fouling := 0.02 + 0.03*s.elapsed.Hours()/(30*24) + s.deg("fouling")
	a := seaState + fouling + s.deg("heavy_weather")
	ballast := 1.0
	if s.cargo < shipCargo/2 {
		ballast = 0.85 // lighter hull: less power for the same speed
	}
	power := 0.9 * np["rated_power"] * x * x * x * (1 + 0.5*a) * ballast
	stwTarget := 15.5 * x * (1 - 0.3*a)
	s.stw = lag(s.stw, stwTarget, dt, 8*time.Minute)
	current := 0.4 * s.cur.step(s.rng, dt)
	sog := math.Max(0, s.stw+current)
	if s.phase == phaseBerth {
		sog, s.stw = 0, 0
	}
	brg := bearing(s.lat, s.lon, dest[0], dest[1])
	// move along the bearing
	if sog > 0 && toGo > 0.01 {
		d := math.Min(sog*sec/3600, toGo) // nm
		s.lat += d * math.Cos(brg*math.Pi/180) / 60
		s.lon += d * math.Sin(brg*math.Pi/180) / 60 / math.Cos(s.lat*math.Pi/180)
	}
	// fuels: HFO at sea, MGO manoeuvring and at berth (emission control)
	meFuel, lcv := float64(fuelHFO), lcvHFO
	if s.phase != phaseSea {
		meFuel, lcv = fuelMGO, lcvMGO
	}
	inj := s.deg("injector_fault")
	xl := power / np["rated_power"]
	meKgH := 0.0
	if power > 0 {
		meKgH = ShipSFOC(np["rated_sfoc"], xl) * (1 + 0.05*inj) * ISOLCVRatio(lcv) * power / 1000
	}
	aeTarget, boiler := 450.0, 0.0
	switch s.phase {
	case phaseManoeuvre, phaseDepart:
		aeTarget, boiler = 700, 80
	case phaseBerth:
		aeTarget, boiler = 900, 150
	}
	s.aeKW = lag(s.aeKW, aeTarget, dt, 2*time.Minute)
	s.boilerKgH = lag(s.boilerKgH, boiler, dt, 5*time.Minute)
	aeKgH := s.aeKW * 215 / 1000 * ISOLCVRatio(lcv)
	// engine temperatures: controlled while running, preheated at rest
	jwT, loT := 60.0, 38.0
	if s.rpm > 0 {
		jwT, loT = 82+2*xl, 44+3*xl
	}
	s.jw = lag(s.jw, jwT, dt, 10*time.Minute)
	s.lo = lag(s.lo, loT, dt, 10*time.Minute)
	for i := range s.exh {
		t := 60.0 // after the valve at rest, warm engine room
		if s.rpm > 0 {
			t = 230 + 180*xl + s.offs[i]
			if i == 3 {
				t += 70 * inj
			}
		}
		s.exh[i] = lag(s.exh[i], t, dt, time.Minute)
	}
	depth := 15 + 55*smoothstep(0, 25, toGo) // shallow near the port approaches
	if s.phase == phaseBerth || s.phase == phaseDepart {
		depth = 15
	}
	draught := 7.2 + 5.6*s.cargo/shipCargo
	v := s.v
	v[0] = s.rpm
	if s.rpm > 0 {
		v[0] += s.noise(0.1)
	}
	v[1] = math.Max(0, power*(1+s.noise(0.004)))
	v[2] = math.Max(0, meKgH*(1+s.noise(0.004)))
	v[3] = math.Max(0, aeKgH+s.noise(1))
	v[4] = math.Max(0, s.boilerKgH+s.noise(0.5))
	v[5], v[6], v[7] = meFuel, meFuel, meFuel // one changeover for every consumer
	v[8] = math.Max(0, sog+s.noise(0.03))
	v[9] = s.stw + s.noise(0.03)
	hdg := math.Mod(brg+1.5*s.cur.x+s.noise(0.2)+360, 360)
	v[10] = math.Mod(brg+s.noise(0.5)+360, 360)
	v[11] = hdg
	v[12] = s.lat + s.noise(2e-6)
	v[13] = s.lon + s.noise(2e-6)
	v[14] = math.Max(draught+2, depth+s.noise(0.3))
	v[15] = draught
	v[16] = s.cargo
	for i := range s.exh {
		v[17+i] = s.exh[i] + s.noise(0.5)
	}
	scav := 0.0
	if s.rpm > 0 {
		scav = 360 * math.Pow(xl, 1.3)
	}
	v[23] = math.Max(0, scav+s.noise(0.5))
	v[24] = s.jw + s.noise(0.1)
	jwP, loP := 380.0, 240.0 // pumps run at rest too (preheating, priming)
	v[25] = jwP + s.noise(1)
	v[26] = s.lo + s.noise(0.1)
	v[27] = loP - 0.5*(s.lo-44) + s.noise(1)
}

// ISOLCVRatio is 42.7 MJ/kg over the fuel's LCV: how much more fuel mass
// than at ISO LCV the same energy takes.
func ISOLCVRatio(lcv float64) float64 { return 42.7 / lcv }

package model

import (
	"math"
	"time"
)

// Blast furnace: ironmaking at steady state with stove cycling.
//
// Three hot-blast stoves take turns on blast for 50 minutes each: hot blast
// temperature falls from ~1235 C to ~1180 C over a turn and jumps back at
// changeover. Blast volume is about 1.8 x working volume per minute; blast
// pressure sits ~150 kPa above top pressure. CO utilisation
// eta = CO2/(CO+CO2) wanders around 48.5 % (45-52 %); fuel rate (coke + nut
// coke + PCI) moves against it around 515 kg/tHM (480-540); production
// follows blast volume and fuel rate. Hot metal temperature follows hot blast
// temperature with hours of lag. Degradation "channeling" (level 0-1: gas
// short-circuits through the burden) lowers eta by up to 6 points, raises
// fuel rate and top gas temperature.
var furnaceDef = classDef{
	signals: []string{"hot_blast_temp", "blast_volume", "blast_pressure", "top_pressure", "top_gas_temp",
		"top_gas_co", "top_gas_co2", "hot_metal_temp", "coke_rate", "nut_coke_rate", "pci_rate", "hot_metal_rate"},
	nameplate: map[string]float64{
		"rated_hot_metal_rate": 250,  // t/h
		"working_volume":       2500, // m3
	},
	degrade: map[string]float64{"channeling": 1},
	build:   func(b *base) Model { return &furnace{base: b} },
}

type furnace struct {
	*base
	init    bool
	etaN    ou
	bvN     ou
	permN   ou
	heatN   ou
	pciN    ou
	hmt     float64
	topTemp float64
	elapsed time.Duration
}

func (f *furnace) Step(now time.Time, dt time.Duration) {
	np := f.np
	if !f.init {
		f.init = true
		f.etaN.tau = 2 * time.Hour
		f.bvN.tau = 10 * time.Minute
		f.permN.tau = 30 * time.Minute
		f.heatN.tau = 3 * time.Hour
		f.pciN.tau = time.Hour
		f.hmt = 1505
		f.topTemp = 150
	}
	f.elapsed += dt
	turn := 50 * time.Minute
	phase := float64(f.elapsed%turn) / float64(turn)
	hbt := 1235 - 55*phase + f.noise(1.5)
	ratedBV := 1.8 * np["working_volume"]
	bv := ratedBV * (1 + 0.015*f.bvN.step(f.rng, dt))
	top := 215 + 3*f.permN.x + f.noise(0.8)
	dp := 150 + 8*f.permN.step(f.rng, dt) + 0.01*(bv-ratedBV)
	ch := f.deg("channeling")
	eta := clamp(0.485+0.03*math.Tanh(0.4*f.etaN.step(f.rng, dt))-0.06*ch, 0.38, 0.52)
	fuel := 515 + 350*(0.485-eta) + 4*f.heatN.step(f.rng, dt)
	pci := 150 + 6*f.pciN.step(f.rng, dt)
	nut := 35.0
	coke := fuel - pci - nut
	rate := np["rated_hot_metal_rate"] * (bv / ratedBV) * math.Sqrt(515/fuel)
	f.hmt = lag(f.hmt, 1505+0.12*(hbt-1207)+2.5*f.heatN.x+0.08*(fuel-515), dt, 2*time.Hour)
	f.topTemp = lag(f.topTemp, 150+500*(0.485-eta)+60*ch+10*f.permN.x, dt, 20*time.Minute)
	const coco2 = 44.0 // CO + CO2 in top gas, vol %
	v := f.v
	v[0] = hbt
	v[1] = bv
	v[2] = top + dp
	v[3] = top
	v[4] = clamp(f.topTemp+f.noise(1), 60, 380)
	v[5] = coco2*(1-eta) + f.noise(0.05)
	v[6] = coco2*eta + f.noise(0.05)
	v[7] = clamp(f.hmt+f.noise(1), 1450, 1580)
	v[8] = coke
	v[9] = nut
	v[10] = pci
	v[11] = rate + f.noise(0.5)
}

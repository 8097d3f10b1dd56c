package kpi

import (
	"fmt"
	"math"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
)

// The ship KPIs: main engine SFOC, fuel per nautical mile, CO2 from fuel
// (IMO carbon factors), EEOI (MEPC.1/Circ.684) and the attained CII
// (MEPC.352(78)) of the current voyage leg. Formulas, the leg and the
// simplifications are documented in docs/rules.md.

// ISOLCV is the lower calorific value, MJ/kg, that engine makers' shop-test
// SFOC refers to (ISO 3046-1 / ISO 15550 reference fuel, 42 700 kJ/kg).
const ISOLCV = 42.7

// SFOC is the specific fuel oil consumption in g/kWh of a main engine
// burning fuelKgH kg/h at shaftKW kW.
func SFOC(fuelKgH, shaftKW float64) float64 { return fuelKgH * 1000 / shaftKW }

// SFOCAtISO converts a measured SFOC to the ISO reference fuel: sfoc x
// LCV / 42.7 MJ/kg, so a value measured on HFO compares with the shop test.
func SFOCAtISO(sfoc, lcv float64) float64 { return sfoc * lcv / ISOLCV }

// SFOCPartLoad is the allowance, as a fraction of the shop-test SFOC, for
// running at mean load x (fraction of MCR) away from the engine's best
// point: 0.2 (x - 0.8)^2, after the shape of published two-stroke SFOC
// curves (lowest at 75-85 % load, some 5-8 % higher at 25 %). 0 when x is
// not known.
func SFOCPartLoad(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 {
		return 0
	}
	return 0.2 * (x - 0.8) * (x - 0.8)
}

// CO2 is the mass of CO2 emitted from burning fuel of mass fuel with carbon
// factor cf (t CO2/t fuel), in the unit of fuel: FC x C_F (MEPC.1/Circ.684
// and MEPC.352(78) 2.1).
func CO2(fuel, cf float64) float64 { return fuel * cf }

// EEOI is the Energy Efficiency Operational Indicator of MEPC.1/Circ.684
// (2009), section 3: sum_j FC_j x C_Fj / (m_cargo x D), here in g CO2 per
// tonne-nautical mile from co2T tonnes CO2, cargo tonnes and distNM nautical
// miles (for several voyages: sums of CO2 over sums of cargo x distance).
func EEOI(co2T, cargoTimesNM float64) float64 { return co2T * 1e6 / cargoTimesNM }

// AttainedCII is the attained annual operational carbon intensity of
// MEPC.352(78) 2.1-2.3: M / (C x D_t) in g CO2 per capacity tonne-nautical
// mile, from co2T tonnes CO2, capacity (DWT, t) and distNM nautical miles.
func AttainedCII(co2T, capacity, distNM float64) float64 { return co2T * 1e6 / (capacity * distNM) }

// CII ship types of the nameplate rating ship_type.
const (
	ShipBulkCarrier = 1
	ShipTanker      = 2
	ShipContainer   = 3
)

// ciiRef holds the reference line CII_ref = a x Capacity^-c of MEPC.353(78)
// Table 1 and the rating boundaries exp(d1..d4) of MEPC.354(78) Table 1 per
// ship type. capCap is the capacity above which the line uses capCap (bulk
// carriers of 279 000 DWT and above).
var ciiRef = map[int]struct {
	a, c, capCap float64
	d            [4]float64
}{
	ShipBulkCarrier: {a: 4745, c: 0.622, capCap: 279000, d: [4]float64{0.86, 0.94, 1.06, 1.18}},
	ShipTanker:      {a: 5247, c: 0.610, d: [4]float64{0.82, 0.93, 1.08, 1.28}},
	ShipContainer:   {a: 1984, c: 0.489, d: [4]float64{0.83, 0.94, 1.07, 1.19}},
}

// ciiZ is the reduction factor Z (%) of MEPC.338(76) for the required CII,
// relative to the 2019 reference line; later years keep the 2026 value
// until the IMO sets them.
var ciiZ = map[int]float64{2023: 5, 2024: 7, 2025: 9, 2026: 11}

// RequiredCII is the required annual operational CII of MEPC.353(78):
// (1 - Z/100) x a x Capacity^-c, g CO2/(t nm), for a ship type (1 bulk
// carrier, 2 tanker, 3 container ship), its DWT and the year. It also
// returns the rating boundaries (superior, lower, upper, inferior) as
// multiples of the required value, MEPC.354(78). ok is false for an
// unknown type or a year before 2023.
func RequiredCII(shipType int, dwt float64, year int) (req float64, bounds [4]float64, ok bool) {
	r, ok := ciiRef[shipType]
	if !ok || dwt <= 0 || year < 2023 {
		return 0, bounds, false
	}
	capacity := dwt
	if r.capCap > 0 && dwt >= r.capCap {
		capacity = r.capCap
	}
	z, ok := ciiZ[year]
	if !ok {
		z = ciiZ[2026]
	}
	return (1 - z/100) * r.a * math.Pow(capacity, -r.c), r.d, true
}

// CIIRating returns the rating letter A..E of an attained CII against the
// required value and the boundaries of RequiredCII (MEPC.354(78) 3).
func CIIRating(attained, required float64, bounds [4]float64) string {
	x := attained / required
	for i, b := range bounds {
		if x < b {
			return string(rune('A' + i))
		}
	}
	return "E"
}

// Ship leg detection: a leg starts when the ship gets under way (SOG at
// least legDepartKn) after at least legStaySeconds below legStopKn (a stay
// at berth or anchor), and ends at the next such departure, so it holds the
// passage, the manoeuvring and the following port stay as a voyage does in
// MEPC.1/Circ.684. Before the first departure the leg runs from the first
// data.
const (
	legStopKn      = 1.0
	legDepartKn    = 3.0
	legStaySeconds = 1800
	atSeaKn        = 3.0  // fuel per mile counts samples at or above this SOG
	ciiMinLegNM    = 20.0 // the leg's CII is judged from this distance
)

// ship accumulator slots: 0-7 per window, 8-15 per leg (kept across windows).
const (
	sMEFuel      = iota // ME fuel x dt while loaded, kg/h s
	sMEPower            // shaft power x dt while loaded, kW s
	sMEFuelLCV          // ME fuel x LCV x dt while loaded
	sCO2                // CO2 x dt, kg/h s
	sSeaFuel            // all fuel x dt at sea, kg/h s
	sSeaDist            // SOG x dt at sea, kn s
	sFuelType           // seconds with a fuel flow but no known ship fuel type
	sMETime             // seconds while loaded (SFOC samples)
	sLegCO2             // CO2 x dt over the leg, kg/h s
	sLegDist            // SOG x dt over the leg, kn s
	sLegCargoNM         // cargo x SOG x dt over the leg, t kn s
	sLegInPort          // 1 after a stay long enough to end the leg at departure
	sLegStopped         // seconds below legStopKn in a row
	sLegUnknownF        // seconds of the leg with a fuel flow of unknown type
)

var shipClass = &classDef{
	signals: []string{"me_fuel_flow", "shaft_power", "ae_fuel_flow", "boiler_fuel_flow", "me_fuel_type", "ae_fuel_type",
		"boiler_fuel_type", "sog", "cargo"},
	keep: sLegCO2,
	add: func(s *sample, a *acc, dt float64, np map[string]float64) {
		pw, okP := s.get(1)
		sog, okS := s.get(7)
		// leg boundaries first: a departure starts a new leg with this sample
		if okS {
			switch {
			case sog < legStopKn:
				a[sLegStopped] += dt
				if a[sLegStopped] >= legStaySeconds {
					a[sLegInPort] = 1
				}
			case sog >= legDepartKn && a[sLegInPort] == 1:
				a[sLegCO2], a[sLegDist], a[sLegCargoNM], a[sLegInPort], a[sLegStopped], a[sLegUnknownF] = 0, 0, 0, 0, 0, 0
			default:
				a[sLegStopped] = 0
			}
		}
		cat := catalog.Default()
		var co2, fuel float64 // kg/h
		for i, ti := range [3][2]int{{0, 4}, {2, 5}, {3, 6}} {
			ff, ok := s.get(ti[0])
			if !ok || ff <= 0 {
				continue
			}
			fuel += ff
			code, okT := s.get(ti[1])
			fu, okF := cat.Fuel(code)
			if !okT || !okF || !fu.Has(catalog.UseShip) {
				a[sFuelType] += dt
				a[sLegUnknownF] += dt
				continue
			}
			co2 += CO2(ff, fu.CarbonFactor)
			if i == 0 && okP && pw > max(0.25*np["rated_power"], 0.1) {
				a[sMEFuel] += ff * dt
				a[sMEPower] += pw * dt
				a[sMEFuelLCV] += ff * fu.LCV * dt
				a[sMETime] += dt
			}
		}
		a[sCO2] += co2 * dt
		a[sLegCO2] += co2 * dt
		if okS {
			a[sLegDist] += sog * dt
			if c, ok := s.get(8); ok {
				a[sLegCargoNM] += c * sog * dt
			}
			if sog >= atSeaKn {
				a[sSeaFuel] += fuel * dt
				a[sSeaDist] += sog * dt
			}
		}
	},
	finish: func(f *finisher, a *acc) {
		// SFOC on the fuel burnt, judged at ISO LCV against the shop test
		if a[sMEPower] > 0 {
			sfoc := a[sMEFuel] * 1000 / a[sMEPower]
			lcv := a[sMEFuelLCV] / a[sMEFuel]
			lim, ref := 195.0, (*float64)(nil) // top of the slow-speed two-stroke range at ISO LCV
			if rs, ok := f.np("rated_sfoc"); ok {
				x := a[sMEPower] / a[sMETime] / f.a.np["rated_power"]
				lim, ref = rs*(1.05+SFOCPartLoad(x)), p(rs*ISOLCV/lcv)
			}
			limMeas := lim * ISOLCV / lcv
			f.add("sfoc", sfoc, "g/(kW.h)", ref, nil, p(limMeas), func() string {
				return fmt.Sprintf("%s main engine burns %s g/kWh (%s g/kWh at ISO LCV %s MJ/kg), above %s", f.who(), fv(sfoc),
					fv(SFOCAtISO(sfoc, lcv)), fv(ISOLCV), fv(lim))
			})
		} else {
			f.na("sfoc", "g/(kW.h)")
		}
		if a[sSeaDist] > 0 {
			f.add("fuel_per_nm", a[sSeaFuel]/a[sSeaDist], "kg/[nmi_i]", nil, nil, nil, nil)
		} else {
			f.na("fuel_per_nm", "kg/[nmi_i]")
		}
		if a[sFuelType] == 0 {
			f.add("co2", a[sCO2]/3600/1000, "t", nil, nil, nil, nil) // kg/h s -> t
		} else {
			f.na("co2", "t")
		}
		legCO2T := a[sLegCO2] / 3600 / 1000
		legNM := a[sLegDist] / 3600
		f.add("leg_distance", legNM, "[nmi_i]", nil, nil, nil, nil)
		if a[sLegCargoNM] > 0 && a[sLegUnknownF] == 0 {
			f.add("eeoi", EEOI(legCO2T, a[sLegCargoNM]/3600), "g/(t.[nmi_i])", nil, nil, nil, nil)
		} else {
			f.na("eeoi", "g/(t.[nmi_i])")
		}
		capacity, okC := f.np("capacity")
		if !okC || legNM < ciiMinLegNM || a[sLegUnknownF] > 0 {
			f.na("cii", "g/(t.[nmi_i])")
			return
		}
		cii := AttainedCII(legCO2T, capacity, legNM)
		st, _ := f.np("ship_type")
		year := time.UnixMilli(f.a.start).UTC().Year()
		req, bounds, okR := RequiredCII(int(st), capacity, year)
		if !okR {
			f.add("cii", cii, "g/(t.[nmi_i])", nil, nil, nil, nil)
			return
		}
		f.add("cii", cii, "g/(t.[nmi_i])", p(req), nil, p(req*bounds[2]), func() string {
			return fmt.Sprintf("%s leg so far rates %s: attained CII %s g/(t nm) against the required %s for %d (%s nm, %s t CO2)",
				f.who(), CIIRating(cii, req, bounds), fv(cii), fv(req), year, fv(legNM), fv(legCO2T))
		})
		f.markInfo("cii") // one leg is not the regulatory annual value
	},
}

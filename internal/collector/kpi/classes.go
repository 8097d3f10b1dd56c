package kpi

import (
	"fmt"
	"math"

	"github.com/smelterio/smelter/internal/catalog"
)

// IEC 60034-30-1 efficiency limits, 4-pole 50 Hz, 0.75-200 kW:
// eta = A x^3 + B x^2 + C x + D with x = log10(P/kW); constant from 200 to 1000 kW.
var ieCoeff = map[int][4]float64{
	3: {0.0773, -1.8951, 9.2984, 83.7025},
	4: {0.2412, -2.3608, 8.446, 86.8321},
}

var ieFlat = map[int]float64{3: 96.0, 4: 96.7} // 200-1000 kW, 4-pole

// IEMinEfficiency returns the minimum efficiency in % of efficiency class ie
// (3 or 4) for a 4-pole 50 Hz motor of kw rated output, per IEC 60034-30-1.
// ok is false outside 0.75-1000 kW or for another class.
func IEMinEfficiency(ie int, kw float64) (float64, bool) {
	c, ok := ieCoeff[ie]
	if !ok || kw < 0.75 || kw > 1000 {
		return 0, false
	}
	if kw > 200 {
		return ieFlat[ie], true
	}
	x := math.Log10(kw)
	return math.Round((c[0]*x*x*x+c[1]*x*x+c[2]*x+c[3])*10) / 10, true
}

// IEClass returns the highest class (4, 3) whose minimum eta (%) meets, or
// 2 when it is below IE3. ok is false when kw is out of the formula's range.
func IEClass(eta, kw float64) (int, bool) {
	for _, c := range []int{4, 3} {
		m, ok := IEMinEfficiency(c, kw)
		if !ok {
			return 0, false
		}
		if eta >= m {
			return c, true
		}
	}
	return 2, true
}

// StackLoss is the Siegert flue gas loss in % of fuel input:
// (t_flue - t_air) (A2 / (21 - O2) + B).
func StackLoss(tFlue, tAir, o2, a2, b float64) float64 { return (tFlue - tAir) * (a2/(21-o2) + b) }

// ExcessAir is the air ratio lambda ~ 21 / (21 - O2).
func ExcessAir(o2 float64) float64 { return 21 / (21 - o2) }

// SteamEnthalpy approximates the specific enthalpy (kJ/kg) of steam at t Cel
// as 2501 + 1.86 t (ideal-gas vapour from the triple point; within about 3 %
// for low and medium pressure superheated steam).
func SteamEnthalpy(t float64) float64 { return 2501 + 1.86*t }

// WaterEnthalpy approximates the enthalpy (kJ/kg) of liquid water at t Cel.
func WaterEnthalpy(t float64) float64 { return 4.19 * t }

// DirectEfficiency is useful heat / fuel heat: steam (t/h) x (h_s - h_fw)
// (kJ/kg) over fuel (m3/h) x net calorific value (MJ/m3).
func DirectEfficiency(steamTH, hSteam, hFeed, fuelM3H, ncvMJ float64) float64 {
	return steamTH * 1000 * (hSteam - hFeed) / (fuelM3H * ncvMJ * 1000)
}

// COUtilisation is eta_CO = CO2 / (CO + CO2) of the top gas.
func COUtilisation(co, co2 float64) float64 { return co2 / (co + co2) }

// BSFC is brake specific fuel consumption in g/kWh from fuel kg/h and kW.
func BSFC(fuelKgH, kw float64) float64 { return fuelKgH * 1000 / kw }

// AirDensity is rho = p / (R T) in kg/m3 for p in kPa and t in Cel.
func AirDensity(pKPa, tCel float64) float64 { return pKPa * 1000 / (287.05 * (tCel + 273.15)) }

// Rho0 is the reference density of IEC 61400-12-1 power curves.
const Rho0 = 1.225

// NormalisedWind is v_n = v (rho / rho0)^(1/3) (IEC 61400-12-1).
func NormalisedWind(v, rho float64) float64 { return v * math.Cbrt(rho/Rho0) }

// ReferencePower is a generic power curve: zero below cut-in and from
// cut-out, rated from rated speed, and (v^3 - vci^3)/(vr^3 - vci^3) between.
func ReferencePower(v, rated, vci, vr, vco float64) float64 {
	switch {
	case v < vci || v >= vco:
		return 0
	case v >= vr:
		return rated
	}
	return rated * (v*v*v - vci*vci*vci) / (vr*vr*vr - vci*vci*vci)
}

// ExpectedPVPower is P_rated x G / 1000 W/m2 x (1 + gamma (T - 25)) in the
// unit of rated (gamma per K, e.g. -0.0035).
func ExpectedPVPower(rated, g, tMod, gamma float64) float64 {
	return rated * g / 1000 * (1 + gamma*(tMod-25))
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

var classes = map[string]*classDef{
	"ship": shipClass,
	"air_compressor": {
		signals: []string{"input_power", "free_air_delivery", "load_state"},
		add: func(s *sample, a *acc, dt float64, _ map[string]float64) {
			pw, okP := s.get(0)
			fad, okF := s.get(1)
			st, okS := s.get(2)
			if okP && okF {
				a[0] += pw * dt
				a[1] += fad * dt
				// loaded operation only: the package specific power that the
				// rated value (ISO 1217 Annex C, CAGI data sheet) describes
				if okS && st >= 2 {
					a[4] += pw * dt
					a[5] += fad * dt
				}
			}
			if okS && st >= 1 {
				a[3] += dt
				if st >= 2 {
					a[2] += dt
				}
			}
		},
		finish: func(f *finisher, a *acc) {
			rated, ok := f.np("rated_specific_power")
			if !ok {
				rp, ok1 := f.np("rated_power")
				rf, ok2 := f.np("rated_fad")
				if ok1 && ok2 {
					rated, ok = rp/rf, true
				}
			}
			// specific_power compares like with like: power and delivery
			// while loaded against the rated full-load value. A load/unload
			// unit also draws 25-35 % of its loaded power while unloaded;
			// that part-load cost is real but belongs to loaded_ratio and
			// system_specific_power (all running energy over all air), not
			// to a fault limit, or every healthy unit at part load warns.
			// Without load_state, every sample counts as loaded.
			sp := ratio(a[4], a[5])
			if a[5] == 0 && a[3] == 0 {
				sp = ratio(a[0], a[1])
			}
			sys := ratio(a[0], a[1])
			if ok {
				f.add("specific_power", sp, "kW/(m3/min)", p(rated), nil, p(rated*1.15), func() string {
					return fmt.Sprintf("%s needs %s kW per m3/min, %s above its rated %s", f.who(), fv(sp), pct(sp/rated-1), fv(rated))
				})
			} else {
				f.add("specific_power", sp, "kW/(m3/min)", nil, nil, nil, nil)
			}
			f.add("system_specific_power", sys, "kW/(m3/min)", nil, nil, nil, nil)
			f.markInfo("system_specific_power")
			lr := ratio(a[2], a[3])
			f.add("loaded_ratio", lr, "1", nil, p(0.5), nil, func() string {
				return fmt.Sprintf("%s runs loaded only %s of its running time: oversized or poorly sequenced", f.who(), pct(lr))
			})
			f.markInfo("loaded_ratio")
		},
	},
	"motor": {
		signals: []string{"power", "current_a", "current_b", "current_c"},
		add: func(s *sample, a *acc, dt float64, np map[string]float64) {
			pw, ok := s.get(0)
			if ok && pw > max(0.05*np["rated_power"], 0.1) {
				a[0] += pw * dt
				a[1] += dt
			}
			ia, oa := s.get(1)
			ib, ob := s.get(2)
			ic, oc := s.get(3)
			if oa && ob && oc {
				m := (ia + ib + ic) / 3
				if m > 0.5 {
					d := max(math.Abs(ia-m), math.Abs(ib-m), math.Abs(ic-m))
					a[2] += d / m * dt
					a[3] += dt
				}
			}
		},
		finish: func(f *finisher, a *acc) {
			rated, okR := f.np("rated_power")
			etaR, okE := f.np("rated_efficiency")
			if okE && etaR > 1 {
				etaR /= 100
			}
			poles, okP := f.np("poles")
			ie3, okIE := IEMinEfficiency(3, rated)
			if okP && poles != 4 {
				okIE = false
			}
			if !okE && okIE {
				etaR = ie3 / 100
			}
			if okR && (okE || okIE) {
				lf := ratio(a[0], a[1]) * etaR / rated
				f.add("load_factor", lf, "1", nil, p(0.4), nil, func() string {
					return fmt.Sprintf("%s runs at %s load: oversized, its efficiency and power factor drop", f.who(), pct(lf))
				})
				f.markInfo("load_factor")
			} else {
				f.na("load_factor", "1")
			}
			if okR && okE && okIE {
				cls, _ := IEClass(etaR*100, rated)
				f.add("ie_class", float64(cls), "", p(3), p(3), nil, func() string {
					return fmt.Sprintf("%s rated efficiency %s %% is below the IE3 minimum %s %% for %s kW (IEC 60034-30-1; GB 18613-2020 grade 3)",
						f.who(), fv(etaR*100), fv(ie3), fv(rated))
				})
			} else {
				f.na("ie_class", "")
			}
			ub := ratio(a[2], a[3])
			f.add("current_unbalance", ub, "1", nil, nil, p(0.1), func() string {
				return fmt.Sprintf("%s phase currents are %s unbalanced", f.who(), pct(ub))
			})
		},
	},
	"boiler": {
		signals: []string{"steam_flow", "steam_temp", "feedwater_temp", "fuel_flow", "flue_gas_temp", "flue_o2", "ambient_temp"},
		add: func(s *sample, a *acc, dt float64, np map[string]float64) {
			sf, o1 := s.get(0)
			st, o2 := s.get(1)
			fw, o3 := s.get(2)
			ff, o4 := s.get(3)
			if o1 && o2 && o3 && o4 && ff > 0 {
				hs := SteamEnthalpy(st)
				if h, ok := np["steam_enthalpy"]; ok && h > 0 {
					hs = h
				}
				a[0] += sf * 1000 / 3600 * (hs - WaterEnthalpy(fw)) * dt // kJ
				a[1] += ff / 3600 * np["fuel_ncv"] * 1000 * dt           // kJ
			}
			tf, o5 := s.get(4)
			o2v, o6 := s.get(5)
			ta, o7 := s.get(6)
			if !o7 {
				ta = 20
			}
			if o5 && o6 && o4 && ff > 0 {
				a[2] += (tf - ta) * dt
				a[3] += o2v * dt
				a[4] += dt
			}
		},
		finish: func(f *finisher, a *acc) {
			if _, ok := f.np("fuel_ncv"); ok && a[1] > 0 {
				eta := a[0] / a[1]
				f.add("efficiency_direct", eta, "1", nil, p(0.85), nil, func() string {
					return fmt.Sprintf("%s turns only %s of its fuel into steam (direct method)", f.who(), pct(eta))
				})
			} else {
				f.na("efficiency_direct", "1")
			}
			if a[4] == 0 {
				f.na("stack_loss", "%")
				f.na("excess_air", "1")
				return
			}
			dT, o2 := a[2]/a[4], a[3]/a[4]
			// fuel_type codes and their coefficients are defined once, in the catalog
			fuel, ok := catalog.Default().Fuel(f.a.np["fuel_type"])
			ok = ok && fuel.Has(catalog.UseBoiler)
			if ok && o2 < 21 {
				q := StackLoss(dT, 0, o2, fuel.SiegertA2, fuel.SiegertB)
				f.add("stack_loss", q, "%", nil, nil, p(8), func() string {
					return fmt.Sprintf("%s loses %s %% of its fuel heat up the stack (flue %s K above air, O2 %s %%): fouling or excess air",
						f.who(), fv(q), fv(dT), fv(o2))
				})
				f.add("efficiency_indirect", 100-q, "%", nil, nil, nil, nil)
			} else {
				f.na("stack_loss", "%")
			}
			lim := 1.3 // natural gas when the fuel is unknown
			if ok {
				lim = fuel.ExcessAirMax
			}
			ea := ExcessAir(o2)
			f.add("excess_air", ea, "1", nil, nil, p(lim), func() string {
				return fmt.Sprintf("%s burns with air ratio %s (O2 %s %%), above %s", f.who(), fv(ea), fv(o2), fv(lim))
			})
		},
	},
	"blast_furnace": {
		signals: []string{"coke_rate", "nut_coke_rate", "pci_rate", "hot_metal_rate", "top_gas_co", "top_gas_co2"},
		add: func(s *sample, a *acc, dt float64, _ map[string]float64) {
			coke, ok := s.get(0)
			if ok {
				nut, _ := s.get(1)
				pci, _ := s.get(2)
				w := 1.0
				if hm, ok := s.get(3); ok && hm > 0 {
					w = hm
				}
				if ok2 := s.ok[1]; !ok2 {
					nut = 0
				}
				if ok3 := s.ok[2]; !ok3 {
					pci = 0
				}
				a[0] += (coke + nut + pci) * w * dt
				a[1] += w * dt
			}
			co, o1 := s.get(4)
			co2, o2 := s.get(5)
			if o1 && o2 && co+co2 > 0 {
				a[2] += COUtilisation(co, co2) * dt
				a[3] += dt
			}
		},
		finish: func(f *finisher, a *acc) {
			fr := ratio(a[0], a[1])
			f.add("fuel_rate", fr, "kg/t", nil, nil, p(540), func() string {
				return fmt.Sprintf("%s needs %s kg of coke and coal per tonne of hot metal, above 540", f.who(), fv(fr))
			})
			eta := ratio(a[2], a[3])
			f.add("co_utilisation", eta, "1", nil, p(0.45), nil, func() string {
				return fmt.Sprintf("%s CO utilisation %s is below 45 %%: poor gas-solid contact", f.who(), pct(eta))
			})
		},
	},
	"diesel_engine": {
		signals: []string{"fuel_rate", "power"},
		add: func(s *sample, a *acc, dt float64, np map[string]float64) {
			fr, o1 := s.get(0)
			pw, o2 := s.get(1)
			if o1 && o2 && pw > max(0.25*np["rated_power"], 0.1) {
				a[0] += fr * dt
				a[1] += pw * dt
			}
		},
		finish: func(f *finisher, a *acc) {
			b := ratio(a[0]*1000, a[1])
			lim, kind := 240.0, "high-speed"
			if rs, ok := f.np("rated_speed"); ok && rs < 1000 {
				lim, kind = 210, "medium-speed"
			}
			var ref *float64
			if rb, ok := f.np("rated_bsfc"); ok {
				lim, ref, kind = rb*1.1, p(rb), "rated"
			}
			f.add("bsfc", b, "g/kW.h", ref, nil, p(lim), func() string {
				return fmt.Sprintf("%s burns %s g/kWh, above the %s g/kWh limit for a %s engine", f.who(), fv(b), fv(lim), kind)
			})
		},
	},
	"wind_turbine": {
		signals: []string{"wind_speed", "power", "ambient_temp", "air_pressure"},
		add: func(s *sample, a *acc, dt float64, np map[string]float64) {
			v, o1 := s.get(0)
			pw, o2 := s.get(1)
			rated := np["rated_power"]
			if !o1 || !o2 || rated <= 0 {
				return
			}
			rho := Rho0
			if t, ok := s.get(2); ok {
				if pr, ok := s.get(3); ok {
					rho = AirDensity(pr, t)
				}
			}
			vci, vr, vco := np["cut_in_speed"], np["rated_wind_speed"], np["cut_out_speed"]
			if vci <= 0 {
				vci = 3
			}
			if vr <= vci {
				vr = 12
			}
			if vco <= vr {
				vco = 25
			}
			vn := NormalisedWind(v, rho)
			exp := ReferencePower(vn, rated, vci, vr, vco)
			if exp > 0 {
				a[0] += pw * dt
				a[1] += exp * dt
			}
		},
		finish: func(f *finisher, a *acc) {
			pci := ratio(a[0], a[1])
			f.add("power_curve_index", pci, "1", p(1), p(0.95), nil, func() string {
				return fmt.Sprintf("%s produced %s of the energy its power curve promises at the measured (density-normalised) wind", f.who(), pct(pci))
			})
		},
	},
	"pv_string": {
		signals: []string{"ac_power", "irradiance_poa", "module_temp"},
		add: func(s *sample, a *acc, dt float64, np map[string]float64) {
			pw, o1 := s.get(0)
			g, o2 := s.get(1)
			rated := np["rated_power"]
			if !o1 || !o2 || g <= 50 || rated <= 0 {
				return
			}
			gamma, ok := np["gamma"]
			if !ok {
				gamma = -0.0035
			} else if math.Abs(gamma) > 0.05 {
				gamma /= 100 // given in %/K
			}
			tm, ok := s.get(2)
			if !ok {
				tm = 25
			}
			a[0] += pw * dt
			a[1] += rated * g / 1000 * dt
			a[2] += ExpectedPVPower(rated, g, tm, gamma) * dt
			a[3] += g * dt
		},
		finish: func(f *finisher, a *acc) {
			h := a[3] / 3.6e6 // kWh/m2
			if h < 0.02 || a[1] == 0 {
				f.na("performance_ratio", "1")
				f.na("performance_ratio_temp", "1")
				return
			}
			f.add("performance_ratio", a[0]/a[1], "1", nil, nil, nil, nil)
			pr := a[0] / a[2]
			f.add("performance_ratio_temp", pr, "1", nil, p(0.75), nil, func() string {
				return fmt.Sprintf("%s performance ratio %s (temperature corrected) is below 0.75: soiling, shading or a failed module", f.who(), fv(pr))
			})
		},
	},
	"cnc_machine": {
		signals: []string{"program_state", "spindle_speed", "part_count"},
		add: func(s *sample, a *acc, dt float64, _ map[string]float64) {
			st, o1 := s.get(0)
			if !o1 {
				return
			}
			a[0] += dt
			if st == 2 {
				a[1] += dt
				if sp, ok := s.get(1); ok && sp > 0 {
					a[2] += dt
				}
			}
			if pc, ok := s.get(2); ok {
				if a[5] == 0 {
					a[3], a[5] = pc, 1
				}
				a[4] = pc
			}
		},
		finish: func(f *finisher, a *acc) {
			u := ratio(a[2], a[0])
			f.add("spindle_utilisation", u, "1", nil, p(0.3), nil, func() string {
				return fmt.Sprintf("%s spindle turned in a program only %s of the time", f.who(), pct(u))
			})
			f.markInfo("spindle_utilisation")
			ict, ok := f.np("ideal_cycle_time")
			if !ok || a[1] == 0 || a[5] == 0 {
				f.na("oee", "1")
				return
			}
			avail := a[1] / a[0]
			perf := min(ict*(a[4]-a[3])/a[1], 1)
			f.add("oee", avail*perf, "1", nil, nil, nil, nil)
		},
	},
	"engineering_machine": {
		signals: []string{"engine_hours", "idle_hours", "fuel_used"},
		add: func(s *sample, a *acc, _ float64, _ map[string]float64) {
			for i := 0; i < 3; i++ {
				v, ok := s.get(i)
				if !ok {
					continue
				}
				if a[6+i] == 0 {
					a[i], a[6+i] = v, 1
				}
				a[3+i] = v
			}
		},
		finish: func(f *finisher, a *acc) {
			eh := a[3] - a[0]
			if a[6] == 0 || eh <= 0 {
				f.na("idle_ratio", "1")
				f.na("fuel_per_hour", "L/h")
				return
			}
			ir := (a[4] - a[1]) / eh
			f.add("idle_ratio", ir, "1", nil, nil, p(0.35), func() string {
				return fmt.Sprintf("%s idled %s of its engine hours: fuel wasted", f.who(), pct(ir))
			})
			f.add("fuel_per_hour", (a[5]-a[2])/eh, "L/h", nil, nil, nil, nil)
		},
	},
}

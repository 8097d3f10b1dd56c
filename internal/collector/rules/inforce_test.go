package rules

import (
	"testing"

	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// InForce recognises the birth in force (a copy of it, as a redelivery
// decodes it), also in an engine restored from the checkpoint in either
// form, and nothing that differs from it in what a birth sets.
func TestInForce(t *testing.T) {
	lim := func(v float64) *float64 { return &v }
	birth := func() *telemetry.Birth {
		b := compressorBirth(sec(0), "discharge_temp", "load_state")
		b.Signals[0].Min, b.Signals[0].Max, b.Signals[0].Unit = lim(-20), lim(120), "Cel"
		b.Signals[1].Enum = []string{"off", "idle", "loaded"}
		b.Nameplate = map[string]float64{"rated_power": 75, "rated_pressure": 0.8}
		return b
	}
	h := newHarness(t, true, "")
	if h.e.InForce(birth()) {
		t.Fatal("in force before any birth")
	}
	h.e.Birth(birth(), 0, nil)
	for s := range 3 {
		h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s), "load_state", 2, "dew_point", 3.0)
	}
	st, _ := h.e.Snapshot("site1", "ac-1")
	bin, _ := h.e.AppendBinary(nil, "site1", "ac-1")
	fromBin := ReadBinary(statebin.NewReader(bin))
	restored := map[string]*Engine{"live": h.e}
	for name, rec := range map[string]*AssetState{"snapshot": &st, "binary": &fromBin} {
		r := newHarness(t, true, "")
		r.e.RestoreAsset(rec)
		restored[name] = r.e
	}
	changes := map[string]func(b *telemetry.Birth){
		"nameplate value":  func(b *telemetry.Birth) { b.Nameplate["rated_power"] = 90 },
		"nameplate rating": func(b *telemetry.Birth) { b.Nameplate["rated_flow"] = 12 },
		"no nameplate":     func(b *telemetry.Birth) { b.Nameplate = nil },
		"signal max":       func(b *telemetry.Birth) { b.Signals[0].Max = lim(110) },
		"no signal min":    func(b *telemetry.Birth) { b.Signals[0].Min = nil },
		"unit":             func(b *telemetry.Birth) { b.Signals[0].Unit = "K" },
		"interval":         func(b *telemetry.Birth) { b.Signals[1].IntervalMS = 2000 },
		"labels":           func(b *telemetry.Birth) { b.Signals[1].Enum = []string{"off", "on"} },
		"write limits":     func(b *telemetry.Birth) { b.Signals[0].Write = &telemetry.WriteLimits{Max: lim(100)} },
		"signal added":     func(b *telemetry.Birth) { b.Signals = append(b.Signals, telemetry.SignalInfo{Signal: "dew_point"}) },
		"signal removed":   func(b *telemetry.Birth) { b.Signals = b.Signals[:1] },
		"signal replaced":  func(b *telemetry.Birth) { b.Signals[1].Signal = "dew_point" },
		"no signal list":   func(b *telemetry.Birth) { b.Signals = nil },
		"path":             func(b *telemetry.Birth) { b.Asset.Path = []string{"acme", "site1", "hall2"} },
	}
	for name, e := range restored {
		if !e.InForce(birth()) {
			t.Errorf("%s: the birth in force not recognised", name)
		}
		for what, change := range changes {
			b := birth()
			change(b)
			if e.InForce(b) {
				t.Errorf("%s: a birth with another %s taken for the one in force", name, what)
			}
		}
	}
}

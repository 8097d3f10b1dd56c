package rules

import (
	"slices"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// compressorBirth is a birth of ac-1 listing sigs, each at a 1 s interval.
func compressorBirth(ts int64, sigs ...string) *telemetry.Birth {
	b := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw", TSGW: ts,
		Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}}}
	for _, s := range sigs {
		b.Signals = append(b.Signals, telemetry.SignalInfo{Signal: s, IntervalMS: 1000})
	}
	return b
}

// temp is a discharge temperature that moves (a constant one is stuck).
func temp(s int) float64 { return 80 + float64(s%5)/2 }

func viewSignals(v AssetView) []string {
	var out []string
	for _, s := range v.Signals {
		out = append(out, s.Signal)
	}
	slices.Sort(out)
	return out
}

// A birth that no longer lists a signal (a point removed from the gateway's
// configuration) drops it: its active alert is cleared once with a message
// naming the removal, it never turns stale, the view no longer lists it,
// and a checkpoint taken after the birth restores without it.
func TestBirthDropsRemovedSignal(t *testing.T) {
	h := newHarness(t, true, "")
	h.e.Birth(compressorBirth(sec(0), "discharge_temp", "dew_point", "load_state"), 0, nil)
	for s := range 3 {
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s), "dew_point", 3.0, "load_state", 2), "all good")
	}
	// dew_point goes bad: stale after 3 x its 1 s interval
	var stale []alert.Alert
	for s := 3; s <= 6; s++ {
		stale = append(stale, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s), "dew_point", telemetry.QualityBad, "load_state", 2)...)
	}
	if a := only(t, stale, alert.Raised, alert.Warn); a.Rule != "stale" || a.Signal != "dew_point" {
		t.Fatalf("want stale dew_point raised, got %+v", a)
	}

	got := h.e.Birth(compressorBirth(sec(7), "discharge_temp", "load_state"), 0, nil)
	c := only(t, got, alert.Cleared, alert.Warn)
	if c.Rule != "stale" || c.Signal != "dew_point" || c.ClearedAt != sec(7) ||
		c.Message != "cleared: air_compressor ac-1 dew_point removed from its gateway's configuration" {
		t.Fatalf("clear on the new birth: %+v", c)
	}
	if v, _ := h.e.Asset("site1", "ac-1"); slices.Contains(viewSignals(v), "dew_point") {
		t.Fatalf("view still lists dew_point: %v", viewSignals(v))
	}
	none(t, h.e.Birth(compressorBirth(sec(8), "discharge_temp", "load_state"), 0, nil), "the same birth again")

	// more data without dew_point: no stale alert for it, ever
	for s := 8; s < 30; s++ {
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s), "load_state", 2), "data after the new birth")
	}
	v, _ := h.e.Asset("site1", "ac-1")
	if got := viewSignals(v); !slices.Equal(got, []string{"discharge_temp", "load_state"}) {
		t.Fatalf("view signals %v", got)
	}

	// the checkpoint (JSON form and binary form) leaves it out, and a
	// restore from either does not bring it back
	st, _ := h.e.Snapshot("site1", "ac-1")
	for _, ss := range st.Signals {
		if ss.Name == "dew_point" {
			t.Fatalf("checkpoint keeps dew_point: %+v", ss)
		}
	}
	bin, _ := h.e.AppendBinary(nil, "site1", "ac-1")
	fromBin := ReadBinary(statebin.NewReader(bin))
	for name, rec := range map[string]*AssetState{"snapshot": &st, "binary": &fromBin} {
		t.Run(name, func(t *testing.T) {
			r := newHarness(t, true, "")
			r.now = sec(30)
			r.e.RestoreAsset(rec)
			v, _ := r.e.Asset("site1", "ac-1")
			if got := viewSignals(v); !slices.Equal(got, []string{"discharge_temp", "load_state"}) {
				t.Fatalf("restored view signals %v", got)
			}
			for s := 30; s < 40; s++ {
				none(t, r.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s), "load_state", 2), "data after restore")
			}
		})
	}
}

// A signal an expression names stays bound after the birth drops it: the
// expression sees no value for it (never a value from before the birth),
// and the signals after it keep their slots.
func TestBirthDropKeepsExpressionsBound(t *testing.T) {
	h := newHarness(t, true, `
version: 1
rules:
  - name: hot_and_wet
    kind: expr
    class: air_compressor
    expr: "discharge_temp > 95 and dew_point > 10"
    severity: warn
`)
	h.e.Birth(compressorBirth(sec(0), "aux", "dew_point", "discharge_temp"), 0, nil)
	only(t, h.feed("air_compressor", "ac-1", sec(0), "aux", 1.0, "dew_point", 12.0, "discharge_temp", 99.0), alert.Raised, alert.Warn)
	got := h.e.Birth(compressorBirth(sec(1), "dew_point", "discharge_temp"), 0, nil)
	for _, a := range got {
		if a.Signal == "aux" && !strings.Contains(a.Message, "removed from its gateway's configuration") {
			t.Fatalf("clear of aux: %+v", a)
		}
	}
	// dew_point still feeds the expression through its new slot
	none(t, h.feed("air_compressor", "ac-1", sec(1), "dew_point", 12.0, "discharge_temp", 99.0), "still hot and wet")
	c := only(t, h.feed("air_compressor", "ac-1", sec(2), "dew_point", 5.0, "discharge_temp", 99.0), alert.Cleared, alert.Warn)
	if c.Rule != "hot_and_wet" {
		t.Fatalf("want hot_and_wet cleared, got %+v", c)
	}
	// now dew_point leaves: the expression has no value for it
	h.e.Birth(compressorBirth(sec(3), "discharge_temp"), 0, nil)
	for s := 3; s < 10; s++ {
		for _, a := range h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 99.0) {
			if a.Rule == "hot_and_wet" || a.Signal == "dew_point" {
				t.Fatalf("alert after dew_point left: %+v", a)
			}
		}
	}
	v, _ := h.e.Asset("site1", "ac-1")
	if got := viewSignals(v); !slices.Equal(got, []string{"discharge_temp"}) {
		t.Fatalf("view signals %v", got)
	}
}

package ingest

import (
	"slices"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// LimitBirth keeps the first max distinct signals in the birth's order,
// every entry of them, and names the first it cut.
func TestLimitBirth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []string
		max   int
		want  []string
		cut   int
		first string
	}{
		{"under", []string{"a", "b"}, 3, []string{"a", "b"}, 0, ""},
		{"at", []string{"a", "b", "c"}, 3, []string{"a", "b", "c"}, 0, ""},
		{"over, birth order", []string{"z", "y", "x", "w"}, 2, []string{"z", "y"}, 2, "x"},
		{"repeats count once", []string{"a", "a", "b", "c", "a", "d", "c"}, 2, []string{"a", "a", "b", "a"}, 2, "c"},
		{"no bound", []string{"a", "b", "c"}, 0, []string{"a", "b", "c"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bi := &telemetry.Birth{}
			for _, s := range tc.in {
				bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: s})
			}
			cut, first := LimitBirth(bi, tc.max, catalog.Default())
			var got []string
			for _, s := range bi.Signals {
				got = append(got, s.Signal)
			}
			if !slices.Equal(got, tc.want) || cut != tc.cut || first != tc.first {
				t.Fatalf("kept %v, cut %d first %q; want %v, %d %q", got, cut, first, tc.want, tc.cut, tc.first)
			}
		})
	}
}

// The class's catalog signals are kept beyond the bound (invented names
// listed first cannot lock them out); they count toward it.
func TestLimitBirthKeepsCatalogSignals(t *testing.T) {
	bi := &telemetry.Birth{Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor"}}
	for _, s := range []string{"x1", "x2", "x3", "dew_point", "x4", "free_air_delivery", "discharge_temp"} {
		bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: s})
	}
	cut, first := LimitBirth(bi, 2, catalog.Default())
	var got []string
	for _, s := range bi.Signals {
		got = append(got, s.Signal)
	}
	if want := []string{"x1", "x2", "dew_point", "free_air_delivery", "discharge_temp"}; !slices.Equal(got, want) || cut != 2 || first != "x3" {
		t.Fatalf("kept %v, cut %d first %q; want %v, 2 x3", got, cut, first, want)
	}
}

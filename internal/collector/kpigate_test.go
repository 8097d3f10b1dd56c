package collector

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// End to end through Handle: KPI inputs pass the same gate as the rules.
// The int32 no-value marker published uncertain yields no specific power,
// and a site plausibility rule (input_power at most 90 kW for ac-2) keeps a
// good but implausible 95 kW out of ac-2's KPIs while ac-1 takes it.
func TestKPIsTakeOnlyWhatRulesAccept(t *testing.T) {
	dir := t.TempDir()
	rule := "version: 1\nrules:\n  - {name: plausibility, kind: plausibility, class: air_compressor, assets: [ac-2], signal: input_power, max: 90}\n"
	if err := os.WriteFile(filepath.Join(dir, "site.yaml"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.dir = dir
	cfg.Rules.Files = []string{"site.yaml"}
	c := newCollector(t, cfg)
	ctx := context.Background()
	const t0 = int64(1_763_812_200_000) // window aligned (15 min)
	seq := uint64(0)
	feed := func(id string, power float64, q telemetry.Quality) {
		for s := range int64(1000) { // one 15 min window and a bit
			seq++
			b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: t0 + s*1000,
				Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
				Readings: []telemetry.Reading{{Signal: "input_power", Value: power, Unit: "kW", Quality: q},
					{Signal: "free_air_delivery", Value: 10, Unit: "m3/min"}, {Signal: "load_state", Value: 2}}}
			if err := c.Handle(ctx, "smelter.v1.site1.air_compressor."+id+".data", b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	feed("ac-0", -2147483648.0/1000, telemetry.QualityUncertain)
	feed("ac-1", 95, telemetry.QualityGood)
	feed("ac-2", 95, telemetry.QualityGood)
	for id, want := range map[string]string{"ac-0": "n/a", "ac-1": "ok", "ac-2": "n/a"} {
		r, ok := c.KPIs("site1", id)
		if !ok {
			t.Fatalf("%s: no KPI window", id)
		}
		found := false
		for _, v := range r.KPIs {
			found = found || v.Name == "specific_power"
			if v.Name == "specific_power" && (v.Status != want || want == "n/a" && v.Value != 0 || want == "ok" && v.Value != 9.5) {
				t.Errorf("%s: specific power %+v, want status %s", id, v, want)
			}
		}
		if !found {
			t.Errorf("%s: no specific power in %+v", id, r)
		}
	}
}

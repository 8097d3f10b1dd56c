package rules_test

import (
	"fmt"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// A small rule pack for air compressors: a threshold on the discharge
// temperature that must hold for 2 s before it raises, and a multi-signal
// expression with a nameplate rating (from the asset's birth). The engine is
// fed decoded batches, one a second, and returns alert state changes.
func Example() {
	const pack = `version: 1
rules:
  - name: discharge_temp_high
    kind: threshold
    class: air_compressor
    signal: discharge_temp
    levels:
      - {severity: warn, above: 105}
      - {severity: trip, above: 118}
    deadband: 3
    on_delay: 2s                # the default is 15 s
    off_delay: 0s
  - name: hot_at_low_load
    description: hot although it draws little power, a cooling fault sign
    kind: expr
    class: air_compressor
    expr: "discharge_temp > 95 and input_power < 0.5 * nameplate.rated_power"
    severity: alarm
`
	cat := catalog.Default()
	f, err := rules.Parse("compressor.yaml", []byte(pack), cat)
	if err != nil {
		fmt.Println(err)
		return
	}
	eng := rules.New(rules.Merge(f), cat, rules.Options{Now: func() int64 { return 1763812400000 }})
	eng.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "jinan"}},
		Nameplate: map[string]float64{"rated_power": 75}}, 0,
		nil)

	batch := func(seq uint64, ts int64, temp, power float64) *telemetry.Batch {
		return &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts,
			Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "jinan"}},
			Readings: []telemetry.Reading{
				{Signal: "discharge_temp", Value: temp, Unit: "Cel", TS: ts},
				{Signal: "input_power", Value: power, Unit: "kW", TS: ts},
			}}
	}
	var out []alert.Alert
	for i, r := range []struct{ temp, power float64 }{{85, 60}, {110, 20}, {111, 20}, {112, 20}, {90, 20}} {
		out = eng.Process(batch(uint64(i+1), 1763812345000+int64(i)*1000, r.temp, r.power), 0, out[:0])
		for _, a := range out {
			fmt.Printf("batch %d: %s %s %s: %s\n", i+1, a.Rule, a.State, a.Severity, a.Message)
		}
	}
	// Output:
	// batch 2: hot_at_low_load raised alarm: air_compressor ac-1 hot_at_low_load: discharge_temp > 95 and input_power < 0.5 * nameplate.rated_power (discharge_temp=110, input_power=20, nameplate.rated_power=75)
	// batch 4: discharge_temp_high raised warn: air_compressor ac-1 discharge_temp 112 Cel above warn limit 105 Cel
	// batch 5: discharge_temp_high cleared warn: cleared: air_compressor ac-1 discharge_temp 90 Cel back within limit 105
	// batch 5: hot_at_low_load cleared alarm: cleared: air_compressor ac-1 hot_at_low_load: discharge_temp > 95 and input_power < 0.5 * nameplate.rated_power (discharge_temp=90, input_power=20, nameplate.rated_power=75)
}

// A bad expression is refused when the pack loads, with the file, line and
// field of the rule and the column in the expression.
func ExampleParse_badExpression() {
	const pack = `version: 1
rules:
  - name: hot_at_low_load
    kind: expr
    class: air_compressor
    expr: "discharge_temp > 95 and and input_power < 10"
`
	_, err := rules.Parse("compressor.yaml", []byte(pack), catalog.Default())
	fmt.Println(err)
	// Output:
	// compressor.yaml:6: rules[0] (hot_at_low_load).expr: expression "discharge_temp > 95 and and input_power < 10" column 25: unexpected "and"
}

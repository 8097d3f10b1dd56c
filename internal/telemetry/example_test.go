package telemetry_test

import (
	"errors"
	"fmt"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A gateway encodes one asset's acquisition cycle as a batch; a consumer
// decodes it and gets the same readings back, with a bad reading reported
// as bad (its raw Modbus exception code in Status), never as a value.
func Example() {
	b := &telemetry.Batch{
		Gateway: "gw-jinan-01",
		Seq:     18231,
		Asset:   telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "jinan", "utilities", "air", "_"}},
		TSGW:    1763812345123,
		Readings: []telemetry.Reading{
			{Signal: "discharge_pressure", Value: 0.712, Unit: "MPa", Quality: telemetry.QualityGood, TS: 1763812345101, Src: "modbus:1:hr:40001"},
			{Signal: "discharge_temp", Unit: "Cel", Quality: telemetry.QualityBad, TS: 1763812345101, Status: 2, Src: "modbus:1:hr:40003"},
		},
	}
	if err := b.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	data := b.AppendJSON(nil)
	fmt.Println(string(data))
	fmt.Println(telemetry.AssetSubject(b.Asset, telemetry.KindData), b.MsgID())

	got, err := telemetry.DecodeBatch(data)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range got.Readings {
		if r.HasValue() {
			fmt.Printf("%s = %v %s (%s)\n", r.Signal, r.Value, r.Unit, r.Quality)
		} else {
			fmt.Printf("%s: %s, status %d\n", r.Signal, r.Quality, r.Status)
		}
	}
	// Output:
	// {"schema":"smelter.telemetry/1","gateway":"gw-jinan-01","seq":18231,"asset":{"id":"ac-1","class":"air_compressor","path":["acme","jinan","utilities","air","_"]},"ts_gw":1763812345123,"readings":[{"signal":"discharge_pressure","value":0.712,"unit":"MPa","quality":"good","ts":1763812345101,"src":"modbus:1:hr:40001"},{"signal":"discharge_temp","unit":"Cel","quality":"bad","ts":1763812345101,"status":2,"src":"modbus:1:hr:40003"}]}
	// smelter.v1.jinan.air_compressor.ac-1.data gw-jinan-01-18231
	// discharge_pressure = 0.712 MPa (good)
	// discharge_temp: bad, status 2
}

// DecodeBatch refuses a message of another schema with an error that wraps
// ErrSchema, and malformed input with one that wraps ErrInvalid.
func ExampleDecodeBatch_errors() {
	_, err := telemetry.DecodeBatch([]byte(`{"schema":"smelter.telemetry/2","gateway":"gw","seq":1}`))
	fmt.Println(errors.Is(err, telemetry.ErrSchema))
	_, err = telemetry.DecodeBatch([]byte(`{"schema":"smelter.telemetry/1","gateway":"gw","seq":"one"}`))
	fmt.Println(errors.Is(err, telemetry.ErrInvalid))
	// Output:
	// true
	// true
}

package telemetry_test

import (
	"errors"
	"fmt"
	"log"

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

// Encode a batch, decode it, and split it to fit a 330-byte message limit:
// each part repeats the batch's identity and carries part/parts and its own
// dedup id.
func ExampleBatch_Split() {
	b := telemetry.Batch{Gateway: "gw-1", Seq: 7, TSGW: 1763812345123,
		Asset: telemetry.Asset{ID: "m-1", Class: "motor", Path: []string{"acme", "plant1", "_", "_", "_"}}}
	for i, s := range []string{"power", "current", "voltage"} {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: s, Value: float64(10 * (i + 1)), TS: 1763812345101})
	}
	data := b.AppendJSON(nil)
	dec, err := telemetry.DecodeBatch(data)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(data), "bytes,", len(dec.Readings), "readings, id", dec.MsgID())

	parts, dropped := b.Split(330, nil)
	for _, p := range parts {
		fmt.Printf("%s: part %d of %d, %d readings, %d bytes\n", p.MsgID(), p.Part, p.Parts, len(p.Readings), len(p.AppendJSON(nil)))
	}
	fmt.Println("dropped:", dropped)
	// Output:
	// 368 bytes, 3 readings, id gw-1-7
	// gw-1-7-p1of2: part 1 of 2, 2 readings, 319 bytes
	// gw-1-7-p2of2: part 2 of 2, 1 readings, 253 bytes
	// dropped: []
}

package telemetry_test

import (
	"fmt"
	"log"

	"github.com/smelterio/smelter/internal/telemetry"
)

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

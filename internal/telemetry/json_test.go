package telemetry

import (
	"encoding/json"
	"math"
	"testing"
)

// TestTimestampPerReading: each reading's ts is its own, whether it repeats
// the one before (written from AppendJSON's copy of its digits) or not.
func TestTimestampPerReading(t *testing.T) {
	tss := []int64{0, 0, 1764484800000, 1764484800000, 1764484800000, 1764484800001, 1764484800000, -5, -5, 7,
		math.MaxInt64, math.MaxInt64, math.MinInt64, 0, 1764484800000}
	b := Batch{Gateway: "gw", Asset: Asset{ID: "a", Class: "generic"}}
	for i, ts := range tss {
		b.Readings = append(b.Readings, Reading{Signal: "s", Value: float64(i), TS: ts})
	}
	var got struct {
		Readings []struct {
			Value float64 `json:"value"`
			TS    int64   `json:"ts"`
		} `json:"readings"`
	}
	enc := b.AppendJSON(nil)
	if err := json.Unmarshal(enc, &got); err != nil {
		t.Fatalf("%v: %s", err, enc)
	}
	if len(got.Readings) != len(tss) {
		t.Fatalf("%d readings, want %d: %s", len(got.Readings), len(tss), enc)
	}
	for i, r := range got.Readings {
		if r.TS != tss[i] || r.Value != float64(i) {
			t.Errorf("reading %d: ts %d value %v, want ts %d value %d", i, r.TS, r.Value, tss[i], i)
		}
	}
}

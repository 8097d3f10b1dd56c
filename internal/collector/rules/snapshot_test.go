package rules

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// An engine restored from a JSON checkpoint taken mid-stream (an on delay
// running, EWMA and z-score baselines warm, a raised alert) emits exactly
// what the engine that never stopped emits, raised_at included.
func TestSnapshotRestoreContinuesTheSameAlerts(t *testing.T) {
	for name, roundTrip := range map[string]func(AssetState) (AssetState, error){
		"json": func(st AssetState) (AssetState, error) {
			data, err := json.Marshal(st)
			if err != nil {
				return st, err
			}
			var back AssetState
			return back, json.Unmarshal(data, &back)
		},
		"binary": func(st AssetState) (AssetState, error) {
			r := statebin.NewReader(st.AppendBinary(nil))
			back := ReadBinary(r)
			return back, r.Done()
		},
	} {
		t.Run(name, func(t *testing.T) {
			rules := `version: 1
rules:
  - {name: temp_ewma, kind: ewma, class: air_compressor, signal: discharge_pressure, lambda: 0.2, l: 3, warmup: 20, severity: warn}
  - {name: temp_z, kind: zscore, class: air_compressor, signal: input_power, n: 20, limit: 4, severity: warn}
`
			a := newHarness(t, true, rules)
			b := newHarness(t, true, rules)
			rng := rand.New(rand.NewPCG(1, 2))
			batches := make([]*telemetry.Batch, 200)
			for i := range batches {
				temp := 80 + rng.NormFloat64()
				if i >= 90 && i < 150 {
					temp = 125 // above the alarm limit: the 15 s on delay runs across the checkpoint
				}
				pr := 0.7 + rng.NormFloat64()*0.002
				if i >= 160 {
					pr += 0.05
				}
				batches[i] = &telemetry.Batch{Gateway: "gw", Seq: uint64(i + 1), TSGW: sec(i), Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
					Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: temp, TS: sec(i)}, {Signal: "load_state", Value: 2, TS: sec(i)},
						{Signal: "discharge_pressure", Value: pr, TS: sec(i)}, {Signal: "input_power", Value: 70 + rng.NormFloat64(), TS: sec(i)}}}
			}
			var want, got []alert.Alert
			for i, bt := range batches {
				a.now = bt.TSGW
				want = a.e.Process(bt, 0, want)
				if i == 100 || i == 170 { // checkpoint, then continue in a fresh engine
					st, ok := b.e.Snapshot("site1", "ac-1")
					if !ok {
						t.Fatal("no snapshot")
					}
					back, err := roundTrip(st)
					if err != nil {
						t.Fatal(err)
					}
					b = newHarness(t, true, rules)
					b.e.RestoreAsset(&back)
					if !b.e.Duplicate(batches[i-1], 16384) || b.e.Duplicate(bt, 16384) {
						t.Fatal("restored seq does not recognise the evaluated batch")
					}
				}
				b.now = bt.TSGW
				if !b.e.Duplicate(bt, 16384) {
					got = b.e.Process(bt, 0, got)
				}
			}
			if len(want) < 2 {
				t.Fatalf("test data raised too little: %+v", want)
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("restored engine diverged:\nwant %+v\ngot  %+v", want, got)
			}
		})
	}
}

// The checkpoint encoding of evaluator memory and severities is unchanged
// by MarshalText (it was MarshalJSON): a JSON string of the base64 of the
// little-endian float64s, and the severity's name; records written before
// still load.
func TestCheckpointEncodingUnchanged(t *testing.T) {
	f := Floats{1.5, -2, math.Inf(1), math.SmallestNonzeroFloat64}
	raw := make([]byte, 0, 32)
	for _, x := range f {
		raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(x))
	}
	want := `{"e":"` + base64.StdEncoding.EncodeToString(raw) + `","s":"warn","z":""}`
	got, err := json.Marshal(struct {
		E Floats         `json:"e"`
		S alert.Severity `json:"s"`
		Z Floats         `json:"z"`
	}{f, alert.Warn, nil})
	if err != nil || string(got) != want {
		t.Fatalf("got %s (%v), want %s", got, err, want)
	}
	var back struct {
		E Floats         `json:"e"`
		S alert.Severity `json:"s"`
	}
	if err := json.Unmarshal(got, &back); err != nil || len(back.E) != 4 || back.E[2] != f[2] || back.E[3] != f[3] || back.S != alert.Warn {
		t.Fatalf("round trip %+v %v", back, err)
	}
}

package ingest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// DropInvalid removes the readings whose name or unit breaks the bounds,
// keeps the rest in order, and cuts long texts and srcs.
func TestDropInvalid(t *testing.T) {
	long := strings.Repeat("n", 60000)
	b := &telemetry.Batch{Readings: []telemetry.Reading{
		{Signal: "discharge_temp", Unit: "Cel", Value: 1},
		{Signal: long, Value: 2},
		{Signal: "dew_point", Unit: strings.Repeat("u", 33), Value: 3},
		{Signal: "has space", Value: 4},
		{Signal: "load_state", Text: strings.Repeat("t", 5000), Src: strings.Repeat("s", 5000), Value: 5},
		{Signal: strings.Repeat("m", telemetry.MaxSignalLen), Value: 6},
	}}
	n, first := DropInvalid(b)
	var got []string
	for _, r := range b.Readings {
		got = append(got, fmt.Sprintf("%.20s=%g", r.Signal, r.Value))
	}
	want := []string{"discharge_temp=1", "load_state=5", strings.Repeat("m", 20) + "=6"}
	if n != 3 || first != strings.Repeat("n", 64) || !slices.Equal(got, want) {
		t.Fatalf("dropped %d (first %.70q), kept %v; want 3, %v", n, first, got, want)
	}
	if r := b.Readings[1]; len(r.Text) != telemetry.MaxTextLen || len(r.Src) != telemetry.MaxSrcLen {
		t.Errorf("text %d and src %d bytes, want %d and %d", len(r.Text), len(r.Src), telemetry.MaxTextLen, telemetry.MaxSrcLen)
	}
	// within the bounds: nothing changes, nothing allocated
	b = &telemetry.Batch{Readings: []telemetry.Reading{{Signal: "a", Unit: "kW"}, {Signal: "b"}}}
	if a := testing.AllocsPerRun(100, func() {
		if n, _ := DropInvalid(b); n != 0 || len(b.Readings) != 2 {
			t.Fatal("a valid batch changed")
		}
	}); a != 0 {
		t.Errorf("%v allocations per valid batch", a)
	}
}

// A message whose asset.path breaks the bounds is refused (ReasonBounds),
// whatever its kind (batch, birth, death: CheckAsset).
func TestCheckAssetPathBounds(t *testing.T) {
	cat := catalog.Default()
	for _, path := range [][]string{
		{"acme", "s", strings.Repeat("a", 65)},
		{"acme", "s", "a b"},
		{"acme", "s", "_", "_", "_", "_", "_", "_", "_"},
	} {
		a := telemetry.Asset{ID: "a-1", Class: "motor", Path: path}
		err := CheckAsset(telemetry.AssetSubject(a, telemetry.KindData), "gw", a, cat)
		if !errors.Is(err, ErrBounds) || ReasonOf(err) != ReasonBounds {
			t.Errorf("path %.40q: %v", path, err)
		}
	}
}

// A birth whose strings break the bounds is refused (ReasonBounds); its
// free text is cut.
func TestCheckBirthBounds(t *testing.T) {
	cat := catalog.Default()
	birth := func(f func(bi *telemetry.Birth)) *telemetry.Birth {
		bi := &telemetry.Birth{Gateway: "gw", Asset: telemetry.AssetJSON{ID: "a-1", Class: "generic"},
			Signals:   []telemetry.SignalInfo{{Signal: "s1", Unit: "Cel"}, {Signal: "mode", Enum: []string{"off", "on"}}},
			Nameplate: map[string]float64{"rated_power": 10}}
		f(bi)
		return bi
	}
	for _, tc := range []struct {
		name string
		f    func(bi *telemetry.Birth)
	}{
		{"long name", func(bi *telemetry.Birth) { bi.Signals[0].Signal = strings.Repeat("x", 65) }},
		{"name charset", func(bi *telemetry.Birth) { bi.Signals[0].Signal = "a/b" }},
		{"long unit", func(bi *telemetry.Birth) { bi.Signals[0].Unit = strings.Repeat("u", 33) }},
		{"long label", func(bi *telemetry.Birth) { bi.Signals[1].Enum[0] = strings.Repeat("l", 65) }},
		{"many labels", func(bi *telemetry.Birth) { bi.Signals[1].Enum = make([]string, 257) }},
		{"long allowed", func(bi *telemetry.Birth) {
			bi.Signals[1].Write = &telemetry.WriteLimits{Allowed: []string{strings.Repeat("l", 65)}}
		}},
		{"nameplate key", func(bi *telemetry.Birth) { bi.Nameplate[strings.Repeat("k", 65)] = 1 }},
		{"many ratings", func(bi *telemetry.Birth) {
			for i := range telemetry.MaxNameplate {
				bi.Nameplate[fmt.Sprintf("r%d", i)] = 1
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckBirth(birth(tc.f), cat); !errors.Is(err, ErrBounds) || len(err.Error()) > 300 {
				t.Fatalf("got %v", err)
			}
		})
	}
	bi := birth(func(bi *telemetry.Birth) {
		bi.Protocol = strings.Repeat("p", 1000)
		bi.Signals[0].Src = strings.Repeat("s", 1000)
	})
	if err := CheckBirth(bi, cat); err != nil || len(bi.Protocol) != telemetry.MaxSrcLen || len(bi.Signals[0].Src) != telemetry.MaxSrcLen {
		t.Fatalf("%v; protocol %d, src %d bytes", err, len(bi.Protocol), len(bi.Signals[0].Src))
	}
}

// BenchmarkDropInvalid is the bounds' cost on the hot path: a batch of 20
// valid readings (the common case: one pass, nothing changed).
func BenchmarkDropInvalid(b *testing.B) {
	bt := &telemetry.Batch{}
	for i := range 20 {
		bt.Readings = append(bt.Readings, telemetry.Reading{Signal: fmt.Sprintf("exhaust_temp_cyl_%d", i), Unit: "Cel", Src: "modbus:1:hr:40001"})
	}
	b.ReportAllocs()
	for b.Loop() {
		if n, _ := DropInvalid(bt); n != 0 {
			b.Fatal(n)
		}
	}
}

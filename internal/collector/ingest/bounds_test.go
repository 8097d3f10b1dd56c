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

// The labels of one birth are bounded in total (telemetry.MaxBirthLabels,
// MaxBirthLabelBytes) as well as per signal: the review's birth (256
// signals of 256 enum and 256 allowed labels of 64 bytes, 8.5 MB held per
// asset) is refused, a birth exactly at both totals passes, and a split
// birth whose parts pass alone is refused once merged (CheckBirthTotals).
func TestCheckBirthLabelTotals(t *testing.T) {
	cat := catalog.Default()
	labels := func(n, size int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%0*d", size, i)
		}
		return out
	}
	birth := func(signals, perSignal, size int) *telemetry.Birth {
		bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw", Seq: 1,
			Asset: telemetry.AssetJSON{ID: "a-1", Class: "generic", Path: []string{"acme", "s1"}}}
		for i := range signals {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("s%d", i), Enum: labels(perSignal, size)})
		}
		return bi
	}
	// per signal: 65 labels is one over
	if err := CheckBirth(birth(1, telemetry.MaxLabels+1, 4), cat); ReasonOf(err) != ReasonBounds {
		t.Errorf("65 labels on one signal: %v, want bounds", err)
	}
	// count: 2048 labels of 16 bytes = 32 KiB, exactly at both totals
	at := birth(telemetry.MaxBirthLabels/64, 64, telemetry.MaxBirthLabelBytes/telemetry.MaxBirthLabels)
	if err := CheckBirth(at, cat); err != nil {
		t.Fatalf("birth at the totals refused: %v", err)
	}
	if err := CheckBirthTotals(at); err != nil {
		t.Fatalf("birth at the totals refused: %v", err)
	}
	// one label more, or one byte more
	over := birth(telemetry.MaxBirthLabels/64, 64, telemetry.MaxBirthLabelBytes/telemetry.MaxBirthLabels)
	over.Signals = append(over.Signals, telemetry.SignalInfo{Signal: "extra", Write: &telemetry.WriteLimits{Allowed: []string{"x"}}})
	if err := CheckBirth(over, cat); !errors.Is(err, ErrBounds) {
		t.Errorf("2049 labels: %v, want bounds", err)
	}
	over = birth(telemetry.MaxBirthLabels/64, 64, telemetry.MaxBirthLabelBytes/telemetry.MaxBirthLabels)
	over.Signals[0].Enum[0] += "x"
	if err := CheckBirth(over, cat); !errors.Is(err, ErrBounds) {
		t.Errorf("32 KiB + 1: %v, want bounds", err)
	}
	// the review's birth, 256 x 2 x 256 labels of 64 bytes
	rev := birth(256, telemetry.MaxLabels, 64)
	for i := range rev.Signals {
		rev.Signals[i].Write = &telemetry.WriteLimits{Allowed: labels(telemetry.MaxLabels, 64)}
	}
	if err := CheckBirth(rev, cat); !errors.Is(err, ErrBounds) {
		t.Errorf("review's birth: %v, want bounds", err)
	}
	// split: each part within the totals, the merged birth beyond them
	whole := birth(48, 64, 8) // 3,072 labels
	parts, dropped, err := telemetry.SplitBirth(whole, 16<<10)
	if err != nil || len(dropped) > 0 || len(parts) < 2 {
		t.Fatalf("split: %d parts, dropped %v, %v", len(parts), dropped, err)
	}
	var ps []*telemetry.Birth
	for i := range parts {
		if err := CheckBirth(&parts[i], cat); err != nil {
			t.Fatalf("part %d refused: %v", i+1, err)
		}
		ps = append(ps, &parts[i])
	}
	merged, err := telemetry.MergeBirth(ps)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckBirthTotals(merged); !errors.Is(err, ErrBounds) {
		t.Errorf("merged birth of 3,072 labels: %v, want bounds", err)
	}
}

package normalize

import (
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

func conv(t *testing.T, from, to string) units.Conversion {
	t.Helper()
	c, err := units.Convert(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fp(v float64) *float64 { return &v }

func TestApplyScalesConvertsAndLabels(t *testing.T) {
	pts := []Point{
		{Signal: "discharge_pressure", Unit: "MPa", Scale: 0.01, Conv: conv(t, "bar", "MPa"), Src: "modbus:1:hr:0"},
		{Signal: "discharge_temp", Unit: "Cel", Conv: conv(t, "[degF]", "Cel")},
		{Signal: "load_state", States: []string{"off", "unloaded", "loaded"}},
		{Signal: "input_power", Unit: "kW", Scale: 1, Offset: -10, Conv: conv(t, "W", "kW")},
		{Signal: "mode", Enum: map[int64]string{7: "loaded"}, States: []string{"off", "unloaded", "loaded"}},
		{Signal: "serial"},
	}
	n := New(pts, 1000, 3, 0)
	raws := []Raw{{Num: 725}, {Num: 212}, {Num: 2}, {Num: 55010}, {Num: 7}, {Str: "SN-1", IsStr: true}}
	got := n.Apply(nil, raws, 1_000)
	if len(got) != 6 {
		t.Fatalf("got %d readings", len(got))
	}
	want := []telemetry.Reading{
		{Signal: "discharge_pressure", Value: 0.725, Unit: "MPa", TS: 1000, Src: "modbus:1:hr:0"},
		{Signal: "discharge_temp", Value: 100, Unit: "Cel", TS: 1000},
		{Signal: "load_state", Value: 2, Text: "loaded", TS: 1000},
		{Signal: "input_power", Value: 55, Unit: "kW", TS: 1000},
		{Signal: "mode", Value: 2, Text: "loaded", TS: 1000},
		{Signal: "serial", Text: "SN-1", NoValue: true, TS: 1000},
	}
	for i := range want {
		g := got[i]
		if g.Signal != want[i].Signal || g.Text != want[i].Text || g.Unit != want[i].Unit || g.TS != want[i].TS ||
			g.Src != want[i].Src || g.NoValue != want[i].NoValue || g.Quality != telemetry.QualityGood ||
			abs(g.Value-want[i].Value) > 1e-9 {
			t.Errorf("reading %d = %+v, want %+v", i, g, want[i])
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestBadThenStaleKeepsStatusAndNoValue(t *testing.T) {
	n := New([]Point{{Signal: "a", Unit: "kW"}, {Signal: "b", Unit: "kW"}}, 1000, 3, 0)
	n.Apply(nil, []Raw{{Num: 1}, {Num: 2}}, 1000)
	for _, tc := range []struct {
		now  int64
		want telemetry.Quality
	}{{2000, telemetry.QualityBad}, {3000, telemetry.QualityBad}, {4000, telemetry.QualityStale}, {9000, telemetry.QualityStale}} {
		got := n.Apply(nil, []Raw{{Quality: telemetry.QualityBad, Status: 2, Num: 99}, {Num: 5}}, tc.now)
		if len(got) != 2 {
			t.Fatalf("at %d: %d readings, one bad point must not drop the other", tc.now, len(got))
		}
		if got[0].Quality != tc.want || got[0].Status != 2 || got[0].HasValue() {
			t.Errorf("at %d: %+v, want %v with status 2 and no value", tc.now, got[0], tc.want)
		}
		if got[1].Quality != telemetry.QualityGood || got[1].Value != 5 {
			t.Errorf("at %d: good point = %+v", tc.now, got[1])
		}
	}
	// recovery
	got := n.Apply(nil, []Raw{{Num: 3}, {Num: 5}}, 10000)
	if got[0].Quality != telemetry.QualityGood || got[0].Value != 3 {
		t.Errorf("after recovery: %+v", got[0])
	}
}

func TestDeadbandAndHeartbeat(t *testing.T) {
	n := New([]Point{{Signal: "t", Unit: "Cel", Deadband: 0.5}, {Signal: "p", Unit: "kW"}}, 1000, 3, 10_000)
	var counts []int
	vals := []float64{20, 20.2, 20.4, 20.6, 20.7, 20.7}
	for i, v := range vals {
		got := n.Apply(nil, []Raw{{Num: v}, {Num: 1}}, int64(1000*(i+1)))
		c := 0
		for _, r := range got {
			if r.Signal == "t" {
				c++
			}
		}
		counts = append(counts, c)
	}
	want := []int{1, 0, 0, 1, 0, 0}
	for i := range want {
		if counts[i] != want[i] {
			t.Fatalf("deadband reports = %v, want %v", counts, want)
		}
	}
	// heartbeat: unchanged value is re-sent after 10 s
	got := n.Apply(nil, []Raw{{Num: 20.6}, {Num: 1}}, 14_000)
	if len(got) != 2 {
		t.Errorf("heartbeat: got %d readings, want 2", len(got))
	}
	// a quality change is always reported
	n.Apply(nil, []Raw{{Num: 20.6}, {Num: 1}}, 15_000)
	got = n.Apply(nil, []Raw{{Quality: telemetry.QualityBad}, {Num: 1}}, 16_000)
	if len(got) != 2 || got[0].Quality != telemetry.QualityBad {
		t.Errorf("quality change: %+v", got)
	}
}

func TestOutOfRangeIsUncertainAndNaNIsBad(t *testing.T) {
	n := New([]Point{{Signal: "a", Min: fp(0), Max: fp(10)}, {Signal: "b"}}, 1000, 3, 0)
	got := n.Apply(nil, []Raw{{Num: 11}, {Num: nan()}}, 1000)
	if got[0].Quality != telemetry.QualityUncertain || got[0].Value != 11 {
		t.Errorf("out of range: %+v", got[0])
	}
	if got[1].Quality != telemetry.QualityBad || got[1].HasValue() {
		t.Errorf("NaN: %+v", got[1])
	}
}

func nan() float64 { z := 0.0; return z / z }

func BenchmarkApply100(b *testing.B) {
	pts := make([]Point, 100)
	raws := make([]Raw, 100)
	c, _ := units.Convert("bar", "MPa")
	for i := range pts {
		pts[i] = Point{Signal: "s", Unit: "MPa", Scale: 0.1, Conv: c, Src: "modbus:1:hr:0"}
		raws[i] = Raw{Num: float64(i)}
	}
	n := New(pts, 1000, 3, 0)
	dst := make([]telemetry.Reading, 0, 100)
	now := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		now += 1000
		dst = n.Apply(dst[:0], raws, now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/reading")
}

func TestApplyOneKeepsStaleAndConverts(t *testing.T) {
	n := New([]Point{{Signal: "a", Unit: "Cel"}, {Signal: "b", Unit: "kPa"}}, 1000, 3, 0)
	n.SetConversion(1, conv(t, "bar", "kPa"), nil, fp(500))
	got := n.ApplyOne(nil, 1, &Raw{Num: 2}, 1000)
	if len(got) != 1 || got[0].Signal != "b" || got[0].Value != 200 || got[0].Quality != telemetry.QualityGood {
		t.Fatalf("got %+v", got)
	}
	got = n.ApplyOne(nil, 1, &Raw{Num: 6}, 2000)
	if got[0].Quality != telemetry.QualityUncertain {
		t.Errorf("above SetConversion max: %+v", got[0])
	}
	got = n.ApplyOne(nil, 0, &Raw{Quality: telemetry.QualityStale, Status: 0x80000000}, 3000)
	if got[0].Quality != telemetry.QualityStale || got[0].Status != 0x80000000 || got[0].HasValue() {
		t.Errorf("stale: %+v", got[0])
	}
}

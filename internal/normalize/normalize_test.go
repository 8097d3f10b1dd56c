package normalize

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"unsafe"

	"github.com/smelterio/smelter/internal/sample"
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

// cycle numbers samples as the points they belong to, in order.
func cycle(ss ...sample.Sample) []sample.Sample {
	for i := range ss {
		ss[i].Index = i
	}
	return ss
}

func TestApplyScalesConvertsAndLabels(t *testing.T) {
	pts := []Point{
		{Signal: "discharge_pressure", Unit: "MPa", Scale: 0.01, Conv: conv(t, "bar", "MPa"), Src: "modbus:1:hr:0"},
		{Signal: "discharge_temp", Unit: "Cel", Conv: conv(t, "[degF]", "Cel")},
		{Signal: "load_state", Labels: &Labels{States: []string{"off", "unloaded", "loaded"}}},
		{Signal: "input_power", Unit: "kW", Scale: 1, Offset: -10, Conv: conv(t, "W", "kW")},
		{Signal: "mode", Labels: &Labels{Enum: map[int64]string{7: "loaded"}, States: []string{"off", "unloaded", "loaded"}}},
		{Signal: "serial"},
	}
	n := New(pts, 3, 0)
	raws := cycle(sample.Sample{Num: 725}, sample.Sample{Num: 212}, sample.Sample{Num: 2}, sample.Sample{Num: 55010},
		sample.Sample{Num: 7}, sample.Sample{Str: "SN-1", IsStr: true})
	got := n.Apply(nil, raws, 1_000, 1_000)
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

// TestAnsweredBadStaysBad: a point the device answers about negatively (an
// exception, a Bad StatusCode) is bad with its status on every batch, for as
// long as it lasts; it never turns stale by time (issue 16).
func TestAnsweredBadStaysBad(t *testing.T) {
	n := New([]Point{{Signal: "a", Unit: "kW", IntervalMS: 1000}, {Signal: "b", Unit: "kW", IntervalMS: 1000}}, 3, 0)
	n.Apply(nil, cycle(sample.Sample{Num: 1}, sample.Sample{Num: 2}), 1000, 1000)
	for now := int64(2000); now <= 60_000; now += 1000 {
		got := n.Apply(nil, cycle(sample.Sample{Quality: telemetry.QualityBad, Status: 2, Num: 99}, sample.Sample{Num: 5}), now, now)
		if len(got) != 2 {
			t.Fatalf("at %d: %d readings, one bad point must not drop the other", now, len(got))
		}
		if got[0].Quality != telemetry.QualityBad || got[0].Status != 2 || got[0].HasValue() {
			t.Fatalf("at %d: %+v, want bad with status 2 and no value", now, got[0])
		}
		if got[1].Quality != telemetry.QualityGood || got[1].Value != 5 {
			t.Fatalf("at %d: good point = %+v", now, got[1])
		}
	}
}

// TestSilentTurnsStaleAfterKIntervals: a point the device says nothing about
// (timeout, connection lost) is bad, then stale once nothing has been heard
// for 3 x its own interval; an answer (even an exception) resets the clock.
func TestSilentTurnsStaleAfterKIntervals(t *testing.T) {
	n := New([]Point{{Signal: "fast", Unit: "kW", IntervalMS: 1000}, {Signal: "slow", Unit: "kW", IntervalMS: 5000}}, 3, 0)
	silent := sample.Sample{Quality: telemetry.QualityBad, Silent: true, Status: 0x100}
	n.Apply(nil, cycle(sample.Sample{Num: 1}, sample.Sample{Num: 2}), 1000, 1000)
	for _, tc := range []struct {
		now        int64
		fast, slow telemetry.Quality
	}{
		{2000, telemetry.QualityBad, telemetry.QualityBad},
		{3000, telemetry.QualityBad, telemetry.QualityBad},
		{4000, telemetry.QualityStale, telemetry.QualityBad}, // 3 x 1 s since the last answer
		{15000, telemetry.QualityStale, telemetry.QualityBad},
		{16000, telemetry.QualityStale, telemetry.QualityStale}, // 3 x 5 s
	} {
		got := n.Apply(nil, cycle(silent, silent), tc.now, tc.now)
		if len(got) != 2 || got[0].Quality != tc.fast || got[1].Quality != tc.slow {
			t.Fatalf("at %d: %+v, want fast %v slow %v", tc.now, got, tc.fast, tc.slow)
		}
		if got[0].Status != 0x100 || got[0].HasValue() {
			t.Errorf("at %d: %+v keeps no status or has a value", tc.now, got[0])
		}
	}
	// an exception is an answer: bad, not stale, and the silence clock restarts
	got := n.Apply(nil, cycle(sample.Sample{Quality: telemetry.QualityBad, Status: 4}, silent), 17000, 17000)
	if got[0].Quality != telemetry.QualityBad || got[0].Status != 4 {
		t.Errorf("answered after silence: %+v", got[0])
	}
	got = n.Apply(nil, cycle(silent, silent), 19000, 19000)
	if got[0].Quality != telemetry.QualityBad {
		t.Errorf("2 s after an answer: %+v, want bad", got[0])
	}
	// recovery
	got = n.Apply(nil, cycle(sample.Sample{Num: 3}, sample.Sample{Num: 5}), 20000, 20000)
	if got[0].Quality != telemetry.QualityGood || got[0].Value != 3 || got[1].Quality != telemetry.QualityGood {
		t.Errorf("after recovery: %+v", got)
	}
}

func TestFirstSilentCycleStartsTheClock(t *testing.T) {
	n := New([]Point{{Signal: "a", Unit: "kW", IntervalMS: 1000}}, 3, 0)
	silent := cycle(sample.Sample{Quality: telemetry.QualityBad, Silent: true, Status: 0x101})
	for _, tc := range []struct {
		now  int64
		want telemetry.Quality
	}{{1000, telemetry.QualityBad}, {3000, telemetry.QualityBad}, {4000, telemetry.QualityStale}} {
		if got := n.Apply(nil, silent, tc.now, tc.now); got[0].Quality != tc.want {
			t.Errorf("at %d: %v, want %v", tc.now, got[0].Quality, tc.want)
		}
	}
}

func TestNoUnitIsBadNotUnitless(t *testing.T) {
	n := New([]Point{{Signal: "a", Unit: "", NoUnit: true, IntervalMS: 1000}, {Signal: "s", Labels: &Labels{States: []string{"off", "on"}}}}, 3, 0)
	got := n.Apply(nil, cycle(sample.Sample{Num: 12}, sample.Sample{Num: 1}), 1000, 1000)
	if got[0].Quality != telemetry.QualityBad || got[0].Status != StatusNoUnit || got[0].HasValue() {
		t.Errorf("no unit: %+v, want bad with status %#x and no value", got[0], StatusNoUnit)
	}
	if got[1].Quality != telemetry.QualityGood || got[1].Text != "on" {
		t.Errorf("state point: %+v", got[1])
	}
	n.SetConversion(0, conv(t, "kW", "kW"), nil, nil)
	if got := n.Apply(nil, cycle(sample.Sample{Num: 12}), 2000, 2000); got[0].Quality != telemetry.QualityGood || got[0].Value != 12 {
		t.Errorf("after SetConversion: %+v", got[0])
	}
}

func TestDeadbandAndHeartbeat(t *testing.T) {
	n := New([]Point{{Signal: "t", Unit: "Cel", Deadband: 0.5}, {Signal: "p", Unit: "kW"}}, 3, 10_000)
	var counts []int
	vals := []float64{20, 20.2, 20.4, 20.6, 20.7, 20.7}
	for i, v := range vals {
		got := n.Apply(nil, cycle(sample.Sample{Num: v}, sample.Sample{Num: 1}), int64(1000*(i+1)), int64(1000*(i+1)))
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
	got := n.Apply(nil, cycle(sample.Sample{Num: 20.6}, sample.Sample{Num: 1}), 14_000, 14_000)
	if len(got) != 2 {
		t.Errorf("heartbeat: got %d readings, want 2", len(got))
	}
	// a quality change is always reported
	n.Apply(nil, cycle(sample.Sample{Num: 20.6}, sample.Sample{Num: 1}), 15_000, 15_000)
	got = n.Apply(nil, cycle(sample.Sample{Quality: telemetry.QualityBad}, sample.Sample{Num: 1}), 16_000, 16_000)
	if len(got) != 2 || got[0].Quality != telemetry.QualityBad {
		t.Errorf("quality change: %+v", got)
	}
}

func TestOutOfRangeIsUncertainAndNaNIsBad(t *testing.T) {
	n := New([]Point{{Signal: "a", Min: fp(0), Max: fp(10)}, {Signal: "b"}}, 3, 0)
	got := n.Apply(nil, cycle(sample.Sample{Num: 11}, sample.Sample{Num: nan()}), 1000, 1000)
	if got[0].Quality != telemetry.QualityUncertain || got[0].Value != 11 {
		t.Errorf("out of range: %+v", got[0])
	}
	if got[1].Quality != telemetry.QualityBad || got[1].HasValue() {
		t.Errorf("NaN: %+v", got[1])
	}
}

func nan() float64 { z := 0.0; return z / z }

func BenchmarkApply100(b *testing.B) { benchApply100(b, false) }

// BenchmarkApply100Reported: every point's device reported its units
// (SetConversion, as an OPC UA node's EngineeringUnits): the override path.
func BenchmarkApply100Reported(b *testing.B) { benchApply100(b, true) }

func benchApply100(b *testing.B, reported bool) {
	pts := make([]Point, 100)
	raws := make([]sample.Sample, 100)
	c, _ := units.Convert("bar", "MPa")
	for i := range pts {
		pts[i] = Point{Signal: "s", Unit: "MPa", Scale: 0.1, Conv: c, Src: "modbus:1:hr:0", IntervalMS: 1000}
		raws[i] = sample.Sample{Index: i, Num: float64(i)}
	}
	n := New(pts, 3, 0)
	if reported {
		for i := range pts {
			n.SetConversion(i, c, nil, fp(1000))
		}
	}
	dst := make([]telemetry.Reading, 0, 100)
	now := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		now += 1000
		dst = n.Apply(dst[:0], raws, now, now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/reading")
}

func TestApplyOneKeepsStaleAndConverts(t *testing.T) {
	n := New([]Point{{Signal: "a", Unit: "Cel"}, {Signal: "b", Unit: "kPa"}}, 3, 0)
	n.SetConversion(1, conv(t, "bar", "kPa"), nil, fp(500))
	got := n.ApplyOne(nil, &sample.Sample{Index: 1, Num: 2}, 1000, 1000)
	if len(got) != 1 || got[0].Signal != "b" || got[0].Value != 200 || got[0].Quality != telemetry.QualityGood {
		t.Fatalf("got %+v", got)
	}
	got = n.ApplyOne(nil, &sample.Sample{Index: 1, Num: 6}, 2000, 2000)
	if got[0].Quality != telemetry.QualityUncertain {
		t.Errorf("above SetConversion max: %+v", got[0])
	}
	got = n.ApplyOne(nil, &sample.Sample{Quality: telemetry.QualityStale, Status: 0x80000000}, 3000, 3000)
	if got[0].Quality != telemetry.QualityStale || got[0].Status != 0x80000000 || got[0].HasValue() {
		t.Errorf("stale: %+v", got[0])
	}
}

// TestSharedTableIsNeverModified: a Table (the compiled configuration's)
// is shared by the normalizer, not copied; the Set methods keep what the
// device reports in overrides, so the table never changes. (Before issue
// 17's session 9 the shared table was a []Point read in place.)
func TestSharedTableIsNeverModified(t *testing.T) {
	lo, hi := 0.0, 10.0
	table := NewTable([]Point{{Signal: "a", Unit: "kW", Scale: 1, Conv: units.Identity, IntervalMS: 1000},
		{Signal: "b", Unit: "Cel", Scale: 0.1, Conv: units.Identity, IntervalMS: 1000, NoUnit: true}})
	orig := []Point{table.Point(0), table.Point(1)}
	n := NewFromTable(table, 3, 0)
	if n.Table() != table {
		t.Fatal("a compiled table was copied")
	}
	n.SetConversion(0, units.Conversion{Scale: 1000}, &lo, &hi)
	n.SetUnit(1, "K")
	n.SetNoUnit(0)
	if got := []Point{table.Point(0), table.Point(1)}; !reflect.DeepEqual(got, orig) {
		t.Fatalf("the shared table changed: %+v", got)
	}
	if p0, p1 := n.Point(0), n.Point(1); p0.Conv.Scale != 1000 || *p0.Max != 10 || !p0.NoUnit || p1.Unit != "K" || p1.NoUnit {
		t.Fatalf("the normalizer's points: %+v %+v", p0, p1)
	}
	// defaults are filled in the table, never in the caller's points
	raw := []Point{{Signal: "a", Unit: "kW", IntervalMS: 1000}}
	n = New(raw, 3, 0)
	if p := n.Table().Point(0); raw[0].Scale != 0 || p.Scale != 1 || p.Conv.Scale != 1 {
		t.Fatalf("defaults: caller %+v, normalizer %+v", raw[0], p)
	}
}

// TestTableSharesShapes: the points of a device normalized alike share one
// shape, so a Table keeps 40 bytes a point (signal, source, shape index)
// where a []Point kept 128 (issue 17, docs/benchmarks.md "OPC UA memory,
// sixth pass"); a point differing in any field, a range bound's sign
// included, gets its own, and Point gives back every field.
func TestTableSharesShapes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(row{}) != 40 {
		t.Fatalf("a Table row is %d bytes, want 40", unsafe.Sizeof(row{}))
	}
	lo, hi, zero, negZero := 0.0, 100.0, 0.0, math.Copysign(0, -1)
	states := &Labels{States: []string{"off", "on"}}
	var pts []Point
	for i := range 1000 {
		lo2, hi2 := lo, hi // each point's own bounds, equal values
		pts = append(pts, Point{Signal: fmt.Sprintf("s%d", i), Unit: "kW", Scale: 1, Conv: units.Identity, Min: &lo2, Max: &hi2,
			Src: fmt.Sprintf("opcua:ns=1;s=s%d", i), IntervalMS: 100})
	}
	odd := []Point{
		{Signal: "scale", Unit: "kW", Scale: 0.1, Conv: units.Identity, Min: &lo, Max: &hi, IntervalMS: 100},
		{Signal: "offset", Unit: "kW", Scale: 1, Offset: 2, Conv: units.Identity, Min: &lo, Max: &hi, IntervalMS: 100},
		{Signal: "conv", Unit: "kW", Scale: 1, Conv: units.Conversion{Scale: 0.001}, Min: &lo, Max: &hi, IntervalMS: 100},
		{Signal: "band", Unit: "kW", Scale: 1, Conv: units.Identity, Deadband: 0.5, Min: &lo, Max: &hi, IntervalMS: 100},
		{Signal: "state", Scale: 1, Conv: units.Identity, Labels: states, IntervalMS: 100},
		{Signal: "unit", Unit: "W", Scale: 1, Conv: units.Identity, Min: &lo, Max: &hi, IntervalMS: 100},
		{Signal: "iv", Unit: "kW", Scale: 1, Conv: units.Identity, Min: &lo, Max: &hi, IntervalMS: 200},
		{Signal: "nounit", Scale: 1, Conv: units.Identity, Min: &lo, Max: &hi, IntervalMS: 100, NoUnit: true},
		{Signal: "min0", Unit: "kW", Scale: 1, Conv: units.Identity, Min: &zero, IntervalMS: 100},
		{Signal: "min-0", Unit: "kW", Scale: 1, Conv: units.Identity, Min: &negZero, IntervalMS: 100},
	}
	pts = append(pts, odd...)
	tb := NewTable(pts)
	if len(tb.shapes) != 1+len(odd) {
		t.Fatalf("%d shapes for 1 shared and %d distinct", len(tb.shapes), len(odd))
	}
	for i := range pts {
		got, want := tb.Point(i), pts[i]
		if (got.Min == nil) != (want.Min == nil) || got.Min != nil && math.Float64bits(*got.Min) != math.Float64bits(*want.Min) ||
			(got.Max == nil) != (want.Max == nil) || got.Max != nil && *got.Max != *want.Max {
			t.Fatalf("point %d: range %v..%v, want %v..%v", i, got.Min, got.Max, want.Min, want.Max)
		}
		got.Min, got.Max, want.Min, want.Max = nil, nil, nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("point %d: %+v, want %+v", i, got, want)
		}
	}
	if tb.Index("state") != 1004 || tb.Index("none") != -1 || tb.Signal(3) != "s3" || tb.Len() != 1010 {
		t.Fatal("Index, Signal or Len")
	}
}

// value normalizes one good sample of point i.
func value(t *testing.T, n *Normalizer, i int, raw float64) telemetry.Reading {
	t.Helper()
	got := n.ApplyOne(nil, &sample.Sample{Index: i, Num: raw}, 1000, 1000)
	if len(got) != 1 {
		t.Fatalf("point %d: %d readings", i, len(got))
	}
	return got[0]
}

// TestPerPointOverride: what one point's device reports (conversion,
// range, unit) applies to that point alone, exactly, without copying the
// table; points that reported the same units share one override, and a
// later change of one of them leaves the others as they were.
func TestPerPointOverride(t *testing.T) {
	table := []Point{
		{Signal: "a", Unit: "kPa", Scale: 1, Conv: units.Identity},
		{Signal: "b", Unit: "kPa", Scale: 1, Conv: units.Identity},
		{Signal: "c", Unit: "kPa", Scale: 1, Conv: units.Identity, Min: fp(0), Max: fp(100)},
		{Signal: "d", Unit: "", Scale: 1, Conv: units.Identity, NoUnit: true},
	}
	orig := slices.Clone(table)
	n := New(table, 3, 0)
	bar := conv(t, "bar", "kPa")
	n.SetConversion(0, bar, nil, fp(500))
	n.SetConversion(1, bar, nil, fp(500))
	if len(n.over) != 1 {
		t.Fatalf("%d override entries for two points with the same units", len(n.over))
	}
	if r := value(t, n, 0, 2); r.Value != 200 || r.Quality != telemetry.QualityGood || r.Unit != "kPa" {
		t.Errorf("a: %+v", r)
	}
	if r := value(t, n, 1, 6); r.Value != 600 || r.Quality != telemetry.QualityUncertain {
		t.Errorf("b above the reported max: %+v", r)
	}
	// c reported nothing: its configuration applies, range included
	if r := value(t, n, 2, 2); r.Value != 2 || r.Quality != telemetry.QualityGood {
		t.Errorf("c: %+v", r)
	}
	if r := value(t, n, 2, 101); r.Quality != telemetry.QualityUncertain {
		t.Errorf("c above its configured max: %+v", r)
	}
	// b's node changes to psi: a stays in bar
	psi := conv(t, "[psi]", "kPa")
	n.SetConversion(1, psi, nil, nil)
	if r := value(t, n, 0, 2); r.Value != bar.Apply(2) {
		t.Errorf("a after b changed: %+v, want %v", r, bar.Apply(2))
	}
	if r := value(t, n, 1, 10); r.Value != psi.Apply(10) || r.Quality != telemetry.QualityGood {
		t.Errorf("b in psi: %+v, want %v good", r, psi.Apply(10))
	}
	if r := value(t, n, 1, 100); r.Quality != telemetry.QualityUncertain {
		t.Errorf("b's reported max 500 kPa no longer held after a change without range: %+v", r)
	}
	// c's own range: a reported lower bound leaves the configured max
	n.SetConversion(2, units.Identity, fp(10), nil)
	if r := value(t, n, 2, 5); r.Quality != telemetry.QualityUncertain {
		t.Errorf("c below its reported min: %+v", r)
	}
	if r := value(t, n, 2, 101); r.Quality != telemetry.QualityUncertain {
		t.Errorf("c above its configured max: %+v", r)
	}
	// d: no unit, bad, until the device gives one
	if r := value(t, n, 3, 4); r.Quality != telemetry.QualityBad || r.Status != StatusNoUnit || r.HasValue() {
		t.Errorf("d without unit: %+v", r)
	}
	n.SetConversion(3, units.Identity, nil, nil)
	n.SetUnit(3, "m")
	if r := value(t, n, 3, 4); r.Quality != telemetry.QualityGood || r.Value != 4 || r.Unit != "m" {
		t.Errorf("d in m: %+v", r)
	}
	if n.Unit(3) != "m" || n.Unit(0) != "kPa" {
		t.Errorf("units %q %q", n.Unit(3), n.Unit(0))
	}
	if !reflect.DeepEqual(table, orig) {
		t.Fatalf("the configured table changed: %+v", table)
	}
}

// TestUnitsChangeTwice: a device whose node's unit changes twice (mm,
// then m, then back to mm) has each change applied exactly from its
// next value on, and its NoUnit mark follows.
func TestUnitsChangeTwice(t *testing.T) {
	table := []Point{{Signal: "level", Unit: "m", Scale: 1, Conv: units.Identity},
		{Signal: "other", Unit: "m", Scale: 1, Conv: units.Identity}}
	n := New(table, 3, 0)
	mm, m := conv(t, "mm", "m"), conv(t, "m", "m")
	steps := []struct {
		c    units.Conversion
		raw  float64
		want float64
	}{{mm, 2500, mm.Apply(2500)}, {m, 2.5, 2.5}, {mm, 1200, mm.Apply(1200)}}
	for k, st := range steps {
		n.SetConversion(0, st.c, nil, nil)
		if r := value(t, n, 0, st.raw); r.Value != st.want || r.Quality != telemetry.QualityGood || r.Unit != "m" {
			t.Errorf("change %d: %+v, want %v", k, r, st.want)
		}
		if r := value(t, n, 1, 7); r.Value != 7 {
			t.Errorf("change %d: the other point %+v", k, r)
		}
	}
	n.SetNoUnit(0)
	if r := value(t, n, 0, 5); r.Quality != telemetry.QualityBad || r.Status != StatusNoUnit {
		t.Errorf("after SetNoUnit: %+v", r)
	}
	n.SetConversion(0, mm, nil, nil)
	if r := value(t, n, 0, 5); r.Quality != telemetry.QualityGood || r.Value != mm.Apply(5) {
		t.Errorf("units again: %+v", r)
	}
	// changes back and forth do not grow the entries past the points
	for k := range 1000 {
		n.SetConversion(0, units.Conversion{Scale: float64(k + 2)}, fp(float64(-k)), nil)
	}
	if len(n.over) > len(table)+16 {
		t.Errorf("%d override entries for %d points", len(n.over), len(table))
	}
	if r := value(t, n, 0, 3); r.Value != 3*1001 {
		t.Errorf("after 1000 changes: %+v, want %v", r, 3*1001)
	}
	if r := value(t, n, 0, -998); r.Quality != telemetry.QualityUncertain {
		t.Errorf("below the last reported min -999: %+v", r)
	}
}

// TestUnitChangeAfterReload: a reload builds a new normalizer over the
// new configuration's table; the old normalizer's overrides do not carry
// over, the device's units (reported again at connect) apply to it alone,
// and a unit that changed across the reload applies exactly.
func TestUnitChangeAfterReload(t *testing.T) {
	table := []Point{{Signal: "level", Unit: "m", Scale: 1, Conv: units.Identity}}
	old := New(table, 3, 0)
	old.SetConversion(0, conv(t, "mm", "m"), nil, nil)
	reloaded := New(table, 3, 0) // same compiled table, as an unchanged device's
	if r := value(t, reloaded, 0, 4); r.Value != 4 {
		t.Fatalf("before the device reports its units again: %+v", r)
	}
	reloaded.SetConversion(0, conv(t, "cm", "m"), nil, nil)
	if r := value(t, reloaded, 0, 250); r.Value != conv(t, "cm", "m").Apply(250) {
		t.Errorf("reloaded, cm: %+v", r)
	}
	if r := value(t, old, 0, 2500); r.Value != conv(t, "mm", "m").Apply(2500) {
		t.Errorf("old generation, mm: %+v", r)
	}
	if table[0].Conv != units.Identity {
		t.Errorf("the shared table changed: %+v", table[0])
	}
}

// TestDeadbandStatePerPoint: only deadbanded points keep report state, each
// its own, whatever their position among points without a deadband.
func TestDeadbandStatePerPoint(t *testing.T) {
	pts := []Point{{Signal: "a", Unit: "kW"}, {Signal: "b", Unit: "kW", Deadband: 1}, {Signal: "c", Unit: "kW"},
		{Signal: "d", Unit: "kW", Deadband: 10}}
	n := New(pts, 3, 0)
	if len(n.band) != 2 {
		t.Fatalf("%d band states for 2 deadbanded points", len(n.band))
	}
	if plain := New(pts[:1], 3, 0); plain.band != nil || plain.bandOf != nil {
		t.Fatal("deadband state for a device without deadbands")
	}
	cycle := func(now int64, v ...float64) []string {
		var ss []sample.Sample
		for i, x := range v {
			ss = append(ss, sample.Sample{Index: i, Num: x})
		}
		var out []string
		for _, r := range n.Apply(nil, ss, now, now) {
			out = append(out, fmt.Sprintf("%s=%v", r.Signal, r.Value))
		}
		return out
	}
	steps := []struct {
		v    []float64
		want string
	}{
		{[]float64{1, 1, 1, 1}, "[a=1 b=1 c=1 d=1]"},
		{[]float64{2, 1.5, 2, 5}, "[a=2 c=2]"},           // both within their bands
		{[]float64{2, 2, 2, 10}, "[a=2 b=2 c=2]"},        // b moved 1 from its last report, d 9 < 10
		{[]float64{3, 2.5, 3, 11.5}, "[a=3 c=3 d=11.5]"}, // d moved 10.5 from 1
	}
	for i, s := range steps {
		if got := fmt.Sprint(cycle(int64(1000*(i+1)), s.v...)); got != s.want {
			t.Errorf("cycle %d: %s, want %s", i, got, s.want)
		}
	}
}

// TestDecimalScaleIsExact: a register scaled by 1/10^k is published as the
// double nearest the exact decimal (1001 x 0.1 = 100.1), never one ulp off
// as the product with the double nearest 0.1 is (100.10000000000001), for
// every 16-bit register value and both signs.
func TestDecimalScaleIsExact(t *testing.T) {
	for k, scale := range []float64{0.1, 0.01, 0.001, 0.0001, 0.00001, 0.000001} {
		pow := math.Pow(10, float64(k+1))
		n := New([]Point{{Signal: "x", Unit: "Cel", Scale: scale, Conv: units.Identity, IntervalMS: 1000}}, 3, 0)
		for raw := -65535; raw <= 65535; raw++ {
			var got []telemetry.Reading
			got = n.ApplyOne(got, &sample.Sample{Index: 0, Num: float64(raw), Quality: telemetry.QualityGood}, 1, 1)
			// the exact decimal raw/10^k, parsed: the nearest double
			want, err := strconv.ParseFloat(strconv.Itoa(raw)+"e-"+strconv.Itoa(k+1), 64)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Value != want {
				t.Fatalf("raw %d x %v: got %v, want %v (%d/%v)", raw, scale, got, want, raw, pow)
			}
		}
	}
	// other scales multiply, as before
	n := New([]Point{{Signal: "x", Unit: "Cel", Scale: 0.5, Offset: -40, Conv: units.Identity, IntervalMS: 1000}}, 3, 0)
	got := n.ApplyOne(nil, &sample.Sample{Index: 0, Num: 101, Quality: telemetry.QualityGood}, 1, 1)
	if len(got) != 1 || got[0].Value != 10.5 {
		t.Fatalf("101 x 0.5 - 40: got %v, want 10.5", got)
	}
}

// TestPointSize: the labels only state points use hang off a pointer
// (128 bytes a point on 64-bit, not 152: issue 17, docs/benchmarks.md
// "OPC UA memory, fourth pass"); a gateway keeps its points as a Table
// (TestTableSharesShapes).
func TestPointSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(Point{}) != 128 {
		t.Fatalf("Point is %d bytes, want 128", unsafe.Sizeof(Point{}))
	}
	var numeric Point
	if numeric.States() != nil || numeric.Enum() != nil {
		t.Fatal("a point without labels has states or an enum")
	}
}

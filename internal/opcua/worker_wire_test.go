package opcua

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// wireCycles are cycles that exercise every field of the binary cycle
// payload.
func wireCycles() []*sample.Cycle {
	return []*sample.Cycle{
		{Start: time.Unix(1764470000, 5), Interval: 100 * time.Millisecond, Replied: true, Samples: []sample.Sample{
			{Index: 0, Num: 1.5, TS: 1764470000123},
			{Index: 1 << 20, Num: math.Inf(-1), Quality: telemetry.QualityUncertain, Status: uint32(ua.StatusUncertain), TS: 1764470000100},
			{Index: 2, Str: "héllo\x00", IsStr: true, Quality: telemetry.QualityGood},
			{Index: 3, Quality: telemetry.QualityBad, Silent: true, Status: math.MaxUint32},
		}},
		{Start: time.Unix(-5, 0), Duration: -time.Second, Lost: true, Samples: []sample.Sample{{Index: 4, Quality: telemetry.QualityStale, Status: 0x80310000}}},
		{}, // zero Start, no samples
	}
}

// TestWireCycleRoundTrip: every field of a cycle crosses the binary
// framing unchanged, one frame after another through one reader.
func TestWireCycleRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	want := wireCycles()
	for _, c := range want {
		if err := writeFrame(&buf, &wireMsg{Kind: msgCycle, Cycle: cycleWithErr(c)}); err != nil {
			t.Fatal(err)
		}
	}
	fr := &frameReader{r: &buf}
	for i, c := range want {
		var m wireMsg
		if err := fr.read(&m); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if m.Kind != msgCycle || m.Cycle == nil {
			t.Fatalf("cycle %d: kind %q", i, m.Kind)
		}
		got := *m.Cycle
		exp := *cycleWithErr(c)
		if !got.Start.Equal(exp.Start) || got.Start.IsZero() != exp.Start.IsZero() {
			t.Errorf("cycle %d: start %v, want %v", i, got.Start, exp.Start)
		}
		got.Start, exp.Start = time.Time{}, time.Time{}
		if len(got.Samples) == 0 && len(exp.Samples) == 0 {
			got.Samples, exp.Samples = nil, nil
		}
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("cycle %d:\n got %+v\nwant %+v", i, got, exp)
		}
	}
	var m wireMsg
	if err := fr.read(&m); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// cycleWithErr is c as a wireCycle, a Lost one with an error that has
// every field set.
func cycleWithErr(c *sample.Cycle) *wireCycle {
	w := &wireCycle{Samples: c.Samples, Start: c.Start, Duration: c.Duration, Interval: c.Interval, Replied: c.Replied, Lost: c.Lost}
	if c.Lost {
		pt := 7
		w.Err = &wireErr{Text: "x", Kinds: []string{"session_lost"}, Status: 0x80000000, Point: &pt}
	}
	return w
}

// TestWireFrameRejects: a malformed frame is an error that says what is
// wrong, never a panic nor a huge allocation.
func TestWireFrameRejects(t *testing.T) {
	good, err := appendFrame(nil, &wireMsg{Kind: msgCycle, Cycle: cycleWithErr(wireCycles()[0])})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(body ...byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	}
	body := good[4:]
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"short", frame(wireVersion), "out of range 2.."},
		{"version", frame(append([]byte{9}, body[1:]...)...), "version 9, this binary speaks 1"},
		{"kind", frame(wireVersion, 42), "kind 42 unknown"},
		{"slot", frame(wireVersion, 3, 0x80), "device slot"},
		{"truncated", frame(body[:len(body)-3]...), "sample 3"},
		{"trailing", frame(append(append([]byte{}, body...), 0)...), "1 bytes after the last sample"},
		{"count", frame(wireVersion, 3, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), "sample count"},
		{"flags", frame(wireVersion, 3, 0, 0, 0, 0, 0x80, 0), "unknown bits"},
		{"sample flags", frame(wireVersion, 3, 0, 0, 0, 0, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0), "sample 0: flags"},
		{"json kind", frame(append([]byte{wireVersion, 5, 0}, `{"k":"cycle"}`...)...), `kind status holds a "cycle" message`},
		{"json", frame(wireVersion, 5, 0, '{'), "worker frame status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m wireMsg
			err := readFrame(bytes.NewReader(tc.frame), &m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzWireFrame: the decoder rejects or accepts any body without
// panicking, and what it accepts encodes back to a frame it decodes the
// same.
func FuzzWireFrame(f *testing.F) {
	for _, c := range wireCycles() {
		b, err := appendFrame(nil, &wireMsg{Kind: msgCycle, Cycle: cycleWithErr(c)})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[4:])
	}
	st := Status{Connected: true, Sessions: 2}
	for _, m := range []*wireMsg{{Kind: msgStatus, Status: &st}, {Kind: msgHello, PID: 3}, {Kind: msgResp, Resp: &wireResp{ID: 1, Err: &wireErr{Text: "e"}}}} {
		b, err := appendFrame(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fr frameReader
		var m wireMsg
		if fr.decode(body, &m) != nil || m.Kind != msgCycle {
			return
		}
		again, err := appendFrame(nil, &m)
		if err != nil {
			t.Fatalf("decoded cycle does not encode: %v", err)
		}
		var fr2 frameReader
		var m2 wireMsg
		if err := fr2.decode(again[4:], &m2); err != nil {
			t.Fatalf("re-encoded cycle does not decode: %v", err)
		}
		a, b := *m.Cycle, *m2.Cycle
		if !a.Start.Equal(b.Start) || len(a.Samples) != len(b.Samples) || a.Lost != b.Lost || a.Replied != b.Replied ||
			a.Duration != b.Duration || a.Interval != b.Interval || !reflect.DeepEqual(a.Err, b.Err) {
			t.Fatalf("round trip changed the cycle:\n%+v\n%+v", a, b)
		}
		for i := range a.Samples {
			x, y := a.Samples[i], b.Samples[i]
			if math.Float64bits(x.Num) != math.Float64bits(y.Num) {
				t.Fatalf("sample %d value %v -> %v", i, x.Num, y.Num)
			}
			x.Num, y.Num = 0, 0
			if x != y {
				t.Fatalf("sample %d: %+v -> %+v", i, x, y)
			}
		}
	})
}

// TestWireJSONCarriesNonFiniteFloats: the JSON kinds carry NaN and ±Inf
// (an EURange of NaN..NaN, a value read or written, a metric) as they are:
// encoding/json refuses them, and a refused units frame used to stop the
// worker's output for good while its parent waited.
func TestWireJSONCarriesNonFiniteFloats(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	var buf bytes.Buffer
	units := []NodeUnit{
		{Index: 0, UnitID: 4408652, UNECE: "KPA", UCUM: "kPa", Display: "kPa", Min: nan, Max: nan, HasRange: true},
		{Index: 2, UnitID: -1, Min: -inf, Max: inf, HasRange: true},
		{Index: 3, UnitID: 1, Min: -0.5, Max: 1e300, HasRange: true, Err: errors.New("EURange: not a Range")},
	}
	ws := make([]wireUnit, len(units))
	for i, u := range units {
		ws[i] = toWireUnit(u)
	}
	samples := []sample.Sample{
		{Index: 1, Num: nan, Quality: telemetry.QualityGood, TS: 5},
		{Index: 2, Num: -inf, Quality: telemetry.QualityBad, Status: 0x80740000, Silent: true},
		{Index: 3, Str: "x", IsStr: true, Quality: telemetry.QualityUncertain},
	}
	msgs := []*wireMsg{
		{Kind: msgUnits, Dev: 3, Units: ws},
		{Kind: msgReq, Req: &wireReq{ID: 1, Op: opWrite, Value: wireFloat(inf)}},
		{Kind: msgMetrics, Metrics: &wireMetrics{Values: []metricValue{{Name: "g", Gauge: true, Value: wireFloat(nan)}}, Latency: []wireFloat{0.25, wireFloat(inf)}}},
		{Kind: msgPing},
	}
	for _, s := range samples {
		msgs = append(msgs, &wireMsg{Kind: msgResp, Resp: &wireResp{ID: 2, Sample: toWireSample(s), Held: wireFloat(-inf)}})
	}
	for _, m := range msgs {
		if err := writeFrame(&buf, m); err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
	}
	fr := &frameReader{r: &buf}
	var got []wireMsg
	for range msgs {
		var m wireMsg
		if err := fr.read(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	// %v writes NaN as NaN: equal texts are equal floats, bit for bit
	// but for NaN's payload
	for i, u := range units {
		g := got[0].Units[i].unit()
		if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", u) && (u.Err == nil || g.Err.Error() != u.Err.Error()) {
			t.Errorf("unit %d: got %+v, want %+v", i, g, u)
		}
	}
	if got[0].Dev != 3 {
		t.Errorf("units slot %d", got[0].Dev)
	}
	if v := float64(got[1].Req.Value); !math.IsInf(v, 1) {
		t.Errorf("write value %v", v)
	}
	if mv := got[2].Metrics; !math.IsNaN(float64(mv.Values[0].Value)) || !math.IsInf(float64(mv.Latency[1]), 1) || mv.Latency[0] != 0.25 {
		t.Errorf("metrics %+v", mv)
	}
	if got[3].Kind != msgPing {
		t.Errorf("ping: %q", got[3].Kind)
	}
	for i, s := range samples {
		r := got[4+i].Resp
		if g := r.Sample.sample(); fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", s) || !math.IsInf(float64(r.Held), -1) {
			t.Errorf("sample %d: got %+v held %v, want %+v", i, g, r.Held, s)
		}
	}
}

// TestWireUnitCarriesEveryField: a field added to NodeUnit crosses the wire
// (wireUnit embeds it), a float one even when not finite.
func TestWireUnitCarriesEveryField(t *testing.T) {
	var u NodeUnit
	v := reflect.ValueOf(&u).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64:
			f.SetInt(int64(-7 - i))
		case reflect.String:
			f.SetString("s" + v.Type().Field(i).Name)
		case reflect.Float64:
			f.SetFloat(math.NaN())
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Interface: // Err
		default:
			t.Fatalf("NodeUnit.%s: kind %s not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	var buf bytes.Buffer
	if err := writeFrame(&buf, &wireMsg{Kind: msgUnits, Units: []wireUnit{toWireUnit(u)}}); err != nil {
		t.Fatal(err)
	}
	var m wireMsg
	if err := readFrame(&buf, &m); err != nil {
		t.Fatal(err)
	}
	if g := m.Units[0].unit(); fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", u) {
		t.Fatalf("got  %+v\nwant %+v", g, u)
	}
}

// TestSameUnitNaNRange: a node whose EURange stays NaN..NaN has not
// changed its units (OnUnits is not called again at every check).
func TestSameUnitNaNRange(t *testing.T) {
	nan := math.NaN()
	a := NodeUnit{UnitID: 1, UCUM: "kPa", Min: nan, Max: nan, HasRange: true}
	if !sameUnits([]NodeUnit{a}, []NodeUnit{a}) {
		t.Fatal("NaN..NaN differs from itself")
	}
	b := a
	b.Max = math.Inf(1)
	if sameUnits([]NodeUnit{a}, []NodeUnit{b}) {
		t.Fatal("NaN..NaN same as NaN..+Inf")
	}
}

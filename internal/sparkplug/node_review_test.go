package sparkplug

import (
	"errors"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

func envOf(t *testing.T, a telemetry.Asset, kind telemetry.Kind, v any) telemetry.Envelope {
	t.Helper()
	var data []byte
	var err error
	switch x := v.(type) {
	case *telemetry.Batch:
		data = x.AppendJSON(nil)
	case *telemetry.Birth:
		data, err = telemetry.MarshalBirth(x)
	case *telemetry.Death:
		data, err = telemetry.MarshalDeath(x)
	}
	if err != nil {
		t.Fatal(err)
	}
	return telemetry.Envelope{Subject: telemetry.AssetSubject(a, kind), Data: data}
}

func types(out []Message) []MessageType {
	var ts []MessageType
	for _, m := range out {
		ts = append(ts, m.Type)
	}
	return ts
}

// TestTCKOperationalBehaviorDeviceDDEATH: after a device's DDEATH
// (tck-id-operational-behavior-device-ddeath), stale readings of it do not
// re-birth it; it stays dead until real data (here a bad answer) arrives.
func TestTCKOperationalBehaviorDeviceDDEATH(t *testing.T) {
	n, _ := NewNode("plant", "gw-1")
	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor"}
	if _, err := n.Birth(0, 1); err != nil {
		t.Fatal(err)
	}
	batch := func(q telemetry.Quality) telemetry.Envelope {
		return envOf(t, a, telemetry.KindData, &telemetry.Batch{Gateway: "gw-1", Seq: 1, Asset: a, TSGW: 10,
			Readings: []telemetry.Reading{{Signal: "p", Value: 1, Quality: q, TS: 10}, {Signal: "t", Quality: q, TS: 10}}})
	}
	good := batch(telemetry.QualityGood)
	if out, err := n.Translate(&good, 2); err != nil || len(out) != 2 {
		t.Fatalf("first data %v %v", types(out), err)
	}
	death := envOf(t, a, telemetry.KindDeath, &telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw-1", Seq: 2, Asset: a.ToJSON(), TSGW: 11, Reason: "x"})
	if out, err := n.Translate(&death, 3); err != nil || len(out) != 1 || out[0].Type != DDEATH {
		t.Fatalf("death %v %v", types(out), err)
	}
	stale := batch(telemetry.QualityStale)
	for range 3 {
		if out, err := n.Translate(&stale, 4); err != nil || len(out) != 0 {
			t.Fatalf("stale readings of a dead device gave %v %v, want nothing", types(out), err)
		}
	}
	bad := batch(telemetry.QualityBad)
	if out, err := n.Translate(&bad, 5); err != nil || len(out) != 2 || out[0].Type != DBIRTH || out[1].Type != DDATA {
		t.Fatalf("real (bad) data after death %v %v, want DBIRTH, DDATA", types(out), err)
	}
	// alive again: stale readings are data like any other
	if out, err := n.Translate(&stale, 6); err != nil || len(out) != 1 || out[0].Type != DDATA {
		t.Fatalf("stale readings of a live device %v %v", types(out), err)
	}
}

// TestBacklogHistorical: batches from before the session went live are
// sent with is_historical on every metric and do not become the current
// values of the next DBIRTH; later ones are live.
func TestBacklogHistorical(t *testing.T) {
	n, _ := NewNode("plant", "gw-1")
	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor"}
	n.SetLiveSince(1000)
	if _, err := n.Birth(0, 1000); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tsgw int64
		hist bool
	}{{999, true}, {1000, false}, {500, true}, {2000, false}} {
		e := envOf(t, a, telemetry.KindData, &telemetry.Batch{Gateway: "gw-1", Seq: 1, Asset: a, TSGW: tc.tsgw,
			Readings: []telemetry.Reading{{Signal: "p", Value: float64(tc.tsgw), TS: tc.tsgw}}})
		out, err := n.Translate(&e, 2000)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Decode(out[len(out)-1].Payload)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range p.Metrics {
			if m.GetIsHistorical() != tc.hist {
				t.Errorf("ts_gw %d: is_historical %v, want %v", tc.tsgw, m.GetIsHistorical(), tc.hist)
			}
		}
	}
	n.EndSession()
	out, err := n.Birth(1, 3000)
	if err != nil || len(out) != 2 {
		t.Fatalf("rebirth %v %v", types(out), err)
	}
	p, _ := Decode(out[1].Payload)
	if v := p.Metrics[0].GetDoubleValue(); v != 2000 {
		t.Fatalf("DBIRTH current value %v, want 2000 (the last live one, not the backlog's)", v)
	}
}

// TestDeviceBirthTooLarge: with a packet limit, a device whose DBIRTH does
// not fit is left out of the birth sequence, its data is refused with
// ErrBirthTooLarge without using a seq, it is reported once, and a new
// birth that fits brings it back.
func TestDeviceBirthTooLarge(t *testing.T) {
	n, _ := NewNode("plant", "gw-1")
	n.SetLimit(func(topic string, size int) bool { return size < 200 })
	small, big := telemetry.Asset{ID: "ac-1", Class: "air_compressor"}, telemetry.Asset{ID: "big-1", Class: "air_compressor"}
	var sigs []telemetry.SignalInfo
	for _, s := range []string{"a_long_signal_name_1", "a_long_signal_name_2", "a_long_signal_name_3", "a_long_signal_name_4", "a_long_signal_name_5", "a_long_signal_name_6"} {
		sigs = append(sigs, telemetry.SignalInfo{Signal: s, Unit: "kPa", Src: "modbus:1:hr:1000"})
	}
	if _, err := n.Birth(0, 1); err != nil {
		t.Fatal(err)
	}
	bb := envOf(t, big, telemetry.KindBirth, &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: 1, Asset: big.ToJSON(), TSGW: 1, Signals: sigs})
	if _, err := n.Translate(&bb, 2); !errors.Is(err, ErrBirthTooLarge) {
		t.Fatalf("big birth: %v", err)
	}
	data := func(a telemetry.Asset, sig string) telemetry.Envelope {
		return envOf(t, a, telemetry.KindData, &telemetry.Batch{Gateway: "gw-1", Seq: 2, Asset: a, TSGW: 2, Readings: []telemetry.Reading{{Signal: sig, Value: 1, TS: 2}}})
	}
	bd := data(big, "a_long_signal_name_1")
	if _, err := n.Translate(&bd, 3); !errors.Is(err, ErrBirthTooLarge) {
		t.Fatalf("big data: %v", err)
	}
	sd := data(small, "p")
	out, err := n.Translate(&sd, 4)
	if err != nil || len(out) != 2 {
		t.Fatalf("small data %v %v", types(out), err)
	}
	if p, _ := Decode(out[0].Payload); p.GetSeq() != 1 {
		t.Fatalf("DBIRTH of ac-1 has seq %d, want 1 (the refused births used none)", p.GetSeq())
	}
	if as := n.TakeSetAside(); len(as) != 1 || as[0].Device != "big-1" || as[0].Bytes < 200 {
		t.Fatalf("set aside %+v, want big-1 once", as)
	}
	if as := n.TakeSetAside(); len(as) != 0 {
		t.Fatalf("reported again: %+v", as)
	}
	n.EndSession()
	out, err = n.Birth(1, 5)
	if err != nil || len(out) != 2 || out[1].Topic != "spBv1.0/plant/DBIRTH/gw-1/ac-1" {
		t.Fatalf("birth sequence %v %v, want NBIRTH and ac-1's DBIRTH", types(out), err)
	}
	fit := envOf(t, big, telemetry.KindBirth, &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: 3, Asset: big.ToJSON(), TSGW: 1, Signals: sigs[:1]})
	if out, err := n.Translate(&fit, 6); err != nil || len(out) != 1 || out[0].Type != DBIRTH {
		t.Fatalf("a birth that fits: %v %v", types(out), err)
	}
}

// TestUncertainIsNotGoodOnTheWire (review13 F8): an uncertain reading goes
// out with Quality 0 (the specification knows 0, 192 and 500 only; 192
// made every third-party host show it good), its value kept and
// smelterQuality "uncertain" for Smelter's collector; good stays 192 (no
// property: the default), bad 0 without the property.
func TestUncertainIsNotGoodOnTheWire(t *testing.T) {
	n, _ := NewNode("plant", "gw-1")
	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor"}
	if _, err := n.Birth(0, 1); err != nil {
		t.Fatal(err)
	}
	e := envOf(t, a, telemetry.KindData, &telemetry.Batch{Gateway: "gw-1", Seq: 1, Asset: a, TSGW: 10, Readings: []telemetry.Reading{
		{Signal: "u", Value: 7, Quality: telemetry.QualityUncertain, Status: 0x40930000, TS: 10},
		{Signal: "g", Value: 8, TS: 10},
		{Signal: "b", Quality: telemetry.QualityBad, Status: 4, TS: 10}}})
	out, err := n.Translate(&e, 2)
	if err != nil || len(out) == 0 {
		t.Fatalf("%v %v", types(out), err)
	}
	p, err := Decode(out[len(out)-1].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Type != DBIRTH {
		t.Fatalf("%v: want DBIRTH first (aliases)", types(out))
	}
	birth, err := Decode(out[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	names := map[uint64]string{}
	for _, m := range birth.Metrics {
		names[m.GetAlias()] = m.GetName()
	}
	byName := map[string]int{}
	for i, m := range p.Metrics {
		name := m.GetName()
		if name == "" {
			name = names[m.GetAlias()]
		}
		byName[name] = i
	}
	check := func(name string, quality int32, uncertain bool, value float64, null bool) {
		t.Helper()
		i, ok := byName[name]
		if !ok {
			t.Fatalf("no metric %q in %v", name, byName)
		}
		m := p.Metrics[i]
		if q := MetricQuality(m); q != quality {
			t.Errorf("%s: Quality %d, want %d", name, q, quality)
		}
		v, has := Property(m, PropUncertain)
		if s, _ := PropString(v); (has && s == "uncertain") != uncertain {
			t.Errorf("%s: smelterQuality %q (present %v), want uncertain %v", name, s, has, uncertain)
		}
		if m.GetIsNull() != null || (!null && m.GetDoubleValue() != value) {
			t.Errorf("%s: value %v is_null %v, want %v null %v", name, m.GetDoubleValue(), m.GetIsNull(), value, null)
		}
	}
	check("u", QualityBad, true, 7, false)
	check("g", QualityGood, false, 8, false)
	check("b", QualityBad, false, 0, true)
}

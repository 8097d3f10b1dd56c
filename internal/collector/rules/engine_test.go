package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

type harness struct {
	t    testing.TB
	e    *Engine
	now  int64
	out  []alert.Alert
	seqs map[string]uint64
}

func newHarness(t testing.TB, defaults bool, ruleYAML string) *harness {
	t.Helper()
	cat := catalog.Default()
	var files []*File
	if defaults {
		d, err := DefaultPacks(cat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, d...)
	}
	if ruleYAML != "" {
		f, err := Parse("test.yaml", []byte(ruleYAML), cat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	h := &harness{t: t, now: 1_700_000_000_000, seqs: map[string]uint64{}}
	h.e = New(Merge(files...), cat, Options{Now: func() int64 { return h.now }})
	return h
}

// feed sends one batch of good readings at time ts (ms) and returns the alerts.
func (h *harness) feed(class, asset string, ts int64, kv ...any) []alert.Alert {
	h.t.Helper()
	return h.feedStored(class, asset, ts, 0, kv...)
}

// feedStored is feed for a batch the stream stored at stored (Unix ms; 0:
// unknown).
func (h *harness) feedStored(class, asset string, ts, stored int64, kv ...any) []alert.Alert {
	h.t.Helper()
	b := &telemetry.Batch{Gateway: "gw", Asset: telemetry.Asset{ID: asset, Class: class, Path: []string{"acme", "site1", "_", "_", "_"}}, TSGW: ts}
	for i := 0; i < len(kv); i += 2 {
		r := telemetry.Reading{Signal: kv[i].(string), TS: ts}
		switch v := kv[i+1].(type) {
		case float64:
			r.Value = v
		case int:
			r.Value = float64(v)
		case telemetry.Quality:
			r.Quality = v
		}
		b.Readings = append(b.Readings, r)
	}
	h.seqs["gw"]++
	b.Seq = h.seqs["gw"]
	if err := b.Validate(); err != nil {
		h.t.Fatal(err)
	}
	h.now = ts
	out := h.e.Process(b, stored, nil)
	h.out = append(h.out, out...)
	return out
}

const t0 = int64(1_700_000_000_000)

func sec(s int) int64 { return t0 + int64(s)*1000 }

func only(t *testing.T, got []alert.Alert, state alert.State, sev alert.Severity) alert.Alert {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("want one %s %s alert, got %d: %+v", state, sev, len(got), got)
	}
	if got[0].State != state || got[0].Severity != sev {
		t.Fatalf("want %s %s, got %s %s: %s", state, sev, got[0].State, got[0].Severity, got[0].Message)
	}
	return got[0]
}

func none(t *testing.T, got []alert.Alert, when string) {
	t.Helper()
	if len(got) != 0 {
		t.Fatalf("%s: want no alert, got %+v", when, got)
	}
}

const thresholdRule = `
version: 1
rules:
  - name: dt_high
    kind: threshold
    class: air_compressor
    signal: discharge_temp
    levels:
      - {severity: alarm, above: 110}
      - {severity: warn, above: 100}
    deadband: 3
    on_delay: 15s
    off_delay: 30s
`

func TestThresholdDelaysDeadbandLevels(t *testing.T) {
	h := newHarness(t, false, thresholdRule)
	s := 0
	step := func(v float64, n int) []alert.Alert {
		var got []alert.Alert
		for range n {
			got = append(got, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", v)...)
			s++
		}
		return got
	}
	none(t, step(95, 5), "below limit")
	none(t, step(101, 15), "on delay not elapsed (t=0..14 s)")
	a := only(t, step(101, 1), alert.Raised, alert.Warn) // 15 s after the first 101
	if !strings.Contains(a.Message, "discharge_temp 101 Cel above warn limit 100 Cel") || a.Values["discharge_temp"] != 101 {
		t.Fatalf("message %q values %v", a.Message, a.Values)
	}
	if a.Key != "site1.ac-1.dt_high.discharge_temp" || a.RaisedAt != sec(20) || a.Class != "air_compressor" {
		t.Fatalf("alert identity %+v", a)
	}
	none(t, step(112, 15), "escalation on delay")
	only(t, step(112, 1), alert.Updated, alert.Alarm)
	none(t, step(108, 40), "108 > 110-3 holds the alarm level")
	none(t, step(106, 30), "off delay to warn")
	only(t, step(106, 1), alert.Updated, alert.Warn)
	none(t, step(98, 60), "98 > 100-3 holds warn")
	none(t, step(96, 30), "off delay")
	c := only(t, step(96, 1), alert.Cleared, alert.Warn)
	if c.ID != a.ID || c.ClearedAt == 0 || !strings.HasPrefix(c.Message, "cleared: ") {
		t.Fatalf("clear %+v (raise id %s)", c, a.ID)
	}
	// flapping around the limit never raises: each excursion is shorter than the on delay
	for i := range 100 {
		v := 99.0
		if i%10 < 5 {
			v = 101
		}
		none(t, step(v, 1), "flapping")
	}
	st := h.e.Stats()
	if st.Raised != 1 || st.Cleared != 1 || st.Evaluations == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestThresholdBelow(t *testing.T) {
	h := newHarness(t, false, `
version: 1
rules:
  - name: oil_low
    kind: threshold
    class: diesel_engine
    signal: lube_oil_pressure
    running: false
    levels: [{severity: warn, below: 250}, {severity: trip, below: 150}]
    deadband: 10
    on_delay: 0s
    off_delay: 0s
`)
	none(t, h.feed("diesel_engine", "de-1", sec(0), "lube_oil_pressure", 300.0), "ok")
	only(t, h.feed("diesel_engine", "de-1", sec(1), "lube_oil_pressure", 240.0), alert.Raised, alert.Warn)
	only(t, h.feed("diesel_engine", "de-1", sec(2), "lube_oil_pressure", 140.0), alert.Updated, alert.Trip)
	none(t, h.feed("diesel_engine", "de-1", sec(3), "lube_oil_pressure", 155.0), "155 < 150+10 holds trip")
	only(t, h.feed("diesel_engine", "de-1", sec(4), "lube_oil_pressure", 165.0), alert.Updated, alert.Warn)
	only(t, h.feed("diesel_engine", "de-1", sec(5), "lube_oil_pressure", 261.0), alert.Cleared, alert.Warn)
}

func TestQualityGateAndStale(t *testing.T) {
	h := newHarness(t, true, strings.ReplaceAll(thresholdRule, "15s", "0s"))
	// interval observed 1 s; a bad reading carrying 200 never feeds the threshold
	none(t, h.feed("air_compressor", "ac-1", sec(0), "discharge_temp", 80.0, "load_state", 2), "t0")
	none(t, h.feed("air_compressor", "ac-1", sec(1), "discharge_temp", 81.0, "load_state", 2), "t1")
	b := h.feed("air_compressor", "ac-1", sec(2), "discharge_temp", telemetry.QualityBad, "load_state", 2)
	none(t, b, "one bad reading")
	none(t, h.feed("air_compressor", "ac-1", sec(3), "discharge_temp", telemetry.QualityBad, "load_state", 2), "two bad")
	none(t, h.feed("air_compressor", "ac-1", sec(4), "discharge_temp", telemetry.QualityBad, "load_state", 2), "3 s = 3 x interval, not beyond")
	a := only(t, h.feed("air_compressor", "ac-1", sec(5), "discharge_temp", telemetry.QualityBad, "load_state", 2), alert.Raised, alert.Warn)
	if a.Rule != "stale" || a.Signal != "discharge_temp" || !strings.Contains(a.Message, "no good value for 4 s") {
		t.Fatalf("stale alert %+v", a)
	}
	// a cleared stale alert reads as good news, not as "no good value for 0 s"
	if c := only(t, h.feed("air_compressor", "ac-1", sec(6), "discharge_temp", 82.0, "load_state", 2), alert.Cleared, alert.Warn); !strings.Contains(c.Message, "discharge_temp has a good value again") {
		t.Errorf("cleared stale alert: %q", c.Message)
	}
	// a reading the gateway itself marks stale raises at once
	if r := only(t, h.feed("air_compressor", "ac-1", sec(7), "discharge_temp", telemetry.QualityStale, "load_state", 2), alert.Raised, alert.Warn); !strings.Contains(r.Message, "reported stale by its gateway") {
		t.Errorf("stale reading: %q", r.Message)
	}
	if h.e.Stats().Bad != 5 { // four bad, one stale
		t.Fatalf("bad count %d", h.e.Stats().Bad)
	}
}

func TestPlausibility(t *testing.T) {
	h := newHarness(t, true, thresholdRule)
	// catalog discharge_temp range is 0-130: 500 is implausible and must not feed the threshold
	a := only(t, h.feed("air_compressor", "ac-1", sec(0), "discharge_temp", 500.0), alert.Raised, alert.Warn)
	if a.Rule != "plausibility" || !strings.Contains(a.Message, "500 Cel outside its plausible range [0, 130]") {
		t.Fatalf("%+v", a)
	}
	only(t, h.feed("air_compressor", "ac-1", sec(1), "discharge_temp", 80.0), alert.Cleared, alert.Warn)
	// the birth overrides the catalog range
	mx := 1000.0
	h.e.Birth(&telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw", Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}},
		Signals: []telemetry.SignalInfo{{Signal: "discharge_temp", Max: &mx}}}, 0,
		nil)

	none(t, h.feed("air_compressor", "ac-1", sec(2), "discharge_temp", 90.0), "in range")
	got := h.feed("air_compressor", "ac-1", sec(2), "discharge_temp", 500.0) // plausible now: feeds the threshold (15 s on delay)
	none(t, got, "500 within birth range")
}

func TestRateOfChange(t *testing.T) {
	rule := `
version: 1
rules:
  - name: bt_rise
    kind: rate
    class: motor
    signal: bearing_temp
    window: 10m
    limit: 5
    direction: rise
    on_delay: 0s
    off_delay: 0s
`
	for _, tc := range []struct {
		perMin float64
		want   bool
	}{{0.4, false}, {0.6, true}, {-0.8, false}} {
		t.Run(fmt.Sprint(tc.perMin), func(t *testing.T) {
			h := newHarness(t, false, rule)
			var got []alert.Alert
			for s := 0; s <= 15*60; s += 10 {
				got = append(got, h.feed("motor", "m-1", sec(s), "bearing_temp", 50+tc.perMin*float64(s)/60)...)
			}
			if tc.want {
				a := only(t, got, alert.Raised, alert.Warn)
				// raised at the first sample a full window old: 0.6 K/min x 10 min = 6 K
				if a.RaisedAt != sec(600) || math.Abs(a.Values["change"]-6) > 1e-9 {
					t.Fatalf("%+v", a)
				}
			} else {
				none(t, got, "slow change")
			}
		})
	}
}

func TestStuckOnlyWhileRunning(t *testing.T) {
	rule := `
version: 1
classes:
  air_compressor:
    running: "load_state >= 1"
rules:
  - name: stuck
    kind: stuck
    class: air_compressor
    signal: discharge_pressure
    running: true
    polls: 10
    min_span: 0s
    resolution: 0.001
    on_delay: 0s
    off_delay: 0s
`
	h := newHarness(t, false, rule)
	for s := range 30 { // off: a constant value is fine
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_pressure", 0.0, "load_state", 0), "off")
	}
	for s := 30; s < 39; s++ { // running, 9 polls: window not full
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_pressure", 0.7+float64(s%2)*0.0005, "load_state", 2), "filling")
	}
	a := only(t, h.feed("air_compressor", "ac-1", sec(39), "discharge_pressure", 0.7, "load_state", 2), alert.Raised, alert.Warn)
	if a.Values["spread"] != 0.0005 && math.Abs(a.Values["spread"]-0.0005) > 1e-12 {
		t.Fatalf("%+v", a)
	}
	only(t, h.feed("air_compressor", "ac-1", sec(40), "discharge_pressure", 0.72, "load_state", 2), alert.Cleared, alert.Warn)
}

func statsRule(kind, extra string) string {
	return `
version: 1
rules:
  - name: st
    kind: ` + kind + `
    class: motor
    signal: vibration
    on_delay: 0s
    off_delay: 0s
` + extra
}

func feedSeq(h *harness, vals ...float64) []alert.Alert {
	var got []alert.Alert
	for _, v := range vals {
		s := len(h.seqs)
		_ = s
		got = append(got, h.feed("motor", "m-1", sec(int(h.seqs["gw"])), "vibration", v)...)
	}
	return got
}

func TestEWMA(t *testing.T) {
	// warmup 10,12,10,12: mean 11, s = sqrt(4/3) = 1.1547; lambda 0.5, L 3:
	// limit = 3 x 1.1547 x sqrt(0.5/1.5) = 2.0
	h := newHarness(t, false, statsRule("ewma", "    lambda: 0.5\n    l: 3\n    warmup: 4\n"))
	none(t, feedSeq(h, 10, 12, 10, 12), "warmup")
	none(t, feedSeq(h, 14), "z = 12.5, 1.5 from mean")
	a := only(t, feedSeq(h, 14), alert.Raised, alert.Warn) // z = 13.25
	if math.Abs(a.Values["ewma"]-13.25) > 1e-9 || math.Abs(a.Values["limit"]-2.0) > 1e-9 || a.Values["mean"] != 11 {
		t.Fatalf("%+v", a.Values)
	}
	only(t, feedSeq(h, 11), alert.Cleared, alert.Warn) // z = 12.125, 1.125 from mean
}

func TestZScore(t *testing.T) {
	h := newHarness(t, false, statsRule("zscore", "    n: 4\n    limit: 4\n"))
	none(t, feedSeq(h, 10, 12, 10, 12), "filling")
	none(t, feedSeq(h, 15.5), "z = 4.5/1.1547 = 3.897")
	// window now 12,10,12,15.5: mean 12.375, sd 2.2867; 22 -> z 4.209
	a := only(t, feedSeq(h, 22), alert.Raised, alert.Warn)
	if math.Abs(a.Values["z"]-4.2091) > 1e-3 {
		t.Fatalf("%+v", a.Values)
	}
}

func TestCUSUM(t *testing.T) {
	h := newHarness(t, false, statsRule("cusum", "    warmup: 4\n    k: 0.5\n    h: 2\n"))
	none(t, feedSeq(h, 10, 12, 10, 12), "warmup")
	none(t, feedSeq(h, 13), "S+ = 1.732-0.5 = 1.232")
	a := only(t, feedSeq(h, 13), alert.Raised, alert.Warn) // S+ = 2.464
	if math.Abs(a.Values["cusum_hi"]-2.4641) > 1e-3 || !strings.Contains(a.Message, "upward") {
		t.Fatalf("%+v %s", a.Values, a.Message)
	}
}

func TestExprRule(t *testing.T) {
	h := newHarness(t, false, `
version: 1
rules:
  - name: cyl_dev
    kind: expr
    class: diesel_engine
    expr: "maxdev(exhaust_temp_cyl_*) > 40 and speed > nameplate.idle_speed"
    severity: alarm
    on_delay: 0s
    off_delay: 0s
`)
	h.e.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: "de-1", Class: "diesel_engine", Path: []string{"acme", "site1"}}, Nameplate: map[string]float64{"idle_speed": 600}}, 0, nil)
	cyl := func(s int, c3 float64) []alert.Alert {
		return h.feed("diesel_engine", "de-1", sec(s), "speed", 1500.0, "exhaust_temp_cyl_1", 400.0, "exhaust_temp_cyl_2", 400.0,
			"exhaust_temp_cyl_3", c3, "exhaust_temp_cyl_4", 400.0, "exhaust_temp_cyl_5", 400.0, "exhaust_temp_cyl_6", 400.0)
	}
	none(t, cyl(0, 440), "mean 406.67, maxdev 33.3")
	a := only(t, cyl(1, 450), alert.Raised, alert.Alarm) // mean 408.33, maxdev 41.67
	if a.Values["exhaust_temp_cyl_3"] != 450 || a.Values["nameplate.idle_speed"] != 600 || !strings.Contains(a.Message, "maxdev(exhaust_temp_cyl_*) > 40") {
		t.Fatalf("%+v", a)
	}
	// a bad cylinder reading is skipped by the aggregate, not read as 0
	b := h.feed("diesel_engine", "de-1", sec(2), "speed", 1500.0, "exhaust_temp_cyl_1", 400.0, "exhaust_temp_cyl_2", 400.0,
		"exhaust_temp_cyl_3", telemetry.QualityBad, "exhaust_temp_cyl_4", 400.0, "exhaust_temp_cyl_5", 400.0, "exhaust_temp_cyl_6", 400.0)
	only(t, b, alert.Cleared, alert.Alarm)
}

func TestPeerComparison(t *testing.T) {
	h := newHarness(t, true, "")
	for i := 1; i <= 4; i++ {
		h.e.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: fmt.Sprintf("pv-%d", i), Class: "pv_string", Path: []string{"acme", "site1"}},
			Nameplate: map[string]float64{"inverter": 2, "rated_power": 5}}, 0,
			nil)

	}
	round := func(s int, g, weak float64) []alert.Alert {
		var got []alert.Alert
		for i := 1; i <= 4; i++ {
			cur := 9.0 + float64(s%7)*0.01 + float64(i)*0.002
			if i == 3 {
				cur = weak + float64((s/60)%5)*0.01
			}
			got = append(got, h.feed("pv_string", fmt.Sprintf("pv-%d", i), sec(s), "string_current", cur, "irradiance_poa", g,
				"string_voltage", 700.0+float64(s%5), "module_temp", 40.0, "ac_power", 6.0+float64(s%3)*0.01)...)
		}
		return got
	}
	// weak string at low irradiance: no alert however long
	for s := 0; s < 3600; s += 60 {
		none(t, round(s, 250, 6), "G below 300")
	}
	var got []alert.Alert
	for s := 3600; s < 3600+29*60; s += 60 {
		got = append(got, round(s, 800, 7)...)
	}
	none(t, got, "under 30 min")
	a := only(t, round(3600+30*60, 800, 7), alert.Raised, alert.Warn)
	if a.Asset != "pv-3" || math.Abs(a.Values["ratio"]-a.Values["string_current"]/a.Values["peer_median"]) > 1e-12 || a.Values["ratio"] > 0.785 {
		t.Fatalf("%+v", a)
	}
	if !strings.Contains(a.Message, "3 peers sharing inverter 2") {
		t.Fatal(a.Message)
	}
}

// TestSilenceCountsFromDisruption: an asset's silence counts from the end
// of the caller's newest disruption (from) when that is later than its last
// batch, so a broker outage longer than k x the interval raises nothing by
// itself; k x the interval of silence after it does.
func TestSilenceCountsFromDisruption(t *testing.T) {
	h := newHarness(t, true, thresholdRule)
	for s := range 5 {
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2), "normal")
	}
	last := h.now
	from := last + 10_000 // a 10 s outage ended here
	if h.e.Silent(from+3000, from) {
		t.Fatal("Silent: due 3 s after the outage's end with a 1 s interval and k 3")
	}
	none(t, h.e.Tick(nil, from+3000, from), "3 intervals after the outage")
	if !h.e.Silent(from+3000, 0) {
		t.Fatal("without from the asset is silent: the test shows nothing")
	}
	a := only(t, h.e.Tick(nil, from+3001, from), alert.Raised, alert.Warn)
	if a.Rule != "stale" || a.Signal != "" {
		t.Fatalf("%+v", a)
	}
	// the message says what is true (verify12 N3: "sent nothing for 33.84
	// s" with the outage in it, as if that had been counted): the time
	// since the last batch, and that only the time after the disruption
	// counted, how much
	const want = "air_compressor ac-1 sent nothing for 13 s; counted from the end of a disruption of the collector's stream plus grace: 3.001 s (3 x its 1 s interval)"
	if a.Message != want || a.Values["age_ms"] != 13001 || a.Values["counted_ms"] != 3001 {
		t.Fatalf("message %q values %v\nwant %q, age_ms 13001, counted_ms 3001", a.Message, a.Values, want)
	}
	// a from older than the last batch changes nothing: no disruption named
	h2 := newHarness(t, true, thresholdRule)
	for s := range 5 {
		none(t, h2.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2), "normal")
	}
	a = only(t, h2.e.Tick(nil, h2.now+3001, h2.now-60_000), alert.Raised, alert.Warn)
	if want := "air_compressor ac-1 sent nothing for 3.001 s (3 x its 1 s interval)"; a.Message != want ||
		a.Values["age_ms"] != 3001 || a.Values["counted_ms"] != 3001 {
		t.Fatalf("message %q values %v, want %q", a.Message, a.Values, want)
	}
}

func TestSilenceDeathAndRestore(t *testing.T) {
	h := newHarness(t, true, thresholdRule)
	for s := range 5 {
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2), "normal")
	}
	h.now = sec(4) + 3000
	none(t, h.e.Tick(nil, h.now, 0), "3 intervals")
	h.now = sec(4) + 3001
	a := only(t, h.e.Tick(nil, h.now, 0), alert.Raised, alert.Warn)
	if a.Signal != "" || a.Rule != "stale" || !strings.Contains(a.Message, "sent nothing") {
		t.Fatalf("%+v", a)
	}
	none(t, h.e.Tick(nil, h.now, 0), "already raised")
	only(t, h.feed("air_compressor", "ac-1", sec(8), "discharge_temp", 80.0, "load_state", 2), alert.Cleared, alert.Warn)
	d := h.e.Death(&telemetry.Death{Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}}, TSGW: sec(9), Reason: "modbus timeout"}, nil)
	if a := only(t, d, alert.Raised, alert.Warn); !strings.Contains(a.Message, "modbus timeout") {
		t.Fatal(a.Message)
	}

	// restore: a fresh engine with a persisted active threshold alert clears it without raising it again
	h2 := newHarness(t, false, thresholdRule)
	ok := h2.e.Restore(alert.Alert{Key: "site1.ac-1.dt_high.discharge_temp", State: alert.Raised, Site: "site1", Class: "air_compressor",
		Asset: "ac-1", Rule: "dt_high", Signal: "discharge_temp", Severity: alert.Warn, RaisedAt: sec(0)})
	if !ok {
		t.Fatal("restore did not find the rule")
	}
	none(t, h2.feed("air_compressor", "ac-1", sec(100), "discharge_temp", 101.0), "still above: no second raise")
	var got []alert.Alert
	for s := 101; s <= 131; s++ {
		got = append(got, h2.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 90.0)...)
	}
	c := only(t, got, alert.Cleared, alert.Warn)
	if c.RaisedAt != sec(0) || c.ID != alert.MakeID(c.Key, sec(0)) {
		t.Fatalf("%+v", c)
	}
}

// A batch dated before the asset's newest is skipped: one of its gateway
// with an older seq (a replayed backlog), one of another gateway, one
// without a seq. (One of its gateway with a newer seq is that gateway's
// clock stepped back: TestGatewayClockSteppedBack.)
func TestLateBatchSkipped(t *testing.T) {
	h := newHarness(t, false, thresholdRule)
	h.feed("air_compressor", "ac-1", sec(9), "discharge_temp", 80.0)
	h.feed("air_compressor", "ac-1", sec(10), "discharge_temp", 80.0)
	asset := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	for _, b := range []telemetry.Batch{{Gateway: "gw", Seq: 1}, {Gateway: "gw-other", Seq: 50}, {Gateway: "gw", Seq: 0}} {
		b.Asset, b.TSGW = asset, sec(5)
		b.Readings = []telemetry.Reading{{Signal: "discharge_temp", Value: 120, TS: sec(5)}}
		h.e.Process(&b, 0, nil)
	}
	if st := h.e.Stats(); st.Late != 3 || st.Batches != 2 {
		t.Fatalf("%+v", st)
	}
}

// nominal describes a fault-free operating point per class for the synthetic run.
var nominal = map[string]struct {
	nameplate map[string]float64
	signals   map[string][2]float64 // mean, noise amplitude
}{
	"air_compressor": {map[string]float64{"rated_power": 75, "rated_fad": 12.5, "rated_specific_power": 6.2},
		map[string][2]float64{"discharge_pressure": {0.75, 0.01}, "discharge_temp": {82, 1.5}, "input_power": {70, 2}, "free_air_delivery": {11.5, 0.3}, "load_state": {2, 0}, "dew_point": {3, 0.5}}},
	"motor": {map[string]float64{"rated_power": 75, "rated_efficiency": 95, "rated_current": 135, "poles": 4},
		map[string][2]float64{"voltage_a": {400, 1}, "voltage_b": {400, 1}, "voltage_c": {400, 1}, "current_a": {110, 1}, "current_b": {110, 1}, "current_c": {110, 1},
			"power_factor": {0.86, 0.005}, "power": {65, 1}, "frequency": {50, 0.02}, "winding_temp": {95, 0.5}, "bearing_temp": {60, 0.3}, "vibration": {2.0, 0.1}}},
	"boiler": {map[string]float64{"rated_steam_flow": 20, "fuel_ncv": 35.8},
		map[string][2]float64{"steam_pressure": {1.25, 0.01}, "steam_temp": {194, 0.5}, "steam_flow": {15, 0.3}, "feedwater_temp": {105, 0.5}, "drum_level": {0, 10},
			"flue_gas_temp": {140, 1}, "flue_o2": {3, 0.1}, "flue_co": {30, 5}, "fuel_flow": {1150, 10}, "ambient_temp": {20, 0.2}}},
	"diesel_engine": {map[string]float64{"rated_power": 1000, "rated_speed": 1500},
		map[string][2]float64{"speed": {1500, 1}, "load": {75, 1}, "fuel_rate": {160, 2}, "lube_oil_pressure": {420, 5}, "coolant_temp": {82, 0.5}, "boost_pressure": {180, 2},
			"power": {750, 5}, "run_hours": {1200, 0}, "exhaust_temp_cyl_1": {410, 3}, "exhaust_temp_cyl_2": {405, 3}, "exhaust_temp_cyl_3": {415, 3},
			"exhaust_temp_cyl_4": {400, 3}, "exhaust_temp_cyl_5": {412, 3}, "exhaust_temp_cyl_6": {408, 3}}},
	"blast_furnace": {map[string]float64{"rated_hot_metal_rate": 400},
		map[string][2]float64{"hot_blast_temp": {1180, 3}, "blast_volume": {5000, 20}, "blast_pressure": {380, 2}, "top_pressure": {220, 2}, "top_gas_temp": {160, 3},
			"top_gas_co": {23, 0.2}, "top_gas_co2": {21, 0.2}, "hot_metal_temp": {1505, 3}, "coke_rate": {350, 2}, "nut_coke_rate": {30, 1}, "pci_rate": {140, 2}, "hot_metal_rate": {380, 3}}},
	"wind_turbine": {map[string]float64{"rated_power": 2000, "rotor_diameter": 90, "cut_in_speed": 3, "rated_wind_speed": 12, "cut_out_speed": 25},
		map[string][2]float64{"wind_speed": {8, 0.5}, "power": {700, 30}, "rotor_speed": {14, 0.2}, "pitch_angle": {1, 0.1}, "yaw_error": {2, 1}, "ambient_temp": {15, 0.1},
			"air_pressure": {101.3, 0.05}, "gearbox_temp": {60, 0.5}, "generator_temp": {80, 0.5}}},
	"pv_string": {map[string]float64{"rated_power": 6, "gamma": -0.35, "inverter": 1},
		map[string][2]float64{"string_current": {9, 0.05}, "string_voltage": {700, 2}, "irradiance_poa": {850, 5}, "module_temp": {45, 0.3}, "ac_power": {6, 0.05},
			"energy": {1000, 0}, "insulation_resistance": {40, 0.5}}},
	"cnc_machine": {map[string]float64{"rated_spindle_speed": 12000, "ideal_cycle_time": 60},
		map[string][2]float64{"spindle_speed": {8000, 20}, "spindle_load": {55, 3}, "feed_rate": {2000, 10}, "feed_override": {100, 0}, "program_state": {2, 0},
			"part_count": {100, 0}, "alarm_code": {0, 0}}},
	"engineering_machine": {map[string]float64{"rated_power": 200},
		map[string][2]float64{"engine_hours": {5000, 0}, "idle_hours": {1000, 0}, "fuel_used": {80000, 0}, "hydraulic_oil_temp": {65, 0.5},
			"latitude": {36.6, 0}, "longitude": {117, 0}, "fault_code": {0, 0}, "engine_speed": {1800, 10}}},
}

// TestFaultFreeRunRaisesNothing drives every class with the default packs
// through two hours of 1 s batches with noise and slow load drift.
func TestFaultFreeRunRaisesNothing(t *testing.T) {
	h := newHarness(t, true, "")
	rng := rand.New(rand.NewPCG(1, 2))
	for class, nom := range nominal {
		for i := 1; i <= 3; i++ {
			h.e.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: fmt.Sprintf("%s-%d", class, i), Class: class, Path: []string{"acme", "site1"}}, Nameplate: nom.nameplate}, 0, nil)
		}
	}
	classes := catalog.Default().ClassNames()
	for s := 0; s < 7200; s++ {
		drift := math.Sin(2 * math.Pi * float64(s) / 3600)
		for _, class := range classes {
			nom, ok := nominal[class]
			if !ok {
				continue
			}
			for i := 1; i <= 3; i++ {
				var kv []any
				for sig, mv := range nom.signals {
					v := mv[0]
					if mv[1] > 0 {
						v += 2*mv[1]*drift + rng.NormFloat64()*mv[1]
					}
					if sig == "part_count" || sig == "run_hours" || sig == "energy" {
						v = mv[0] + float64(s)/60
					}
					kv = append(kv, sig, v)
				}
				h.feed(class, fmt.Sprintf("%s-%d", class, i), sec(s), kv...)
			}
		}
	}
	for _, a := range h.out {
		t.Errorf("unexpected alert: %s", a.Message)
	}
	if h.e.Stats().Evaluations < 100000 {
		t.Fatalf("too few evaluations: %+v", h.e.Stats())
	}
}

// The plausibility gate is built in (docs/rules.md): without any
// plausibility rule an out-of-range value still never feeds a rule, and the
// view says why the value is not valid.
func TestImplausibleGatedWithoutPlausibilityRule(t *testing.T) {
	h := newHarness(t, false, strings.ReplaceAll(thresholdRule, "15s", "0s"))
	// catalog discharge_temp range is 0-130: 500 would be an alarm if it got through
	none(t, h.feed("air_compressor", "ac-1", sec(0), "discharge_temp", 500.0), "implausible value")
	if st := h.e.Stats(); st.Bad != 1 || st.Evaluations != 0 {
		t.Fatalf("stats after implausible value %+v", st)
	}
	sv := signalView(t, h, "ac-1", "discharge_temp")
	if sv.Valid || !sv.Implausible || sv.Value != 500 {
		t.Fatalf("view of an implausible value %+v", sv)
	}
	only(t, h.feed("air_compressor", "ac-1", sec(1), "discharge_temp", 105.0), alert.Raised, alert.Warn)
	if sv := signalView(t, h, "ac-1", "discharge_temp"); !sv.Valid || sv.Implausible || sv.Value != 105 {
		t.Fatalf("view of a plausible value %+v", sv)
	}
	// a valueless reading is not implausible, just not valid
	none(t, h.feed("air_compressor", "ac-1", sec(2), "discharge_temp", 600.0), "implausible again")
	none(t, h.feed("air_compressor", "ac-1", sec(3), "discharge_temp", telemetry.QualityBad), "bad reading")
	if sv := signalView(t, h, "ac-1", "discharge_temp"); sv.Valid || sv.Implausible {
		t.Fatalf("view of a bad reading %+v", sv)
	}
}

// Non-finite values are implausible whatever the range, and a range with
// one open end is reported as such.
func TestNonFiniteImplausible(t *testing.T) {
	h := newHarness(t, false, `
version: 1
rules:
  - {name: floor, kind: plausibility, class: air_compressor, signal: "*", min: 0, on_delay: 0s, off_delay: 0s}
  - {name: spare_high, kind: threshold, class: air_compressor, signal: "*", above: 10, on_delay: 0s, off_delay: 0s}
`)
	// spare_1 is not in the catalog: its only bound is the rule's min
	none(t, h.feed("air_compressor", "ac-1", sec(0), "spare_1", 5.0), "in range")
	a := only(t, h.feed("air_compressor", "ac-1", sec(1), "spare_1", -5.0), alert.Raised, alert.Warn)
	if a.Rule != "floor" || !strings.Contains(a.Message, "outside its plausible range [0, +inf]") {
		t.Fatalf("open-ended range alert %+v", a)
	}
	only(t, h.feed("air_compressor", "ac-1", sec(2), "spare_1", 5.0), alert.Cleared, alert.Warn)
	for i, x := range []float64{math.Inf(1), math.NaN(), math.Inf(-1)} {
		b := &telemetry.Batch{Gateway: "gw", Seq: uint64(100 + i), TSGW: sec(3 + 2*i),
			Asset:    telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "spare_1", Value: x, TS: sec(3 + 2*i)}}}
		got := h.e.Process(b, 0, nil)
		// +Inf would raise spare_high if it got through; every one raises floor
		a := only(t, got, alert.Raised, alert.Warn)
		if a.Rule != "floor" {
			t.Fatalf("%v: alert %+v", x, a)
		}
		if sv := signalView(t, h, "ac-1", "spare_1"); sv.Valid || !sv.Implausible {
			t.Fatalf("%v: view %+v", x, sv)
		}
		b.Seq++
		b.TSGW += 1000
		b.Readings[0] = telemetry.Reading{Signal: "spare_1", Value: 5, TS: b.TSGW}
		only(t, h.e.Process(b, 0, nil), alert.Cleared, alert.Warn)
	}
}

func signalView(t *testing.T, h *harness, asset, signal string) SignalView {
	t.Helper()
	v, ok := h.e.Asset("site1", asset)
	if !ok {
		t.Fatalf("asset %s not known", asset)
	}
	for _, s := range v.Signals {
		if s.Signal == signal {
			return s
		}
	}
	t.Fatalf("asset %s has no signal %s: %+v", asset, signal, v.Signals)
	return SignalView{}
}

// A constant OPC UA value keeps its old SourceTimestamp while it arrives
// good every second: staleness is judged on arrival (ts_gw), so no alert.
// A signal that stops arriving while others keep coming is still stale.
func TestStaleByArrivalNotSourceTime(t *testing.T) {
	h := newHarness(t, true, "")
	b := func(gw int64, withTemp bool) []alert.Alert {
		bt := &telemetry.Batch{Gateway: "gw", Seq: uint64(gw), TSGW: gw, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "load_state", Value: 2, TS: gw}}}
		if withTemp { // source time frozen at the server's start, an hour ago
			bt.Readings = append(bt.Readings, telemetry.Reading{Signal: "discharge_temp", Value: 80, TS: t0 - 3600_000})
		}
		h.now = gw
		return h.e.Process(bt, 0, nil)
	}
	stale := func(al []alert.Alert) []alert.Alert { // the stuck rule rightly fires on a constant value
		var out []alert.Alert
		for _, a := range al {
			if a.Rule == "stale" {
				out = append(out, a)
			}
		}
		return out
	}
	for i := range 30 {
		none(t, stale(b(sec(i), true)), fmt.Sprintf("constant value arriving at %d s", i))
	}
	var got []alert.Alert
	for i := 30; i < 40 && len(got) == 0; i++ {
		got = stale(b(sec(i), false))
	}
	a := only(t, got, alert.Raised, alert.Warn)
	if a.Rule != "stale" || a.Signal != "discharge_temp" {
		t.Fatalf("stale alert %+v", a)
	}
}

// TestGatewayClockSteppedBack (review12 F3): the gateway an asset's state
// records steps its clock back 2 minutes (its seq goes on upwards): its
// batches are its newest and are evaluated (the alarm trips after its on
// delay of the new clock), not dropped as late until the clock passes its
// old newest time. Another gateway's batch dated before the asset's newest
// is still late.
func TestGatewayClockSteppedBack(t *testing.T) {
	h := newHarness(t, false, thresholdRule)
	for s := range 10 {
		none(t, h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0), "normal")
	}
	late := h.e.Stats().Late
	var raised []alert.Alert
	for s := range 20 { // the clock stepped back 120 s: sec(-110) ...
		raised = append(raised, h.feed("air_compressor", "ac-1", sec(s-110), "discharge_temp", 115.0)...)
	}
	if n := h.e.Stats().Late - late; n != 0 {
		t.Fatalf("%d batches of the asset's own gateway dropped as late after its clock stepped back", n)
	}
	a := only(t, raised, alert.Raised, alert.Alarm)
	if a.RaisedAt != sec(15-110) {
		t.Fatalf("raised at %d, want after the 15 s on delay of the new clock (%d)", a.RaisedAt, sec(15-110))
	}
	// another gateway's batch dated before the asset's newest is late
	b := &telemetry.Batch{Gateway: "gw-other", Seq: 1, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
		TSGW: sec(-200), Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, TS: sec(-200)}}}
	h.e.Process(b, 0, nil)
	if n := h.e.Stats().Late - late; n != 1 {
		t.Fatalf("another gateway's older batch: %d late, want 1", n)
	}
}

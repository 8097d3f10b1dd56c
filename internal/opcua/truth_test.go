package opcua

import (
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// TestVetTime (review15 F1): a SourceTimestamp more than max_future ahead
// of the gateway's clock, or before 2000 (1970, OPC UA's zero 1601), is
// replaced with the receive time and a Good value turns Uncertain with
// StatusSourceTimeUnsure; within the bound nothing changes.
func TestVetTime(t *testing.T) {
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840", DataDir: t.TempDir()}, []Point{{NodeID: "ns=1;s=x"}}, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.MaxFuture != DefaultMaxFuture {
		t.Fatalf("max_future default %v, want %v", c.cfg.MaxFuture, DefaultMaxFuture)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c.dataNow = func() time.Time { return now } // the gateway's data clock
	dv := func(ts time.Time, st ua.StatusCode) *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueStatusCode,
			Value: ua.MustVariant(1.5), Status: st, SourceTimestamp: ts}
	}
	for _, tc := range []struct {
		name    string
		in      *ua.DataValue
		ts      time.Time
		status  uint32
		quality telemetry.Quality
	}{
		{"now", dv(now, 0), now, 0, telemetry.QualityGood},
		{"an hour old", dv(now.Add(-time.Hour), 0), now.Add(-time.Hour), 0, telemetry.QualityGood},
		{"4 minutes ahead", dv(now.Add(4*time.Minute), 0), now.Add(4 * time.Minute), 0, telemetry.QualityGood},
		{"a day ahead", dv(now.Add(24*time.Hour), 0), now, StatusSourceTimeUnsure, telemetry.QualityUncertain},
		{"6 minutes ahead", dv(now.Add(6*time.Minute), 0), now, StatusSourceTimeUnsure, telemetry.QualityUncertain},
		{"1970", dv(time.Unix(0, 0), 0), now, StatusSourceTimeUnsure, telemetry.QualityUncertain},
		{"1970 plus uptime", dv(time.Unix(86400*3, 0), 0), now, StatusSourceTimeUnsure, telemetry.QualityUncertain},
		{"1601 (OPC UA zero)", dv(time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC), 0), now, StatusSourceTimeUnsure, telemetry.QualityUncertain},
		{"uncertain keeps its code", dv(now.Add(48*time.Hour), ua.StatusUncertainLastUsableValue), now, 0x40900000, telemetry.QualityUncertain},
		{"bad keeps its code", dv(time.Unix(0, 0), ua.StatusBadSensorFailure), now, 0x808C0000, telemetry.QualityBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := c.sampleAt(0, tc.in, now)
			if s.TS != tc.ts.UnixMilli() || s.Status != tc.status || s.Quality != tc.quality {
				t.Fatalf("got ts %v status %#x quality %v, want ts %v status %#x quality %v",
					time.UnixMilli(s.TS).UTC(), s.Status, s.Quality, tc.ts, tc.status, tc.quality)
			}
			if s.Quality.HasValue() && s.Num != 1.5 {
				t.Fatalf("value %v, want 1.5 kept", s.Num)
			}
		})
	}
	c.cfg.MaxFuture = 48 * time.Hour
	if s := c.sampleAt(0, dv(now.Add(24*time.Hour), 0), now); s.Quality != telemetry.QualityGood {
		t.Fatalf("with max_future 48h a day ahead is %v, want good", s.Quality)
	}
	bad := Config{Endpoint: "opc.tcp://127.0.0.1:4840", DataDir: t.TempDir(), MaxFuture: 25 * time.Hour}
	bad.SetDefaults()
	if err := bad.Validate(); err == nil {
		t.Fatal("max_future 25h accepted")
	}
}

// TestSourceTimeAheadPublishedUncertain (review15 F1) end to end: a
// subscribed and a polled node whose server stamps values a day ahead,
// then in 1970, are published Uncertain with StatusSourceTimeUnsure and
// the receive time, counted by code; a credible time is Good again.
func TestSourceTimeAheadPublishedUncertain(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	for _, mode := range []Mode{ModeSubscribe, ModePoll} {
		t.Run(mode.String(), func(t *testing.T) {
			c, rec := run(t, cfg, pointsFor(f, "bf-2", mode, "top_pressure"))
			wait.For(t, 20*time.Second, "a good value", func() bool { return rec.has(0, telemetry.QualityGood, 210) })
			for k, stamp := range []time.Time{time.Now().Add(24 * time.Hour), time.Unix(0, 0)} {
				v := 211.5 + float64(k)
				before := time.Now()
				if err := f.Set("bf-2", "top_pressure", v, stamp); err != nil {
					t.Fatal(err)
				}
				wait.For(t, 20*time.Second, "the value uncertain", func() bool { return rec.has(0, telemetry.QualityUncertain, v) })
				s, _ := rec.get(0)
				if s.Status != StatusSourceTimeUnsure || s.TS < before.UnixMilli() || s.TS > time.Now().UnixMilli() {
					t.Fatalf("sample %+v: want status %#x and the receive time (%v..now)", s, StatusSourceTimeUnsure, before)
				}
			}
			if err := f.Set("bf-2", "top_pressure", 215.5, time.Now()); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 20*time.Second, "good again", func() bool { return rec.has(0, telemetry.QualityGood, 215.5) })
			c.m.badMu.Lock()
			n := c.m.badBy[StatusSourceTimeUnsure]
			c.m.badMu.Unlock()
			if n == nil {
				t.Fatal("smelter_opcua_bad_status_total{code=0x40230000} not counted")
			}
			if err := f.Set("bf-2", "top_pressure", 210, time.Now()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestKindMismatchIsBad (review15 F3): a point whose first value was a
// number and whose next is text (or the other way round) is published Bad
// with BadTypeMismatch, counted; values of its kind stay Good. On the
// gateway's side of a worker too, so a new worker's first value cannot
// reset the kind.
func TestKindMismatchIsBad(t *testing.T) {
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840", DataDir: t.TempDir()},
		[]Point{{NodeID: "ns=1;s=num"}, {NodeID: "ns=1;s=text"}}, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*runState{"sessions": newRunState(c, func(*sample.Cycle) {}), "gateway side": newForwardState(c, func(*sample.Cycle) {})} {
		t.Run(name, func(t *testing.T) {
			emit := func(ss ...sample.Sample) []sample.Sample {
				r.emit(&sample.Cycle{Samples: ss, Replied: true})
				return ss
			}
			num := func(v float64) sample.Sample { return sample.Sample{Index: 0, Num: v, Quality: telemetry.QualityGood} }
			text := func(i int, v string) sample.Sample {
				return sample.Sample{Index: i, Str: v, IsStr: true, Quality: telemetry.QualityGood}
			}
			got := emit(num(1), text(1, "running"))
			if got[0].Quality != telemetry.QualityGood || got[1].Quality != telemetry.QualityGood {
				t.Fatalf("first values: %+v", got)
			}
			got = emit(text(0, "12.5"), sample.Sample{Index: 1, Num: 3, Quality: telemetry.QualityUncertain, Status: 0x40900000})
			for _, s := range got {
				if s.Quality != telemetry.QualityBad || s.Status != statusTypeMismatch || s.IsStr || s.Num != 0 || s.Str != "" {
					t.Fatalf("a value of the other kind: %+v, want bad %#x without a value", s, statusTypeMismatch)
				}
			}
			got = emit(num(2), text(1, "idle"), sample.Sample{Index: 0, Quality: telemetry.QualityBad, Status: 0x808C0000})
			if got[0].Quality != telemetry.QualityGood || got[1].Quality != telemetry.QualityGood || got[2].Status != 0x808C0000 {
				t.Fatalf("values of the point's kind and a bad one: %+v", got)
			}
		})
	}
	c.m.badMu.Lock()
	defer c.m.badMu.Unlock()
	if c.m.badBy[statusTypeMismatch] == nil {
		t.Fatal("smelter_opcua_bad_status_total{code=0x80740000} not counted")
	}
}

// TestSourceTimeAheadSplitRead: a polled point whose value and units do
// not fit in one request is read again after its properties (moved
// values are withheld); a value stamped a day ahead is restamped at each
// receipt and must not count as moved: it is published Uncertain on every
// read, never withheld as bad.
func TestSourceTimeAheadSplitRead(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Limits.MaxNodesPerRead = 1
	points := []Point{{NodeID: f.NodeID("bf-2", "top_pressure"), Mode: ModePoll, PollInterval: 20 * time.Millisecond, UnitFromNode: true}}
	_, rec := run(t, cfg, points)
	wait.For(t, 20*time.Second, "a good value", func() bool { return rec.has(0, telemetry.QualityGood, 210) })
	if err := f.Set("bf-2", "top_pressure", 212.5, time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the value uncertain", func() bool { return rec.has(0, telemetry.QualityUncertain, 212.5) })
	// from the first uncertain read on: the read during which the value
	// was set may rightly be withheld (it changed between its read and
	// its read again), and a poll read that also reads the NamespaceArray
	// (ns=1 here) makes that more likely in this test's timing
	mark := rec.mark()
	wait.For(t, 20*time.Second, "10 more reads", func() bool { return rec.mark() >= mark+10 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, b := range rec.batches[mark:] {
		for _, s := range b {
			if s.Quality == telemetry.QualityBad {
				t.Fatalf("bad sample %+v after the value was uncertain: a restamped value taken as moved", s)
			}
		}
	}
}

// TestSourceTimeJudgedOnTheDataClock: a SourceTimestamp ahead is judged by
// the gateway's data clock (driver.Env.Now), not the wall clock: the
// demo's plant clock runs hours ahead of the wall clock and its OPC UA
// servers stamp with it, which is right. In process the client judges it
// (vetTime); in a session worker, which has no data clock, only a time
// before 2000 is judged there and the gateway's side of the worker judges
// a time ahead (vetAhead).
func TestSourceTimeJudgedOnTheDataClock(t *testing.T) {
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840", DataDir: t.TempDir()},
		[]Point{{NodeID: "ns=1;s=num"}}, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	plant := time.Now().Add(9 * time.Hour)
	c.dataNow = func() time.Time { return plant }
	good := func(ts time.Time) sample.Sample {
		return sample.Sample{Index: 0, Num: 1, Quality: telemetry.QualityGood, TS: ts.UnixMilli()}
	}

	// in process: the plant clock's own time is credible, beyond it not
	s := good(plant)
	if c.vetTime(&s, plant, c.received()) || s.Quality != telemetry.QualityGood {
		t.Errorf("a source time on the data clock judged not credible: %+v", s)
	}
	s = good(plant.Add(time.Hour))
	if !c.vetTime(&s, plant.Add(time.Hour), c.received()) || s.Status != StatusSourceTimeUnsure || s.TS != plant.UnixMilli() {
		t.Errorf("a source time 1 h ahead of the data clock: %+v, want uncertain at the data clock's now", s)
	}

	// the gateway's side of a worker: the same bound, on what the worker sent
	fwd := newForwardState(c, func(*sample.Cycle) {})
	ss := []sample.Sample{good(plant), good(plant.Add(time.Hour))}
	fwd.emit(&sample.Cycle{Samples: ss, Replied: true})
	if ss[0].Quality != telemetry.QualityGood || ss[0].TS != plant.UnixMilli() {
		t.Errorf("gateway side: a source time on the data clock changed: %+v", ss[0])
	}
	if ss[1].Quality != telemetry.QualityUncertain || ss[1].Status != StatusSourceTimeUnsure || ss[1].TS != plant.UnixMilli() {
		t.Errorf("gateway side: a source time 1 h ahead of the data clock: %+v", ss[1])
	}

	// in a worker (no data clock): ahead is not judged there, 1970 is
	c.dataNow = nil
	s = good(plant.Add(time.Hour))
	if c.vetTime(&s, plant.Add(time.Hour), time.Now()) || s.Quality != telemetry.QualityGood {
		t.Errorf("worker: a time ahead judged without the data clock: %+v", s)
	}
	s = good(time.Unix(0, 0))
	if !c.vetTime(&s, time.Unix(0, 0), time.Now()) || s.Status != StatusSourceTimeUnsure {
		t.Errorf("worker: a 1970 source time: %+v, want uncertain", s)
	}
}

// TestLongTextIsBad (review17 F4): a text value longer than
// max_string_bytes (default 1,024, the collector's cut) is published bad
// with StatusStringTooLong and no text, polled or subscribed (both take
// their samples from vetted), where a 1,000,000-byte String went whole
// through spool and uplink on every poll; a text at the bound is good, and
// the bound is configurable.
func TestLongTextIsBad(t *testing.T) {
	for _, max := range []int{0, 4096} {
		c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840", DataDir: t.TempDir(), MaxStringBytes: max},
			[]Point{{NodeID: "ns=1;s=text"}}, testLog(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		limit := c.cfg.MaxStringBytes
		if limit != max && (max != 0 || limit != DefaultMaxStringBytes) {
			t.Fatalf("max_string_bytes %d: limit %d", max, limit)
		}
		now := time.Now()
		dv := func(s string) *ua.DataValue {
			return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(s), SourceTimestamp: now}
		}
		at := strings.Repeat("x", limit)
		if s := c.sampleAt(0, dv(at), now); s.Quality != telemetry.QualityGood || s.Str != at {
			t.Fatalf("a text of %d bytes (the bound): %v %#x", limit, s.Quality, s.Status)
		}
		for _, n := range []int{limit + 1, 1000000} {
			s := c.sampleAt(0, dv(strings.Repeat("y", n)), now)
			if s.Quality != telemetry.QualityBad || s.Status != StatusStringTooLong || s.IsStr || s.Str != "" {
				t.Fatalf("a text of %d bytes over %d: %v %#x %d bytes kept, want bad %#x without text", n, limit, s.Quality, s.Status, len(s.Str), StatusStringTooLong)
			}
		}
		lt := &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(&ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: strings.Repeat("z", limit+1)})}
		if s := c.sampleAt(0, lt, now); s.Status != StatusStringTooLong {
			t.Fatalf("a LocalizedText over the bound: %v %#x", s.Quality, s.Status)
		}
	}
	if err := (&Config{Endpoint: "opc.tcp://127.0.0.1:4840", MaxStringBytes: MaxMaxStringBytes + 1}).Validate(); err == nil || !strings.Contains(err.Error(), "max_string_bytes") {
		t.Fatalf("max_string_bytes over %d accepted: %v", MaxMaxStringBytes, err)
	}
}

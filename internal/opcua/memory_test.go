package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// The per-node state and the per-publish garbage of issue 17 (20 devices x
// 1,000 nodes changing every 100 ms): docs/benchmarks.md, "OPC UA, 20
// devices x 1,000 nodes".

// TestNewKeepsDefaultedPoints: the points Driver.Compile leaves (defaults
// filled) are kept, not copied; points that lack a default are copied,
// and the caller's slice is left as it was.
func TestNewKeepsDefaultedPoints(t *testing.T) {
	cfg := Config{Endpoint: "opc.tcp://127.0.0.1:4840"}
	cfg.SetDefaults()
	pts := []Point{{NodeID: "ns=2;s=a"}, {NodeID: "ns=2;s=b", Mode: ModePoll}}
	for i := range pts {
		pts[i].SetDefaults(&cfg)
	}
	c, err := New("dev-1", cfg, pts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if &c.points[0] != &pts[0] {
		t.Fatal("New copied points that had their defaults")
	}

	raw := []Point{{NodeID: "ns=2;s=a"}, {NodeID: "ns=2;s=b", Mode: ModePoll}}
	c, err = New("dev-1", cfg, raw, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if &c.points[0] == &raw[0] {
		t.Fatal("New filled defaults into the caller's points")
	}
	if raw[0].SamplingInterval != 0 || c.points[0].SamplingInterval != DefaultSamplingInterval || c.points[1].PollInterval != cfg.PublishInterval {
		t.Fatalf("points %+v, caller's %+v", c.points, raw)
	}
}

// TestNotificationsReuseTheSampleBuffer: a publish response becomes one
// cycle whose samples are the server's values, statuses and source times,
// built in a buffer reused from one response to the next (a cycle is
// valid only during emit) instead of a slice grown anew per response.
func TestNotificationsReuseTheSampleBuffer(t *testing.T) {
	const n = 1000
	pts := make([]Point, n)
	for i := range pts {
		pts[i].NodeID = "ns=2;i=" + string(rune('0'+i%10))
	}
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840"}, pts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []sample.Sample
	r := newRunState(c, func(cyc *sample.Cycle) { got = append(got[:0], cyc.Samples...) })
	s := &subSession{c: c, r: r, sub: &subscription{SubscriptionTiming: SubscriptionTiming{PublishingInterval: 100 * time.Millisecond}}}
	ts := time.UnixMilli(1763812345101)
	for round, base := range []float64{1000, 5000} {
		if err := s.notifications(context.Background(), publishMessage(n, base, ts), false); err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("round %d: %d samples, want %d", round, len(got), n)
		}
		for i, smp := range got {
			q, st := telemetry.QualityGood, uint32(0)
			if i%7 == 0 {
				q, st = telemetry.QualityUncertain, uint32(ua.StatusUncertain)
			}
			if smp.Index != i || smp.Num != base+float64(i) || smp.Quality != q || smp.Status != st || smp.TS != ts.UnixMilli()+int64(i) {
				t.Fatalf("round %d: sample %d = %+v", round, i, smp)
			}
		}
	}
	msg := publishMessage(n, 0, ts)
	// the Cycle itself; before the buffer, growing the slice by appending
	// cost ~12 allocations (and ~120 KB) per 1,000-item response
	if a := testing.AllocsPerRun(20, func() { _ = s.notifications(context.Background(), msg, false) }); a > 2 && !raceEnabled {
		t.Fatalf("%.0f allocations per 1,000-item publish response, want at most 2", a)
	}
}

// TestSessionsShareCycleBuffers: a session holds no cycle buffer between
// publish responses (20 sessions of 1,000 nodes held ~1 MB, issue 17):
// the sessions of a process take one from a shared pool for a response
// and give it back after its emit, without allocating per response.
func TestSessionsShareCycleBuffers(t *testing.T) {
	for i := range reflect.TypeFor[subSession]().NumField() {
		if f := reflect.TypeFor[subSession]().Field(i); f.Type == reflect.TypeFor[[]sample.Sample]() {
			t.Fatalf("subSession.%s: a cycle buffer per session", f.Name)
		}
	}
	const n = 1000
	var sessions []*subSession
	var got int
	for range 3 {
		pts := make([]Point, n)
		for i := range pts {
			pts[i].NodeID = "ns=2;i=1"
		}
		c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840"}, pts, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := newRunState(c, func(cyc *sample.Cycle) { got = len(cyc.Samples) })
		sessions = append(sessions, &subSession{c: c, r: r, sub: &subscription{SubscriptionTiming: SubscriptionTiming{PublishingInterval: 100 * time.Millisecond}}})
	}
	msg := publishMessage(n, 0, time.UnixMilli(1763812345101))
	k := 0
	if a := testing.AllocsPerRun(30, func() {
		_ = sessions[k%len(sessions)].notifications(context.Background(), msg, false)
		k++
	}); a > 2 && !raceEnabled {
		t.Fatalf("%.1f allocations per response across sessions, want at most 2", a)
	}
	if got != n {
		t.Fatalf("%d samples emitted, want %d", got, n)
	}
}

// TestRunStateKeepsUnitTimesOnlyForUnitsFromNodes: the source times that
// guard a unit change (valueTS, floor) exist only on a device where some
// point takes its unit from its node; without one, values still pass.
func TestRunStateKeepsUnitTimesOnlyForUnitsFromNodes(t *testing.T) {
	pts := []Point{{NodeID: "ns=2;s=a"}, {NodeID: "ns=2;s=b"}}
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840"}, pts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []sample.Sample
	r := newRunState(c, func(cyc *sample.Cycle) { got = append(got[:0], cyc.Samples...) })
	if r.valueTS != nil || r.floor != nil {
		t.Fatal("a device without UnitFromNode points keeps unit change times")
	}
	r.emit(&sample.Cycle{Samples: []sample.Sample{{Index: 1, Num: 2.5, TS: 1763812345101}}})
	if len(got) != 1 || got[0].Quality != telemetry.QualityGood || got[0].Num != 2.5 || r.last[1].num != 2.5 {
		t.Fatalf("emitted %+v, last %+v", got, r.last[1])
	}
	pts[1].UnitFromNode = true
	c, err = New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840"}, pts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := newRunState(c, func(*sample.Cycle) {}); len(r.valueTS) != 2 || len(r.floor) != 2 {
		t.Fatalf("a device with a UnitFromNode point: valueTS %v, floor %v", r.valueTS, r.floor)
	}
}

// TestLastSampleIsCompact: the run state keeps 32 bytes of a point's last
// sample (48 as a sample.Sample, issue 17), and what the heartbeat makes
// of it is the sample as reported, at the heartbeat's time.
func TestLastSampleIsCompact(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(lastSample{}) != 32 {
		t.Fatalf("lastSample is %d bytes, want 32", unsafe.Sizeof(lastSample{}))
	}
	for _, s := range []sample.Sample{{Index: 3, Num: 2.5, TS: 1, Quality: telemetry.QualityUncertain, Status: 0x40000000},
		{Index: 4, Str: "x", IsStr: true, TS: 2, Quality: telemetry.QualityGood},
		{Index: 5, Quality: telemetry.QualityBad, Silent: true, Status: 0x800A0000, TS: 3}} {
		l := lastOf(&s)
		want := s
		want.TS = 99
		if got := l.sample(s.Index, 99); got != want {
			t.Errorf("re-reported %+v, want %+v", got, want)
		}
	}
}

// TestForwardStateKeepsTheLastStatus: the gateway's side of a session
// worker keeps only the last status per point, and a Lost cycle after the
// worker's death still carries it on every Stale sample.
func TestForwardStateKeepsTheLastStatus(t *testing.T) {
	c, err := New("dev-1", Config{Endpoint: "opc.tcp://127.0.0.1:4840"}, []Point{{NodeID: "ns=2;s=a"}, {NodeID: "ns=2;s=b"}, {NodeID: "ns=2;s=c"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cycles []sample.Cycle
	r := newForwardState(c, func(cyc *sample.Cycle) {
		cp := *cyc
		cp.Samples = append([]sample.Sample(nil), cyc.Samples...)
		cycles = append(cycles, cp)
	})
	if r.last != nil || r.lastAt != nil {
		t.Fatal("the forwarding state keeps whole samples")
	}
	bad := uint32(ua.StatusBadNodeIDUnknown)
	r.emit(&sample.Cycle{Samples: []sample.Sample{{Index: 0, Num: 1}, {Index: 1, Quality: telemetry.QualityBad, Status: bad}, {Index: 2, Num: 3, Quality: telemetry.QualityUncertain, Status: uint32(ua.StatusUncertain)}}})
	r.emit(&sample.Cycle{Samples: []sample.Sample{{Index: 2, Quality: telemetry.QualityStale}}}) // a Stale sample keeps what was
	r.lost(ErrWorkerExited, true)
	lost := cycles[len(cycles)-1]
	if !lost.Lost || !errors.Is(lost.Err, ErrWorkerExited) || len(lost.Samples) != 3 {
		t.Fatalf("lost cycle %+v", lost)
	}
	for i, want := range []uint32{0, bad, uint32(ua.StatusUncertain)} {
		if s := lost.Samples[i]; s.Index != i || s.Quality != telemetry.QualityStale || s.Status != want {
			t.Fatalf("stale sample %d = %+v, want status %#x", i, s, want)
		}
	}
}

// TestWorkerWritesProfiles: with WorkerProfileEnv set, a session worker
// writes its CPU profile and, when asked to stop, its heap profile.
func TestWorkerWritesProfiles(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "w")
	t.Setenv(WorkerProfileEnv, prefix)
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationProcess
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	stop := runUntilStopped(t, c, rec)
	wait.For(t, 20*time.Second, "a value through the worker", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })
	pid := c.Status().WorkerPID
	if pid <= 0 {
		t.Fatalf("no worker pid in %+v", c.Status())
	}
	stop()
	for _, kind := range []string{"cpu", "heap"} {
		path := fmt.Sprintf("%s.%d.%s.pb", prefix, pid, kind)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s profile: %v", kind, err)
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("%s profile %s is not a gzipped profile (%d bytes)", kind, path, len(b))
		}
	}
}

// runUntilStopped runs c until the returned function is called (or the
// test ends); the function returns once Run has.
func runUntilStopped(t *testing.T, c *Client, rec *recorder) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, rec.emit) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestCompiledPointsAreCompact: Driver.Compile keeps an exact-size table
// of 56-byte points: mode and deadband type are one byte each (88 bytes
// with them as strings, before issue 17's session 9), decoded from what
// the file writes.
func TestCompiledPointsAreCompact(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(Point{}) != 56 {
		t.Fatalf("Point is %d bytes, want 56", unsafe.Sizeof(Point{}))
	}
	doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - id: d-1\n" +
		"    class: generic\n    opcua: {endpoint: \"opc.tcp://127.0.0.1:4840\"}\n    points:\n"
	for i := range 5 {
		doc += fmt.Sprintf("      - {signal: s%d, node_id: \"ns=2;s=n%d\", unit: kW, mode: subscribe, deadband_type: absolute, deadband: 0.5}\n", i, i)
	}
	doc += "      - {signal: p, node_id: \"ns=2;s=p\", unit: kW, mode: poll, deadband_type: none}\n"
	doc += "      - {signal: q, node_id: \"ns=2;s=q\", unit: kW, deadband_type: percent, deadband: 2}\n"
	doc += "      - {signal: r, node_id: \"ns=2;s=r\", unit: kW}\n"
	cfg, err := gwconfig.LoadBytes("gw.yaml", []byte(doc), Driver{})
	if err != nil {
		t.Fatal(err)
	}
	pts := cfg.Devices[0].Driver.(*DeviceConfig).Points
	if len(pts) != 8 || cap(pts) != 8 {
		t.Fatalf("%d points, capacity %d; want 8 and 8", len(pts), cap(pts))
	}
	for i, p := range pts[:5] {
		if p.Mode != ModeSubscribe || p.DeadbandType != DeadbandAbsolute || p.Deadband != 0.5 {
			t.Fatalf("point %d: mode %v, deadband %v %v", i, p.Mode, p.DeadbandType, p.Deadband)
		}
	}
	for i, want := range []Point{{Mode: ModePoll, DeadbandType: DeadbandNone}, {Mode: ModeSubscribe, DeadbandType: DeadbandPercent, Deadband: 2},
		{Mode: ModeSubscribe, DeadbandType: DeadbandNone}} {
		if p := pts[5+i]; p.Mode != want.Mode || p.DeadbandType != want.DeadbandType || p.Deadband != want.Deadband {
			t.Fatalf("point %d: mode %v, deadband %v %v; want %v, %v %v", 5+i, p.Mode, p.DeadbandType, p.Deadband, want.Mode, want.DeadbandType, want.Deadband)
		}
	}
}

// TestModeAndDeadbandTypeByName: the two enums are their names in YAML
// (the configuration's errors name what was written) and in the JSON of
// a session worker's points, and an unknown name is refused.
func TestModeAndDeadbandTypeByName(t *testing.T) {
	in := []Point{{NodeID: "ns=2;s=a", Mode: ModePoll}, {NodeID: "ns=2;s=b", DeadbandType: DeadbandPercent, Deadband: 1},
		{NodeID: "ns=2;s=c", DeadbandType: DeadbandAbsolute, Deadband: 2}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Mode":"poll"`, `"Mode":"subscribe"`, `"DeadbandType":"percent"`, `"DeadbandType":"absolute"`, `"DeadbandType":"none"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var out []Point
	if err := json.Unmarshal(b, &out); err != nil || !slices.Equal(out, in) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`[{"Mode":"push"}]`), &out); err == nil || !strings.Contains(err.Error(), `"push" is not subscribe or poll`) {
		t.Errorf("unknown mode: %v", err)
	}
	if err := json.Unmarshal([]byte(`[{"DeadbandType":"relative"}]`), &out); err == nil || !strings.Contains(err.Error(), `"relative" is not none, absolute or percent`) {
		t.Errorf("unknown deadband type: %v", err)
	}
	doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - id: d-1\n" +
		"    class: generic\n    opcua: {endpoint: \"opc.tcp://127.0.0.1:4840\"}\n    points:\n" +
		"      - {signal: s, node_id: \"ns=2;s=n\", unit: kW, mode: push, deadband_type: relative, deadband: 3}\n"
	_, err = gwconfig.LoadBytes("gw.yaml", []byte(doc), Driver{})
	for _, want := range []string{`devices[0].points[0].mode: "push" is not subscribe or poll`, `devices[0].points[0].deadband_type: "relative" is not none, absolute or percent`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v; want %s", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "deadband:") {
		t.Errorf("error %v: a deadband error besides the type's", err)
	}
}

// TestCompactPoints: a session worker's points, decoded from JSON into a
// slice grown by appending, are kept as an exact-size copy.
func TestCompactPoints(t *testing.T) {
	var in []Point
	for i := range 9 {
		mode := ModeSubscribe
		if i%3 == 0 {
			mode = ModePoll
		}
		in = append(in, Point{NodeID: fmt.Sprintf("ns=2;s=n%d", i), Mode: mode, DeadbandType: DeadbandPercent, Deadband: 1})
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var decoded []Point
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	out := compactPoints(decoded)
	if len(out) != 9 || cap(out) != 9 || !slices.Equal(out, in) {
		t.Fatalf("%d points, capacity %d; want 9 and 9, equal: %+v", len(out), cap(out), out)
	}
}

// TestSessionParsesNodeIDsWhereUsed: a session keeps no parsed node id per
// point (live.nodes is a nodeTable: the points and the namespace array),
// and every path that needs one parses it again: subscribed and polled
// points in the nsu=<uri>; form deliver their values, a read and a write
// through that form reach the node.
func TestSessionParsesNodeIDsWhereUsed(t *testing.T) {
	src := &setpointSource{source{class: "air_compressor", signals: []string{"discharge_pressure", "unload_pressure_setpoint", "power"},
		values: []float64{0.7, 0.75, 55}}}
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "ac-1", Source: src})
	var wrote atomic.Value
	f.SetWriter(func(asset, signal string, v float64) ua.StatusCode {
		wrote.Store(fmt.Sprintf("%s.%s=%g", asset, signal, v))
		return ua.StatusOK
	})
	nsu := func(signal string) string { return "nsu=" + f.NamespaceURI() + ";s=ac-1." + signal }
	points := []Point{
		{NodeID: nsu("discharge_pressure"), Mode: ModeSubscribe, SamplingInterval: 10 * time.Millisecond},
		{NodeID: nsu("unload_pressure_setpoint"), Mode: ModePoll, PollInterval: 50 * time.Millisecond},
		{NodeID: f.NodeID("ac-1", "power"), Mode: ModeSubscribe, SamplingInterval: 10 * time.Millisecond},
	}
	c, rec := run(t, baseConfig(t, f), points)
	wait.For(t, 10*time.Second, "good values of the three points", func() bool {
		return rec.has(0, telemetry.QualityGood, 0.7) && rec.has(1, telemetry.QualityGood, 0.75) && rec.has(2, telemetry.QualityGood, 55)
	})
	s := c.live.Load()
	if s == nil {
		t.Fatal("no live session")
	}
	table := s.nodes // a *nodeTable, not a []*ua.NodeID: nothing parsed per point
	if table.len() != 3 || !slices.Contains(table.ns, f.NamespaceURI()) {
		t.Fatalf("node table of %d points, namespace array %v", table.len(), table.ns)
	}
	got, err := c.ReadPoint(t.Context(), 0)
	if err != nil || got.Quality != telemetry.QualityGood || got.Num != 0.7 {
		t.Fatalf("ReadPoint(0) = %+v, %v", got, err)
	}
	if _, err := c.WritePoint(t.Context(), 1, 0.8); err != nil {
		t.Fatalf("WritePoint(1): %v", err)
	}
	if w, _ := wrote.Load().(string); w != "ac-1.unload_pressure_setpoint=0.8" {
		t.Fatalf("the server got %q, want ac-1.unload_pressure_setpoint=0.8", w)
	}
}

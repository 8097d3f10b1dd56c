package opcua

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/opcua/uapki"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// fastTiming shortens the subscription timing so that minutes of protocol
// time pass in seconds: a 50 ms publishing interval and a 200 ms keep-alive
// target give a keep-alive every 250 ms, so the 100 keep-alive periods a
// test waits for are what a default configuration (keep-alive 5 s) sees in
// about 8 minutes, and a gopcua default one (10 s) in about 17.
func fastTiming(cfg *Config) {
	cfg.PublishInterval = 50 * time.Millisecond
	cfg.KeepAlive = 200 * time.Millisecond
	cfg.RequestTimeout = time.Second
}

func keepAlives(rec *recorder) int {
	return rec.countCycles(func(c sample.Cycle) bool { return c.Replied && !c.Lost && len(c.Samples) == 0 })
}

func lostCycles(rec *recorder) int {
	return rec.countCycles(func(c sample.Cycle) bool { return c.Lost })
}

func TestDeriveTiming(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		interval, ka, request time.Duration
		keepCount, lifetime   uint32
		publish               time.Duration
	}{
		// gopcua's defaults were keep-alive 10 x 1 s = request timeout 10 s: the trap.
		{"defaults", time.Second, DefaultKeepAlive, DefaultRequestTimeout, 5, 50, 18 * time.Second},
		{"fast", 50 * time.Millisecond, 200 * time.Millisecond, time.Second, 4, 40, time.Second},
		{"keep-alive below the interval", 2 * time.Second, time.Second, 10 * time.Second, 1, 10, 12 * time.Second},
		{"long request timeout kept", 100 * time.Millisecond, time.Second, time.Minute, 10, 100, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{PublishInterval: tc.interval, KeepAlive: tc.ka, RequestTimeout: tc.request}
			tm := deriveTiming(&cfg)
			if tm.keepAlive != tc.keepCount || tm.lifetime != tc.lifetime || tm.publish != tc.publish {
				t.Fatalf("timing %+v, want keep-alive count %d lifetime %d publish %v", tm, tc.keepCount, tc.lifetime, tc.publish)
			}
			period := time.Duration(tm.keepAlive+1) * tm.interval
			if tm.publish < PublishTimeoutFactor*period {
				t.Fatalf("publish timeout %v does not outlive %d keep-alive periods of %v", tm.publish, PublishTimeoutFactor, period)
			}
			if tm.lifetime < 3*tm.keepAlive {
				t.Fatalf("lifetime count %d below 3 x keep-alive count %d (Part 4, 5.13.2)", tm.lifetime, tm.keepAlive)
			}
		})
	}
}

// Constant subscribed values (nothing ever changes) keep one session for
// 100 keep-alive periods: no loss, no reconnect, every keep-alive reported
// as a live cycle.
func TestConstantSubscriptionKeepsOneSession(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	fastTiming(&cfg)
	c, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_pressure", "top_gas_co"))
	wait.For(t, 10*time.Second, "initial values", func() bool {
		return rec.has(0, telemetry.QualityGood, 210) && rec.has(1, telemetry.QualityGood, 22.5)
	})
	wait.For(t, 60*time.Second, "100 keep-alive periods", func() bool { return keepAlives(rec) >= 100 })
	st := c.Status()
	if st.Sessions != 1 || !st.Connected || lostCycles(rec) != 0 {
		t.Fatalf("status %+v, %d lost cycles: want one session throughout", st, lostCycles(rec))
	}
	if st.Subscription.MaxKeepAliveCount == 0 || st.Subscription.PublishTimeout <= time.Duration(st.Subscription.MaxKeepAliveCount+1)*st.Subscription.PublishingInterval {
		t.Fatalf("subscription timing %+v: the publish timeout must exceed the keep-alive period", st.Subscription)
	}
	if !rec.has(0, telemetry.QualityGood, 210) || !rec.has(1, telemetry.QualityGood, 22.5) {
		t.Fatal("values no longer good")
	}
}

// The driver re-reports unchanged subscribed values every Heartbeat,
// stamped with the current time, Bad ones included (the server still says
// so), and only while the session is up.
func TestHeartbeatReReportsUnchangedValues(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	fastTiming(&cfg)
	cfg.Heartbeat = 300 * time.Millisecond
	if err := f.SetStatus("bf-2", "top_gas_co", opcuafront.StatusBadSensorFailure); err != nil {
		t.Fatal(err)
	}
	_, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_pressure", "top_gas_co"))
	good := func() int {
		return rec.count(func(s sample.Sample) bool { return s.Index == 0 && s.Quality == telemetry.QualityGood && s.Num == 210 })
	}
	bad := func() int {
		return rec.count(func(s sample.Sample) bool {
			return s.Index == 1 && s.Quality == telemetry.QualityBad && s.Status == opcuafront.StatusBadSensorFailure && !s.Silent
		})
	}
	wait.For(t, 20*time.Second, "five reports of each unchanged value", func() bool { return good() >= 5 && bad() >= 5 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var ts []int64
	for _, b := range rec.batches {
		for _, s := range b {
			if s.Index == 0 {
				ts = append(ts, s.TS)
			}
		}
	}
	for i := 2; i < len(ts); i++ { // the first is the server's SourceTimestamp
		if ts[i] <= ts[i-1] {
			t.Fatalf("heartbeat timestamps not increasing: %v", ts)
		}
	}
	// A copy is stamped with the server's last Publish answer that
	// confirmed the value unchanged, not with the copy's own time (review13
	// F5: a frozen server's values were stamped fresh for up to two
	// keep-alive periods): never after its cycle, and before it at least
	// once in five (copies follow the answer at the next heartbeat tick).
	earlier := 0
	for i, b := range rec.batches[1:] {
		start := rec.starts[i+1].UnixMilli()
		for _, s := range b {
			if s.TS > start {
				t.Fatalf("heartbeat copy stamped %d, after its cycle at %d", s.TS, start)
			}
			if s.Index == 0 && s.TS < start {
				earlier++
			}
		}
	}
	if earlier == 0 {
		t.Fatalf("every heartbeat copy stamped with its own cycle's time: %v", ts)
	}
}

// Bad quality truth: a node whose value is Bad, subscribed or polled, is
// reported Bad with its StatusCode (the server answered: not Silent) before
// and after a reconnect; Stale appears only in the Lost cycle of the
// outage, never while the server answers.
func TestBadStaysBadAcrossReconnect(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	fastTiming(&cfg)
	cfg.Heartbeat = 200 * time.Millisecond
	points := append(pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure"), pointsFor(f, "bf-2", ModePoll, "top_gas_co")...)
	for _, s := range []string{"hot_blast_temp", "top_gas_co"} {
		if err := f.SetStatus("bf-2", s, opcuafront.StatusBadSensorFailure); err != nil {
			t.Fatal(err)
		}
	}
	c, rec := run(t, cfg, points)
	badNow := func(i int) bool {
		s, ok := rec.get(i)
		return ok && s.Quality == telemetry.QualityBad && s.Status == opcuafront.StatusBadSensorFailure && !s.Silent
	}
	wait.For(t, 10*time.Second, "bad with the status code", func() bool {
		return badNow(0) && badNow(2) && rec.has(1, telemetry.QualityGood, 210)
	})
	f.DropConnections()
	wait.For(t, 20*time.Second, "second session", func() bool { return c.Status().Sessions >= 2 && c.Status().Connected })
	before := rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityBad })
	wait.For(t, 10*time.Second, "bad again after the reconnect", func() bool {
		return badNow(0) && badNow(2) && rec.has(1, telemetry.QualityGood, 210) &&
			rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityBad }) >= before+4
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.staleOutsideLost) > 0 {
		t.Fatalf("stale samples outside a lost cycle: %+v", rec.staleOutsideLost)
	}
	if n := lostCyclesLocked(rec); n != 1 {
		t.Fatalf("%d lost cycles for one outage, want 1", n)
	}
}

func lostCyclesLocked(rec *recorder) int {
	n := 0
	for _, c := range rec.cycles {
		if c.Lost {
			n++
		}
	}
	return n
}

// Points without a configured unit get the node's EngineeringUnits through
// OnUnits before the first cycle that carries their values.
func TestOnUnitsBeforeFirstValues(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	points := pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure", "top_gas_co")
	points[0].UnitFromNode, points[2].UnitFromNode = true, true
	c, err := New("dev-1", cfg, points, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	var got []NodeUnit
	var valuesBefore atomic.Int64
	c.OnUnits(func(us []NodeUnit) {
		valuesBefore.Store(int64(rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityGood })))
		got = append([]NodeUnit(nil), us...)
	})
	runClient(t, c, rec)
	wait.For(t, 10*time.Second, "values", func() bool { return rec.has(2, telemetry.QualityGood, 22.5) })
	if valuesBefore.Load() != 0 {
		t.Fatalf("%d values emitted before the units", valuesBefore.Load())
	}
	if len(got) != 2 || got[0].Index != 0 || got[0].UCUM != "Cel" || got[1].Index != 2 || got[1].UCUM != "%" || !got[1].HasRange || got[1].Max != 40 {
		t.Fatalf("units %+v", got)
	}
}

// While the engineering-unit lookup cannot happen (a wrong password), the
// device is reported lost with the cause on every attempt, its points
// stale, and attempts back off within backoff_max.
func TestUnitLookupFailureReportsLost(t *testing.T) {
	f := startFront(t, opcuafront.Config{DisableAnonymous: true, Users: map[string]string{"operator": "s3cret!"}},
		opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	pw := filepath.Join(cfg.DataDir, "pw")
	if err := os.WriteFile(pw, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth = AuthConfig{Mode: "username", Username: "operator", PasswordFile: pw}
	trust(t, &cfg, f)
	points := pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure")
	points[0].UnitFromNode = true
	c, err := New("dev-1", cfg, points, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	called := atomic.Bool{}
	c.OnUnits(func([]NodeUnit) { called.Store(true) })
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "three lost cycles with the cause", func() bool {
		return rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost && cy.Err != nil && !cy.Replied }) >= 3
	})
	if !rec.has(0, telemetry.QualityStale, 0) || !rec.has(1, telemetry.QualityStale, 0) {
		t.Fatal("points not stale while the device cannot be read")
	}
	if called.Load() || rec.count(func(s sample.Sample) bool { return s.Quality.HasValue() }) != 0 {
		t.Fatal("units or values without a login")
	}
	if n := rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }); n != len(points) {
		t.Fatalf("%d stale samples, want %d: once per outage", n, len(points))
	}
	// Once the password is right, the same Run reads the units and values.
	if err := os.WriteFile(pw, []byte("s3cret!"), 0o600); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "values once the login works", func() bool { return rec.has(1, telemetry.QualityGood, 210) && called.Load() })
}

// A panic while handling a session (here in the OnUnits callback, the
// gateway's code on the driver's goroutine) drops that session, is counted
// and logged, and the driver reconnects.
func TestPanicInSessionBecomesSessionError(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	points := pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp")
	points[0].UnitFromNode = true
	m := NewMetrics(prometheus.NewRegistry())
	c, err := New("dev-1", cfg, points, testLog(t), m)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	c.OnUnits(func([]NodeUnit) {
		if calls.Add(1) == 1 {
			panic("boom")
		}
	})
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values after the panicking session", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })
	var pm dto.Metric
	if err := m.panics.WithLabelValues("dev-1").Write(&pm); err != nil {
		t.Fatal(err)
	}
	if n := pm.GetCounter().GetValue(); n != 1 {
		t.Fatalf("panics metric %v, want 1", n)
	}
	var lostErr error
	rec.mu.Lock()
	for _, cy := range rec.cycles {
		if cy.Lost {
			lostErr = cy.Err
		}
	}
	rec.mu.Unlock()
	if !errors.Is(lostErr, ErrPanic) {
		t.Fatalf("lost cycle error %v, want ErrPanic", lostErr)
	}
}

// Several devices with the same data dir start at once over a secured
// channel: one application certificate is created, all of them use it and
// all of them read values.
func TestConcurrentDevicesShareOneCertificate(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	dataDir := t.TempDir()
	const n = 6
	created := &createdLog{}
	log := slog.New(created)
	recs := make([]*recorder, n)
	clients := make([]*Client, n)
	for i := range n {
		cfg := baseConfig(t, f)
		cfg.DataDir, cfg.SecurityPolicy, cfg.SecurityMode = dataDir, "Basic256Sha256", "SignAndEncrypt"
		trust(t, &cfg, f)
		c, err := New("dev-"+strconv.Itoa(i), cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp"), log, nil)
		if err != nil {
			t.Fatal(err)
		}
		clients[i], recs[i] = c, newRecorder()
	}
	for i := range n { // started back to back: their first connects overlap
		runClient(t, clients[i], recs[i])
	}
	wait.For(t, 30*time.Second, "values on every device", func() bool {
		for _, r := range recs {
			if !r.has(0, telemetry.QualityGood, 1183.5) {
				return false
			}
		}
		return true
	})
	for i, c := range clients {
		if st := c.Status(); st.Sessions != 1 {
			t.Fatalf("device %d: status %+v: a certificate mix-up cost sessions", i, st)
		}
	}
	own := filepath.Join(dataDir, "pki", "own")
	entries, err := os.ReadDir(own)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "cert.der" || names[1] != "key.pem" {
		t.Fatalf("%s holds %v, want exactly cert.der and key.pem", own, names)
	}
	der, err := uapki.LoadCertificate(filepath.Join(own, "cert.der"))
	if err != nil {
		t.Fatal(err)
	}
	if th := created.thumbprints(); len(th) != 1 || th[0] != uapki.Thumbprint(der) {
		t.Fatalf("certificates created %v, want exactly one, cert.der's %s", th, uapki.Thumbprint(der))
	}
}

// createdLog records the thumbprints of "created the application instance
// certificate" log records.
type createdLog struct {
	mu sync.Mutex
	th []string
}

func (h *createdLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *createdLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *createdLog) WithGroup(string) slog.Handler            { return h }
func (h *createdLog) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "created the application instance certificate") {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "thumbprint" {
			h.mu.Lock()
			h.th = append(h.th, a.Value.String())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *createdLog) thumbprints() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.th...)
}

// runClient runs c until the test ends.
func runClient(t *testing.T, c *Client, rec *recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, rec.emit) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestHeartbeatStopsWhenTheServerGoesSilent freezes the server (TCP kept
// open, nothing answered) while heartbeats fall due every 100 ms and the
// keep-alive period is 2 s: at most one copy of the point may follow the
// freeze (the server answered after the copy before it), none after that,
// until the session is lost (review1 F2: copies, Good with fresh
// timestamps, went on for two keep-alive periods).
func TestHeartbeatStopsWhenTheServerGoesSilent(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.PublishInterval = 50 * time.Millisecond
	cfg.KeepAlive = 2 * time.Second
	cfg.Heartbeat = 100 * time.Millisecond
	_, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_gas_co"))
	copies := func() int {
		return rec.count(func(s sample.Sample) bool { return s.Index == 0 && s.Quality == telemetry.QualityGood })
	}
	// the keep-alives answered between heartbeats (2 s) let a copy out
	wait.For(t, 20*time.Second, "value and a heartbeat copy", func() bool { return copies() >= 2 })
	lost := func() bool { return rec.countCycles(func(c sample.Cycle) bool { return c.Lost }) > 0 }
	if lost() {
		t.Fatal("session lost before the freeze")
	}
	before := copies()
	f.SetSilent(true)
	t.Cleanup(func() { f.SetSilent(false) })
	wait.For(t, 30*time.Second, "the session lost", lost)
	if n := copies() - before; n > 1 {
		t.Fatalf("%d heartbeat copies after the server went silent, want at most 1", n)
	}
}

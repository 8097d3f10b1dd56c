package opcua

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/opcua/uapki"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// source is a test value source served by the front.
type source struct {
	class   string
	signals []string
	values  []float64
}

func (s *source) Class() string     { return s.class }
func (s *source) Signals() []string { return s.signals }
func (s *source) Values() []float64 { return s.values }

// recorder collects emitted cycles.
type recorder struct {
	mu      sync.Mutex
	latest  map[int]sample.Sample
	batches [][]sample.Sample
	starts  []time.Time    // of each batch's cycle
	cycles  []sample.Cycle // without Samples
	// staleOutsideLost collects Stale samples of cycles not marked Lost:
	// the driver may only call a point stale when its session is gone.
	staleOutsideLost []sample.Sample
}

func newRecorder() *recorder { return &recorder{latest: map[int]sample.Sample{}} }

func (r *recorder) emit(cyc *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	meta := *cyc
	meta.Samples = nil
	r.cycles = append(r.cycles, meta)
	if len(cyc.Samples) > 0 {
		r.batches = append(r.batches, append([]sample.Sample(nil), cyc.Samples...))
		r.starts = append(r.starts, cyc.Start)
	}
	for _, u := range cyc.Samples {
		r.latest[u.Index] = u
		if u.Quality == telemetry.QualityStale && !cyc.Lost {
			r.staleOutsideLost = append(r.staleOutsideLost, u)
		}
	}
}

func (r *recorder) get(i int) (sample.Sample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.latest[i]
	return u, ok
}

// has reports whether point i's latest sample has quality q and (for
// values) value v.
func (r *recorder) has(i int, q telemetry.Quality, v float64) bool {
	u, ok := r.get(i)
	return ok && u.Quality == q && (!q.HasValue() || u.Num == v)
}

func (r *recorder) count(f func(sample.Sample) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		for _, u := range b {
			if f(u) {
				n++
			}
		}
	}
	return n
}

// countCycles counts the recorded cycles (without their samples) matching f.
func (r *recorder) countCycles(f func(sample.Cycle) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.cycles {
		if f(c) {
			n++
		}
	}
	return n
}

func startFront(t *testing.T, cfg opcuafront.Config, assets ...opcuafront.Asset) *opcuafront.Front {
	t.Helper()
	f, err := opcuafront.New(cfg, assets, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Stop() })
	return f
}

func furnace() *source {
	return &source{class: "blast_furnace", signals: []string{"hot_blast_temp", "top_pressure", "top_gas_co"}, values: []float64{1183.5, 210, 22.5}}
}

// baseConfig runs the sessions in process: the driver's own tests look
// inside the Client; worker_test.go runs the same scenarios through a
// session worker.
func baseConfig(t *testing.T, f *opcuafront.Front) Config {
	return Config{Endpoint: f.Endpoint(), DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		PublishInterval: 50 * time.Millisecond, Watchdog: 200 * time.Millisecond, RequestTimeout: 3 * time.Second, Isolation: IsolationNone}
}

// run starts a client and stops it at cleanup.
func run(t *testing.T, cfg Config, points []Point) (*Client, *recorder) {
	t.Helper()
	c, err := New("dev-1", cfg, points, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	return c, rec
}

func pointsFor(f *opcuafront.Front, asset string, mode Mode, signals ...string) []Point {
	var ps []Point
	for _, s := range signals {
		ps = append(ps, Point{NodeID: f.NodeID(asset, s), Mode: mode, SamplingInterval: 10 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	}
	return ps
}

// TestSubscribeDeliversValuesTimestampsAndUnits runs in process and
// through a session worker (isolation process): the same samples.
func TestSubscribeDeliversValuesTimestampsAndUnits(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testSubscribeDeliversValuesTimestampsAndUnits(t, iso) })
	}
}

func testSubscribeDeliversValuesTimestampsAndUnits(t *testing.T, isolation string) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = isolation
	points := pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure", "top_gas_co")
	c, rec := run(t, cfg, points)
	wait.For(t, 10*time.Second, "initial values", func() bool {
		return rec.has(0, telemetry.QualityGood, 1183.5) && rec.has(1, telemetry.QualityGood, 210) && rec.has(2, telemetry.QualityGood, 22.5)
	})
	ts := time.UnixMilli(1763812345101)
	if err := f.Set("bf-2", "top_pressure", 212.25, ts); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "changed value", func() bool { return rec.has(1, telemetry.QualityGood, 212.25) })
	if u, _ := rec.get(1); u.TS != 1763812345101 || u.Status != 0 {
		t.Fatalf("update %+v: want TS 1763812345101 status 0", u)
	}
	if !c.Status().Connected || c.Status().Limits.MaxNodesPerRead != DefaultOperationLimit {
		t.Fatalf("status %+v", c.Status())
	}

	units, err := c.NodeUnits(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		ucum     string
		code     string
		min, max float64
	}{{"Cel", "CEL", 900, 1350}, {"kPa", "KPA", 0, 320}, {"%", "P1", 0, 40}}
	for i, w := range want {
		u := units[i]
		if u.UCUM != w.ucum || u.UNECE != w.code || !u.HasRange || u.Min != w.min || u.Max != w.max || u.Err != nil {
			t.Fatalf("units[%d] = %+v, want %+v", i, u, w)
		}
	}
	if units[0].UnitID != 4408652 {
		t.Fatalf("CEL unit id %d", units[0].UnitID)
	}
}

func TestPollPointsOneBatchPerCycle(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	points := pointsFor(f, "bf-2", ModePoll, "hot_blast_temp", "top_pressure", "top_gas_co")
	_, rec := run(t, baseConfig(t, f), points)
	wait.For(t, 10*time.Second, "polled values", func() bool { return rec.has(2, telemetry.QualityGood, 22.5) })
	if err := f.Set("bf-2", "hot_blast_temp", 1201, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "polled change", func() bool { return rec.has(0, telemetry.QualityGood, 1201) })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, b := range rec.batches {
		if len(b) != 3 && b[0].Quality != telemetry.QualityStale {
			t.Fatalf("poll batch of %d updates, want 3 (one snapshot per cycle)", len(b))
		}
	}
}

func TestBadNodeNeverStopsTheOthers(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	points := append(pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure"),
		Point{NodeID: "ns=1;s=bf-2.no_such_signal"},
		Point{NodeID: f.NodeID("bf-2", "top_gas_co"), Mode: ModePoll, PollInterval: 50 * time.Millisecond},
		Point{NodeID: "ns=1;s=bf-2.also_missing", Mode: ModePoll, PollInterval: 50 * time.Millisecond})
	_, rec := run(t, baseConfig(t, f), points)
	wait.For(t, 10*time.Second, "good values beside unknown nodes", func() bool {
		return rec.has(0, telemetry.QualityGood, 1183.5) && rec.has(1, telemetry.QualityGood, 210) && rec.has(3, telemetry.QualityGood, 22.5) &&
			rec.has(2, telemetry.QualityBad, 0) && rec.has(4, telemetry.QualityBad, 0)
	})
	if u, _ := rec.get(2); u.Status != 0x80340000 {
		t.Fatalf("unknown subscribed node status %#x, want BadNodeIdUnknown", u.Status)
	}
	if u, _ := rec.get(4); u.Status>>30 != 2 {
		t.Fatalf("unknown polled node status %#x, want Bad", u.Status)
	}
	// Fault injection: one Bad node amid good ones, then recovery.
	if err := f.SetStatus("bf-2", "hot_blast_temp", opcuafront.StatusBadSensorFailure); err != nil {
		t.Fatal(err)
	}
	if err := f.SetStatus("bf-2", "top_gas_co", opcuafront.StatusBadSensorFailure); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("bf-2", "top_pressure", 215, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "bad nodes reported, good one updated", func() bool {
		u0, _ := rec.get(0)
		u3, _ := rec.get(3)
		return u0.Quality == telemetry.QualityBad && u0.Status == opcuafront.StatusBadSensorFailure &&
			u3.Quality == telemetry.QualityBad && u3.Status == opcuafront.StatusBadSensorFailure && rec.has(1, telemetry.QualityGood, 215)
	})
	if err := f.SetStatus("bf-2", "hot_blast_temp", opcuafront.StatusUncertainLastUsable); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "uncertain", func() bool { return rec.has(0, telemetry.QualityUncertain, 1183.5) })
}

// Every policy and mode end to end over the simulator front (gopcua's
// server): with gopcua v0.9.0 its secure channels open (v0.8.0 decoded the
// asymmetrically encrypted OpenSecureChannel request as plaintext and every
// secured combination timed out; docs/opcua.md, "gopcua version").
func TestSecurityPoliciesAndModes(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	for _, sec := range opcuafront.DefaultSecurity() {
		t.Run(sec.Policy+"_"+sec.Mode, func(t *testing.T) {
			cfg := baseConfig(t, f)
			cfg.SecurityPolicy, cfg.SecurityMode = sec.Policy, sec.Mode
			trust(t, &cfg, f)
			cfg.SetDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			plan, err := options(t.Context(), &cfg, slog.New(slog.DiscardHandler), cfg.RequestTimeout)
			if err != nil || len(plan.opts) == 0 {
				t.Fatalf("options: %v", err)
			}
			if sec.Policy != "None" {
				if _, err := os.Stat(filepath.Join(cfg.DataDir, "pki", "own", "cert.der")); err != nil {
					t.Fatalf("application certificate not created: %v", err)
				}
			}
			points := append(pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp"), pointsFor(f, "bf-2", ModePoll, "top_gas_co")...)
			c, rec := run(t, cfg, points)
			wait.For(t, 20*time.Second, "values over "+sec.Policy+"/"+sec.Mode, func() bool {
				return rec.has(0, telemetry.QualityGood, 1183.5) && rec.has(1, telemetry.QualityGood, 22.5)
			})
			if st := c.Status(); st.Sessions != 1 {
				t.Fatalf("status %+v: want one session", st)
			}
		})
	}
}

// trust copies the front's certificate into the client's trust dir.
func trust(t *testing.T, cfg *Config, f *opcuafront.Front) {
	t.Helper()
	cfg.TrustDir = filepath.Join(cfg.DataDir, "trusted")
	if err := uapki.WriteCertificate(filepath.Join(cfg.TrustDir, "server.der"), f.Certificate()); err != nil {
		t.Fatal(err)
	}
}

func TestLogins(t *testing.T) {
	userDir := t.TempDir()
	certPath, keyPath := filepath.Join(userDir, "user.pem"), filepath.Join(userDir, "user.key")
	userCert, _, _, err := uapki.LoadOrCreate(certPath, keyPath, "operator", "urn:smelter:test:user", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := startFront(t, opcuafront.Config{DisableAnonymous: true, Users: map[string]string{"operator": "s3cret!"}, UserCerts: [][]byte{userCert}},
		opcuafront.Asset{ID: "bf-2", Source: furnace()})
	otherCert, otherKey := filepath.Join(userDir, "other.pem"), filepath.Join(userDir, "other.key")
	if _, _, _, err := uapki.LoadOrCreate(otherCert, otherKey, "stranger", "urn:smelter:test:stranger", nil); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMELTER_TEST_OPCUA_PW", "s3cret!")
	pwFile := filepath.Join(userDir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badFile := filepath.Join(userDir, "bad")
	if err := os.WriteFile(badFile, []byte("guess"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, policy, mode string
		auth               AuthConfig
		ok                 bool
	}{
		{"username-none-channel", "None", "None", AuthConfig{Mode: "username", Username: "operator", PasswordFile: pwFile}, true},
		{"username-password-env", "None", "None", AuthConfig{Mode: "username", Username: "operator", PasswordEnv: "SMELTER_TEST_OPCUA_PW"}, true},
		{"username-bad-password", "None", "None", AuthConfig{Mode: "username", Username: "operator", PasswordFile: badFile}, false},
		{"username-unknown-user", "None", "None", AuthConfig{Mode: "username", Username: "intruder", PasswordFile: pwFile}, false},
		{"certificate", "None", "None", AuthConfig{Mode: "certificate", CertFile: certPath, KeyFile: keyPath}, true},
		{"certificate-unknown", "None", "None", AuthConfig{Mode: "certificate", CertFile: otherCert, KeyFile: otherKey}, false},
		{"anonymous-refused", "None", "None", AuthConfig{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t, f)
			cfg.SecurityPolicy, cfg.SecurityMode, cfg.Auth = tc.policy, tc.mode, tc.auth
			trust(t, &cfg, f)
			before := f.AuthFailures()
			c, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp"))
			if tc.ok {
				wait.For(t, 20*time.Second, "value after login", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })
				return
			}
			// The server refuses the login, or (anonymous on a server that
			// offers no anonymous token) the driver refuses to try.
			wait.For(t, 20*time.Second, "refusal", func() bool {
				e := c.Status().LastError
				return e != "" && (f.AuthFailures() > before || strings.Contains(e, "auth.mode anonymous"))
			})
			wait.For(t, 5*time.Second, "stale marking", func() bool { return rec.has(0, telemetry.QualityStale, 0) })
			if n := rec.count(func(u sample.Sample) bool { return u.Quality == telemetry.QualityGood }); n != 0 {
				t.Fatalf("%d good updates without a login", n)
			}
		})
	}
}

func TestUntrustedServerCertificate(t *testing.T) {
	f := startFront(t, opcuafront.Config{Users: map[string]string{"operator": "s3cret!"}}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	// A username login encrypts the password with the server certificate, so
	// the certificate must be trusted even on a None channel.
	pw := filepath.Join(cfg.DataDir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret!"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth = AuthConfig{Mode: "username", Username: "operator", PasswordFile: pw}
	cfg.TrustDir = filepath.Join(cfg.DataDir, "trusted")
	c, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp"))
	thumb := uapki.Thumbprint(f.Certificate())
	wait.For(t, 10*time.Second, "refusal naming the certificate", func() bool {
		e := c.Status().LastError
		return strings.Contains(e, thumb) && strings.Contains(e, cfg.TrustDir) && strings.Contains(e, "accept_untrusted")
	})
	rejected := filepath.Join(cfg.DataDir, "pki", "rejected", thumb+".der")
	data, err := os.ReadFile(rejected)
	if err != nil {
		t.Fatalf("refused certificate not saved: %v", err)
	}
	if rec.count(func(u sample.Sample) bool { return u.Quality == telemetry.QualityGood }) != 0 {
		t.Fatal("data from an untrusted server")
	}
	// The operator trusts it: the running driver picks it up on its next attempt.
	if err := os.MkdirAll(cfg.TrustDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.TrustDir, thumb+".der"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "value once trusted", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })

	var ue *UntrustedError
	err = checkTrust(&Config{Endpoint: "opc.tcp://x:1", TrustDir: t.TempDir(), DataDir: t.TempDir()}, f.Certificate(), c.log)
	if !errors.As(err, &ue) || !errors.Is(err, ErrUntrusted) || ue.Thumbprint != thumb {
		t.Fatalf("checkTrust: %v", err)
	}
}

func TestRecoveryAfterServerRestartAndNetworkCut(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	points := append(pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure"),
		pointsFor(f, "bf-2", ModePoll, "top_gas_co")...)
	c, rec := run(t, baseConfig(t, f), points)
	wait.For(t, 10*time.Second, "initial values", func() bool {
		return rec.has(0, telemetry.QualityGood, 1183.5) && rec.has(2, telemetry.QualityGood, 22.5)
	})
	for round, outage := range []func(){
		func() { // server restart
			if err := f.Stop(); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "stale while the server is down", func() bool {
				return rec.has(0, telemetry.QualityStale, 0) && rec.has(1, telemetry.QualityStale, 0) && rec.has(2, telemetry.QualityStale, 0)
			})
			if err := f.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
		},
		func() { // network cut: connections drop, the server keeps running
			f.DropConnections()
			wait.For(t, 10*time.Second, "stale after the cut", func() bool { return rec.has(0, telemetry.QualityStale, 0) })
		},
	} {
		sessions := c.Status().Sessions
		staleBefore := rec.count(func(u sample.Sample) bool { return u.Quality == telemetry.QualityStale })
		outage()
		v := 1300.0 + float64(round)
		if err := f.Set("bf-2", "hot_blast_temp", v, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := f.Set("bf-2", "top_gas_co", 30+float64(round), time.Now()); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 20*time.Second, fmt.Sprintf("round %d: data resumes", round), func() bool {
			return rec.has(0, telemetry.QualityGood, v) && rec.has(2, telemetry.QualityGood, 30+float64(round))
		})
		if c.Status().Sessions <= sessions || !c.Status().Connected {
			t.Fatalf("round %d: status %+v", round, c.Status())
		}
		// Stale is emitted once per outage: one update per point.
		if n := rec.count(func(u sample.Sample) bool { return u.Quality == telemetry.QualityStale }) - staleBefore; n != len(points) {
			t.Fatalf("round %d: %d stale updates, want %d (once per point)", round, n, len(points))
		}
	}
	// Stale keeps the last status.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, b := range rec.batches {
		for _, u := range b {
			if u.Quality == telemetry.QualityStale && u.Status != 0 {
				t.Fatalf("stale update lost status: %+v", u)
			}
		}
	}
}

func TestOperationLimitsRespected(t *testing.T) {
	src := &source{class: "generic"}
	for i := range 25 {
		src.signals = append(src.signals, fmt.Sprintf("s%02d", i))
		src.values = append(src.values, float64(i)+0.5)
	}
	f := startFront(t, opcuafront.Config{Limits: opcuafront.Limits{MaxNodesPerRead: 3, MaxMonitoredItemsPerCall: 4, MaxNodesPerBrowse: 2}},
		opcuafront.Asset{ID: "gen-1", Source: src})
	points := append(pointsFor(f, "gen-1", ModeSubscribe, src.signals[:15]...), pointsFor(f, "gen-1", ModePoll, src.signals[15:]...)...)
	c, rec := run(t, baseConfig(t, f), points)
	wait.For(t, 20*time.Second, "all 25 values", func() bool {
		for i := range points {
			if !rec.has(i, telemetry.QualityGood, float64(i)+0.5) {
				return false
			}
		}
		return true
	})
	if lim := c.Status().Limits; lim.MaxNodesPerRead != 3 || lim.MaxMonitoredItemsPerCall != 4 || lim.MaxNodesPerBrowse != 2 {
		t.Fatalf("limits %+v", lim)
	}
	units, err := c.NodeUnits(t.Context())
	if err != nil || len(units) != 25 {
		t.Fatalf("node units over the browse limit: %v (%d)", err, len(units))
	}
	if f.Rejected() != 0 {
		t.Fatalf("server refused %d requests over its limits", f.Rejected())
	}
	if c.Status().Sessions != 1 {
		t.Fatalf("%d sessions: a request over the limit cost the session", c.Status().Sessions)
	}
}

func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("OPCUA_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

package opcua

// Security interop against a second, independent OPC UA stack: node-opcua
// (deploy/opcua-interop/server.js), whose server opens secure channels with
// every policy the driver supports, which gopcua v0.8.0's server (our
// simulator front) cannot. Runs with SMELTER_INTEROP=1 (make interop) once
// `npm ci --prefix deploy/opcua-interop` has installed the server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/opcua/uapki"
	"github.com/smelterio/smelter/internal/opcua/uaunits"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

const (
	interopUser     = "operator"
	interopPassword = "s3cret!-interop"
	interopDir      = "../../deploy/opcua-interop"
)

// nodeServer is a running deploy/opcua-interop/server.js.
type nodeServer struct {
	Endpoint    string   `json:"endpoint"`
	Port        int      `json:"port"`
	CertFile    string   `json:"certificate"`
	Namespace   string   `json:"namespace"`
	Nodes       []string `json:"nodes"` // hot_blast_temp, top_pressure, top_gas_co, tick
	Policies    []string `json:"policies"`
	Username    bool     `json:"username"`
	certificate []byte

	mu       sync.Mutex
	sessions []serverSession // activated sessions as the server reported them
	called   []string        // methods that ran, as the server reported them

	stdin io.Writer         // test control commands (server.js: "Test control")
	acks  chan controlEvent // their answers
	stop  func()            // ends the server (and waits for it); also at cleanup
}

// controlEvent answers one control command.
type controlEvent struct {
	Event string `json:"event"` // done | error
	Cmd   string `json:"cmd"`
	Error string `json:"error"`
}

// command sends one control command to server.js and waits for its answer.
func (s *nodeServer) command(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("server.js control %s: %v", b, err)
	}
	select {
	case ev := <-s.acks:
		if ev.Event != "done" {
			t.Fatalf("server.js control %s: %s", b, ev.Error)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server.js control %s: no answer within 10s", b)
	}
}

// serverSession is a session_activated line of server.js: what the server
// itself negotiated.
type serverSession struct {
	Event  string `json:"event"`
	Policy string `json:"policy"` // short name: None, Basic256Sha256, ...
	Mode   string `json:"mode"`   // None, Sign, SignAndEncrypt
	Login  string `json:"login"`  // anonymous, username, certificate
	User   string `json:"user"`   // user name, or the user certificate's SHA-1 thumbprint
}

func (s *nodeServer) record(l string) {
	var ce controlEvent
	if json.Unmarshal([]byte(l), &ce) == nil && (ce.Event == "done" || ce.Event == "error") {
		select {
		case s.acks <- ce:
		default: // nobody asked; dropped
		}
		return
	}
	var ev serverSession
	if json.Unmarshal([]byte(l), &ev) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Event == "called" {
		var c struct{ Method string }
		if json.Unmarshal([]byte(l), &c) == nil && len(s.called) < 10000 {
			s.called = append(s.called, c.Method)
		}
		return
	}
	if ev.Event != "session_activated" {
		return
	}
	if len(s.sessions) < 10000 { // bounded
		s.sessions = append(s.sessions, ev)
	}
}

// sessionCount is how many sessions the server has activated so far.
func (s *nodeServer) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// activatedSince reports whether the server activated a session matching
// want among those after the first `from`.
func (s *nodeServer) activatedSince(from int, want serverSession) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range s.sessions[min(from, len(s.sessions)):] {
		if ev.Policy == want.Policy && ev.Mode == want.Mode && ev.Login == want.Login && ev.User == want.User {
			return true
		}
	}
	return false
}

// needNodeServer skips unless the interop run is asked for and node-opcua
// is installed.
func needNodeServer(t *testing.T) {
	t.Helper()
	const prepare = "prepare it with `npm ci --prefix deploy/opcua-interop` (from the repository root)"
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("node-opcua security interop runs with SMELTER_INTEROP=1 (make interop); " + prepare)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node-opcua security interop needs node on PATH (Node.js 20 or newer): " + err.Error() + "; then " + prepare)
	}
	if _, err := os.Stat(filepath.Join(interopDir, "node_modules", "node-opcua")); err != nil {
		t.Skip("node-opcua security interop: deploy/opcua-interop/node_modules/node-opcua is missing; " + prepare)
	}
}

// startNodeServer starts server.js with its PKI in a temp dir, trusting the
// X.509 user certificates in userTrust, and stops it at cleanup.
func startNodeServer(t *testing.T, userTrust string) *nodeServer {
	t.Helper()
	return startNodeServerArgs(t, t.TempDir(), "--port", "0", "--user-trust", userTrust)
}

// startNodeServerArgs starts server.js with its PKI in pki (created on the
// first start: a server restarted with the same pki keeps its certificate)
// and args (server.js's usage), and stops it at cleanup or at its stop.
func startNodeServerArgs(t *testing.T, pki string, args ...string) *nodeServer {
	t.Helper()
	cmd := exec.Command("node", append([]string{"server.js", "--pki", pki}, args...)...)
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(), "SMELTER_INTEROP_USER="+interopUser, "SMELTER_INTEROP_PASSWORD="+interopPassword)
	stderr := &logtest.Buffer{Max: 1 << 20} // bounded: keep the start, where startup errors are
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe() // the server stops when its stdin closes
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node server.js: %v", err)
	}
	// The reader owns stdout until EOF (the child exited): it hands over
	// the start line, records session events and drops anything else, so
	// node never blocks on a full pipe.
	srv := &nodeServer{stdin: stdin, acks: make(chan controlEvent, 1)}
	lines := make(chan string, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, `{"event"`):
				srv.record(l)
			case !sent && strings.HasPrefix(l, "{"):
				lines <- l
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var once sync.Once
	srv.stop = func() {
		once.Do(func() {
			_ = stdin.Close()
			_ = cmd.Process.Kill()
			<-readerDone
			_ = cmd.Wait()
		})
	}
	t.Cleanup(srv.stop)
	var start nodeServer
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), &start); err != nil || start.Endpoint == "" {
			t.Fatalf("server.js printed %q: %v", l, err)
		}
	case <-readerDone:
		t.Fatalf("server.js exited before printing its endpoint:\n%s", stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("server.js printed no endpoint within 60s:\n%s", stderr.String())
	}
	if len(start.Nodes) != 4 || !start.Username {
		t.Fatalf("server.js: unexpected start line %+v", &start)
	}
	srv.Endpoint, srv.Port, srv.CertFile, srv.Namespace = start.Endpoint, start.Port, start.CertFile, start.Namespace
	srv.Nodes, srv.Policies, srv.Username = start.Nodes, start.Policies, start.Username
	srv.certificate, err = uapki.LoadCertificate(srv.CertFile)
	if err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	return srv
}

// interopConfig is a client configuration for srv with a fresh data dir and
// srv's certificate in the trust dir.
func interopConfig(t *testing.T, srv *nodeServer, policy, mode string, auth AuthConfig) Config {
	t.Helper()
	cfg := Config{Endpoint: srv.Endpoint, SecurityPolicy: policy, SecurityMode: mode, Auth: auth, DataDir: t.TempDir(),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		PublishInterval: 100 * time.Millisecond, Watchdog: time.Second, RequestTimeout: 10 * time.Second,
		// in process: these tests read the session's Status (faults, sessions)
		// as it changes; a worker forwards it with its cycles only
		// (worker_test.go runs the isolated path against the simulator)
		Isolation: IsolationNone}
	cfg.TrustDir = filepath.Join(cfg.DataDir, "trusted")
	if err := uapki.WriteCertificate(filepath.Join(cfg.TrustDir, "node-opcua.der"), srv.certificate); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// interopPoints subscribes to every variable but polls the constant
// top_gas_co, so both acquisition paths cross the secured channel.
func interopPoints(srv *nodeServer) []Point {
	ps := make([]Point, len(srv.Nodes))
	for i, n := range srv.Nodes {
		ps[i] = Point{NodeID: n, SamplingInterval: 50 * time.Millisecond}
	}
	ps[2].Mode, ps[2].PollInterval = ModePoll, 100*time.Millisecond
	return ps
}

// valuesArrived reports whether every point came through Good with the
// server's values: exact constants, the changing temperature within its
// pattern, and the tick counter seen at two different values.
func valuesArrived(rec *recorder) bool {
	hot, ok := rec.get(0)
	if !ok || hot.Quality != telemetry.QualityGood || hot.Num < 1183.5 || hot.Num > 1188.25 {
		return false
	}
	if !rec.has(1, telemetry.QualityGood, 210) || !rec.has(2, telemetry.QualityGood, 22.5) {
		return false
	}
	ticks := map[float64]bool{}
	rec.count(func(u sample.Sample) bool {
		if u.Index == 3 && u.Quality == telemetry.QualityGood {
			ticks[u.Num] = true
		}
		return false
	})
	return len(ticks) >= 2
}

type secCombo struct{ policy, mode string }

func interopCombos() []secCombo {
	out := []secCombo{{"None", "None"}}
	for _, p := range []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"} {
		for _, m := range []string{"Sign", "SignAndEncrypt"} {
			out = append(out, secCombo{p, m})
		}
	}
	return out
}

func TestInteropNodeOPCUA(t *testing.T) {
	needNodeServer(t)
	userDir, userTrust := t.TempDir(), t.TempDir()
	userCert, userKey := filepath.Join(userDir, "operator.pem"), filepath.Join(userDir, "operator.key")
	der, _, _, err := uapki.LoadOrCreate(userCert, userKey, "operator", "urn:smelter:test:operator", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := uapki.WriteCertificate(filepath.Join(userTrust, "operator.der"), der); err != nil {
		t.Fatal(err)
	}
	strangerCert, strangerKey := filepath.Join(userDir, "stranger.pem"), filepath.Join(userDir, "stranger.key")
	if _, _, _, err := uapki.LoadOrCreate(strangerCert, strangerKey, "stranger", "urn:smelter:test:stranger", nil); err != nil {
		t.Fatal(err)
	}
	pwEnv, badEnv := "SMELTER_TEST_INTEROP_PW", "SMELTER_TEST_INTEROP_BAD_PW"
	t.Setenv(pwEnv, interopPassword)
	t.Setenv(badEnv, "guess")

	start := time.Now()
	srv := startNodeServer(t, userTrust)
	t.Logf("node-opcua server up at %s in %v", srv.Endpoint, time.Since(start).Round(time.Millisecond))

	t.Run("Endpoints", func(t *testing.T) {
		eps, err := Endpoints(t.Context(), srv.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]EndpointInfo{}
		for _, e := range eps {
			seen[e.SecurityPolicy+"/"+e.SecurityMode] = e
		}
		for _, c := range interopCombos() {
			e, ok := seen[c.policy+"/"+c.mode]
			if !ok {
				t.Fatalf("no %s/%s endpoint among %d: %v", c.policy, c.mode, len(eps), seen)
			}
			if e.Thumbprint != uapki.Thumbprint(srv.certificate) {
				t.Fatalf("%s/%s: thumbprint %s, want the server certificate's %s", c.policy, c.mode, e.Thumbprint, uapki.Thumbprint(srv.certificate))
			}
			logins := strings.Join(e.UserTokens, ",")
			for _, k := range []string{"anonymous", "username", "certificate"} {
				if !strings.Contains(logins, k) {
					t.Fatalf("%s/%s offers logins %q, want %s", c.policy, c.mode, logins, k)
				}
			}
		}
		var b bytes.Buffer
		if err := WriteEndpoints(&b, eps); err != nil {
			t.Fatal(err)
		}
		t.Logf("node-opcua endpoints:\n%s", b.String())
	})

	t.Run("Matrix", func(t *testing.T) {
		for _, c := range interopCombos() {
			for _, login := range []struct {
				name string
				auth AuthConfig
				ok   bool
				user string // identity the server must report
			}{
				{"anonymous", AuthConfig{}, true, ""},
				{"username", AuthConfig{Mode: "username", Username: interopUser, PasswordEnv: pwEnv}, true, interopUser},
				{"username-bad-password", AuthConfig{Mode: "username", Username: interopUser, PasswordEnv: badEnv}, false, ""},
				{"certificate", AuthConfig{Mode: "certificate", CertFile: userCert, KeyFile: userKey}, true, uapki.Thumbprint(der)},
			} {
				t.Run(c.policy+"_"+c.mode+"/"+login.name, func(t *testing.T) {
					cfg := interopConfig(t, srv, c.policy, c.mode, login.auth)
					began, sessions := time.Now(), srv.sessionCount()
					cl, rec := run(t, cfg, interopPoints(srv))
					if login.ok {
						wait.For(t, 30*time.Second, "good values over "+c.policy+"/"+c.mode+" with "+login.name, func() bool { return valuesArrived(rec) })
						if st := cl.Status(); !st.Connected || st.Sessions != 1 {
							t.Fatalf("status %+v: want one session, connected", st)
						}
						// The server's own view: this channel, this login.
						want := serverSession{Policy: c.policy, Mode: c.mode, Login: strings.TrimSuffix(login.name, "-bad-password"), User: login.user}
						wait.For(t, 5*time.Second, fmt.Sprintf("server reports a session %+v", want), func() bool { return srv.activatedSince(sessions, want) })
						t.Logf("values after %v", time.Since(began).Round(time.Millisecond))
						return
					}
					waitRefused(t, cl, rec, "BadUserAccessDenied")
					if n := srv.sessionCount(); n != sessions {
						t.Fatalf("server activated %d sessions for a bad password", n-sessions)
					}
				})
			}
		}
	})

	t.Run("UnknownUserCertificateRefused", func(t *testing.T) {
		cfg := interopConfig(t, srv, "Basic256Sha256", "SignAndEncrypt", AuthConfig{Mode: "certificate", CertFile: strangerCert, KeyFile: strangerKey})
		sessions := srv.sessionCount()
		cl, rec := run(t, cfg, interopPoints(srv))
		waitRefused(t, cl, rec, "BadIdentityTokenRejected")
		if n := srv.sessionCount(); n != sessions {
			t.Fatalf("server activated %d sessions for an unknown user certificate", n-sessions)
		}
	})

	t.Run("UntrustedServerCertificate", func(t *testing.T) {
		cfg := interopConfig(t, srv, "Aes256_Sha256_RsaPss", "SignAndEncrypt", AuthConfig{})
		if err := os.RemoveAll(cfg.TrustDir); err != nil {
			t.Fatal(err)
		}
		thumb := uapki.Thumbprint(srv.certificate)

		// The connect path itself returns the typed error.
		c := cfg
		c.SetDefaults()
		_, err := connect(t.Context(), &c, testLogOrDiscard(t), c.RequestTimeout)
		var ue *UntrustedError
		if !errors.Is(err, ErrUntrusted) || !errors.As(err, &ue) || ue.Thumbprint != thumb || ue.TrustDir != cfg.TrustDir {
			t.Fatalf("connect with an empty trust dir: %v, want ErrUntrusted for %s", err, thumb)
		}
		if !strings.Contains(ue.Subject, "CN=") {
			t.Fatalf("subject %q does not name the certificate", ue.Subject)
		}

		// The running driver reports it, sends nothing, then picks the
		// certificate up from trust_dir without a restart.
		cl, rec := run(t, cfg, interopPoints(srv))
		wait.For(t, 20*time.Second, "refusal naming the certificate", func() bool {
			e := cl.Status().LastError
			return strings.Contains(e, "is not trusted") && strings.Contains(e, thumb) && strings.Contains(e, cfg.TrustDir) &&
				strings.Contains(e, "accept_untrusted")
		})
		t.Logf("refusal: %s", cl.Status().LastError)
		if n := rec.count(func(u sample.Sample) bool { return u.Quality == telemetry.QualityGood }); n != 0 {
			t.Fatalf("%d good updates from an untrusted server", n)
		}
		saved, err := os.ReadFile(ue.Saved)
		if err != nil || !bytes.Equal(saved, srv.certificate) {
			t.Fatalf("refused certificate copy %q: %v", ue.Saved, err)
		}
		if err := os.MkdirAll(cfg.TrustDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.TrustDir, filepath.Base(ue.Saved)), saved, 0o644); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 30*time.Second, "values once the certificate is trusted", func() bool { return valuesArrived(rec) })
	})

	t.Run("BrowseAndUnits", func(t *testing.T) {
		cfg := interopConfig(t, srv, "Aes128_Sha256_RsaOaep", "SignAndEncrypt", AuthConfig{Mode: "username", Username: interopUser, PasswordEnv: pwEnv})
		var out, conf bytes.Buffer
		if err := Browse(t.Context(), "", cfg, &out, BrowseOptions{WriteConfig: &conf}); err != nil {
			t.Fatal(err)
		}
		text := out.String()
		for _, want := range []string{
			srv.Nodes[0] + "  ", "bf-2/hot_blast_temp", "Double", "Cel",
			srv.Nodes[1] + "  ", "kPa", "210",
			srv.Nodes[2] + "  ", "%", "22.5",
			srv.Nodes[3] + "  ", "6 variables", // and blast_setpoint, fault (the methods' variables)
		} {
			if !strings.Contains(text, want) {
				t.Fatalf("browse output lacks %q:\n%s", want, text)
			}
		}
		// the namespace by URI (review F3): an index may name another node
		// after node-opcua restarts
		if want := fmt.Sprintf("node_id: %q", "nsu="+srv.Namespace+";s=bf-2.hot_blast_temp"); !strings.Contains(conf.String(), want) {
			t.Fatalf("generated config lacks %s:\n%s", want, conf.String())
		}
		t.Logf("browse over Aes128_Sha256_RsaOaep/SignAndEncrypt:\n%s", text)

		// The nsu= form resolves through the namespace array, and the
		// driver reads EngineeringUnits and EURange over the secure channel.
		points := []Point{{NodeID: "nsu=" + srv.Namespace + ";s=bf-2.hot_blast_temp"}, {NodeID: srv.Nodes[1]}, {NodeID: srv.Nodes[2]}}
		c, err := New("bf-2", cfg, points, testLog(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		units, err := c.NodeUnits(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			ucum, code string
			id         int32
			min, max   float64
		}{{"Cel", "CEL", 4408652, 900, 1350}, {"kPa", "KPA", 4935745, 0, 320}, {"%", "P1", 20529, 0, 40}}
		for i, w := range want {
			u := units[i]
			if u.Err != nil || u.UCUM != w.ucum || u.UNECE != w.code || u.UnitID != w.id || !u.HasRange ||
				math.Abs(u.Min-w.min) > 1e-9 || math.Abs(u.Max-w.max) > 1e-9 {
				t.Fatalf("units[%d] = %+v, want %+v", i, u, w)
			}
		}
	})
}

// waitRefused waits until the driver reports a refused login whose error
// contains want, marks its points stale and delivers no good value.
func waitRefused(t *testing.T, cl *Client, rec *recorder, want string) {
	t.Helper()
	wait.For(t, 30*time.Second, "refused login", func() bool {
		return strings.Contains(cl.Status().LastError, want) && rec.has(0, telemetry.QualityStale, 0)
	})
	if n := rec.count(func(u sample.Sample) bool { return u.Quality == telemetry.QualityGood }); n != 0 {
		t.Fatalf("%d good updates without a valid login", n)
	}
	t.Logf("refusal: %s", cl.Status().LastError)
}

func testLogOrDiscard(t *testing.T) *slog.Logger {
	if l := testLog(t); l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// TestInteropSessionTiming holds constant subscribed nodes on node-opcua
// for 100 keep-alive periods (fastTiming: about 25 s of wall time for what
// a default configuration sees in about 8 minutes) and checks, from both
// sides, that exactly one session served them. Then it forces the trap
// the driver's timing avoids (a publish timeout below the keep-alive
// period, so node-opcua answers Publish with a BadTimeout service fault)
// and checks the session survives those faults.
func TestInteropSessionTiming(t *testing.T) {
	needNodeServer(t)
	srv := startNodeServer(t, t.TempDir())
	constant := []Point{{NodeID: srv.Nodes[1], SamplingInterval: 50 * time.Millisecond}, {NodeID: srv.Nodes[2], SamplingInterval: 50 * time.Millisecond}}

	t.Run("ConstantValuesOneSession", func(t *testing.T) {
		cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
		fastTiming(&cfg)
		cfg.PublishInterval = 100 * time.Millisecond // node-opcua's minimum publishing interval
		cfg.KeepAlive = 200 * time.Millisecond
		sessions := srv.sessionCount()
		c, rec := run(t, cfg, constant)
		wait.For(t, 20*time.Second, "initial values", func() bool {
			return rec.has(0, telemetry.QualityGood, 210) && rec.has(1, telemetry.QualityGood, 22.5)
		})
		wait.For(t, 90*time.Second, "100 keep-alive periods", func() bool { return keepAlives(rec) >= 100 })
		st := c.Status()
		if st.Sessions != 1 || lostCycles(rec) != 0 || st.ServiceFaults != 0 {
			t.Fatalf("status %+v, %d lost cycles: want one session and no fault", st, lostCycles(rec))
		}
		if n := srv.sessionCount() - sessions; n != 1 {
			t.Fatalf("node-opcua activated %d sessions, want 1", n)
		}
		t.Logf("subscription as revised by node-opcua: %+v", st.Subscription)
	})

	t.Run("PublishBadTimeoutSurvived", func(t *testing.T) {
		cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
		cfg.PublishInterval, cfg.KeepAlive, cfg.RequestTimeout = 100*time.Millisecond, 2*time.Second, 5*time.Second
		c, err := New("dev-1", cfg, constant, testLog(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		// The trap: a Publish request that times out (1 s) before the
		// keep-alive (2.1 s) is due. node-opcua answers it BadTimeout.
		c.timing.publish = time.Second
		sessions := srv.sessionCount()
		rec := newRecorder()
		runClient(t, c, rec)
		wait.For(t, 30*time.Second, "five BadTimeout faults survived", func() bool { return c.Status().ServiceFaults >= 5 })
		if st := c.Status(); st.Sessions != 1 || lostCycles(rec) != 0 || !st.Connected {
			t.Fatalf("status %+v, %d lost cycles: a service fault cost the session", st, lostCycles(rec))
		}
		if n := srv.sessionCount() - sessions; n != 1 {
			t.Fatalf("node-opcua activated %d sessions, want 1", n)
		}
		if !rec.has(0, telemetry.QualityGood, 210) || !rec.has(1, telemetry.QualityGood, 22.5) {
			t.Fatal("values not good")
		}
	})
}

// TestInteropRefusedItemRetried subscribes to a node the server does not
// have yet (as after a restart, while it loads its address space): the
// point is Bad with BadNodeIdUnknown (not Silent, the server answered)
// until the node appears, then its value arrives on the same session.
// Bad StatusCodes set on a live node stay Bad with their code.
func TestInteropRefusedItemRetried(t *testing.T) {
	needNodeServer(t)
	srv := startNodeServer(t, t.TempDir())
	cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
	cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 400*time.Millisecond
	ns := strings.SplitN(srv.Nodes[0], ";", 2)[0]
	points := []Point{
		{NodeID: ns + ";s=bf-2.late", SamplingInterval: 50 * time.Millisecond},
		{NodeID: srv.Nodes[1], SamplingInterval: 50 * time.Millisecond},
		{NodeID: srv.Nodes[2], Mode: ModePoll, PollInterval: 100 * time.Millisecond},
	}
	c, rec := run(t, cfg, points)
	wait.For(t, 20*time.Second, "refused item reported bad", func() bool {
		s, ok := rec.get(0)
		return ok && s.Quality == telemetry.QualityBad && s.Status == uint32(ua.StatusBadNodeIDUnknown) && !s.Silent &&
			rec.has(1, telemetry.QualityGood, 210) && c.Status().Refused == 1
	})
	// Retried with backoff: reported Bad on every refusal.
	wait.For(t, 20*time.Second, "retries", func() bool {
		return rec.count(func(s sample.Sample) bool { return s.Index == 0 && s.Quality == telemetry.QualityBad }) >= 3
	})
	srv.command(t, map[string]any{"cmd": "add", "name": "late", "value": 42})
	wait.For(t, 20*time.Second, "value of the node added later", func() bool { return rec.has(0, telemetry.QualityGood, 42) })
	if st := c.Status(); st.Sessions != 1 || st.Refused != 0 {
		t.Fatalf("status %+v: want the same session, nothing refused", st)
	}

	// A Bad value on a subscribed and on a polled node: Bad with its code.
	srv.command(t, map[string]any{"cmd": "status", "name": "top_pressure", "status": "BadSensorFailure"})
	srv.command(t, map[string]any{"cmd": "status", "name": "top_gas_co", "status": "BadDeviceFailure"})
	wait.For(t, 20*time.Second, "bad with the server's codes", func() bool {
		s1, _ := rec.get(1)
		s2, _ := rec.get(2)
		return s1.Quality == telemetry.QualityBad && s1.Status == uint32(ua.StatusBadSensorFailure) && !s1.Silent &&
			s2.Quality == telemetry.QualityBad && s2.Status == uint32(ua.StatusBadDeviceFailure) && !s2.Silent
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.staleOutsideLost) > 0 || lostCyclesLocked(rec) != 0 {
		t.Fatalf("stale while the server answers: %+v", rec.staleOutsideLost)
	}
}

// calls returns the methods the server ran, in order.
func (s *nodeServer) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.called...)
}

// TestInteropMethodCall calls node-opcua methods (server.js, "Methods")
// over a SignAndEncrypt channel, in process and through a session worker:
// SetBlastSetpoint with the value converted to its Float argument (read
// back from its variable), a value the method refuses (BadOutOfRange),
// AcknowledgeFault without argument from a point without a node, and a
// configuration that does not match the method's arguments (refused
// before any call).
func TestInteropMethodCall(t *testing.T) {
	needNodeServer(t)
	srv := startNodeServer(t, t.TempDir())
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) {
			srv.command(t, map[string]any{"cmd": "fault"})
			ns := strings.SplitN(srv.Nodes[0], ";", 2)[0]
			obj := ns + ";s=bf-2"
			points := []Point{
				{NodeID: obj + ".blast_setpoint", Mode: ModePoll, PollInterval: 100 * time.Millisecond,
					Method: &Method{Object: obj, Method: obj + ".SetBlastSetpoint"}},
				{NodeID: obj + ".fault", SamplingInterval: 50 * time.Millisecond},
				{Method: &Method{Object: obj, Method: obj + ".AcknowledgeFault", Argument: ArgNone}},
				{Method: &Method{Object: obj, Method: obj + ".AcknowledgeFault"}}, // value: the method takes none
			}
			cfg := interopConfig(t, srv, "Basic256Sha256", "SignAndEncrypt", AuthConfig{})
			cfg.Isolation = iso
			c, rec := run(t, cfg, points)
			wait.For(t, 30*time.Second, "the fault reading", func() bool { return rec.has(1, telemetry.QualityGood, 1) })
			before := len(srv.calls())
			ctx := t.Context()
			held, err := c.WritePoint(ctx, 0, 950.5)
			if err != nil || held != 950.5 {
				t.Fatalf("SetBlastSetpoint: %v %v", held, err)
			}
			if smp, err := c.ReadPoint(ctx, 0); err != nil || smp.Num != 950.5 {
				t.Fatalf("read back: %+v %v", smp, err)
			}
			if _, err := c.WritePoint(ctx, 0, 1200); !errors.Is(err, ua.StatusBadOutOfRange) {
				t.Fatalf("refused value: %v", err)
			}
			if _, err := c.WritePoint(ctx, 0, 1e39); !errors.Is(err, ErrTypeMismatch) {
				t.Fatalf("a value no Float holds: %v", err)
			}
			if _, err := c.WritePoint(ctx, 2, 1); err != nil {
				t.Fatalf("AcknowledgeFault: %v", err)
			}
			wait.For(t, 20*time.Second, "the fault cleared", func() bool { return rec.has(1, telemetry.QualityGood, 0) })
			if _, err := c.WritePoint(ctx, 3, 1); !errors.Is(err, ErrTypeMismatch) {
				t.Fatalf("argument value on a method without arguments: %v", err)
			}
			if got := srv.calls()[before:]; strings.Join(got, ",") != "SetBlastSetpoint,AcknowledgeFault" {
				t.Fatalf("the server ran %v", got)
			}
		})
	}
}

// uaEvent is one step of TestInteropSemanticsChanged's log: units handed
// to OnUnits or a sample of the point.
type uaEvent struct {
	units string   // UCUM handed to OnUnits; "" for a sample
	nu    NodeUnit // the units handed to OnUnits (the first point's)
	isNU  bool     // nu is set
	s     sample.Sample
}

// unitLog is the log of units and samples of one point, in the order the
// driver handed them over.
type unitLog struct {
	mu  sync.Mutex
	log []uaEvent
	rec *recorder
}

// runUnitLog runs a client of points (the first one logged) until the
// test ends.
func runUnitLog(t *testing.T, cfg Config, points []Point) (*Client, *unitLog) {
	t.Helper()
	return runUnitLogWith(t, cfg, points, testLog(t), nil)
}

// runUnitLogWith is runUnitLog with a logger and metrics.
func runUnitLogWith(t *testing.T, cfg Config, points []Point, log *slog.Logger, m *Metrics) (*Client, *unitLog) {
	t.Helper()
	c, err := New("dev-1", cfg, points, log, m)
	if err != nil {
		t.Fatal(err)
	}
	l := &unitLog{rec: newRecorder()}
	c.OnUnits(func(us []NodeUnit) {
		l.mu.Lock()
		l.log = append(l.log, uaEvent{units: us[0].UCUM, nu: us[0], isNU: true})
		l.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func(cyc *sample.Cycle) {
			l.mu.Lock()
			for _, s := range cyc.Samples {
				l.log = append(l.log, uaEvent{s: s})
			}
			l.mu.Unlock()
			l.rec.emit(cyc)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, l
}

// lastUnits is the last NodeUnit handed to OnUnits (false: none yet).
func (l *unitLog) lastUnits() (NodeUnit, bool) {
	evs := l.events()
	for k := len(evs) - 1; k >= 0; k-- {
		if evs[k].isNU {
			return evs[k].nu, true
		}
	}
	return NodeUnit{}, false
}

// events is a copy of the log so far.
func (l *unitLog) events() []uaEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uaEvent(nil), l.log...)
}

// goodAfterUnit reports whether a Good value v came after the unit u
// reached OnUnits.
func (l *unitLog) goodAfterUnit(u string, v float64) func() bool {
	return func() bool {
		unit := ""
		for _, e := range l.events() {
			if e.units != "" {
				unit = e.units
			} else if unit == u && e.s.Quality == telemetry.QualityGood && e.s.Num == v {
				return true
			}
		}
		return false
	}
}

// TestInteropSemanticsChanged changes a subscribed node's EngineeringUnits
// live (kPa -> bar, value 210 -> 2.1) on node-opcua, which flags the next
// value SemanticsChanged: in every isolation mode, on the same session, no
// value is published Good before the new unit reaches OnUnits, the flagged
// sample is Bad, and the values that follow are Good in the new unit.
func TestInteropSemanticsChanged(t *testing.T) {
	needNodeServer(t)
	for _, iso := range []string{IsolationNone, IsolationProcess, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			srv := startNodeServer(t, t.TempDir())
			cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
			cfg.Isolation = iso
			points := []Point{{NodeID: srv.Nodes[1], SamplingInterval: 50 * time.Millisecond, UnitFromNode: true}} // top_pressure
			c, ul := runUnitLog(t, cfg, points)
			wait.For(t, 20*time.Second, "value in kPa", func() bool { return ul.rec.has(0, telemetry.QualityGood, 210) })
			srv.command(t, map[string]any{"cmd": "unit", "name": "top_pressure", "unit": "bar", "value": 2.1})
			wait.For(t, 20*time.Second, "value in bar", func() bool { return ul.rec.has(0, telemetry.QualityGood, 2.1) })

			log := ul.events()
			unit, flagged := "", false
			for k, e := range log {
				switch {
				case e.units != "":
					unit = e.units
				case e.s.Status&statusSemanticsChanged != 0:
					flagged = true
					if e.s.Quality != telemetry.QualityBad || e.s.Num != 0 {
						t.Fatalf("event %d: SemanticsChanged sample %+v: want Bad without value", k, e.s)
					}
				case e.s.Quality == telemetry.QualityGood && (e.s.Num == 2.1) != (unit == "bar"):
					t.Fatalf("event %d: Good %v published while the unit was %q: %+v", k, e.s.Num, unit, log)
				}
			}
			if !flagged || unit != "bar" {
				t.Fatalf("flagged %v, last unit %q: want a SemanticsChanged sample and bar: %+v", flagged, unit, log)
			}
			if st := c.Status(); st.Sessions != 1 {
				t.Fatalf("status %+v: want the change handled on the first session", st)
			}
		})
	}
}

// TestInteropPolledUnitChange changes a polled node's EngineeringUnits live
// (kPa -> bar, value 210 -> 2.1) on node-opcua, whose Read results carry no
// SemanticsChanged bit, and checks that the driver notices on the same
// session: the first read that sees the new unit is published Bad without a
// value (statusUnitUnknown), the new unit reaches OnUnits, and only then do
// Good values come, in bar. every-read checks the units with every value
// (unit_check_interval every_read, the default): no value is ever
// published Good in a unit it is not in. periodic checks them every 400 ms:
// values of the window before the check are mis-labelled (counted, logged),
// none after it, and the mis-labelled instant stays bad in bar until the
// server gives a newer SourceTimestamp (the same unit command again). flagged has the check off (never) and a server that flags its Read
// results SemanticsChanged: the flag alone is honoured.
func TestInteropPolledUnitChange(t *testing.T) {
	needNodeServer(t)
	for _, tc := range []struct {
		name, iso string
		check     UnitCheck
		flag      bool // the server flags the changed value SemanticsChanged
		strict    bool // no mis-labelled value at all
	}{
		{"every-read", IsolationNone, UnitCheckEveryRead, false, true},
		{"every-read-worker", IsolationEndpoint, UnitCheckEveryRead, false, true},
		{"periodic", IsolationNone, UnitCheck(400 * time.Millisecond), false, false},
		{"flagged", IsolationNone, UnitCheckNever, true, true},
		{"flagged-worker", IsolationProcess, UnitCheckNever, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startNodeServer(t, t.TempDir())
			cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
			cfg.Isolation = tc.iso
			cfg.UnitCheckInterval = tc.check
			points := []Point{{NodeID: srv.Nodes[1], Mode: ModePoll, PollInterval: 100 * time.Millisecond, UnitFromNode: true}} // top_pressure
			c, ul := runUnitLog(t, cfg, points)
			wait.For(t, 20*time.Second, "value in kPa", ul.goodAfterUnit("kPa", 210))
			srv.command(t, map[string]any{"cmd": "unit", "name": "top_pressure", "unit": "bar", "value": 2.1, "semantics": tc.flag})
			if !tc.strict {
				// the values of the window went out as 2.1 kPa at the
				// change's SourceTimestamp: that instant is not published
				// again in bar (docs/opcua.md "A value not newer than the
				// unit change"); the server's next value is
				wait.For(t, 20*time.Second, "the unit bar applied", func() bool { u, ok := ul.lastUnits(); return ok && u.UCUM == "bar" })
				srv.command(t, map[string]any{"cmd": "unit", "name": "top_pressure", "unit": "bar", "value": 2.1})
			}
			wait.For(t, 20*time.Second, "value in bar after the unit bar", ul.goodAfterUnit("bar", 2.1))

			log := ul.events()
			unit, detected, mislabelled := "", -1, 0
			for k, e := range log {
				switch {
				case e.units != "":
					unit = e.units
				case e.s.Quality == telemetry.QualityBad:
					if e.s.Num != 0 {
						t.Fatalf("event %d: Bad sample with a value: %+v", k, e.s)
					}
					want := statusUnitUnknown
					if tc.flag {
						want = uint32(ua.StatusGood) | statusSemanticsChanged // the server's status
					}
					if e.s.Status != want {
						t.Fatalf("event %d: Bad sample %+v: want status 0x%08X", k, e.s, want)
					}
					if detected < 0 {
						detected = k
						if unit != "kPa" {
							t.Fatalf("event %d: detected with the unit %q in force: %+v", k, unit, log)
						}
					}
				case e.s.Quality == telemetry.QualityGood && (e.s.Num == 2.1) != (unit == "bar"):
					if detected >= 0 || tc.strict {
						t.Fatalf("event %d: Good %v published while the unit was %q (detected at %d): %+v", k, e.s.Num, unit, detected, log)
					}
					mislabelled++
				}
			}
			if detected < 0 || unit != "bar" {
				t.Fatalf("detected at %d, last unit %q: want a withheld sample and bar: %+v", detected, unit, log)
			}
			t.Logf("%d values mis-labelled before the check noticed the change", mislabelled)
			if st := c.Status(); tc.iso == IsolationNone && st.Sessions != 1 {
				t.Fatalf("status %+v: want the change handled on the first session", st)
			}
		})
	}
}

// TestInteropMalformedUnits (review1 sec. 2 and 5) gives a polled node
// EngineeringUnits of every kind live on node-opcua (the units checked with
// every read) and at a session's start: unitId -1 ("not available", Part 8)
// and an unknown code fall back to the DisplayName; a String, a Double and
// an unknown DisplayName are there but unusable (Err, or UCUM ""), never
// "no EngineeringUnits"; only a Null value is none. A 100 kB DisplayName
// reaches OnUnits (and the log) clipped. Every change is counted in
// smelter_opcua_unit_changes_total and the change WARN is logged once.
func TestInteropMalformedUnits(t *testing.T) {
	needNodeServer(t)
	for _, iso := range []string{IsolationNone, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			srv := startNodeServer(t, t.TempDir())
			cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
			cfg.Isolation = iso
			cfg.UnitCheckInterval = UnitCheckEveryRead
			points := []Point{{NodeID: srv.Nodes[1], Mode: ModePoll, PollInterval: 100 * time.Millisecond, UnitFromNode: true}} // top_pressure
			var logs logtest.Buffer
			m := NewMetrics(nil)
			_, ul := runUnitLogWith(t, cfg, points, logs.Logger(slog.LevelInfo), m)
			wait.For(t, 20*time.Second, "value in kPa", ul.goodAfterUnit("kPa", 210))
			info := func(ns string, id int32, display string) map[string]any {
				return map[string]any{"type": "info", "namespaceUri": ns, "unitId": id, "displayName": display}
			}
			usable := func(ucum string) func(NodeUnit) bool {
				return func(u NodeUnit) bool {
					return u.UCUM == ucum && u.NoUnits == "" && u.Err == nil && !u.driverUnit().Absent
				}
			}
			unusable := func(why string) func(NodeUnit) bool {
				return func(u NodeUnit) bool {
					return u.NoUnits == "" && u.UCUM == "" && u.Err != nil && strings.Contains(u.Err.Error(), why)
				}
			}
			steps := []struct {
				name string
				eu   map[string]any
				ok   func(NodeUnit) bool
			}{
				{"unitId -1, bar", info(uaunits.NamespaceURI, -1, "bar"), usable("bar")},
				{"a String", map[string]any{"type": "string", "value": "kPa"}, unusable("EngineeringUnits: a String, not an EUInformation")},
				{"unitId -1, other namespace, bar", info("evil", -1, "bar"), usable("bar")},
				{"a Double", map[string]any{"type": "double", "value": 42}, unusable("EngineeringUnits: a Double, not an EUInformation")},
				{"unknown code, furlong", info(uaunits.NamespaceURI, 99999, "furlong"), func(u NodeUnit) bool {
					return u.UCUM == "" && u.NoUnits == "" && u.Err == nil && u.Display == "furlong"
				}},
				{"100 kB DisplayName", info(uaunits.NamespaceURI, 12345, strings.Repeat("x", 100000)), func(u NodeUnit) bool {
					return u.UCUM == "" && u.Err == nil && len(u.Display) <= maxServerText+20 && strings.HasSuffix(u.Display, "(100000 bytes)")
				}},
				{"Null", map[string]any{"type": "null"}, func(u NodeUnit) bool { return u.NoUnits == "EngineeringUnits is Null" && u.Err == nil }},
				{"a String again", map[string]any{"type": "string", "value": "kPa"}, unusable("a String")},
			}
			for _, st := range steps {
				srv.command(t, map[string]any{"cmd": "eu", "name": "top_pressure", "eu": st.eu})
				wait.For(t, 20*time.Second, st.name, func() bool {
					u, ok := ul.lastUnits()
					return ok && st.ok(u)
				})
			}
			// a worker forwards its counters with its cycles
			wait.For(t, 20*time.Second, fmt.Sprintf("smelter_opcua_unit_changes_total >= %d", len(steps)), func() bool {
				return testutil.ToFloat64(m.unitChanges.WithLabelValues("dev-1")) >= float64(len(steps))
			})
			if n := strings.Count(logs.String(), "engineering units of a polled point changed"); n != 1 {
				t.Errorf("%d change WARNs for %d changes within a minute, want 1:\n%s", n, len(steps), logs.String())
			}
			if strings.Contains(logs.String(), strings.Repeat("x", 200)) {
				t.Error("the 100 kB DisplayName was logged")
			}

			// a session that starts with the String: unusable from the first units on
			_, ul2 := runUnitLog(t, cfg, points)
			wait.For(t, 20*time.Second, "units at the session's start", func() bool { _, ok := ul2.lastUnits(); return ok })
			if u, _ := ul2.lastUnits(); !unusable("a String")(u) {
				t.Fatalf("session start with a String EngineeringUnits: %+v", u)
			}
		})
	}
}

// TestInteropNonFiniteRange gives node-opcua's top_pressure an EURange of
// NaN..NaN, then -Inf..+Inf, mid-session: in process and in an endpoint's
// worker the range reaches OnUnits as the server set it and the values of
// both points keep coming, on the first session (a NaN range used to stop
// a worker's output for good, silently).
func TestInteropNonFiniteRange(t *testing.T) {
	needNodeServer(t)
	for _, iso := range []string{IsolationNone, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			srv := startNodeServer(t, t.TempDir())
			cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
			cfg.Isolation = iso
			cfg.UnitCheckInterval = UnitCheckEveryRead
			points := []Point{
				{NodeID: srv.Nodes[1], Mode: ModePoll, PollInterval: 100 * time.Millisecond, UnitFromNode: true}, // top_pressure
				{NodeID: srv.Nodes[0], SamplingInterval: 50 * time.Millisecond},                                  // hot_blast_temp, changing
			}
			c, err := New("dev-1", cfg, points, testLog(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			var umu sync.Mutex
			var rg [2]float64
			c.OnUnits(func(us []NodeUnit) {
				umu.Lock()
				rg = [2]float64{us[0].Min, us[0].Max}
				umu.Unlock()
			})
			rangeIs := func(lo, hi float64) func() bool {
				return func() bool {
					umu.Lock()
					defer umu.Unlock()
					return fmt.Sprint(rg) == fmt.Sprint([2]float64{lo, hi})
				}
			}
			rec := newRecorder()
			runClient(t, c, rec)
			wait.For(t, 20*time.Second, "values and range", func() bool {
				hot, ok := rec.get(1)
				return rec.has(0, telemetry.QualityGood, 210) && ok && hot.Quality == telemetry.QualityGood && rangeIs(0, 320)()
			})
			good := func(i int) func() int {
				return func() int {
					return rec.count(func(s sample.Sample) bool { return s.Index == i && s.Quality == telemetry.QualityGood })
				}
			}
			for _, r := range []struct {
				low, high string
				lo, hi    float64
			}{{"NaN", "NaN", math.NaN(), math.NaN()}, {"-Infinity", "Infinity", math.Inf(-1), math.Inf(1)}} {
				srv.command(t, map[string]any{"cmd": "range", "name": "top_pressure", "low": r.low, "high": r.high})
				wait.For(t, 20*time.Second, "range "+r.low+".."+r.high, rangeIs(r.lo, r.hi))
				polled, subscribed := good(0)(), good(1)()
				wait.For(t, 20*time.Second, "values of both points after the range", func() bool {
					return good(0)() >= polled+3 && good(1)() >= subscribed+3
				})
			}
			if n := rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
				t.Fatalf("%d Lost cycles: %v", n, rec.lostErrors())
			}
			if st := c.Status(); st.Sessions != 1 || (iso != IsolationNone && st.WorkerStarts != 1) {
				t.Fatalf("status %+v: want one session in one worker", st)
			}
		})
	}
}

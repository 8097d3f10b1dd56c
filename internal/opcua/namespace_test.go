package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// nsValues is the value of node s=Temp in each test namespace: the node a
// point means is known by its value, whatever index the server gives the
// namespace.
var nsValues = map[string]float64{"urn:test:a": 1.5, "urn:test:b": 2.5, "urn:test:c": 3.5, "urn:test:d;x%y": 4.5}

// nsServer is a gopcua server on a fixed loopback port whose
// NamespaceArray is ns0 followed by the given URIs in that order, each
// with a variable s=Temp (nsValues). restart serves another order on the
// same port, as a server that registers its namespaces in another order
// after a restart (node-opcua builds its address space that way).
type nsServer struct {
	t      *testing.T
	port   int
	srv    *server.Server
	cancel context.CancelFunc
}

func startNSServer(t *testing.T, uris ...string) *nsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &nsServer{t: t, port: l.Addr().(*net.TCPAddr).Port}
	_ = l.Close()
	s.start(uris...)
	t.Cleanup(s.stop)
	return s
}

func (s *nsServer) endpoint() string { return "opc.tcp://127.0.0.1:" + strconv.Itoa(s.port) }

func (s *nsServer) start(uris ...string) {
	s.t.Helper()
	srv := server.New(server.EndPoint("127.0.0.1", s.port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone), server.EnableAuthMode(ua.UserTokenTypeAnonymous))
	for _, u := range uris {
		ns := server.NewNodeNameSpace(srv, u)
		ns.AddNewVariableStringNode("Temp", nsValues[u])
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	for range 50 { // the port of the server before may take a moment to free
		if err = srv.Start(ctx); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cancel()
		s.t.Fatalf("start server: %v", err)
	}
	s.srv, s.cancel = srv, cancel
}

func (s *nsServer) stop() {
	if s.srv != nil {
		_ = s.srv.Close()
		s.cancel()
		s.srv = nil
	}
}

func (s *nsServer) restart(uris ...string) {
	s.stop()
	s.start(uris...)
}

// nsPoints are the test's points and the URI each means: ns=<index> ids
// as the configuration was written for the first order (a, b), and nsu=
// ids; polled and subscribed.
func nsPoints() ([]Point, []string) {
	ps := []Point{
		{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "ns=2;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "ns=1;s=Temp", SamplingInterval: 10 * time.Millisecond},
		{NodeID: "nsu=urn:test:d%3Bx%25y;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
	}
	return ps, []string{"urn:test:a", "urn:test:b", "urn:test:b", "urn:test:a", "urn:test:d;x%y"}
}

// wrongGood is every Good or Uncertain sample whose value is not its
// point's node's (F3: after a reorder, ns=1 read the other namespace's
// node and published its value good).
func wrongGood(rec *recorder, means []string) []sample.Sample {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []sample.Sample
	for _, b := range rec.batches {
		for _, u := range b {
			if u.Quality.HasValue() && u.Num != nsValues[means[u.Index]] {
				out = append(out, u)
			}
		}
	}
	return out
}

// since is a recorder view of the samples after mark (a count of batches).
func (r *recorder) latestSince(mark, i int) (sample.Sample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := len(r.batches) - 1; k >= mark; k-- {
		for _, u := range r.batches[k] {
			if u.Index == i {
				return u, true
			}
		}
	}
	return sample.Sample{}, false
}

func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.batches)
}

// TestNamespaceReorderAfterServerRestart (review F3): a server restarts
// with its NamespaceArray reordered. ns=<index> ids are pinned to their
// URIs at the first session and read at the URIs' new indexes; the pins
// survive a restart of the gateway (the pin file in data_dir); a URI that
// is gone makes its points bad BadNodeIdUnknown, never another node's
// value. nsu= ids (with escaped ';' and '%') follow their URI. Without
// the pins, ns=1 read urn:test:b's node after the restart and published
// 2.5 good for urn:test:a's 1.5.
func TestNamespaceReorderAfterServerRestart(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testNamespaceReorder(t, iso) })
	}
}

func testNamespaceReorder(t *testing.T, iso string) {
	srv := startNSServer(t, "urn:test:a", "urn:test:b", "urn:test:d;x%y")
	cfg := Config{Endpoint: srv.endpoint(), DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		PublishInterval: 50 * time.Millisecond, Watchdog: 200 * time.Millisecond, RequestTimeout: time.Second, Isolation: iso}
	// gopcua's server keeps its connections when it closes: the session
	// ends when a request times out
	points, means := nsPoints()
	m := NewMetrics(nil)
	start := func() (*Client, *recorder, func()) { return runStoppable(t, "dev/1", cfg, points, m) }
	goodSince := func(rec *recorder, mark int, bad ...int) func() bool {
		return allGoodSince(rec, mark, means, bad...)
	}
	remaps := func() float64 { return testutil.ToFloat64(m.namespaceRemaps.WithLabelValues("dev/1")) }

	c, rec, stop := start()
	wait.For(t, 10*time.Second, "first session's values", goodSince(rec, 0))
	// The server restarts with b first: ns=1 is urn:test:b now, ns=2
	// urn:test:d.
	sessions := c.Status().Sessions
	mark := rec.mark()
	srv.restart("urn:test:b", "urn:test:d;x%y", "urn:test:a")
	wait.For(t, 20*time.Second, "every point read after the reordered restart", func() bool {
		for i := range points {
			if u, ok := rec.latestSince(mark, i); !ok || u.Quality == telemetry.QualityStale {
				return false
			}
		}
		return c.Status().Sessions > sessions
	})
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("after the reordered restart: %d samples published with another node's value, first %+v", len(w), w[0])
	}
	// remaps: a 1 -> 3, b 2 -> 1 (a worker's metrics come with its frames)
	wait.For(t, 20*time.Second, "values after the reordered restart", func() bool {
		return c.Status().Sessions > sessions && goodSince(rec, mark)() && remaps() == 2
	})

	pinPath := filepath.Join(cfg.DataDir, "namespaces", "dev%2F1.json")
	b, err := os.ReadFile(pinPath)
	if err != nil {
		t.Fatalf("pin file: %v", err)
	}
	var pins nsPins
	if err := json.Unmarshal(b, &pins); err != nil || pins.Endpoint != cfg.Endpoint || len(pins.URIs) != 2 ||
		pins.URIs[1] != "urn:test:a" || pins.URIs[2] != "urn:test:b" {
		t.Fatalf("pin file %s: %v %+v", b, err, pins)
	}

	// The gateway restarts against the reordered server: the pins come
	// from the file (pinning again now would take ns=1 as urn:test:b);
	// a new process remembers no pins (pinMemory).
	stop()
	forgetPins(cfg.DataDir, "dev/1")
	c, rec, stop = start()
	wait.For(t, 10*time.Second, "values after the gateway's restart", goodSince(rec, 0))
	_ = c

	// urn:test:a is gone; urn:test:c takes an index, with an s=Temp of its
	// own: the ns=1 points are bad BadNodeIdUnknown, nothing is read under
	// a stale index.
	sessions = c.Status().Sessions
	mark = rec.mark()
	srv.restart("urn:test:c", "urn:test:b", "urn:test:d;x%y")
	wait.For(t, 20*time.Second, "points of the vanished namespace bad", func() bool {
		return c.Status().Sessions > sessions && goodSince(rec, mark, 0, 3)()
	})
	// and back in the first order: the pinned index is read again
	mark = rec.mark()
	srv.restart("urn:test:a", "urn:test:b", "urn:test:d;x%y")
	wait.For(t, 20*time.Second, "values after the namespace came back", goodSince(rec, mark))
	stop()

	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("%d samples published with another node's value, first %+v", len(w), w[0])
	}
}

// allGoodSince: every point's latest sample after mark is good with its
// node's value (means), but those in bad, which are bad BadNodeIdUnknown.
func allGoodSince(rec *recorder, mark int, means []string, bad ...int) func() bool {
	return func() bool {
		for i := range means {
			u, ok := rec.latestSince(mark, i)
			if !ok {
				return false
			}
			if slices.Contains(bad, i) {
				if u.Quality != telemetry.QualityBad || u.Status != StatusNodeIDUnknown {
					return false
				}
			} else if u.Quality != telemetry.QualityGood || u.Num != nsValues[means[i]] {
				return false
			}
		}
		return true
	}
}

// TestInteropNamespaceReorder is TestNamespaceReorderAfterServerRestart
// against node-opcua (F3 was found with it): server.js restarted on the
// same port with its namespaces registered in another order, then without
// one of them. node-opcua's own namespace is 1, so the test namespaces
// start at 2.
func TestInteropNamespaceReorder(t *testing.T) {
	needNodeServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	pki := t.TempDir()
	start := func(uris ...string) *nodeServer {
		args := []string{"--port", port}
		for _, u := range uris {
			args = append(args, "--namespace", u+"="+strconv.FormatFloat(nsValues[u], 'g', -1, 64))
		}
		return startNodeServerArgs(t, pki, args...)
	}
	srv := start("urn:test:a", "urn:test:b")
	cfg := interopConfig(t, srv, "None", "None", AuthConfig{Mode: "anonymous"})
	cfg.RequestTimeout = 2 * time.Second
	points := []Point{
		{NodeID: "ns=2;s=Temp", Mode: ModePoll, PollInterval: 50 * time.Millisecond},
		{NodeID: "ns=3;s=Temp", SamplingInterval: 50 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", Mode: ModePoll, PollInterval: 50 * time.Millisecond},
	}
	means := []string{"urn:test:a", "urn:test:b", "urn:test:b"}
	m := NewMetrics(nil)
	c, err := New("dev-ns", cfg, points, testLogOrDiscard(t), m)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "first session's values", allGoodSince(rec, 0, means))

	for _, step := range []struct {
		name string
		uris []string
		bad  []int
	}{
		{"reordered", []string{"urn:test:b", "urn:test:a"}, nil},
		{"urn:test:a gone, urn:test:c at its index", []string{"urn:test:c", "urn:test:b"}, []int{0}},
		{"back in the first order", []string{"urn:test:a", "urn:test:b"}, nil},
	} {
		sessions := c.Status().Sessions
		srv.stop()
		mark := rec.mark()
		srv = start(step.uris...)
		wait.For(t, 30*time.Second, step.name, func() bool {
			return c.Status().Sessions > sessions && allGoodSince(rec, mark, means, step.bad...)()
		})
		if w := wrongGood(rec, means); len(w) > 0 {
			t.Fatalf("%s: %d samples published with another node's value, first %+v", step.name, len(w), w[0])
		}
	}
	if got := testutil.ToFloat64(m.namespaceRemaps.WithLabelValues("dev-ns")); got != 2 {
		t.Fatalf("namespace remaps = %v, want 2 (a 2 -> 3, b 3 -> 2)", got)
	}
}

// TestNamespaceAbsentAtFirstSession: an ns=<index> beyond the server's
// NamespaceArray and an nsu= URI the server does not have are bad
// BadNodeIdUnknown; the other points are read; a command's read of such a
// point fails naming the namespace.
func TestNamespaceAbsentAtFirstSession(t *testing.T) {
	srv := startNSServer(t, "urn:test:a")
	cfg := Config{Endpoint: srv.endpoint(), DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		PublishInterval: 50 * time.Millisecond, Watchdog: 200 * time.Millisecond, RequestTimeout: 3 * time.Second, Isolation: IsolationNone}
	c, rec := run(t, cfg, []Point{
		{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "ns=5;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "nsu=urn:test:zz;s=Temp"},
	})
	wait.For(t, 10*time.Second, "values and bad points", func() bool {
		return rec.has(0, telemetry.QualityGood, 1.5) && rec.has(1, telemetry.QualityBad, 0) && rec.has(2, telemetry.QualityBad, 0)
	})
	for _, i := range []int{1, 2} {
		if u, _ := rec.get(i); u.Status != StatusNodeIDUnknown {
			t.Fatalf("point %d: %+v", i, u)
		}
	}
	if _, err := c.ReadPoint(t.Context(), 2); !errors.Is(err, errNamespaceGone) {
		t.Fatalf("ReadPoint of an absent namespace: %v", err)
	}
}

func TestExpandedIDRoundTrip(t *testing.T) {
	ns := []string{"http://opcfoundation.org/UA/", "urn:a;b%c", ""}
	for _, tc := range []struct {
		n    *ua.NodeID
		want string
	}{
		{ua.NewNumericNodeID(0, 2258), "i=2258"},
		{ua.NewStringNodeID(1, "Line;1.Temp"), "nsu=urn:a%3Bb%25c;s=Line;1.Temp"},
		{ua.NewNumericNodeID(2, 7), "ns=2;i=7"}, // empty URI: the index
		{ua.NewNumericNodeID(9, 7), "ns=9;i=7"}, // not in the array
	} {
		got := ExpandedID(tc.n, ns)
		if got != tc.want {
			t.Errorf("ExpandedID(%v) = %q, want %q", tc.n, got, tc.want)
			continue
		}
		if err := checkNodeID(got); err != nil {
			t.Errorf("%q: %v", got, err)
		}
		n, err := (&nodeTable{ns: ns}).parse(got)
		if err != nil || n.String() != tc.n.String() {
			t.Errorf("parse(%q) = %v, %v; want %v", got, n, err, tc.n)
		}
	}
	if err := checkNodeID("nsu=urn:%zz;s=x"); err == nil {
		t.Error("a bad percent escape in nsu= passed")
	}
}

// TestNamespacePinFile: pins recorded for another endpoint are kept; an
// unreadable pin file (corrupt, or valid JSON without the endpoint and
// uris fields) is left as it is (the only record of what the
// indexes meant) and the pins live in memory; pins of this endpoint
// decide even when the server has another URI at the index now.
func TestNamespacePinFile(t *testing.T) {
	srv := startNSServer(t, "urn:test:a", "urn:test:b")
	for _, tc := range []struct {
		name, file string
		want       telemetry.Quality // point ns=1;s=Temp
		keep       bool              // the file is left as it was
		uri        string            // else: the URI pinned to ns=1 it holds now (with this endpoint)
	}{
		// an edited address keeps the pins (attack-ua F2: re-pinning read
		// the reordered server's other namespace as good)
		{"another endpoint, URI gone", `{"endpoint": "opc.tcp://elsewhere:4840", "uris": {"1": "urn:test:zz"}}`, telemetry.QualityBad, false, "urn:test:zz"},
		{"another endpoint, URI here", `{"endpoint": "opc.tcp://elsewhere:4840", "uris": {"1": "urn:test:a"}}`, telemetry.QualityGood, false, "urn:test:a"},
		// a damaged file is no licence to guess (attack-ua F1)
		{"unreadable", `{"endpoint": `, telemetry.QualityBad, true, ""},
		// valid JSON without the format's fields is as damaged
		// (attack-ua2 F1: null and {} were pinned afresh and overwritten)
		{"null", "null\n", telemetry.QualityBad, true, ""},
		{"empty object", `{}`, telemetry.QualityBad, true, ""},
		{"no endpoint", `{"uris": {"1": "urn:test:a"}}`, telemetry.QualityBad, true, ""},
		{"empty endpoint", `{"endpoint": "", "uris": {"1": "urn:test:a"}}`, telemetry.QualityBad, true, ""},
		{"no uris", `{"endpoint": "` + srv.endpoint() + `"}`, telemetry.QualityBad, true, ""},
		{"uris null", `{"endpoint": "` + srv.endpoint() + `", "uris": null}`, telemetry.QualityBad, true, ""},
		{"an array", `[]`, telemetry.QualityBad, true, ""},
		// no index pinned yet (the server lacked it): readable
		{"no index pinned", `{"endpoint": "` + srv.endpoint() + `", "uris": {}}`, telemetry.QualityGood, false, "urn:test:a"},
		{"this endpoint, URI gone", `{"endpoint": "` + srv.endpoint() + `", "uris": {"1": "urn:test:zz"}}`, telemetry.QualityBad, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Endpoint: srv.endpoint(), DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
				PublishInterval: 50 * time.Millisecond, Watchdog: 200 * time.Millisecond, RequestTimeout: time.Second, Isolation: IsolationNone}
			path := filepath.Join(cfg.DataDir, "namespaces", "dev-1.json")
			if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, rec := run(t, cfg, []Point{{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond}})
			wait.For(t, 10*time.Second, "the point", func() bool {
				u, ok := rec.get(0)
				return ok && u.Quality == tc.want && (tc.want != telemetry.QualityGood || u.Num == 1.5) &&
					(tc.want != telemetry.QualityBad || u.Status == StatusNodeIDUnknown)
			})
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.keep != (string(b) == tc.file) {
				t.Fatalf("pin file now %s", b)
			}
			if !tc.keep {
				var p nsPins
				if err := json.Unmarshal(b, &p); err != nil || p.Endpoint != cfg.Endpoint || p.URIs[1] != tc.uri {
					t.Fatalf("pin file now %s (%v)", b, err)
				}
			}
		})
	}
}

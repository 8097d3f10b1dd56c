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
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// nsTestConfig is the configuration of the live namespace tests: quick
// timing, isolation none (the Client's status and metrics are its own).
func nsTestConfig(t *testing.T, srv *nsServer) Config {
	return Config{Endpoint: srv.endpoint(), DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		PublishInterval: 50 * time.Millisecond, Watchdog: 200 * time.Millisecond, RequestTimeout: 3 * time.Second, Isolation: IsolationNone,
		NamespaceCheck: 200 * time.Millisecond}
}

// badCycles is how many cycles published point i bad BadNodeIdUnknown.
func (r *recorder) badCycles(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		for _, u := range b {
			if u.Index == i && u.Quality == telemetry.QualityBad && u.Status == StatusNodeIDUnknown {
				n++
			}
		}
	}
	return n
}

// TestNamespaceAbsentPublishedEveryCycle (attack F4, F3): a device whose
// points are all in namespaces the server lacks is a connected device whose
// points are bad BadNodeIdUnknown in every cycle (its poll interval, the
// publish interval for subscribed points), on one session. Before, they
// were published once per session and the device fell silent: the
// gateway's stall watch declared the driver stalled, published a death and
// restarted it about every 80 s.
func TestNamespaceAbsentPublishedEveryCycle(t *testing.T) {
	srv := startNSServer(t, "urn:test:a")
	cfg := nsTestConfig(t, srv)
	c, rec := run(t, cfg, []Point{
		{NodeID: "ns=3;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "nsu=urn:test:zz;s=Temp"},
	})
	wait.For(t, 20*time.Second, "both points bad in many cycles", func() bool {
		return rec.badCycles(0) >= 10 && rec.badCycles(1) >= 10
	})
	if st := c.Status(); st.Sessions != 1 || !st.Connected {
		t.Fatalf("status %+v: want one session, connected", st)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, cyc := range rec.cycles {
		if cyc.Lost || !cyc.Replied {
			t.Fatalf("cycle %+v: the server answers; no cycle of this device is lost", cyc)
		}
	}
}

// TestNamespaceAddedToLiveServer (attack F3): a namespace the server lacks
// at the session's start and registers later (the live server appends it
// to its NamespaceArray, OPC 10000-5 6.3.1) is read within namespace_check,
// on the same session: an nsu= id of it, subscribed and polled, and an
// ns=<index> id whose index was beyond the array (pinned when it comes).
// Until then its points are bad every cycle. Before, they published
// nothing at all until the next reconnect (10 minutes seen).
func TestNamespaceAddedToLiveServer(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testNamespaceAddedToLiveServer(t, iso) })
	}
}

func testNamespaceAddedToLiveServer(t *testing.T, iso string) {
	srv := startNSServer(t, "urn:test:a")
	cfg := nsTestConfig(t, srv)
	cfg.Isolation = iso
	m := NewMetrics(nil)
	c, err := New("dev-1", cfg, []Point{
		{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", SamplingInterval: 10 * time.Millisecond},
		{NodeID: "ns=2;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
	}, testLog(t), m)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	means := []string{"urn:test:a", "urn:test:b", "urn:test:b", "urn:test:b"}
	wait.For(t, 20*time.Second, "the absent points bad in several cycles", func() bool {
		return rec.has(0, telemetry.QualityGood, 1.5) && rec.badCycles(1) >= 3 && rec.badCycles(2) >= 3 && rec.badCycles(3) >= 3
	})
	mark := rec.mark()
	ns := server.NewNodeNameSpace(srv.srv, "urn:test:b")
	ns.AddNewVariableStringNode("Temp", nsValues["urn:test:b"])
	wait.For(t, 20*time.Second, "the added namespace's points read", allGoodSince(rec, mark, means))
	if got := c.Status().Sessions; got != 1 {
		t.Fatalf("%d sessions: the namespace must be picked up without a reconnect", got)
	}
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("%d samples with another node's value, first %+v", len(w), w[0])
	}
	// a worker's metrics come with its frames
	wait.For(t, 20*time.Second, "one namespace change seen by the check", func() bool {
		return testutil.ToFloat64(m.namespaceChanges.WithLabelValues("dev-1", "check")) == 1
	})
}

// swapNS is a namespace of the test server whose content can be swapped
// with another's while sessions are open: two swapped swapNS are a server
// that reorders its NamespaceArray live (against OPC 10000-5 6.3.1), the
// same ns=<index>;s=Temp then naming the other namespace's node.
type swapNS struct {
	mu    sync.Mutex
	inner *server.NodeNameSpace
	id    uint16
	// onDataType, when set, runs once at the next read of a node's
	// DataType (a write reads it between its namespace check and the
	// Write)
	onDataType func()
}

func (s *swapNS) cur() *server.NodeNameSpace {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inner
}

// tr is n in the inner namespace's index.
func (s *swapNS) tr(n *ua.NodeID) *ua.NodeID {
	in := s.cur()
	if n == nil || n.Type() != ua.NodeIDTypeString {
		return n
	}
	return ua.NewStringNodeID(in.ID(), n.StringID())
}

func (s *swapNS) Name() string                        { return s.cur().Name() }
func (s *swapNS) AddNode(n *server.Node) *server.Node { return s.cur().AddNode(n) }
func (s *swapNS) Node(n *ua.NodeID) *server.Node      { return s.cur().Node(s.tr(n)) }
func (s *swapNS) Objects() *server.Node               { return s.cur().Objects() }
func (s *swapNS) Root() *server.Node                  { return s.cur().Root() }
func (s *swapNS) Browse(req *ua.BrowseDescription) *ua.BrowseResult {
	r := *req
	r.NodeID = s.tr(req.NodeID)
	return s.cur().Browse(&r)
}
func (s *swapNS) ID() uint16      { s.mu.Lock(); defer s.mu.Unlock(); return s.id }
func (s *swapNS) SetID(id uint16) { s.mu.Lock(); defer s.mu.Unlock(); s.id = id }
func (s *swapNS) Attribute(n *ua.NodeID, a ua.AttributeID) *ua.DataValue {
	if a == ua.AttributeIDDataType {
		s.mu.Lock()
		f := s.onDataType
		s.onDataType = nil
		s.mu.Unlock()
		if f != nil {
			f()
		}
		if dv := s.cur().Attribute(s.tr(n), a); dv.Status != ua.StatusOK {
			return dv
		}
		// gopcua's server answers i=267 for its variables: they hold
		// Doubles (nsValues)
		return &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(ua.NewNumericNodeID(0, id.Double))}
	}
	return s.cur().Attribute(s.tr(n), a)
}
func (s *swapNS) SetAttribute(n *ua.NodeID, a ua.AttributeID, v *ua.DataValue) ua.StatusCode {
	// on the node: the inner namespaces' server (the holder) runs no
	// monitored item service to notify
	node := s.cur().Node(s.tr(n))
	if node == nil {
		return ua.StatusBadNodeIDUnknown
	}
	if err := node.SetAttribute(a, v); err != nil {
		return ua.StatusBadAttributeIDInvalid
	}
	return ua.StatusOK
}

// swapServer is a test server whose namespaces 1 and 2 (urn:test:a and
// urn:test:b, each with s=Temp) swap places on swap, while sessions are
// open.
type swapServer struct {
	sa, sb *swapNS
	a, b   *server.NodeNameSpace
}

func startSwapServer(t *testing.T) (*nsServer, *swapServer) {
	srv := startNSServer(t)
	holder := server.New()
	sw := &swapServer{a: server.NewNodeNameSpace(holder, "urn:test:a"), b: server.NewNodeNameSpace(holder, "urn:test:b")}
	sw.a.AddNewVariableStringNode("Temp", nsValues["urn:test:a"])
	sw.b.AddNewVariableStringNode("Temp", nsValues["urn:test:b"])
	sw.sa, sw.sb = &swapNS{inner: sw.a}, &swapNS{inner: sw.b}
	srv.srv.AddNamespace(sw.sa)
	srv.srv.AddNamespace(sw.sb)
	return srv, sw
}

// swap puts urn:test:b at index 1 and urn:test:a at 2.
func (sw *swapServer) swap() {
	sw.sa.mu.Lock()
	sw.sb.mu.Lock()
	sw.sa.inner, sw.sb.inner = sw.b, sw.a
	sw.sb.mu.Unlock()
	sw.sa.mu.Unlock()
}

// TestNamespaceReorderedLivePollGuard (attack F3): a server that reorders
// its NamespaceArray during a session. The periodic check is an hour away:
// the poll reads themselves must see it (the NamespaceArray read with the
// values), publish the affected values bad rather than the other
// namespace's node as good, and rebuild the acquisition at once on the new
// order, on the same session. Without the check in the read, ns=1 read
// urn:test:b's node and published 2.5 good for urn:test:a's 1.5 until the
// next check.
func TestNamespaceReorderedLivePollGuard(t *testing.T) {
	srv, sw := startSwapServer(t)
	cfg := nsTestConfig(t, srv)
	cfg.NamespaceCheck = time.Hour
	m := NewMetrics(nil)
	points := []Point{
		{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 20 * time.Millisecond},
		{NodeID: "ns=2;s=Temp", Mode: ModePoll, PollInterval: 20 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", Mode: ModePoll, PollInterval: 20 * time.Millisecond},
	}
	means := []string{"urn:test:a", "urn:test:b", "urn:test:b"}
	c, err := New("dev-1", cfg, points, testLog(t), m)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values", allGoodSince(rec, 0, means))

	mark := rec.mark()
	sw.swap()
	wait.For(t, 20*time.Second, "reads after the live reorder", func() bool { return rec.mark() >= mark+30 })
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("%d samples published good with another namespace's node's value, first %+v", len(w), w[0])
	}
	wait.For(t, 20*time.Second, "values after the live reorder", func() bool {
		return testutil.ToFloat64(m.namespaceChanges.WithLabelValues("dev-1", "read")) == 1 && allGoodSince(rec, mark, means)()
	})
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("%d samples published good with another namespace's node's value, first %+v", len(w), w[0])
	}
	if got := c.Status().Sessions; got != 1 {
		t.Fatalf("%d sessions: the reorder must be followed without a reconnect", got)
	}
	if got := testutil.ToFloat64(m.namespaceRemaps.WithLabelValues("dev-1")); got != 2 {
		t.Fatalf("namespace remaps = %v, want 2 (a 1 -> 2, b 2 -> 1)", got)
	}
}

// TestNamespacePinsWrittenWhenDirFixed (attack F5): the pin file cannot be
// written (an unwritable directory); once that is fixed the pins are
// written at the next namespace check, on the same session, the failure
// was reported once, not at every check, and the recovery is logged once
// at INFO, in process and from a session worker (attack-ua2 F6). Before,
// the write was retried only at the next session start.
func TestNamespacePinsWrittenWhenDirFixed(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testNamespacePinsWrittenWhenDirFixed(t, iso) })
	}
}

func testNamespacePinsWrittenWhenDirFixed(t *testing.T, iso string) {
	srv := startNSServer(t, "urn:test:a")
	cfg := nsTestConfig(t, srv)
	cfg.Isolation = iso
	cfg.NamespaceCheck = 100 * time.Millisecond
	path := pinPath(cfg.DataDir, "dev-1")
	unblock := blockPins(t, cfg.DataDir, "dev-1")
	m := NewMetrics(nil)
	var logs logtest.Buffer
	c, err := New("dev-1", cfg, []Point{{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond}},
		slog.New(slog.NewTextHandler(&logs, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values and several namespace checks", func() bool {
		return rec.has(0, telemetry.QualityGood, 1.5) && testutil.ToFloat64(m.namespaceChecks.WithLabelValues("dev-1")) >= 3
	})
	if got := testutil.ToFloat64(m.pinWriteErrors.WithLabelValues("dev-1")); got != 1 {
		t.Fatalf("pin write errors = %v, want 1 (once per failure, not per check)", got)
	}
	unblock()
	wait.For(t, 20*time.Second, "the pin file written", func() bool {
		p, err := c.readPins()
		return err == nil && p != nil && p.URIs[1] == "urn:test:a" && p.Endpoint == cfg.Endpoint
	})
	const saved = "opc ua namespace pins saved after a failed write"
	wait.For(t, 10*time.Second, "the recovery logged", func() bool { return strings.Contains(logs.String(), saved) })
	if got := c.Status().Sessions; got != 1 {
		t.Fatalf("%d sessions: the pins must be written without a new session", got)
	}
	// deleted while the gateway runs: written again from memory
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the pin file written again", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
	if n := strings.Count(logs.String(), saved); n != 1 {
		t.Fatalf("recovery logged %d times, want once:\n%s", n, logs.String())
	}
	// failing again, then the file put back by hand: a recovery too,
	// logged (before, the failure stayed recorded and a third went
	// unreported)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unblock = blockPins(t, cfg.DataDir, "dev-1")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the second failure counted", func() bool {
		return testutil.ToFloat64(m.pinWriteErrors.WithLabelValues("dev-1")) == 2
	})
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the second recovery logged at INFO", func() bool {
		return strings.Count(logs.String(), "level=INFO msg=\""+saved) == 2
	})
	unblock()
}

// TestInteropNamespaceAddedLive is TestNamespaceAddedToLiveServer against
// node-opcua (attack F3 was found with it): server.js registers a
// namespace on the live server ({"cmd":"namespace"}), appended to its
// NamespaceArray; its points, bad every cycle until then, are read within
// namespace_check on the same session.
func TestInteropNamespaceAddedLive(t *testing.T) {
	needNodeServer(t)
	args := []string{"--port", "0", "--namespace", "urn:test:a=" + strconv.FormatFloat(nsValues["urn:test:a"], 'g', -1, 64)}
	srv := startNodeServerArgs(t, t.TempDir(), args...)
	cfg := interopConfig(t, srv, "None", "None", AuthConfig{Mode: "anonymous"})
	cfg.RequestTimeout = 2 * time.Second
	cfg.NamespaceCheck = 300 * time.Millisecond
	points := []Point{
		{NodeID: "nsu=urn:test:a;s=Temp", Mode: ModePoll, PollInterval: 50 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", Mode: ModePoll, PollInterval: 50 * time.Millisecond},
		{NodeID: "nsu=urn:test:b;s=Temp", SamplingInterval: 50 * time.Millisecond},
	}
	means := []string{"urn:test:a", "urn:test:b", "urn:test:b"}
	m := NewMetrics(nil)
	c, err := New("dev-ns-live", cfg, points, testLogOrDiscard(t), m)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values, and the absent points bad in several cycles", func() bool {
		return rec.has(0, telemetry.QualityGood, 1.5) && rec.badCycles(1) >= 3 && rec.badCycles(2) >= 3
	})
	sessions := c.Status().Sessions
	mark := rec.mark()
	srv.command(t, map[string]any{"cmd": "namespace", "uri": "urn:test:b", "value": nsValues["urn:test:b"]})
	wait.For(t, 20*time.Second, "the added namespace's points read", allGoodSince(rec, mark, means))
	if got := c.Status().Sessions; got != sessions {
		t.Fatalf("%d sessions, was %d: the namespace must be picked up without a reconnect", got, sessions)
	}
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("%d samples with another node's value, first %+v", len(w), w[0])
	}
}

// TestNamespaceReorderedLiveCommands: commands on a server that swapped two
// namespaces live (the periodic check an hour away, no poll read to see
// it): a command's read carries the NamespaceArray and fails rather than
// return the other namespace's node's value, and a write is refused with
// nothing written rather than write the other namespace's node. Either
// starts the namespace check at once, as a poll read does (attack-ua2 F3:
// every later command was refused and subscribed points kept the other
// namespace's values until the periodic check): the next read, on the
// same session, gets the point's own node.
func TestNamespaceReorderedLiveCommands(t *testing.T) {
	for _, first := range []string{"read", "write"} {
		t.Run(first, func(t *testing.T) { testNamespaceReorderedLiveCommands(t, first) })
	}
}

func testNamespaceReorderedLiveCommands(t *testing.T, first string) {
	srv, sw := startSwapServer(t)
	cfg := nsTestConfig(t, srv)
	cfg.NamespaceCheck = time.Hour
	m := NewMetrics(nil)
	c, err := New("dev-1", cfg, []Point{{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: time.Hour}}, testLog(t), m)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "the first read", func() bool { return rec.has(0, telemetry.QualityGood, 1.5) })
	if smp, err := c.ReadPoint(t.Context(), 0); err != nil || smp.Num != 1.5 {
		t.Fatalf("ReadPoint before the swap: %+v, %v", smp, err)
	}
	sw.swap()
	bNode := func() any {
		return sw.b.Attribute(ua.NewStringNodeID(sw.b.ID(), "Temp"), ua.AttributeIDValue).Value.Value()
	}
	switch first {
	case "read":
		if smp, err := c.ReadPoint(t.Context(), 0); !errors.Is(err, errNamespaceGone) || smp.Quality.HasValue() {
			t.Fatalf("ReadPoint after the live swap: %+v, %v; want an error, not urn:test:b's value", smp, err)
		}
	case "write":
		if _, err := c.WritePoint(t.Context(), 0, 9); !errors.Is(err, errNamespaceGone) || !strings.Contains(err.Error(), "nothing written") {
			t.Fatalf("WritePoint after the live swap: %v", err)
		}
	}
	wait.For(t, 20*time.Second, "the namespace check started by the command, and the point's own node read", func() bool {
		if testutil.ToFloat64(m.namespaceChanges.WithLabelValues("dev-1", "command")) != 1 {
			return false
		}
		smp, err := c.ReadPoint(t.Context(), 0)
		if err == nil && smp.Num != 1.5 {
			t.Fatalf("ReadPoint: %+v: urn:test:b's value", smp)
		}
		return err == nil
	})
	if v := bNode(); v != nsValues["urn:test:b"] {
		t.Fatalf("urn:test:b's node was written: %v", v)
	}
	if got := c.Status().Sessions; got != 1 {
		t.Fatalf("%d sessions: the swap must be followed without a reconnect", got)
	}
}

// blockedPinWrite fails the write of pin file path while path+".block"
// exists (TestMain installs it, in session workers too): the tests'
// unwritable directory (the tests run as root, which writes a read-only
// one).
func blockedPinWrite(path string) error {
	if _, err := os.Stat(path + ".block"); err == nil {
		return errors.New("write " + path + ": test block")
	}
	return nil
}

// blockPins makes the pin writes of device id below dataDir fail until
// the returned func is called.
func blockPins(t *testing.T, dataDir, id string) func() {
	t.Helper()
	block := pinPath(dataDir, id) + ".block"
	if err := os.MkdirAll(filepath.Dir(block), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(block, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(block); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNamespacePinWriteFollowsNoLink (attack-ua2 F5): a link planted at
// the pin file's old temporary name (<file>.tmp) is not followed: the
// file it points to stays as it was, the pin file is a regular file, and
// no temporary file is left behind. Before, the write truncated and
// wrote the link's target and renamed the link over the pin file.
func TestNamespacePinWriteFollowsNoLink(t *testing.T) {
	srv := startNSServer(t, "urn:test:a")
	cfg := nsTestConfig(t, srv)
	path := pinPath(cfg.DataDir, "dev-1")
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim.txt")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	c, rec := run(t, cfg, []Point{{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond}})
	wait.For(t, 20*time.Second, "values and the pin file", func() bool {
		p, err := c.readPins()
		return rec.has(0, telemetry.QualityGood, 1.5) && err == nil && p != nil && p.URIs[1] == "urn:test:a"
	})
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me\n" {
		t.Fatalf("the link's target now %q (%v)", b, err)
	}
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("pin file %v (%v): want a regular file", fi.Mode(), err)
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); n != "dev-1.json" && n != "dev-1.json.tmp" {
			t.Fatalf("left in the pin directory: %s", n)
		}
	}
}

// forgetPins drops what this process remembers of the pins of device id
// below dataDir (pinMemory): a test's gateway restarting as a new process.
func forgetPins(dataDir, id string) {
	pinMemory.mu.Lock()
	defer pinMemory.mu.Unlock()
	delete(pinMemory.m, pinPath(dataDir, id))
}

// TestNamespacePinsKeptAcrossReload (attack-ua2 F2): the pin file is gone
// and cannot be written again; the server restarts reordered, and the
// pins held in memory read each index at its URI's new place. Then the
// driver is built again, as a configuration reload does: the new Client
// (and, with isolation process, its new worker) takes the pins up from
// the process, not the server's current order, and writes them once the
// directory is writable. Before, the reload pinned the indexes again to
// the reordered server and published the other namespace's values good.
func TestNamespacePinsKeptAcrossReload(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testNamespacePinsKeptAcrossReload(t, iso) })
	}
}

func testNamespacePinsKeptAcrossReload(t *testing.T, iso string) {
	srv := startNSServer(t, "urn:test:a", "urn:test:b")
	cfg := nsTestConfig(t, srv)
	cfg.Isolation = iso
	points := []Point{
		{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: 30 * time.Millisecond},
		{NodeID: "ns=2;s=Temp", SamplingInterval: 10 * time.Millisecond},
	}
	means := []string{"urn:test:a", "urn:test:b"}
	path := pinPath(cfg.DataDir, "dev-1")
	t.Cleanup(func() { forgetPins(cfg.DataDir, "dev-1") })
	m := NewMetrics(nil)
	c, rec, stop := runStoppable(t, "dev-1", cfg, points, m)
	wait.For(t, 20*time.Second, "values and the pin file", func() bool {
		p, err := c.readPins()
		return allGoodSince(rec, 0, means)() && err == nil && p != nil && len(p.URIs) == 2
	})
	unblock := blockPins(t, cfg.DataDir, "dev-1")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the failed pin write", func() bool {
		return testutil.ToFloat64(m.pinWriteErrors.WithLabelValues("dev-1")) == 1
	})
	sessions := c.Status().Sessions
	mark := rec.mark()
	srv.restart("urn:test:b", "urn:test:a")
	wait.For(t, 20*time.Second, "values from the pins in memory after the reordered restart", func() bool {
		return c.Status().Sessions > sessions && allGoodSince(rec, mark, means)()
	})
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("before the reload: %d samples with another namespace's value, first %+v", len(w), w[0])
	}

	stop() // the reload: the driver is built again from the same configuration
	_, rec, _ = runStoppable(t, "dev-1", cfg, points, NewMetrics(nil))
	wait.For(t, 20*time.Second, "values after the reload", allGoodSince(rec, 0, means))
	if w := wrongGood(rec, means); len(w) > 0 {
		t.Fatalf("after the reload: %d samples with another namespace's value, first %+v", len(w), w[0])
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin file: %v; want none while writes fail", err)
	}
	unblock()
	wait.For(t, 20*time.Second, "the pins written as first pinned", func() bool {
		p, err := (&Client{cfg: cfg, id: "dev-1"}).readPins()
		return err == nil && p != nil && p.URIs[1] == "urn:test:a" && p.URIs[2] == "urn:test:b"
	})
}

// runStoppable runs a Client of device id until stop is called (or the
// test ends): a gateway's driver stopped for a restart or a reload.
func runStoppable(t *testing.T, id string, cfg Config, points []Point, m *Metrics) (c *Client, rec *recorder, stop func()) {
	t.Helper()
	c, err := New(id, cfg, points, testLog(t), m)
	if err != nil {
		t.Fatal(err)
	}
	rec = newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, rec.emit) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return c, rec, stop
}

// TestNamespaceChangedAroundWrite (attack-ua2 F4): a server that swaps two
// namespaces between the write's namespace check and the Write itself
// (against OPC 10000-5 6.3.1; one round trip) takes the write for the
// other namespace's node. The driver reads the NamespaceArray again after
// the write and reports "outcome unknown", never a write done. Before,
// the command was reported written.
func TestNamespaceChangedAroundWrite(t *testing.T) {
	srv, sw := startSwapServer(t)
	cfg := nsTestConfig(t, srv)
	cfg.NamespaceCheck = time.Hour
	c, rec := run(t, cfg, []Point{{NodeID: "ns=1;s=Temp", Mode: ModePoll, PollInterval: time.Hour}})
	wait.For(t, 20*time.Second, "the first read", func() bool { return rec.has(0, telemetry.QualityGood, 1.5) })
	sw.sa.mu.Lock()
	sw.sa.onDataType = sw.swap
	sw.sa.mu.Unlock()
	_, err := c.WritePoint(t.Context(), 0, 9)
	if err == nil || !errors.Is(err, errNamespaceGone) || !strings.Contains(err.Error(), "outcome unknown") {
		t.Fatalf("WritePoint across the swap: %v; want outcome unknown", err)
	}
	// the race happened: the write reached urn:test:b's node
	if v := sw.b.Attribute(ua.NewStringNodeID(sw.b.ID(), "Temp"), ua.AttributeIDValue).Value.Value(); v != 9.0 {
		t.Fatalf("urn:test:b's node holds %v: the swap did not come between the check and the write", v)
	}
}

package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/wait"
)

// fullConfig is the rig's one compressor polled every 50 ms, its data in
// dataDir, published to natsURL.
func (r *relRig) fullConfig(t *testing.T, dataDir, natsURL string, natsExtra ...string) *gwconfig.Config {
	t.Helper()
	doc := fmt.Sprintf(`gateway: {id: %s, enterprise: acme, site: plant1, data_dir: %q}
http: {listen: "off"}
spool: {segment_bytes: 65536}
uplinks:
  nats: {url: %q, timeout: 1s%s}
devices:
  - id: ac-1
    class: air_compressor
    nameplate: {rated_power: 75, rated_fad: 12.5}
    poll_interval: 50ms
    template: %s
    modbus: {address: %q, unit_id: 1, timeout: 500ms}
`, relGateway, dataDir, natsURL, strings.Join(natsExtra, ""), filepath.Join(r.dir, "compressor.yaml"), r.server.Addr)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startWith starts a gateway with opts (a private registry unless given)
// and stops it at cleanup; Run returning before stop is an error.
func startWith(t *testing.T, cfg *gwconfig.Config, opts Options) *running {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Registry == nil && opts.Metrics == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	opts.DrainTimeout = time.Second
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rg := &running{g: g, reg: g.Registry(), cancel: cancel, done: make(chan error, 1)}
	go func() { rg.done <- g.Run(ctx) }()
	t.Cleanup(func() { rg.stop(t) })
	return rg
}

// alive fails the test when Run has returned.
func (rg *running) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-rg.done:
		rg.done <- err
		t.Fatalf("the gateway stopped: %v", err)
	default:
	}
}

// TestSpoolWriteFailureKeepsTheGatewayRunning: every append fails from the
// moment the spool opens (the spool's injected failure, the path a full
// disk takes). The gateway starts anyway: the birth is counted and kept
// due, the online status is not tried after it (one seq per attempt, every
// lost seq a birth attempt), batches are not appended before their birth
// and not logged one by one; /status and /readyz say appends fail, and
// smelter_gateway_seq is /status's seq. When writes succeed again, the
// birth goes out before the first batch, then the online status.
func TestSpoolWriteFailureKeepsTheGatewayRunning(t *testing.T) {
	r := newRelRig(t, false)
	var logs logtest.Buffer
	var mu sync.Mutex
	var sp *spool.Spool
	rg := startWith(t, r.fullConfig(t, filepath.Join(r.dir, "data"), r.nats.URL()), Options{Logger: logs.Logger(-4),
		OnSpool: func(s *spool.Spool) {
			s.FailWrites(syscall.ENOSPC)
			mu.Lock()
			sp = s
			mu.Unlock()
		}})
	lost := func() float64 { return metric(t, rg.reg, "smelter_spool_append_lost_records_total") }
	births := func() float64 {
		return metric(t, rg.reg, "smelter_gateway_notice_failures_total", "kind", "birth")
	}
	wait.For(t, 10*time.Second, "twenty failed cycles", func() bool { return metric(t, rg.reg, "smelter_gateway_spool_errors_total") >= 20 })
	rg.alive(t)
	wait.For(t, 5*time.Second, "every lost seq a birth attempt", func() bool { return lost() == births() && births() >= 20 })
	if n := metric(t, rg.reg, "smelter_gateway_notice_failures_total", "kind", "status"); n != 0 {
		t.Errorf("%v status attempts while the births failed, want none", n)
	}
	st := rg.g.Status()
	if !st.Spool.Failing || !strings.Contains(st.Spool.LastError, "no space left") || st.Spool.LostRecords == 0 {
		t.Errorf("/status spool %+v while appends fail", st.Spool)
	}
	if st.Ready || !strings.HasPrefix(st.ReadyReason, "spool appends failing") {
		t.Errorf("ready %v %q while appends fail", st.Ready, st.ReadyReason)
	}
	if n := strings.Count(logs.String(), "spooling batch"); n != 0 {
		t.Errorf("%d per-batch error lines:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "append failed"); n != 1 {
		t.Errorf("%d lines from the spool for %v lost records, want 1 (rate-limited)", n, lost())
	}

	mu.Lock()
	sp.FailWrites(nil)
	mu.Unlock()
	wait.For(t, 10*time.Second, "appends succeed and the gateway is ready", func() bool {
		st := rg.g.Status()
		return !st.Spool.Failing && st.Ready
	})
	var col subjectLog
	consumeStream(t, r.nats.URL(), col.add)
	wait.For(t, 10*time.Second, "a batch and the online status published", func() bool {
		s := col.String()
		return strings.Contains(s, ".data") && strings.Contains(s, ".status")
	})
	subs := strings.Split(col.String(), " ")
	if !strings.HasSuffix(subs[0], ".birth") {
		t.Fatalf("first message %s, want the birth before any batch: %v", subs[0], subs[:min(len(subs), 5)])
	}
	rg.stop(t)
	if seq, m := rg.g.Status().Seq, metric(t, rg.reg, "smelter_gateway_seq"); float64(seq) != m {
		t.Errorf("smelter_gateway_seq %v, /status seq %d", m, seq)
	}
}

// TestFullDiskOnTmpfs: a real 256 KiB filesystem fills while the uplink
// cannot commit. The gateway keeps polling; stopping it is clean; a
// restart on the full filesystem runs (the birth pending), so does a
// gateway with a fresh data_dir on it (seq.hwm cannot be written); once
// the broker is reachable the backlog drains and appends succeed again.
func TestFullDiskOnTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(mnt, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	r := newRelRig(t, false)
	const closed = "nats://127.0.0.1:1"

	first := startWith(t, r.fullConfig(t, filepath.Join(mnt, "a"), closed), Options{})
	wait.For(t, 60*time.Second, "the filesystem full", func() bool { return first.g.Status().Spool.Failing })
	first.alive(t)
	lostBefore := first.g.Status().Spool.LostRecords
	wait.For(t, 10*time.Second, "more cycles lost", func() bool { return first.g.Status().Spool.LostRecords > lostBefore+5 })
	first.alive(t)
	first.stop(t) // Run returning an error fails the test

	// Restart on the full filesystem (a reload, a reboot, an upgrade).
	again := startWith(t, r.fullConfig(t, filepath.Join(mnt, "a"), closed), Options{})
	wait.For(t, 10*time.Second, "the restarted gateway polling on the full disk", func() bool {
		st := again.g.Status()
		return st.Running && st.Spool.Failing && len(st.Devices) == 1 && st.Devices[0].Polls > 5
	})
	again.alive(t)

	// A fresh data_dir on the full filesystem.
	fresh := startWith(t, r.fullConfig(t, filepath.Join(mnt, "b"), closed), Options{})
	wait.For(t, 10*time.Second, "a gateway with a fresh data_dir polling on the full disk", func() bool {
		st := fresh.g.Status()
		return st.Running && len(st.Devices) == 1 && st.Devices[0].Polls > 5
	})
	fresh.alive(t)
	fresh.stop(t)
	again.stop(t)

	// The broker reachable: the backlog drains and appends resume.
	drain := startWith(t, r.fullConfig(t, filepath.Join(mnt, "a"), r.nats.URL()), Options{})
	wait.For(t, 60*time.Second, "the backlog sent and appends succeeding", func() bool {
		st := drain.g.Status()
		return st.Ready && !st.Spool.Failing && len(st.Uplinks) == 1 && st.Uplinks[0].LagRecords < 50
	})
	drain.alive(t)
}

// subjectLog lists the subjects of the messages a consumer received.
type subjectLog struct {
	mu    sync.Mutex
	subjs []string
}

func (c *subjectLog) add(subject string, _ []byte) {
	c.mu.Lock()
	c.subjs = append(c.subjs, subject)
	c.mu.Unlock()
}

func (c *subjectLog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.subjs, " ")
}

// TestUnusableStreamIsReportedAtOnce: a stream that does not exist (and
// create_stream is false) is in /status's uplink last_error and the
// /readyz reason, and logged as an error at once, while the gateway runs.
func TestUnusableStreamIsReportedAtOnce(t *testing.T) {
	r := newRelRig(t, false)
	var logs logtest.Buffer
	rg := startWith(t, r.fullConfig(t, filepath.Join(r.dir, "data"), r.nats.URL(), ", stream: NOPE_STREAM, create_stream: false"),
		Options{Logger: logs.Logger(0)})
	// the uplinks start before the gateway reports itself running: the
	// stream error can show in /status a moment before (the test read
	// readyz "not running" then, now and then)
	wait.For(t, 10*time.Second, "the stream error in /status while running", func() bool {
		return strings.Contains(rg.uplink("nats").LastError, "stream NOPE_STREAM does not exist") && rg.g.Status().Running
	})
	st := rg.g.Status()
	if st.Ready || !strings.Contains(st.ReadyReason, "uplink nats not ready") || !strings.Contains(st.ReadyReason, "create_stream is false") {
		t.Errorf("readyz reason %q", st.ReadyReason)
	}
	if !strings.Contains(logs.String(), `level=ERROR msg="nats stream check failed"`) {
		t.Errorf("no error logged:\n%s", logs.String())
	}
	rg.alive(t)
}

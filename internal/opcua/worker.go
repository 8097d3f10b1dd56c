package opcua

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/sample"
)

// ErrWorkerExited is wrapped by the error of the Lost cycle the driver
// emits when a device's session worker process ended on its own: killed
// (kill -9, the OOM killer), crashed, or exited. When the worker died of a
// panic (a hostile server's message in gopcua's decoder, say) the error
// also wraps ErrPanic and carries the panic's first line.
var ErrWorkerExited = errors.New("opcua: session worker exited")

// errExitedZero is the exit "error" of a worker that ended with status 0
// without being asked to.
var errExitedZero = errors.New("exit status 0")

// Isolation modes (Config.Isolation).
const (
	// IsolationProcess runs the device's sessions in a worker process of
	// their own: a panic anywhere in it (gopcua's goroutines included)
	// costs that device a reconnect, never the gateway nor another
	// device; about 7.5 MB of private memory per device.
	IsolationProcess = "process"
	// IsolationEndpoint runs the sessions of every device of one
	// endpoint (the same URL and security settings) in one worker
	// process: a panic costs those devices a reconnect, never the
	// gateway nor another endpoint's devices. The default.
	IsolationEndpoint = "endpoint"
	// IsolationNone runs the sessions in the gateway's process: less
	// memory, but a panic in gopcua's own goroutines ends the gateway.
	IsolationNone = "none"
)

const (
	// workerStopGrace is how long a worker may take to stop after its
	// stdin closed before it is killed.
	workerStopGrace = 5 * time.Second
	// stackLines bounds the stack excerpt logged for a dead worker.
	stackLines = 40
	// tailLines bounds the non-JSON stderr lines kept for the death report.
	tailLines = 64
)

// workerCommand is the command line that starts a worker: this binary,
// re-executed. A test binary (testing.Testing) runs no tests when started
// with -test.run=^$: its TestMain recognises WorkerEnv and serves the
// worker, and one without such a hook exits at once instead of running its
// tests again.
func workerCommand() (string, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("opcua: find this executable to start a session worker: %w", err)
	}
	if testing.Testing() {
		return exe, []string{"-test.run=^$"}, nil
	}
	return exe, []string{WorkerCommand}, nil
}

// workerRun is what one worker's life left behind.
type workerRun struct {
	err      error
	noWorker bool // the binary does not serve the worker (no hello)
	panicked bool
}

// isolated is one device's Run state across workers.
type isolated struct {
	c         *Client
	r         *runState
	staleSent bool
	base      Status // sessions and faults of the previous workers
}

// workerGroup is the devices whose sessions share one worker process: a
// device of its own with IsolationProcess, every device of one endpoint
// (URL and security settings, groupKey) with IsolationEndpoint. It starts
// the worker when its first device runs, adds and stops devices in it as
// they come and go, stops it when its last device stops, and restarts it
// with backoff when it dies.
type workerGroup struct {
	key     string        // "" for a group of one (IsolationProcess)
	silence time.Duration // workerSilence (shorter in tests)
	log     *slog.Logger
	bo      backoff.Backoff
	ctx     context.Context
	cancel  func()
	done    chan struct{} // closed when run returns

	mu       sync.Mutex // guards what follows; held while a device's frames are handed on
	members  map[uint32]*member
	next     uint32      // the next device slot
	conn     *workerConn // the current worker, nil between workers
	noWorker bool        // a test binary without the worker's entry point
}

// member is one device in its group.
type member struct {
	slot      uint32
	iso       *isolated
	seen      map[string]float64 // the worker's metric values last applied
	connected bool               // a session was up in the current worker
	up        bool               // its session is up, as the worker last said
	lastCycle time.Time          // its last cycle, or when its session came up after
	period    time.Duration      // the longest interval its cycles may be apart (cyclePeriod)
	revised   time.Duration      // the longest interval of its cycles in the current worker (as the server revised it)
	ownWatch  time.Duration      // its own watch of its subscription (ownWatch)
	fallback  chan struct{}      // closed when the sessions must run in process (test binaries only)
	// bo paces the restarts of this device alone (restart): reset when it
	// emits a Replied cycle, so an outage's restarts back off to
	// backoff_max (review17 F3: each came within a second)
	bo backoff.Backoff
	// attempts counts the device's Lost cycles in the current outage, and
	// probation says it was restarted as silent: both go to its next
	// instance (outageState)
	attempts  int
	probation bool
}

// groups holds the workerGroups of IsolationEndpoint by key.
var groups = struct {
	mu      sync.Mutex
	m       map[string]*workerGroup
	silence time.Duration // new groups' workerSilence
}{m: map[string]*workerGroup{}, silence: workerSilence}

// groupKey is what devices sharing an endpoint's worker have in common:
// the endpoint URL and every security setting of the session.
func groupKey(cfg *Config) string {
	return strings.Join([]string{cfg.Endpoint, cfg.SecurityPolicy, cfg.SecurityMode,
		cfg.Auth.Mode, cfg.Auth.Username, cfg.Auth.PasswordEnv, cfg.Auth.PasswordFile, cfg.Auth.CertFile, cfg.Auth.KeyFile,
		cfg.Certificate.CertFile, cfg.Certificate.KeyFile, cfg.DataDir, cfg.TrustDir, strconv.FormatBool(cfg.AcceptUntrusted)}, "\x00")
}

// join adds c to its group (a new one for IsolationProcess, or when its
// endpoint has none yet) and configures it in the group's worker if one
// runs.
func join(c *Client, emit func(*sample.Cycle)) (*workerGroup, *member) {
	key := ""
	if c.cfg.Isolation == IsolationEndpoint {
		key = groupKey(&c.cfg)
	}
	groups.mu.Lock()
	defer groups.mu.Unlock()
	g := groups.m[key]
	if key == "" || g == nil {
		g = &workerGroup{key: key, silence: groups.silence, log: c.log, bo: backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax},
			done: make(chan struct{}), members: map[uint32]*member{}}
		if key != "" {
			g.log = c.logBase.With("endpoint", c.cfg.Endpoint)
			groups.m[key] = g
		}
		g.ctx, g.cancel = context.WithCancel(context.Background())
		defer func() { go g.run() }()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m := &member{slot: g.next, iso: &isolated{c: c, r: newForwardState(c, emit)}, seen: map[string]float64{}, fallback: make(chan struct{}),
		bo:     backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax},
		period: cyclePeriod(c), ownWatch: ownWatch(c)}
	g.next++
	g.members[m.slot] = m
	switch {
	case g.noWorker:
		close(m.fallback)
	case g.conn != nil:
		g.configure(m, true)
	}
	return g, m
}

// leave removes m from g: its sessions stop in the worker, and the worker
// stops when m was the last device. Nothing of m's is emitted after leave.
func (g *workerGroup) leave(m *member) {
	groups.mu.Lock()
	g.mu.Lock()
	delete(g.members, m.slot)
	m.iso.c.wk.Store(nil)
	last := len(g.members) == 0
	if last && g.key != "" && groups.m[g.key] == g {
		delete(groups.m, g.key)
	}
	if !last && g.conn != nil {
		_ = g.conn.send(&wireMsg{Kind: msgStop, Dev: m.slot})
	}
	g.mu.Unlock()
	groups.mu.Unlock()
	if last {
		g.cancel()
		<-g.done
	}
}

// configure sends m's configuration to the current worker and routes m's
// commands to it; started counts a worker start for m (not when m is
// restarted alone in the worker it is in); g.mu is held.
func (g *workerGroup) configure(m *member, started bool) {
	c := m.iso.c
	c.m.state.Set(StateConnecting)
	m.up, m.lastCycle, m.revised = false, time.Time{}, 0
	pid := g.conn.pid
	c.setStatus(func(s *Status) {
		s.WorkerPID = pid
		if started {
			s.WorkerStarts++
		}
	})
	wc := &workerConfig{ID: c.id, Config: c.cfg, Points: c.points, WantUnits: c.onUnits != nil, Pins: rememberedPins(c.pinFile())}
	if m.iso.staleSent || m.probation {
		wc.Outage = &outageState{StaleSent: m.iso.staleSent, Probation: m.probation, Attempts: m.attempts}
	}
	if err := g.conn.send(&wireMsg{Kind: msgConfig, Dev: m.slot, Config: wc}); err != nil {
		// the worker would never run the device: it is ended (send
		// kills it when the frame could not be encoded, and a write fails
		// only when it is ending anyway) and forward learns it
		g.log.Error("opc ua session worker: send a device's configuration", "device", c.id, "err", err)
		return
	}
	c.wk.Store(&workerDev{conn: g.conn, slot: m.slot, c: c})
}

// runIsolated is Run with IsolationProcess or IsolationEndpoint: the
// device joins its worker group, which forwards what the worker reports
// and, when the worker ends on its own, emits a Lost cycle for each of its
// devices, counts and logs the death once and starts a new worker after
// backoff (backoff_min .. backoff_max of the group's first device, reset
// once a worker had a session up).
func (c *Client) runIsolated(ctx context.Context, emit func(*sample.Cycle)) error {
	g, m := join(c, emit)
	select {
	case <-ctx.Done():
		g.leave(m)
		return nil
	case <-m.fallback:
		g.leave(m)
		// only a test binary may lack the worker's entry point
		// (smelter-gateway and smelter-demo have it): its sessions run
		// in process rather than not at all.
		c.log.Warn("this test binary does not serve opc ua session workers (no TestMain hook); running the sessions in process")
		return c.runInProcess(ctx, emit)
	}
}

// run starts the group's worker and restarts it until the group's last
// device leaves.
func (g *workerGroup) run() {
	defer close(g.done)
	for {
		res := g.once()
		if stopped(g.ctx) {
			return
		}
		g.mu.Lock()
		if res.noWorker && testing.Testing() {
			g.noWorker = true
			for _, m := range g.members {
				close(m.fallback)
			}
			g.mu.Unlock()
			<-g.ctx.Done()
			return
		}
		connected := false
		for _, m := range g.members {
			connected = m.died(&res) || connected
		}
		g.mu.Unlock()
		if connected {
			g.bo.Reset()
		}
		wait := g.bo.Next()
		g.log.Warn("opc ua session worker ended; restarting it", "err", res.err, "retry_in", wait.Round(time.Millisecond))
		if !backoff.Sleep(g.ctx, wait) {
			return
		}
	}
}

// died reports the worker's death to m's device: a Lost cycle (every
// point Stale on the first loss of an outage), its status and metrics. It
// reports whether m had a session up in that worker.
func (m *member) died(res *workerRun) bool {
	c, iso := m.iso.c, m.iso
	c.m.state.Set(StateDisconnected)
	cause := "exit"
	if res.panicked {
		cause = "panic"
		c.m.panics.Inc()
	}
	c.m.m.workerExits.WithLabelValues(c.id, cause).Inc()
	c.setStatus(func(s *Status) {
		if s.Connected {
			s.Since = time.Now()
		}
		s.Connected, s.WorkerPID, s.Refused, s.Subscription = false, 0, 0, SubscriptionTiming{}
		s.WorkerExits++
		s.LastError = res.err.Error()
		iso.base.Sessions, iso.base.ServiceFaults = s.Sessions, s.ServiceFaults
	})
	iso.r.lost(res.err, !iso.staleSent)
	iso.staleSent = true
	m.attempts++
	c.m.reconnects.Inc()
	up := m.connected
	m.connected, m.up = false, false
	return up
}

// WorkerGOGC is the GOGC a session worker runs with when the gateway's
// environment sets none (one it sets, the worker inherits): a worker's
// live heap is a few MB, and the default headroom (GOGC=100) was a sixth
// of its private memory. Measured with 1,000 nodes changing every 100 ms
// per worker: 8.8 MB private per worker with 100, 7.3 MB with 50
// (docs/benchmarks.md, "Gateway memory").
const WorkerGOGC = "50"

// workerEnv is a worker's environment: the gateway's, WorkerEnv, and GOGC
// (WorkerGOGC) unless the gateway's sets it.
func workerEnv(environ []string) []string {
	env := append(environ[:len(environ):len(environ)], WorkerEnv+"=1")
	if !slices.ContainsFunc(environ, func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") }) {
		env = append(env, "GOGC="+WorkerGOGC)
	}
	return env
}

// once runs one worker until it ends or the group does.
func (g *workerGroup) once() workerRun {
	ctx := g.ctx
	exe, args, err := workerCommand()
	if err != nil {
		return workerRun{err: fmt.Errorf("%w: %w", ErrWorkerExited, err)}
	}
	// Not CommandContext: ctx's end must close the worker's stdin (a
	// clean stop) and kill it only after workerStopGrace, also while
	// its stdout is still being read, which the stopper below does.
	cmd := exec.Command(exe, args...) //nolint:noctx // see above
	cmd.Env = workerEnv(os.Environ())
	// its own process group: a terminal's Ctrl-C reaches the gateway,
	// which stops its workers by closing their stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err1 := cmd.StdinPipe()
	stdout, err2 := cmd.StdoutPipe()
	stderr, err3 := cmd.StderrPipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		return workerRun{err: fmt.Errorf("%w: pipes: %w", ErrWorkerExited, err)}
	}
	if err := cmd.Start(); err != nil {
		return workerRun{err: fmt.Errorf("%w: start %s: %w", ErrWorkerExited, exe, err)}
	}
	pid := cmd.Process.Pid
	log := g.log.With("worker_pid", pid)
	log.Debug("opc ua session worker started", "exe", exe)
	conn := newWorkerConn(log, pid, stdin)
	conn.kill = func() { _ = cmd.Process.Kill() }
	g.mu.Lock()
	g.conn = conn
	for _, m := range g.members {
		g.configure(m, true)
	}
	g.mu.Unlock()

	// stderr: slog JSON lines re-emitted through their device's logger;
	// anything else (a panic's text) kept for the death report.
	st := &stderrTail{}
	var logs sync.WaitGroup
	logs.Add(1)
	go func() {
		defer logs.Done()
		st.consume(ctx, stderr, func(dev string) *slog.Logger {
			g.mu.Lock()
			defer g.mu.Unlock()
			for _, m := range g.members {
				if m.iso.c.id == dev {
					return m.iso.c.log.With("worker_pid", pid)
				}
			}
			return log
		})
	}()

	// ctx's end: close stdin (the worker's signal to stop), kill it if it
	// does not stop within workerStopGrace.
	done := make(chan struct{})
	var stopper sync.WaitGroup
	stopper.Add(1)
	go func() {
		defer stopper.Done()
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		_ = stdin.Close()
		t := time.NewTimer(workerStopGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			_ = cmd.Process.Kill()
		}
	}()

	// a worker silent for g.silence while it is read (no frame, not even
	// its heartbeat) is wedged: killed, it dies as any other.
	// So is one that goes on sending but has a device with its session up
	// and no cycle for a long while (silentDevice).
	var reading readClock
	stopper.Add(1)
	go func() {
		defer stopper.Done()
		watchSilence(done, &reading, g.silence, func() error {
			if q := reading.quiet(); q > g.silence {
				return fmt.Errorf("%w: no frame for %v", errWorkerSilent, q.Round(time.Millisecond))
			}
			if reading.quiet() == 0 {
				return nil // handing a frame on: the gateway is the slow one
			}
			return g.silentDevice(time.Now())
		}, conn.abort)
	}()

	res := workerRun{}
	res.err = g.forward(bufio.NewReaderSize(stdout, 64<<10), &res, conn, &reading)
	if cause := conn.aborted(); cause != nil {
		res.err = cause
	}
	// no new command reaches this worker; those in flight learn its fate
	// below, once it is known
	g.mu.Lock()
	g.conn = nil
	for _, m := range g.members {
		if w := m.iso.c.wk.Load(); w != nil && w.conn == conn {
			m.iso.c.wk.CompareAndSwap(w, nil)
		}
	}
	g.mu.Unlock()
	if res.err != nil && !errors.Is(res.err, io.EOF) {
		// a protocol error: the worker cannot be trusted to go on
		_ = cmd.Process.Kill()
	} else {
		res.err = nil
	}
	_, _ = io.Copy(io.Discard, stdout)
	logs.Wait()
	werr := cmd.Wait()
	close(done)
	stopper.Wait()
	_ = stdin.Close()

	panicLine, stack := st.report()
	if werr == nil {
		werr = errExitedZero
	}
	switch {
	case res.noWorker:
		res.err = fmt.Errorf("%w: %w (%w; does %s serve %q?)", ErrWorkerExited, errNoHello, werr, exe, WorkerCommand)
	case panicLine != "":
		res.panicked = true
		res.err = fmt.Errorf("%w: %w: %s", ErrWorkerExited, ErrPanic, panicLine)
	case res.err != nil:
		res.err = fmt.Errorf("%w: %w (%w)", ErrWorkerExited, res.err, werr)
	case exitCode(werr) == 1 && st.lastErr() != "":
		// the worker said why it stopped (a frame it could not send)
		res.err = fmt.Errorf("%w: %w (its last error: %s)", ErrWorkerExited, werr, st.lastErr())
	default:
		res.err = fmt.Errorf("%w: %w", ErrWorkerExited, werr)
	}
	conn.fail(res.err)
	if !stopped(ctx) && (!res.noWorker || !testing.Testing()) {
		log.Error("opc ua session worker died", "err", res.err, "devices", g.deviceIDs(), "stack", stack)
	}
	return res
}

// exitCode is the exit status of a process that exited (-1 otherwise:
// killed by a signal, not started).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// deviceIDs lists the group's devices.
func (g *workerGroup) deviceIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := make([]string, 0, len(g.members))
	for _, m := range g.members {
		ids = append(ids, m.iso.c.id)
	}
	slices.Sort(ids)
	return ids
}

// forward reads the worker's frames until its stdout ends (io.EOF) or a
// frame is bad, handing each device's cycles, units, status and metrics
// on; a frame of a device that left is dropped.
func (g *workerGroup) forward(rd io.Reader, res *workerRun, conn *workerConn, reading *readClock) error {
	fr := &frameReader{r: rd}
	var msg wireMsg
	reading.start()
	if err := fr.read(&msg); err != nil || msg.Kind != msgHello {
		res.noWorker = true
		return errors.Join(errNoHello, err)
	}
	for {
		reading.start()
		err := fr.read(&msg)
		reading.stop()
		if err != nil {
			return err
		}
		if msg.Kind == msgPing {
			continue
		}
		if msg.Kind == msgResp {
			if msg.Resp != nil {
				conn.deliver(msg.Resp)
			}
			continue
		}
		g.mu.Lock()
		if m := g.members[msg.Dev]; m != nil {
			err = m.handle(&msg)
		}
		g.mu.Unlock()
		if err != nil {
			return err
		}
		// after ctx ends, reading goes on: the worker stops on its closed
		// stdin and ends its stdout.
	}
}

// handle hands one frame of m's device on; g.mu is held.
func (m *member) handle(msg *wireMsg) error {
	iso := m.iso
	c := iso.c
	switch msg.Kind {
	case msgCycle:
		if msg.Cycle == nil {
			return errors.New("opcua: worker cycle frame without a cycle")
		}
		m.lastCycle = time.Now()
		cyc := msg.Cycle.cycle()
		m.revised = max(m.revised, cyc.Interval)
		for _, s := range cyc.Samples {
			if s.Index >= len(c.points) {
				return fmt.Errorf("opcua: worker cycle frame: sample of point %d, device %s has %d", s.Index, c.id, len(c.points))
			}
		}
		if cyc.Lost {
			if len(cyc.Samples) > 0 {
				iso.staleSent = true
			}
			m.attempts++
			iso.r.lostForwarded(cyc)
			return nil
		}
		if cyc.Replied {
			// the outage is over (a cycle held on probation is not sent)
			m.bo.Reset()
			m.attempts, m.probation = 0, false
		}
		iso.staleSent = false
		iso.r.emit(cyc)
	case msgUnits:
		us := make([]NodeUnit, len(msg.Units))
		for i := range msg.Units {
			us[i] = msg.Units[i].unit()
		}
		iso.r.mu.Lock()
		changed := !sameUnits(iso.r.units, us)
		if changed {
			iso.r.units = us
		}
		iso.r.mu.Unlock()
		if changed && c.onUnits != nil {
			c.onUnits(us)
		}
	case msgStatus:
		if msg.Status == nil {
			return nil
		}
		ws := *msg.Status
		if ws.Connected {
			m.connected = true
			if !m.up {
				m.lastCycle = time.Now() // the device's silence counts from here
			}
		}
		m.up = ws.Connected
		c.setStatus(func(s *Status) {
			ws.Sessions += iso.base.Sessions
			ws.ServiceFaults += iso.base.ServiceFaults
			ws.WorkerPID, ws.WorkerStarts, ws.WorkerExits = s.WorkerPID, s.WorkerStarts, s.WorkerExits
			*s = ws
		})
	case msgMetrics:
		if msg.Metrics != nil {
			c.m.apply(msg.Metrics, m.seen)
		}
	case msgPins:
		if msg.Pins != nil {
			rememberPins(c.pinFile(), msg.Pins)
		}
	}
	return nil
}

// lostForwarded emits a Lost cycle the worker reported, keeping the
// parent's record of what was last reported per point.
func (r *runState) lostForwarded(cyc *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.lastAt)
	r.emitFn(cyc)
}

// apply adds the worker's counter increments since its last frame (seen
// holds the worker's previous values) and sets its gauges.
func (d *devMetrics) apply(wm *wireMetrics, seen map[string]float64) {
	for _, v := range wm.Latency {
		d.publishLatency.Observe(float64(v))
	}
	for _, mv := range wm.Values {
		labels := prometheus.Labels{"device": d.id}
		keys := make([]string, 0, len(mv.Labels))
		for k, v := range mv.Labels {
			labels[k] = v
			keys = append(keys, k+"="+v)
		}
		slices.Sort(keys)
		if mv.Gauge {
			if g := d.m.gaugeVec(mv.Name); g != nil {
				if x, err := g.GetMetricWith(labels); err == nil {
					x.Set(float64(mv.Value))
				}
			}
			continue
		}
		key := mv.Name + "{" + strings.Join(keys, ",") + "}"
		delta := float64(mv.Value) - seen[key]
		seen[key] = float64(mv.Value)
		if delta <= 0 {
			continue
		}
		if cv := d.m.counterVec(mv.Name); cv != nil {
			if x, err := cv.GetMetricWith(labels); err == nil {
				x.Add(delta)
			}
		}
	}
}

// workerSilence is how long a worker may send nothing (not even its
// heartbeat, sent every workerHeartbeat) while the parent waits for its
// next frame: then it is killed and restarted like a dead one, and its
// devices get their Lost cycle (docs/opcua.md, "Session isolation").
// Time the parent spends handing frames on (a slow uplink) does not count.
const workerSilence = 10 * workerHeartbeat

// errWorkerSilent is the cause of a worker killed for silence.
var errWorkerSilent = errors.New("opcua: session worker silent")

// readClock is when forward started waiting for the worker's next frame
// (Unix ns; 0 while it hands a frame on).
type readClock struct{ since atomic.Int64 }

func (r *readClock) start() { r.since.Store(time.Now().UnixNano()) }
func (r *readClock) stop()  { r.since.Store(0) }

// quiet is how long forward has been waiting for a frame (0: not waiting).
func (r *readClock) quiet() time.Duration {
	s := r.since.Load()
	if s == 0 {
		return 0
	}
	return time.Since(time.Unix(0, s))
}

// watchSilence calls check every limit/4 until done closes or check
// returns an error, which it hands to abort.
func watchSilence(done <-chan struct{}, r *readClock, limit time.Duration, check func() error, abort func(error)) {
	t := time.NewTicker(limit / 4)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if err := check(); err != nil {
			abort(err)
			return
		}
	}
}

// deviceSilenceMultiple is k of DOMAIN.md: a device whose session is up in
// its worker but that has emitted no cycle for k x its cycle period (at
// least the group's silence limit) is wedged inside the worker.
const deviceSilenceMultiple = 3

// errDeviceSilent is the cause of a worker killed for a silent device.
var errDeviceSilent = errors.New("opcua: device silent in its session worker")

// cyclePeriod is the longest a device's cycles may be apart while its
// session is up: its slowest poll and a read's timeout, or a
// subscription's keep-alive period and one publishing interval (a
// keep-alive is a cycle, docs/opcua.md "Quality rules").
func cyclePeriod(c *Client) time.Duration {
	var p time.Duration
	for _, pt := range c.points {
		if pt.NodeID == "" {
			continue // a method only: never read
		}
		if pt.Mode == ModePoll {
			p = max(p, pt.PollInterval+c.cfg.RequestTimeout)
		} else {
			p = max(p, c.cfg.KeepAlive+c.cfg.PublishInterval)
		}
	}
	return p
}

// ownWatch is how long a device's own watch of its subscription may take
// to end a session whose server stopped answering Publish (one publish
// timeout, its backstop, and a request's timeout for the Lost cycle to
// follow): the worker's watch of the device waits at least that long, so
// that the device reports its own, more precise cause (ErrPublishSilent).
// 0 for a device without subscribed points.
func ownWatch(c *Client) time.Duration {
	for _, pt := range c.points {
		if pt.NodeID != "" && pt.Mode != ModePoll {
			return c.timing.publish + time.Second + c.cfg.RequestTimeout
		}
	}
	return 0
}

// silentDevice finds the devices of g whose session is up in the current
// worker but that have emitted no cycle for deviceSilenceMultiple x their
// cycle period, nor for g.silence, nor for their own watch (ownWatch):
// their sessions are wedged. A device's failure stays that device's
// (review15 F4): each such device is restarted alone in the worker
// (restart), its siblings untouched. Only when every device with a session
// up is silent is the worker itself taken as wedged: the error returned
// then has it killed and restarted, its devices declared dead meanwhile.
func (g *workerGroup) silentDevice(now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn == nil {
		return nil // the worker is ending
	}
	var silent []*member
	var causes []error
	up := 0
	for _, m := range g.members {
		if !m.up || m.lastCycle.IsZero() || m.period == 0 {
			continue
		}
		up++
		limit := max(deviceSilenceMultiple*max(m.period, m.revised), g.silence, m.ownWatch)
		if q := now.Sub(m.lastCycle); q > limit {
			silent = append(silent, m)
			causes = append(causes, fmt.Errorf("%w: device %s, session up, no cycle for %v (limit %v)", errDeviceSilent, m.iso.c.id, q.Round(time.Millisecond), limit))
		}
	}
	if len(silent) == 0 {
		return nil
	}
	if len(silent) == up {
		return causes[0]
	}
	for i, m := range silent {
		g.restart(m, causes[i])
	}
	return nil
}

// restart ends m's device in the current worker and starts it again there
// under a new slot (frames of the old one, should its wedged goroutines
// ever send one, are dropped as those of a device that left): a Lost
// cycle with cause (every point Stale on the first loss of an outage),
// its status and metrics as after a worker's death. g.mu is held.
func (g *workerGroup) restart(m *member, cause error) {
	c, iso := m.iso.c, m.iso
	// started again after backoff, not at once: a device silent again
	// and again is restarted at most every backoff_max
	wait := m.bo.Next()
	g.log.Error("opc ua device silent in its session worker; restarting that device alone", "device", c.id, "err", cause, "retry_in", wait.Round(time.Millisecond))
	_ = g.conn.send(&wireMsg{Kind: msgStop, Dev: m.slot})
	delete(g.members, m.slot)
	m.slot = g.next
	g.next++
	g.members[m.slot] = m
	m.seen = map[string]float64{} // the new instance's counters start at 0
	c.m.state.Set(StateDisconnected)
	c.setStatus(func(s *Status) {
		if s.Connected {
			s.Since = time.Now()
		}
		s.Connected, s.Refused, s.Subscription = false, 0, SubscriptionTiming{}
		s.LastError = cause.Error()
		iso.base.Sessions, iso.base.ServiceFaults = s.Sessions, s.ServiceFaults
	})
	iso.r.lost(cause, !iso.staleSent)
	iso.staleSent = true
	c.m.reconnects.Inc()
	m.connected, m.up = false, false
	m.attempts++
	m.probation = true
	c.wk.Store(nil) // no command reaches it until it runs again
	conn, slot := g.conn, m.slot
	time.AfterFunc(wait, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.conn == conn && g.members[slot] == m && !stopped(g.ctx) {
			g.configure(m, false)
		}
	})
}

// workerConn is the parent's end of one worker's command channel: frames
// on the worker's stdin (configurations, stops, requests), answers matched
// by id as forward reads them from its stdout.
type workerConn struct {
	log *slog.Logger
	pid int

	mu      sync.Mutex // serialises frames on stdin; guards what follows
	w       io.Writer
	next    uint64
	pending map[uint64]chan *wireResp
	dead    chan struct{} // closed by fail
	err     error         // why the worker ended
	kill    func()        // kills the worker process (nil in tests without one)
	cause   error         // why the parent killed it (abort)
}

// abort kills the worker for cause, logged at ERROR: a frame the parent
// could not encode, or a worker gone silent. The first cause is the one
// its devices' Lost cycles report.
func (w *workerConn) abort(cause error) {
	w.mu.Lock()
	first := w.cause == nil
	if first {
		w.cause = cause
	}
	w.mu.Unlock()
	if !first {
		return
	}
	w.log.Error("opc ua session worker: killing it", "err", cause)
	if w.kill != nil {
		w.kill()
	}
}

func (w *workerConn) aborted() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cause
}

func newWorkerConn(log *slog.Logger, pid int, w io.Writer) *workerConn {
	return &workerConn{log: log, pid: pid, w: w, pending: map[uint64]chan *wireResp{}, dead: make(chan struct{})}
}

// workerDev is where a device's commands go: its slot in a worker.
type workerDev struct {
	conn *workerConn
	slot uint32
	c    *Client
}

// send writes one frame on the worker's stdin. A frame that cannot be
// encoded kills the worker (abort): it would otherwise wait for it.
func (w *workerConn) send(m *wireMsg) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		w.abort(err)
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.w.Write(b)
	return err
}

// call sends req for the device and waits for its answer, for ctx's end
// or for the worker's end. The request carries what is left of ctx's
// deadline (the device's request_timeout when ctx has none), so the
// worker gives up when the caller does. sent reports whether the request
// was handed to the worker (a write may then have happened even when err
// is set).
func (d *workerDev) call(ctx context.Context, req *wireReq) (resp *wireResp, sent bool, err error) {
	w := d.conn
	req.Timeout = d.c.cfg.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		req.Timeout = time.Until(dl)
	}
	if req.Timeout <= 0 {
		return nil, false, fmt.Errorf("no time left: %w", context.DeadlineExceeded)
	}
	ch := make(chan *wireResp, 1)
	w.mu.Lock()
	select {
	case <-w.dead:
		w.mu.Unlock()
		return nil, false, fmt.Errorf("%w: %w", ErrNoSession, w.err)
	default:
	}
	w.next++
	req.ID = w.next
	w.pending[req.ID] = ch
	b, err := appendFrame(nil, &wireMsg{Kind: msgReq, Dev: d.slot, Req: req})
	if err != nil {
		// a request that cannot be encoded fails alone (its caller learns
		// it); the worker and its sessions go on
		delete(w.pending, req.ID)
		w.mu.Unlock()
		w.log.Error("opc ua session worker: encode a request", "device", d.c.id, "err", err)
		return nil, false, fmt.Errorf("%w: encode for the session worker: %w", ErrNoSession, err)
	}
	_, err = w.w.Write(b)
	if err != nil {
		// a frame the worker did not get whole is never executed
		delete(w.pending, req.ID)
		w.mu.Unlock()
		return nil, false, fmt.Errorf("%w: send to the session worker: %w", ErrNoSession, err)
	}
	w.mu.Unlock()
	select {
	case resp := <-ch:
		return resp, true, nil
	case <-w.dead:
		select {
		case resp := <-ch: // answered just before it ended
			return resp, true, nil
		default:
		}
		return nil, true, w.err
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.pending, req.ID)
		w.mu.Unlock()
		return nil, true, fmt.Errorf("no answer from the session worker (pid %d) in time: %w", w.pid, ctx.Err())
	}
}

// deliver hands an answer to its caller; one nobody waits for any more
// (the caller's time ran out) is dropped.
func (w *workerConn) deliver(r *wireResp) {
	w.mu.Lock()
	ch, ok := w.pending[r.ID]
	delete(w.pending, r.ID)
	w.mu.Unlock()
	if !ok {
		w.log.Debug("late answer from the opc ua session worker dropped", "id", r.ID)
		return
	}
	ch <- r
}

// fail records why the worker ended and wakes every caller still waiting.
func (w *workerConn) fail(err error) {
	if err == nil {
		err = ErrWorkerExited
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.dead:
		return
	default:
	}
	w.err = err
	close(w.dead)
}

// stderrTail consumes a worker's stderr.
type stderrTail struct {
	mu        sync.Mutex
	tail      []string
	panicLine string
	stack     []string
	lastError string // the last ERROR line of the worker's log: message and err
}

// consume reads a worker's stderr: each slog JSON line is re-emitted
// through the logger pick returns for its device attribute.
func (t *stderrTail) consume(ctx context.Context, r io.Reader, pick func(device string) *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if e, ok := relog(ctx, pick, line); ok {
			if e != "" {
				t.mu.Lock()
				t.lastError = e
				t.mu.Unlock()
			}
			continue
		}
		t.mu.Lock()
		switch {
		case t.panicLine == "" && (strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ")):
			t.panicLine = line
		case t.panicLine != "" && len(t.stack) < stackLines:
			t.stack = append(t.stack, line)
		}
		t.tail = append(t.tail, line)
		if len(t.tail) > tailLines {
			t.tail = t.tail[1:]
		}
		t.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// report returns the panic's first line and the stack excerpt after it,
// or "" and the last lines the worker wrote outside its log.
func (t *stderrTail) report() (string, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.panicLine != "" {
		return t.panicLine, strings.Join(t.stack, "\n")
	}
	return "", strings.Join(t.tail, "\n")
}

// lastErr is the last ERROR line the worker logged, "" if none.
func (t *stderrTail) lastErr() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastError
}

// relog re-emits one slog JSON line of the worker through the logger pick
// returns for the line's device, with its level, message and attributes
// (the worker's time and device dropped: that logger has its own). It
// reports false for a line that is not such JSON, and returns the line's
// message and err attribute when it is an ERROR.
func relog(ctx context.Context, pick func(device string) *slog.Logger, line string) (string, bool) {
	if !strings.HasPrefix(line, "{") {
		return "", false
	}
	var rec map[string]any
	if json.Unmarshal([]byte(line), &rec) != nil {
		return "", false
	}
	msg, _ := rec["msg"].(string)
	lvlText, _ := rec["level"].(string)
	var lvl slog.Level
	if lvl.UnmarshalText([]byte(lvlText)) != nil {
		lvl = slog.LevelInfo
	}
	keys := make([]string, 0, len(rec))
	for k := range rec {
		switch k {
		case "time", "level", "msg", "device":
		default:
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, rec[k])
	}
	dev, _ := rec["device"].(string)
	pick(dev).Log(ctx, lvl, msg, args...)
	if lvl < slog.LevelError {
		return "", true
	}
	if e, ok := rec["err"]; ok {
		return fmt.Sprintf("%s: %v", msg, e), true
	}
	return msg, true
}

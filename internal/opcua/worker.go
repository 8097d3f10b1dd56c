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
	"strings"
	"sync"
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
	// costs that device a reconnect, never the gateway. The default.
	IsolationProcess = "process"
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
	err       error
	connected bool // a session was up at some point
	noWorker  bool // the binary does not serve the worker (no hello)
	panicked  bool
}

// isolated is Run's state across workers.
type isolated struct {
	c         *Client
	r         *runState
	staleSent bool
	base      Status // sessions and faults of the previous workers
}

// runIsolated is Run with IsolationProcess: it starts the device's worker,
// forwards what the worker reports and, when the worker ends on its own,
// emits a Lost cycle, counts and logs the death once and starts a new
// worker after backoff (backoff_min .. backoff_max, reset once a worker
// had a session up).
func (c *Client) runIsolated(ctx context.Context, emit func(*sample.Cycle)) error {
	iso := &isolated{c: c, r: newRunState(c, emit)}
	bo := backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax}
	for {
		res := iso.once(ctx)
		if stopped(ctx) {
			return nil
		}
		if res.noWorker && testing.Testing() {
			// only a test binary may lack the worker's entry point
			// (smelter-gateway and smelter-demo have it): its sessions run
			// in process rather than not at all.
			c.log.Warn("this test binary does not serve opc ua session workers (no TestMain hook); running the sessions in process", "err", res.err)
			return c.runInProcess(ctx, emit)
		}
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
		c.m.reconnects.Inc()
		if res.connected {
			bo.Reset()
		}
		wait := bo.Next()
		c.log.Warn("opc ua session worker ended; restarting it", "err", res.err, "retry_in", wait.Round(time.Millisecond))
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
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

// once runs one worker until it ends or ctx does.
func (iso *isolated) once(ctx context.Context) workerRun {
	c := iso.c
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
	c.m.state.Set(StateConnecting)
	if err := cmd.Start(); err != nil {
		return workerRun{err: fmt.Errorf("%w: start %s: %w", ErrWorkerExited, exe, err)}
	}
	pid := cmd.Process.Pid
	c.setStatus(func(s *Status) { s.WorkerPID = pid; s.WorkerStarts++ })
	log := c.log.With("worker_pid", pid)
	log.Debug("opc ua session worker started", "exe", exe)

	// stderr: slog JSON lines re-emitted through the device's logger;
	// anything else (a panic's text) kept for the death report.
	st := &stderrTail{}
	var logs sync.WaitGroup
	logs.Add(1)
	go func() {
		defer logs.Done()
		st.consume(ctx, stderr, log)
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

	res := workerRun{}
	wc := &workerConfig{ID: c.id, Config: c.cfg, Points: c.points, WantUnits: c.onUnits != nil}
	conn := newWorkerConn(c, pid, stdin)
	if err := conn.send(&wireMsg{Kind: msgConfig, Config: wc}); err != nil {
		res.err = fmt.Errorf("send the configuration: %w", err)
	} else {
		res.err = iso.forward(bufio.NewReaderSize(stdout, 64<<10), &res, conn)
	}
	// no new command reaches this worker; those in flight learn its fate
	// below, once it is known
	c.wk.CompareAndSwap(conn, nil)
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
	default:
		res.err = fmt.Errorf("%w: %w", ErrWorkerExited, werr)
	}
	conn.fail(res.err)
	if !stopped(ctx) && (!res.noWorker || !testing.Testing()) {
		log.Error("opc ua session worker died", "err", res.err, "stack", stack)
	}
	return res
}

// forward reads the worker's frames until its stdout ends (io.EOF) or a
// frame is bad, handing cycles and units on; calls never overlap.
func (iso *isolated) forward(rd io.Reader, res *workerRun, conn *workerConn) error {
	c := iso.c
	fr := &frameReader{r: rd}
	var m wireMsg
	if err := fr.read(&m); err != nil || m.Kind != msgHello {
		res.noWorker = true
		return errors.Join(errNoHello, err)
	}
	c.wk.Store(conn) // commands go to this worker from now on
	seen := map[string]float64{}
	for {
		if err := fr.read(&m); err != nil {
			return err
		}
		switch m.Kind {
		case msgCycle:
			if m.Cycle == nil {
				return errors.New("opcua: worker cycle frame without a cycle")
			}
			cyc := m.Cycle.cycle()
			for _, s := range cyc.Samples {
				if s.Index >= len(c.points) {
					return fmt.Errorf("opcua: worker cycle frame: sample of point %d, the device has %d", s.Index, len(c.points))
				}
			}
			if cyc.Lost {
				if len(cyc.Samples) > 0 {
					iso.staleSent = true
				}
				iso.r.lostForwarded(cyc)
				continue
			}
			iso.staleSent = false
			iso.r.emit(cyc)
		case msgUnits:
			us := make([]NodeUnit, len(m.Units))
			for i, w := range m.Units {
				us[i] = w.NodeUnit
				us[i].Err = w.Err.decode()
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
			if m.Status == nil {
				continue
			}
			ws := *m.Status
			if ws.Connected {
				res.connected = true
			}
			c.setStatus(func(s *Status) {
				ws.Sessions += iso.base.Sessions
				ws.ServiceFaults += iso.base.ServiceFaults
				ws.WorkerPID, ws.WorkerStarts, ws.WorkerExits = s.WorkerPID, s.WorkerStarts, s.WorkerExits
				*s = ws
			})
		case msgMetrics:
			if m.Metrics != nil {
				c.m.apply(m.Metrics, seen)
			}
		case msgResp:
			if m.Resp != nil {
				conn.deliver(m.Resp)
			}
		}
		// after ctx ends, reading goes on: the worker stops on its closed
		// stdin and ends its stdout.
	}
}

// lostForwarded emits a Lost cycle the worker reported, keeping the
// parent's record of what was last reported per point.
func (r *runState) lostForwarded(cyc *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.lastAt {
		r.lastAt[i] = time.Time{}
	}
	r.emitFn(cyc)
}

// apply adds the worker's counter increments since its last frame (seen
// holds the worker's previous values) and sets its gauges.
func (d *devMetrics) apply(wm *wireMetrics, seen map[string]float64) {
	for _, v := range wm.Latency {
		d.publishLatency.Observe(v)
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
					x.Set(mv.Value)
				}
			}
			continue
		}
		key := mv.Name + "{" + strings.Join(keys, ",") + "}"
		delta := mv.Value - seen[key]
		seen[key] = mv.Value
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

// workerConn is the parent's end of one worker's command channel: request
// frames on the worker's stdin, answers matched by id as forward reads
// them from its stdout.
type workerConn struct {
	c   *Client
	pid int

	mu      sync.Mutex // serialises frames on stdin; guards what follows
	w       io.Writer
	next    uint64
	pending map[uint64]chan *wireResp
	dead    chan struct{} // closed by fail
	err     error         // why the worker ended
}

func newWorkerConn(c *Client, pid int, w io.Writer) *workerConn {
	return &workerConn{c: c, pid: pid, w: w, pending: map[uint64]chan *wireResp{}, dead: make(chan struct{})}
}

// send writes one frame on the worker's stdin.
func (w *workerConn) send(m *wireMsg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return writeFrame(w.w, m)
}

// call sends req and waits for its answer, for ctx's end or for the
// worker's end. The request carries what is left of ctx's deadline
// (request_timeout when ctx has none), so the worker gives up when the
// caller does. sent reports whether the request was handed to the worker
// (a write may then have happened even when err is set).
func (w *workerConn) call(ctx context.Context, req *wireReq) (resp *wireResp, sent bool, err error) {
	req.Timeout = w.c.cfg.RequestTimeout
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
	err = writeFrame(w.w, &wireMsg{Kind: msgReq, Req: req})
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
		w.c.log.Debug("late answer from the opc ua session worker dropped", "id", r.ID)
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
}

func (t *stderrTail) consume(ctx context.Context, r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if relog(ctx, log, line) {
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

// relog re-emits one slog JSON line of the worker through log, with its
// level, message and attributes (the worker's time and device dropped:
// log has its own). It reports false for a line that is not such JSON.
func relog(ctx context.Context, log *slog.Logger, line string) bool {
	if !strings.HasPrefix(line, "{") {
		return false
	}
	var rec map[string]any
	if json.Unmarshal([]byte(line), &rec) != nil {
		return false
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
	log.Log(ctx, lvl, msg, args...)
	return true
}

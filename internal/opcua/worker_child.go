package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/memlimit"
	"github.com/smelterio/smelter/internal/sample"
)

// WorkerCommand is the hidden subcommand of a binary that hosts OPC UA
// session workers (smelter-gateway opcua-worker); WorkerEnv is set to "1"
// in every worker's environment, which is how a test binary's TestMain
// recognises that it was started as a worker (docs/opcua.md, "Session
// isolation").
const (
	WorkerCommand = "opcua-worker"
	WorkerEnv     = "SMELTER_OPCUA_WORKER"
)

// WorkerProfileEnv, set in the gateway's environment (its workers inherit
// it), is a path prefix under which each session worker writes profiles of
// itself: <prefix>.<pid>.cpu.pb, a CPU profile of its whole life, and
// <prefix>.<pid>.heap.pb, its heap profile (as of its last garbage
// collection under load) when it is asked to stop. For benchmarks and
// diagnosis (docs/opcua.md, "Profiling the workers"); unset, nothing is
// written.
const WorkerProfileEnv = "SMELTER_OPCUA_WORKER_PROFILE"

// workerFlush is how often the worker sends its status and metrics when
// they changed.
const workerFlush = 250 * time.Millisecond

// workerHeartbeat is the longest a worker stays quiet on stdout: with
// nothing else to send it sends a "ping" frame (the parent's watchdog,
// workerSilence).
const workerHeartbeat = time.Second

// ppidPoll is how often the worker checks that its parent is still alive
// (besides noticing its stdin close).
const ppidPoll = 500 * time.Millisecond

// WorkerMain is the session worker's entry point: it reads devices'
// configurations from stdin (one "config" frame per device, the first
// before anything else; a worker hosts one device with isolation process,
// every device of one endpoint with isolation endpoint), runs each
// device's Client in this process and writes their cycles, units, status
// and metrics to stdout as frames tagged with the device's slot; its logs
// go to stderr as slog JSON lines. It returns when stdin closes, when the
// parent process is gone, or when ctx ends, with the process exit code: 0
// after a clean stop, 2 for a bad start (no or bad configuration), 1 when
// stdout is gone.
//
// A panic in gopcua's own goroutines ends this process, not the gateway:
// the parent reports it as a Lost cycle of every device the worker hosted
// and restarts the worker.
//
// WorkerMain is a process's main: once configured it ignores SIGINT and SIGTERM (a
// service manager signalling the whole group, a terminal's Ctrl-C), so
// that the gateway decides when its workers stop. It samples allocations
// for a heap profile only when WorkerProfileEnv asks for one (or GODEBUG
// sets memprofilerate): nothing else reads a worker's profile
// (memlimit.ProfileHeap).
func WorkerMain(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) int {
	memlimit.ProfileHeap(os.Getenv(WorkerProfileEnv) != "")
	return workerMain(ctx, stdin, stdout, stderr, func() { signal.Ignore(os.Interrupt, syscall.SIGTERM) })
}

// workerMain is WorkerMain; configured runs once the first configuration
// is read.
func workerMain(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, configured func()) int {
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: durationText}))
	var m wireMsg
	if err := readFrame(stdin, &m); err != nil || m.Kind != msgConfig || m.Config == nil {
		fmt.Fprintf(stderr, "opcua worker: no configuration on stdin (kind %q, err %v); this command is started by the gateway\n", m.Kind, err)
		return 2
	}
	configured()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prof := startProfiles(os.Getenv(WorkerProfileEnv), log)
	out := &frameWriter{w: stdout, status: map[uint32]*Status{}}
	h := &workerHost{ctx: ctx, cancel: cancel, out: out, log: log, devs: map[uint32]*hostedDevice{}}
	first, err := h.newDevice(m.Dev, m.Config)
	if err != nil {
		fmt.Fprintf(stderr, "opcua worker: %v\n", err)
		return 2
	}
	if err := out.send(&wireMsg{Kind: msgHello, PID: os.Getpid()}); err != nil {
		log.Error("opc ua worker: cannot write to the gateway; stopping", "err", err)
		return 1
	}
	h.start(first)

	var wg sync.WaitGroup
	// stdin: devices to add and stop, command requests, each served on a
	// goroutine of its own and answered with its id; stdin's end (EOF or
	// error) is the parent's request to stop, or the parent's death (the
	// kernel closes its end of the pipe). Not waited for once ctx ends
	// otherwise (a frame the worker could not send, the parent gone): the
	// read may block until the parent closes stdin, which it does only when
	// the worker ends (docs/opcua.md, "Session isolation").
	go func() {
		defer cancel()
		h.serve(stdin)
	}()
	// the parent's pid: a second line of defence should stdin stay open
	// (an inherited descriptor), so that no worker outlives its gateway.
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchParent(ctx, cancel, os.Getppid(), ppidPoll)
	}()
	// status and metrics, sent when changed.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(workerFlush)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, d := range h.devices() {
				if err := d.flush(); err != nil {
					h.fail(err)
				}
			}
			if err := out.heartbeat(workerHeartbeat); err != nil {
				h.fail(err)
			}
		}
	}()
	<-ctx.Done()
	// the heap as of the last collection, still under load
	prof.stop()
	wg.Wait()
	h.runs.Wait()
	if !out.failed() {
		for _, d := range h.devices() {
			if wm := gatherMetrics(d.reg, d.lat); wm != nil {
				_ = out.send(&wireMsg{Kind: msgMetrics, Dev: d.slot, Metrics: wm})
			}
		}
	}
	if h.failed.Load() || out.failed() {
		return 1
	}
	return 0
}

// profiles is a worker's profiling (WorkerProfileEnv); the zero value
// profiles nothing.
type profiles struct {
	prefix string
	cpu    *os.File
	log    *slog.Logger
}

// startProfiles starts the CPU profile when prefix is set.
func startProfiles(prefix string, log *slog.Logger) *profiles {
	p := &profiles{prefix: prefix, log: log}
	if prefix == "" {
		return p
	}
	path := fmt.Sprintf("%s.%d.cpu.pb", prefix, os.Getpid())
	f, err := os.Create(path) //nolint:gosec // a path the operator chose
	if err != nil {
		log.Warn("opc ua worker: cpu profile", "err", err)
		return p
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		log.Warn("opc ua worker: cpu profile", "err", err)
		return p
	}
	p.cpu = f
	return p
}

// stop ends the CPU profile and writes the heap profile.
func (p *profiles) stop() {
	if p.prefix == "" {
		return
	}
	if p.cpu != nil {
		pprof.StopCPUProfile()
		_ = p.cpu.Close()
	}
	path := fmt.Sprintf("%s.%d.heap.pb", p.prefix, os.Getpid())
	f, err := os.Create(path) //nolint:gosec // a path the operator chose
	if err != nil {
		p.log.Warn("opc ua worker: heap profile", "err", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		p.log.Warn("opc ua worker: heap profile", "err", err)
	}
}

// wedgeForTest, set only in a test binary's worker process (its TestMain),
// may block a device's cycles: a device wedged inside a live worker.
var wedgeForTest func(ctx context.Context, device string)

// workerHost is a worker's devices.
type workerHost struct {
	ctx    context.Context
	cancel func()
	out    *frameWriter
	log    *slog.Logger
	runs   sync.WaitGroup // the devices' Runs
	failed atomic.Bool    // a Run returned an error, or a frame could not be sent

	mu   sync.Mutex
	devs map[uint32]*hostedDevice
}

// fail stops the worker after a frame could not be sent (not encoded, or
// stdout gone): logged at ERROR once (the parent re-logs the worker's
// stderr), the worker exits with 1 and the parent reports its death to
// every device it hosted (Lost cycles, restart with backoff). Going on
// without the frame would leave the parent waiting for it for good.
func (h *workerHost) fail(err error) {
	if !h.failed.Swap(true) {
		h.log.Error("opc ua worker: cannot send a frame to the gateway; stopping the worker", "err", err)
	}
	h.cancel()
}

// hostedDevice is one device's Client in the worker.
type hostedDevice struct {
	h      *workerHost
	slot   uint32
	c      *Client
	reg    *prometheus.Registry
	lat    *latencyBuffer
	cancel func()
	ctx    context.Context
}

func (h *workerHost) newDevice(slot uint32, wc *workerConfig) (*hostedDevice, error) {
	wc.Config.Isolation = IsolationNone // the worker is the isolation
	reg := prometheus.NewRegistry()
	pts := compactPoints(wc.Points)
	wc.Points = nil // the decoded table is garbage from here on, whoever holds the message
	c, err := New(wc.ID, wc.Config, pts, h.log, NewMetrics(reg))
	if err != nil {
		return nil, err
	}
	c.dataNow = nil // no data clock here: the gateway's side judges a time ahead (vetAhead)
	c.outage = wc.Outage
	if wc.Pins != nil {
		rememberPins(c.pinFile(), wc.Pins)
	}
	c.onPins = func(pins map[uint16]string) {
		if err := h.out.send(&wireMsg{Kind: msgPins, Dev: slot, Pins: pins}); err != nil {
			h.fail(err)
		}
	}
	d := &hostedDevice{h: h, slot: slot, c: c, reg: reg, lat: &latencyBuffer{}}
	c.m.publishLatency = d.lat
	d.ctx, d.cancel = context.WithCancel(h.ctx)
	if wc.WantUnits {
		c.OnUnits(func(us []NodeUnit) {
			ws := make([]wireUnit, len(us))
			for i, u := range us {
				ws[i] = toWireUnit(u)
			}
			if err := h.out.send(&wireMsg{Kind: msgUnits, Dev: slot, Units: ws}); err != nil {
				h.fail(err)
			}
		})
	}
	return d, nil
}

// start runs d's Client until d is stopped or the worker ends.
func (h *workerHost) start(d *hostedDevice) {
	h.mu.Lock()
	if old := h.devs[d.slot]; old != nil {
		old.cancel()
	}
	h.devs[d.slot] = d
	h.mu.Unlock()
	h.runs.Add(1)
	go func() {
		defer h.runs.Done()
		// each cycle goes after the status it happened in, when that
		// changed since the last one sent: the parent's Status is current
		// when its emit sees the cycle.
		err := d.c.Run(d.ctx, func(cyc *sample.Cycle) {
			if wedgeForTest != nil {
				wedgeForTest(d.ctx, d.c.id)
			}
			err := h.out.sendStatus(d.slot, d.c.Status())
			if err == nil {
				err = h.out.send(&wireMsg{Kind: msgCycle, Dev: d.slot, Cycle: toWireCycle(cyc)})
			}
			if err != nil {
				h.fail(err)
			}
		})
		if err != nil {
			h.failed.Store(true)
			h.log.Error("opc ua worker: device run ended", "device", d.c.id, "err", err)
		}
	}()
}

func (h *workerHost) device(slot uint32) *hostedDevice {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.devs[slot]
}

func (h *workerHost) devices() []*hostedDevice {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds := make([]*hostedDevice, 0, len(h.devs))
	for _, d := range h.devs {
		ds = append(ds, d)
	}
	return ds
}

// flush sends d's status and metrics when they changed.
func (d *hostedDevice) flush() error {
	if err := d.h.out.sendStatus(d.slot, d.c.Status()); err != nil {
		return err
	}
	if wm := gatherMetrics(d.reg, d.lat); wm != nil {
		return d.h.out.send(&wireMsg{Kind: msgMetrics, Dev: d.slot, Metrics: wm})
	}
	return nil
}

// maxWorkerRequests bounds the requests a worker serves at once, for all
// its devices (the gateway sends one command at a time per device; a read
// and a write overlap at most); more wait their turn.
const maxWorkerRequests = 4

// serve reads frames from stdin until it ends: a "config" adds a device,
// a "stop" ends one, a "req" is answered with a response frame: the
// point's read or write on the device's current session, bounded by the
// request's timeout and by ctx. A write is attempted once; the worker
// never retries it. Any other frame is a protocol error: the worker stops.
func (h *workerHost) serve(stdin io.Reader) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxWorkerRequests)
	fr := &frameReader{r: stdin}
	for {
		var m wireMsg
		if err := fr.read(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				h.log.Error("opc ua worker: bad frame on stdin; stopping", "err", err)
			}
			return
		}
		switch {
		case m.Kind == msgConfig && m.Config != nil:
			d, err := h.newDevice(m.Dev, m.Config)
			if err != nil {
				h.log.Error("opc ua worker: bad device configuration; stopping", "err", err)
				return
			}
			h.start(d)
			continue
		case m.Kind == msgStop:
			if d := h.device(m.Dev); d != nil {
				d.cancel()
				h.mu.Lock()
				delete(h.devs, m.Dev)
				h.mu.Unlock()
				// not inline: a sender blocked on a full stdout holds the
				// writer, and stdin must keep being read meanwhile
				go h.out.forget(m.Dev)
			}
			continue
		case m.Kind != msgReq || m.Req == nil:
			h.log.Error("opc ua worker: unexpected frame on stdin; stopping", "kind", m.Kind)
			return
		}
		req, slot := *m.Req, m.Dev
		// the request waits for a slot on its own goroutine: stdin is
		// always read on (a configuration behind it must not wait for
		// answers stuck behind a full stdout)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
			case <-h.ctx.Done():
				return
			}
			defer func() { <-slots }()
			var resp *wireResp
			if d := h.device(slot); d != nil {
				resp = serveRequest(h.ctx, d.c, &req)
			} else {
				resp = &wireResp{ID: req.ID, Err: encodeErr(fmt.Errorf("opcua worker: no device in slot %d: %w", slot, ErrNoSession))}
			}
			if err := h.out.send(&wireMsg{Kind: msgResp, Dev: slot, Resp: resp}); err != nil {
				h.fail(err)
			}
		}()
	}
}

func serveRequest(ctx context.Context, c *Client, req *wireReq) *wireResp {
	resp := &wireResp{ID: req.ID}
	if req.Timeout <= 0 {
		resp.Err = encodeErr(fmt.Errorf("opcua: device %s: request %d has no time left", c.id, req.ID))
		return resp
	}
	rctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	var err error
	switch req.Op {
	case opRead:
		var s sample.Sample
		s, err = c.ReadPoint(rctx, req.Point)
		resp.Sample = toWireSample(s)
	case opWrite:
		var held float64
		held, err = c.WritePoint(rctx, req.Point, float64(req.Value))
		resp.Held = wireFloat(held)
	default:
		err = fmt.Errorf("opcua: device %s: unknown request %q", c.id, req.Op)
	}
	resp.Err = encodeErr(err)
	return resp
}

// durationText writes durations as text ("345ms"): the parent re-logs the
// JSON values, in which a duration would be a bare count of nanoseconds.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// watchParent cancels when the process's parent changes from ppid (the
// parent died and the worker was re-parented).
func watchParent(ctx context.Context, cancel func(), ppid int, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if os.Getppid() != ppid {
				cancel()
				return
			}
		}
	}
}

func sameStatus(a, b Status) bool {
	return a.Connected == b.Connected && a.Since.Equal(b.Since) && a.LastError == b.LastError && a.Sessions == b.Sessions &&
		a.Limits == b.Limits && a.Subscription == b.Subscription && a.ServiceFaults == b.ServiceFaults && a.Refused == b.Refused
}

// frameWriter serialises frames from the worker's goroutines and writes
// each one whole (one write: no buffered writer in between, which would
// copy every frame once more and hold 64 KiB per worker).
type frameWriter struct {
	mu     sync.Mutex
	w      io.Writer
	buf    []byte // the frame being written, reused up to maxKeptFrame
	err    error
	status map[uint32]*Status // per device slot, the last status sent
	last   time.Time          // when the last frame was written
}

// heartbeat sends a "ping" frame when no frame was written for every: the
// parent kills a worker silent for workerSilence (a wedged worker must not
// freeze its devices without a death notice).
func (f *frameWriter) heartbeat(every time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.last) < every {
		return f.err
	}
	return f.sendLocked(&wireMsg{Kind: msgPing})
}

func (f *frameWriter) send(m *wireMsg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sendLocked(m)
}

func (f *frameWriter) sendLocked(m *wireMsg) error {
	if f.err != nil {
		return f.err
	}
	var err error
	f.buf, err = appendFrame(f.buf[:0], m)
	if err != nil {
		f.err = err
		return err
	}
	_, f.err = f.w.Write(f.buf)
	f.last = time.Now()
	if cap(f.buf) > maxKeptFrame {
		f.buf = nil // a rare large frame (units of many points) is not kept
	}
	return f.err
}

// maxKeptFrame is the largest frame buffer a worker keeps for the next
// frame: a cycle of 10,000 samples fits.
const maxKeptFrame = 256 << 10

// sendStatus sends the status of the device in slot unless it is the one
// sent last for it.
func (f *frameWriter) sendStatus(slot uint32, st Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if last := f.status[slot]; last != nil && sameStatus(st, *last) {
		return f.err
	}
	f.status[slot] = &st
	return f.sendLocked(&wireMsg{Kind: msgStatus, Dev: slot, Status: &st})
}

// forget drops a stopped device's last status.
func (f *frameWriter) forget(slot uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.status, slot)
}

func (f *frameWriter) failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err != nil
}

// latencyBuffer records the worker's publish latency observations for the
// parent's histogram: at most maxLatencyObs per flush (the rest are
// counted as dropped, a bound on the frame, not on the histogram's truth
// for any realistic publish rate: 4,000 publish responses a second).
type latencyBuffer struct {
	mu      sync.Mutex
	obs     []wireFloat
	dropped int
}

const maxLatencyObs = 1000

func (l *latencyBuffer) Observe(v float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.obs) >= maxLatencyObs {
		l.dropped++
		return
	}
	l.obs = append(l.obs, wireFloat(v))
}

func (l *latencyBuffer) take() []wireFloat {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.obs
	l.obs = nil
	return o
}

// wireMetrics is the worker's metrics: the current value of every counter
// and gauge series of its private registry (the parent applies the
// deltas) and the publish latencies observed since the last frame.
type wireMetrics struct {
	Values  []metricValue `json:"values,omitempty"`
	Latency []wireFloat   `json:"latency,omitempty"`
}

type metricValue struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"` // without "device"
	Gauge  bool              `json:"gauge,omitempty"`
	Value  wireFloat         `json:"value"`
}

func gatherMetrics(reg *prometheus.Registry, lat *latencyBuffer) *wireMetrics {
	mfs, err := reg.Gather()
	if err != nil {
		return nil
	}
	wm := &wireMetrics{Latency: lat.take()}
	for _, mf := range mfs {
		t := mf.GetType()
		if t != dto.MetricType_COUNTER && t != dto.MetricType_GAUGE {
			continue
		}
		for _, mt := range mf.GetMetric() {
			v := metricValue{Name: mf.GetName(), Gauge: t == dto.MetricType_GAUGE}
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "device" {
					continue
				}
				if v.Labels == nil {
					v.Labels = map[string]string{}
				}
				v.Labels[lp.GetName()] = lp.GetValue()
			}
			if v.Gauge {
				v.Value = wireFloat(mt.GetGauge().GetValue())
			} else {
				v.Value = wireFloat(mt.GetCounter().GetValue())
			}
			wm.Values = append(wm.Values, v)
		}
	}
	if len(wm.Values) == 0 && len(wm.Latency) == 0 {
		return nil
	}
	return wm
}

var errNoHello = errors.New("opcua: the worker did not introduce itself")

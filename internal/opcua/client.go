// Package opcua is Smelter's OPC UA client driver, built on gopcua: it
// subscribes to (or polls) a device's nodes, maps StatusCodes to quality,
// keeps SourceTimestamps, respects the server's operation limits, and
// recovers from any outage by reconnecting with backoff and recreating its
// subscription. It also browses address spaces and lists endpoints for the
// operator tools.
//
// The driver uses gopcua for the secure channel, the session services and
// the codec, but runs the subscription itself (subscription.go): gopcua's
// connection monitor treats any service fault as a lost connection (v0.8.0
// and v0.9.0, upstream PR #904), so one BadTimeout answer to a Publish
// request would cost every node on the session. See docs/opcua.md,
// "Session timing".
package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// ErrPanic is wrapped by the session error when decoding or handling a
// server's answer panicked: the session is dropped and re-established with
// backoff, the gateway keeps running.
var ErrPanic = errors.New("opcua: panic in session")

// ErrSessionLost is wrapped by the error of a Lost cycle whose cause is not
// more specific (the server closed the connection, the session expired).
var ErrSessionLost = errors.New("opcua: session lost")

// Client acquires one device's points over one session at a time.
type Client struct {
	id      string
	cfg     Config
	points  []Point
	log     *slog.Logger
	logBase *slog.Logger // log without the device
	m       *devMetrics
	timing  timing
	onUnits func([]NodeUnit)

	mu      sync.Mutex
	status  Status
	learned Limits // caps learned from refused batches

	live atomic.Pointer[live]      // the session commands use (write.go)
	wk   atomic.Pointer[workerDev] // isolation process or endpoint: the worker commands go to
}

// Status is the driver's state for status pages.
type Status struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	Sessions  uint64    `json:"sessions"`
	Limits    Limits    `json:"limits"` // effective batch sizes of the current session
	// Subscription is the server's revision of the subscription timing
	// (zero while not subscribed).
	Subscription SubscriptionTiming `json:"subscription,omitzero"`
	// ServiceFaults counts service faults the session survived (a Publish
	// answered BadTimeout, say) since Run started.
	ServiceFaults uint64 `json:"service_faults"`
	// Refused is how many monitored items the server currently refuses
	// (retried with backoff).
	Refused int `json:"refused_items"`
	// WorkerPID is the pid of the device's session worker (isolation
	// process; 0 while none runs); WorkerStarts and WorkerExits count the
	// workers started and those that ended on their own since Run started.
	WorkerPID    int    `json:"worker_pid,omitempty"`
	WorkerStarts uint64 `json:"worker_starts,omitempty"`
	WorkerExits  uint64 `json:"worker_exits,omitempty"`
}

// New checks the configuration and points (after their defaults) and
// builds a client; it does no I/O. The client keeps points as they are
// when every point already has its defaults (as Driver.Compile leaves
// them), a copy otherwise: the caller must not change them afterwards.
func New(id string, cfg Config, points []Point, log *slog.Logger, m *Metrics) (*Client, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("opcua: device %s: %w", id, err)
	}
	// 20,000 points are ~2 MB: shared with the compiled configuration
	// rather than copied (issue 17).
	ps := points
	for i, p := range points {
		p.SetDefaults(&cfg)
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("opcua: device %s: points[%d].%w", id, i, err)
		}
		if p != points[i] {
			if &ps[0] == &points[0] {
				ps = slices.Clone(points)
			}
			ps[i] = p
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Client{id: id, cfg: cfg, points: ps, log: log.With("device", id), logBase: log, m: m.device(id), timing: deriveTiming(&cfg)}, nil
}

// OnUnits registers f, called from Run's goroutine before the first cycle
// that carries values (and again after a reconnect if the units changed),
// with the EngineeringUnits/EURange of the points whose Point.UnitFromNode
// is set. Set it before Run; it does no I/O.
func (c *Client) OnUnits(f func([]NodeUnit)) { c.onUnits = f }

// Status returns a snapshot of the connection state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) setStatus(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

// runState is what Run keeps across sessions: the last sample reported per
// point (for heartbeats and for the status code a Stale sample keeps) and
// the units handed to OnUnits. mu serialises emission.
//
// The gateway's side of a session worker (isolation process or endpoint)
// keeps only the last status per point: the worker runs the heartbeats,
// and a Lost cycle after the worker's death needs only the statuses (4
// bytes a point instead of 64, issue 17).
type runState struct {
	c      *Client
	emitFn func(*sample.Cycle)

	mu     sync.Mutex
	last   []sample.Sample // nil on the gateway's side of a worker
	lastAt []int64         // when last reported, ns since epoch + 1; 0: nothing reported this session
	status []uint32        // the gateway's side of a worker: the last status per point
	epoch  time.Time       // lastAt's origin (monotonic)
	units  []NodeUnit      // nil until read
}

// emit hands a cycle to the caller; calls never overlap.
func (r *runState) emit(cyc *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emitLocked(cyc)
}

func (r *runState) emitLocked(cyc *sample.Cycle) {
	if r.last == nil {
		for i := range cyc.Samples {
			if s := &cyc.Samples[i]; s.Quality != telemetry.QualityStale {
				r.status[s.Index] = s.Status
			}
		}
		r.emitFn(cyc)
		return
	}
	now := r.since()
	for i := range cyc.Samples {
		if s := &cyc.Samples[i]; s.Quality != telemetry.QualityStale {
			r.last[s.Index] = *s
			r.lastAt[s.Index] = now
		}
	}
	r.emitFn(cyc)
}

// since is the time since r.epoch in ns, plus 1 so that it is never 0.
func (r *runState) since() int64 { return int64(time.Since(r.epoch)) + 1 }

// lastStatus is the last status reported for point i.
func (r *runState) lastStatus(i int) uint32 {
	if r.last == nil {
		return r.status[i]
	}
	return r.last[i].Status
}

// lost emits a Lost cycle: every point Stale (keeping its last status) on
// the first loss of an outage, only the cause on later failed attempts.
func (r *runState) lost(err error, withSamples bool) {
	if err == nil {
		err = ErrSessionLost
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cyc := &sample.Cycle{Start: time.Now(), Interval: r.c.cfg.PublishInterval, Lost: true, Err: err}
	if withSamples {
		cyc.Samples = make([]sample.Sample, 0, len(r.c.points))
		for i := range r.c.points {
			if r.c.points[i].NodeID == "" {
				continue // an action point is never acquired
			}
			cyc.Samples = append(cyc.Samples, sample.Sample{Index: i, Quality: telemetry.QualityStale, Status: r.lastStatus(i)})
		}
	}
	clear(r.lastAt)
	r.emitFn(cyc)
}

// Run acquires until ctx ends and calls emit once per cycle: a publish
// response (data change or keep-alive), a poll of one group, a heartbeat
// re-report of unchanged subscribed values, a retry of refused monitored
// items, or a lost session. Calls never overlap; the Cycle is only valid
// during the call. After any outage (including a failed engineering-unit
// lookup or a panic while decoding a server's answer) Run emits a Lost
// cycle with the cause, then reconnects with backoff (backoff_min ..
// backoff_max) and recreates its subscription. It returns nil when ctx
// ends.
//
// With isolation process (the default) the sessions run in a worker
// process (worker.go) and Run forwards what it reports; a worker that dies
// costs a Lost cycle wrapping ErrWorkerExited (and ErrPanic after a panic)
// and is restarted with the same backoff.
func (c *Client) Run(ctx context.Context, emit func(*sample.Cycle)) error {
	if c.cfg.Isolation != IsolationNone {
		return c.runIsolated(ctx, emit)
	}
	return c.runInProcess(ctx, emit)
}

// newRunState is the state of the process that runs the sessions.
func newRunState(c *Client, emit func(*sample.Cycle)) *runState {
	r := &runState{c: c, emitFn: emit, last: make([]sample.Sample, len(c.points)), lastAt: make([]int64, len(c.points)), epoch: time.Now()}
	for i := range r.last {
		r.last[i].Index = i
	}
	return r
}

// newForwardState is the state of the gateway's side of a session worker.
func newForwardState(c *Client, emit func(*sample.Cycle)) *runState {
	return &runState{c: c, emitFn: emit, status: make([]uint32, len(c.points))}
}

// runInProcess is Run with isolation none, and the worker's own Run.
func (c *Client) runInProcess(ctx context.Context, emit func(*sample.Cycle)) error {
	r := newRunState(c, emit)
	bo := backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax}
	staleSent := false
	// connectLog: a server that stays unreachable costs one line per
	// minute (with the count of the retries not logged), not one per retry.
	connectLog := logging.Limiter{Every: ConnectLogEvery}
	for {
		c.m.state.Set(StateConnecting)
		connected := false
		err := c.guarded(ctx, "session", func() error {
			return c.session(ctx, r, func() {
				connected = true
				staleSent = false
				bo.Reset()
			})
		})
		if connected {
			connectLog = logging.Limiter{Every: ConnectLogEvery} // a new outage logs at once
		}
		c.m.state.Set(StateDisconnected)
		c.setStatus(func(s *Status) {
			if s.Connected {
				s.Since = time.Now()
			}
			s.Connected = false
			s.Refused = 0
			s.Subscription = SubscriptionTiming{}
			if err != nil {
				s.LastError = err.Error()
			}
		})
		if stopped(ctx) {
			// The session ended because ctx did: a requested stop, which
			// Run reports as nil, not as the session's error.
			return nil
		}
		r.lost(err, !staleSent)
		staleSent = true
		c.m.reconnects.Inc()
		wait := bo.Next()
		switch {
		case connected:
			c.log.Warn("opc ua session lost; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		case errors.Is(err, ErrUntrusted):
			connectLog.Log(ctx, c.log, slog.LevelError, err.Error(), "retry_in", wait.Round(time.Millisecond))
		default:
			connectLog.Log(ctx, c.log, slog.LevelWarn, "opc ua connect failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// ConnectLogEvery is how often a failing connect is logged at most; the
// line then carries how many failures were not logged.
const ConnectLogEvery = time.Minute

// stopped reports whether ctx has ended: the driver's loops then return
// nil, whatever error the interrupted request gave.
func stopped(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// guarded runs f and turns a panic in it into an error wrapping ErrPanic,
// counted in smelter_opcua_session_panics_total and logged with its stack.
//
// It covers every goroutine the driver owns (the session, its publish
// loop, poll loops, watchdog, item retries), where gopcua hands responses
// to the driver and where the driver decodes values. It cannot cover
// gopcua's own secure-channel dispatcher goroutine, which decodes each
// message before handing it over (uasc.SecureChannel.dispatcher ->
// Receive -> ua.DecodeService) and has no recover: a message that makes
// gopcua's decoder panic there ends the process. docs/opcua.md,
// "Hostile servers", says which inputs reach that path.
func (c *Client) guarded(ctx context.Context, name string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.m.panics.Inc()
			err = fmt.Errorf("%w: %s: %v", ErrPanic, name, p)
			c.log.Error("panic in the opc ua session; dropping the session", "part", name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	return f()
}

// session runs one connection: it returns when the connection is lost or
// ctx ends. up is called once the session is acquiring.
func (c *Client) session(ctx context.Context, r *runState, up func()) error {
	cl, err := connect(ctx, &c.cfg, c.log, c.timing.publish)
	if err != nil {
		return err
	}
	defer closeClient(cl)

	nodes, methods, err := c.resolve(ctx, cl)
	if err != nil {
		return err
	}
	c.live.Store(&live{cl: cl, nodes: nodes, methods: methods})
	defer c.live.Store(nil)
	lim, err := c.limits(ctx, cl)
	if err != nil {
		return err
	}
	c.setStatus(func(s *Status) { s.Limits = lim })
	if err := c.units(ctx, cl, nodes, lim, r); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	var subIdx, pollIdx []int
	for i, p := range c.points {
		if p.NodeID == "" {
			continue // an action point: nothing to acquire
		}
		if p.Mode == ModePoll {
			pollIdx = append(pollIdx, i)
		} else {
			subIdx = append(subIdx, i)
		}
	}
	if len(subIdx) > 0 {
		sub, err := c.subscribe(ctx, cl)
		if err != nil {
			return err
		}
		s := &subSession{c: c, cl: cl, r: r, sub: sub, nodes: nodes, lim: lim, refused: map[int]ua.StatusCode{}}
		if err := s.monitor(ctx, subIdx, true); err != nil {
			return err
		}
		g.Go(func() error { return c.guarded(gctx, "publish", func() error { return s.publishLoop(gctx) }) })
		g.Go(func() error {
			return c.guarded(gctx, "monitored item retry", func() error { return s.retryRefused(gctx) })
		})
		if c.cfg.Heartbeat > 0 {
			g.Go(func() error { return c.guarded(gctx, "heartbeat", func() error { return c.heartbeat(gctx, r, sub) }) })
		}
	}
	groups := map[time.Duration][]int{}
	for _, i := range pollIdx {
		groups[c.points[i].PollInterval] = append(groups[c.points[i].PollInterval], i)
	}
	for iv, idx := range groups {
		g.Go(func() error {
			return c.guarded(gctx, "poll", func() error { return c.poll(gctx, cl, r, nodes, idx, iv, lim) })
		})
	}
	g.Go(func() error { return c.guarded(gctx, "watchdog", func() error { return c.watchdog(gctx, cl) }) })
	c.m.state.Set(StateConnected)
	c.setStatus(func(s *Status) {
		s.Connected, s.Since, s.LastError = true, time.Now(), ""
		s.Sessions++
	})
	c.log.Info("opc ua session up", "endpoint", c.cfg.Endpoint, "policy", c.cfg.SecurityPolicy, "mode", c.cfg.SecurityMode,
		"subscribed", len(subIdx), "polled", len(pollIdx), "max_nodes_per_read", lim.MaxNodesPerRead,
		"max_monitored_items_per_call", lim.MaxMonitoredItemsPerCall)
	up()
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// units reads the engineering units of the points that take them from
// their node, once per session, and hands them to OnUnits when they are
// new or changed. A failure fails the session: values in a guessed unit
// would be worse than none, and Run reports the device lost meanwhile.
func (c *Client) units(ctx context.Context, cl *opcua.Client, nodes []*ua.NodeID, lim Limits, r *runState) error {
	var idx []int
	for i, p := range c.points {
		if p.UnitFromNode && p.NodeID != "" {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	sub := make([]*ua.NodeID, len(idx))
	for j, i := range idx {
		sub[j] = nodes[i]
	}
	got, err := readUnits(ctx, &session{cl: cl, cfg: &c.cfg, lim: lim}, sub)
	if err != nil {
		return fmt.Errorf("opcua: read engineering units: %w", err)
	}
	for j := range got {
		got[j].Index = idx[j]
	}
	r.mu.Lock()
	changed := !sameUnits(r.units, got)
	if changed {
		r.units = got
	}
	r.mu.Unlock()
	if changed && c.onUnits != nil {
		c.onUnits(got)
	}
	return nil
}

func sameUnits(a, b []NodeUnit) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if (x.Err == nil) != (y.Err == nil) || (x.Err != nil && x.Err.Error() != y.Err.Error()) {
			return false
		}
		x.Err, y.Err = nil, nil
		if x != y {
			return false
		}
	}
	return true
}

// resolve parses the points' node ids (nil for a point without a node)
// and their methods' object and method ids, resolving nsu=<uri>; forms
// with the namespace array.
func (c *Client) resolve(ctx context.Context, cl *opcua.Client) ([]*ua.NodeID, []*methodIDs, error) {
	out := make([]*ua.NodeID, len(c.points))
	var methods []*methodIDs
	var nsArr []string
	parse := func(field, s string) (*ua.NodeID, error) {
		if strings.HasPrefix(s, "nsu=") {
			if nsArr == nil {
				rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
				arr, err := cl.NamespaceArray(rctx)
				cancel()
				if err != nil {
					return nil, fmt.Errorf("opcua: read namespace array: %w", err)
				}
				nsArr = arr
			}
			uri, rest, _ := strings.Cut(strings.TrimPrefix(s, "nsu="), ";")
			idx := slices.Index(nsArr, uri)
			if idx < 0 {
				return nil, fmt.Errorf("opcua: %s: namespace %q not on the server (has %v)", field, uri, nsArr)
			}
			s = "ns=" + strconv.Itoa(idx) + ";" + rest
		}
		n, err := ua.ParseNodeID(s)
		if err != nil {
			return nil, fmt.Errorf("opcua: %s: %w", field, err)
		}
		return n, nil
	}
	for i, p := range c.points {
		if p.NodeID != "" {
			n, err := parse(fmt.Sprintf("points[%d].node_id", i), p.NodeID)
			if err != nil {
				return nil, nil, err
			}
			out[i] = n
		}
		if p.Method == nil {
			continue
		}
		if methods == nil {
			methods = make([]*methodIDs, len(c.points))
		}
		obj, err := parse(fmt.Sprintf("points[%d].write.method.object", i), p.Method.Object)
		if err != nil {
			return nil, nil, err
		}
		meth, err := parse(fmt.Sprintf("points[%d].write.method.method", i), p.Method.Method)
		if err != nil {
			return nil, nil, err
		}
		methods[i] = &methodIDs{object: obj, method: meth}
	}
	return out, methods, nil
}

// limits reads the server's operation limits and combines them with the
// configured and learned caps. It reads MaxNodesPerRead alone first so that
// even the limit query respects the limit.
func (c *Client) limits(ctx context.Context, cl *opcua.Client) (Limits, error) {
	ids := []uint32{id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
		id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse}
	vals := make([]uint32, len(ids))
	read := func(from, to int) error {
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, n := range ids[from:to] {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewNumericNodeID(0, n), AttributeID: ua.AttributeIDValue})
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
		resp, err := cl.Read(rctx, req)
		if err != nil {
			return fmt.Errorf("opcua: read operation limits: %w", err)
		}
		for i, r := range resp.Results {
			if from+i < len(vals) && r != nil && r.Status == ua.StatusOK && r.Value != nil {
				vals[from+i] = toUint32(r.Value.Value())
			}
		}
		return nil
	}
	if err := read(0, 1); err != nil {
		return Limits{}, err
	}
	step := len(ids) - 1
	if vals[0] > 0 && int(vals[0]) < step {
		step = int(vals[0])
	}
	for i := 1; i < len(ids); i += step {
		if err := read(i, min(i+step, len(ids))); err != nil {
			return Limits{}, err
		}
	}
	c.mu.Lock()
	learned := c.learned
	c.mu.Unlock()
	return Limits{
		MaxNodesPerRead:          effective(vals[0], c.cfg.Limits.MaxNodesPerRead, learned.MaxNodesPerRead),
		MaxMonitoredItemsPerCall: effective(vals[1], c.cfg.Limits.MaxMonitoredItemsPerCall, learned.MaxMonitoredItemsPerCall),
		MaxNodesPerBrowse:        effective(vals[2], c.cfg.Limits.MaxNodesPerBrowse, learned.MaxNodesPerBrowse),
	}, nil
}

func effective(server, configured, learned uint32) uint32 {
	v := server
	if v == 0 {
		v = DefaultOperationLimit
	}
	if configured > 0 && configured < v {
		v = configured
	}
	if learned > 0 && learned < v {
		v = learned
	}
	return v
}

func toUint32(v any) uint32 {
	switch x := v.(type) {
	case uint32:
		return x
	case uint16:
		return uint32(x)
	case int32:
		if x > 0 {
			return uint32(x)
		}
	case uint64:
		if x < math.MaxUint32 {
			return uint32(x)
		}
	case int64:
		if x > 0 && x < math.MaxUint32 {
			return uint32(x)
		}
	}
	return 0
}

// learn halves a batch size after the server refused a batch of n.
func (c *Client) learn(err error, n int, field *uint32, name string) {
	if !errors.Is(err, ua.StatusBadTooManyOperations) || n <= 1 {
		return
	}
	c.mu.Lock()
	*field = uint32(max(1, n/2))
	v := *field
	c.mu.Unlock()
	c.log.Warn("server refused a batch despite its advertised limit; using a smaller batch from the next session", "limit", name, "batch", n, "next", v)
}

// heartbeat re-reports the unchanged subscribed points every Heartbeat
// (stamped now), so consumers can tell "unchanged" from "gone": a
// subscription reports changes only. A point's last Good, Uncertain or Bad
// answer is repeated; nothing is invented for a point never heard from.
func (c *Client) heartbeat(ctx context.Context, r *runState, sub *subscription) error {
	hb := c.cfg.Heartbeat
	t := time.NewTicker(max(min(hb/4, time.Minute), time.Millisecond))
	defer t.Stop()
	var due []sample.Sample
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r.mu.Lock()
		due = due[:0]
		now := time.Now()
		since := r.since()
		for i, p := range c.points {
			if p.Mode == ModeSubscribe && r.lastAt[i] != 0 && time.Duration(since-r.lastAt[i]) >= hb && r.last[i].Quality != telemetry.QualityStale {
				s := r.last[i]
				s.TS = now.UnixMilli()
				due = append(due, s)
			}
		}
		if len(due) > 0 {
			r.emitLocked(&sample.Cycle{Samples: due, Start: now, Interval: sub.cycleInterval(), Replied: true, Err: firstBad(due)})
		}
		r.mu.Unlock()
	}
}

// poll reads a group of points every interval, one cycle per read.
func (c *Client) poll(ctx context.Context, cl *opcua.Client, r *runState, nodes []*ua.NodeID, idx []int, iv time.Duration, lim Limits) error {
	t := time.NewTicker(iv)
	defer t.Stop()
	p := c.newPoller(cl, nodes, idx, lim)
	for {
		start := time.Now()
		if err := p.read(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		r.emit(&sample.Cycle{Samples: p.ss, Start: start, Duration: time.Since(start), Interval: iv, Replied: true, Err: firstBad(p.ss)})
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poller is one poll group's reads on one session: its requests are built
// once, its samples buffer reused (a cycle is valid only during emit).
type poller struct {
	c     *Client
	cl    *opcua.Client
	idx   []int
	batch int
	reqs  []*ua.ReadValueID
	ss    []sample.Sample
}

func (c *Client) newPoller(cl *opcua.Client, nodes []*ua.NodeID, idx []int, lim Limits) *poller {
	p := &poller{c: c, cl: cl, idx: idx, batch: int(lim.MaxNodesPerRead), reqs: make([]*ua.ReadValueID, len(idx)), ss: make([]sample.Sample, len(idx))}
	for j, i := range idx {
		p.reqs[j] = &ua.ReadValueID{NodeID: nodes[i], AttributeID: ua.AttributeIDValue}
	}
	return p
}

// read reads the group's values into p.ss, in batches within
// MaxNodesPerRead. A failed request fails the session.
func (p *poller) read(ctx context.Context) error {
	c := p.c
	for from := 0; from < len(p.idx); from += p.batch {
		to := min(from+p.batch, len(p.idx))
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		resp, err := p.cl.Read(rctx, &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth, NodesToRead: p.reqs[from:to]})
		cancel()
		if err == nil && len(resp.Results) != to-from {
			err = fmt.Errorf("%d results for %d nodes", len(resp.Results), to-from)
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			c.m.readErr.Inc()
			c.mu.Lock()
			field := &c.learned.MaxNodesPerRead
			c.mu.Unlock()
			c.learn(err, to-from, field, "max_nodes_per_read")
			return fmt.Errorf("opcua: poll read of %d nodes: %w", to-from, err)
		}
		c.m.readOK.Inc()
		for j, dv := range resp.Results {
			s := toSample(p.idx[from+j], dv)
			if s.Quality != telemetry.QualityGood {
				c.m.bad(s.Status)
			}
			p.ss[from+j] = s
		}
	}
	return nil
}

// watchdog reads ServerStatus.State periodically: a silent network cut or
// an expired session shows up here even when no data is flowing.
func (c *Client) watchdog(ctx context.Context, cl *opcua.Client) error {
	t := time.NewTicker(c.cfg.Watchdog)
	defer t.Stop()
	req := &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_State), AttributeID: ua.AttributeIDValue}}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		resp, err := cl.Read(rctx, req)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.m.readErr.Inc()
			return fmt.Errorf("opcua: watchdog read: %w", err)
		}
		c.m.readOK.Inc()
		if len(resp.Results) == 1 && resp.Results[0].Value != nil {
			if st, ok := resp.Results[0].Value.Value().(int32); ok && ua.ServerState(st) != ua.ServerStateRunning {
				return fmt.Errorf("opcua: server state %v", ua.ServerState(st))
			}
		}
	}
}

// StatusError is a Bad or Uncertain StatusCode a device gave for a point:
// the Err of a cycle in which no point was Good. errors.Is matches the
// ua.StatusCode.
type StatusError struct {
	Index  int
	Status ua.StatusCode
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("opcua: point %d: status %s (0x%08X)", e.Index, e.Status.Error(), uint32(e.Status))
}

func (e *StatusError) Unwrap() error { return e.Status }

// firstBad is a cycle's Err: the first Bad sample's status, nil when no
// sample is Bad (Uncertain carries a value).
func firstBad(ss []sample.Sample) error {
	for i := range ss {
		if ss[i].Quality == telemetry.QualityBad {
			return &StatusError{Index: ss[i].Index, Status: ua.StatusCode(ss[i].Status)}
		}
	}
	return nil
}

// Quality maps a StatusCode's severity bits to a quality.
func Quality(status uint32) telemetry.Quality {
	switch status >> 30 {
	case 0:
		return telemetry.QualityGood
	case 1:
		return telemetry.QualityUncertain
	default:
		return telemetry.QualityBad
	}
}

// statusTypeMismatch marks a value the driver cannot represent (arrays,
// structures) or a Good status without a value.
const statusTypeMismatch = uint32(0x80740000) // BadTypeMismatch

// toSample converts a DataValue; TS is 0 (the cycle's start) without a
// SourceTimestamp.
func toSample(i int, dv *ua.DataValue) sample.Sample {
	u := sample.Sample{Index: i}
	if dv == nil {
		u.Status, u.Quality = statusTypeMismatch, telemetry.QualityBad
		return u
	}
	u.Status = uint32(dv.Status)
	u.Quality = Quality(u.Status)
	if dv.EncodingMask&ua.DataValueSourceTimestamp != 0 && !dv.SourceTimestamp.IsZero() {
		u.TS = dv.SourceTimestamp.UnixMilli()
	}
	if !u.Quality.HasValue() {
		return u
	}
	var v any
	if dv.Value != nil {
		v = dv.Value.Value()
	}
	ok := true
	switch x := v.(type) {
	case float64:
		u.Num = x
	case float32:
		u.Num = float64(x)
	case int8:
		u.Num = float64(x)
	case uint8:
		u.Num = float64(x)
	case int16:
		u.Num = float64(x)
	case uint16:
		u.Num = float64(x)
	case int32:
		u.Num = float64(x)
	case uint32:
		u.Num = float64(x)
	case int64:
		u.Num = float64(x)
	case uint64:
		u.Num = float64(x)
	case bool:
		if x {
			u.Num = 1
		}
	case string:
		u.Str, u.IsStr = x, true
	case *ua.LocalizedText:
		if x != nil {
			u.Str, u.IsStr = x.Text, true
		} else {
			ok = false
		}
	default:
		ok = false
	}
	if !ok || (!u.IsStr && (math.IsNaN(u.Num) || math.IsInf(u.Num, 0))) {
		u.Status, u.Quality, u.Num = statusTypeMismatch, telemetry.QualityBad, 0
	}
	return u
}

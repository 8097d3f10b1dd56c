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
	// dataNow is the gateway's data clock (driver.Env.Now; time.Now by
	// default), the clock a SourceTimestamp ahead is judged by (vetTime,
	// vetAhead). nil in a session worker process, which has no data clock:
	// there the gateway's side of the worker judges it (emitLocked).
	dataNow func() time.Time
	id      string
	cfg     Config
	points  []Point
	log     *slog.Logger
	logBase *slog.Logger // log without the device
	m       *devMetrics
	timing  timing
	onUnits func([]NodeUnit)
	// onPins, when set, learns the device's namespace pins when they
	// change (a worker sends them to the gateway's process: pinMemory)
	onPins func(map[uint16]string)
	// outage: set in a worker when the device starts within an outage
	// (workerConfig.Outage); nil otherwise
	outage *outageState

	mu      sync.Mutex
	status  Status
	learned Limits // caps learned from refused batches

	// unitsMu serialises the unit reads of a session (its start, a
	// SemanticsChanged, a polled point's changed unit): units reach OnUnits
	// in the order they were read.
	unitsMu sync.Mutex

	// unitChangeLog and unitReadLog bound the logs of unit changes a
	// server drives (a changed unit, the units read again; SemanticsChanged
	// on a point with a configured unit) to one line a minute each, with a
	// count: smelter_opcua_unit_changes_total counts every change.
	unitChangeLog, unitReadLog logging.Limiter
	// movedLog: a polled value that moved while its units were read in a
	// separate request (one line a minute)
	movedLog logging.Limiter
	// nsGuardLog: a poll read that found the NamespaceArray changed
	nsGuardLog logging.Limiter
	// redatedLog: a value withheld after a unit change because it is not
	// newer than the last one in the unit before (one line a minute)
	redatedLog logging.Limiter
	// timeLog: a SourceTimestamp not credible (vetTime); kindLog: a value
	// of another kind than the point's first (one line a minute each)
	timeLog, kindLog logging.Limiter
	// handleLog: notifications with an unknown client handle (one line a
	// minute; smelter_opcua_unknown_handles_total counts them)
	handleLog logging.Limiter
	// longLog: a text value longer than max_string_bytes (one line a
	// minute)
	longLog logging.Limiter

	// nsMu guards ns: the namespace pins and what the last session start
	// found (namespace.go)
	nsMu sync.Mutex
	ns   nsState

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
	if cfg.Isolation != IsolationNone {
		m.isolated(id)
	}
	if usesIndexes(ps) {
		// at 0 from the start: an alert on increase() fires on the first move
		m.namespaceRemaps.WithLabelValues(id)
	}
	return &Client{dataNow: time.Now, id: id, cfg: cfg, points: ps, log: log.With("device", id), logBase: log, m: m.device(id), timing: deriveTiming(&cfg),
		unitChangeLog: logging.Limiter{Every: time.Minute}, unitReadLog: logging.Limiter{Every: time.Minute}, movedLog: logging.Limiter{Every: time.Minute}, nsGuardLog: logging.Limiter{Every: time.Minute}, redatedLog: logging.Limiter{Every: time.Minute},
		timeLog: logging.Limiter{Every: time.Minute}, kindLog: logging.Limiter{Every: time.Minute}, handleLog: logging.Limiter{Every: time.Minute}, longLog: logging.Limiter{Every: time.Minute}}, nil
}

// OnUnits registers f, called from Run's goroutines before the first cycle
// that carries values and again whenever the units changed (after a
// reconnect, a SemanticsChanged, a polled point's unit check), with the
// EngineeringUnits/EURange of the points whose Point.UnitFromNode is set;
// calls never overlap a cycle's emit. Set it before Run; it does no I/O.
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
	last   []lastSample // nil on the gateway's side of a worker
	lastAt []int64      // when last reported, ns since epoch + 1; 0: nothing reported this session
	status []uint32     // the gateway's side of a worker: the last status per point
	epoch  time.Time    // lastAt's origin (monotonic)
	units  []NodeUnit   // nil until read; sorted by Index
	// valueTS is the SourceTimestamp (Unix ms) of each point's last value
	// published (Good or Uncertain); floor, set when a point's unit
	// changes, is valueTS then: a value not newer than it was read under
	// the unit before at that instant, so it is withheld (review1 F3: a
	// unit change without a value change re-dated 2.1 bar as 2.1 kPa to
	// the instant 210 kPa was published). nil on the gateway's side of a
	// worker (the worker applies them) and where no point takes its unit
	// from its node (no unit can change: 16 bytes a point, issue 17).
	valueTS, floor []int64
	// repeating: the cycle being emitted is a heartbeat's (stamped by the
	// gateway's clock, not the server's): it does not move valueTS
	repeating bool
	// unitGen counts the changes of units handed to OnUnits (changed
	// under mu): a poll whose read straddles one withholds its values of
	// UnitFromNode points (read in the unit before or after?).
	unitGen atomic.Uint64
	// kinds is each point's kind, set by its first value (Good or
	// Uncertain): kindNumber or kindText, 0 before it. A later value of
	// the other kind is published Bad with statusTypeMismatch (review15
	// F3: a numeric node that turned into a String was published good as
	// text with the numeric unit). On both sides of a session worker: the
	// gateway's side keeps them across workers.
	kinds []uint8
	// replied: a cycle with the server's answer (Replied) was emitted since
	// the session started; a session that comes up but gets no answer
	// (a server that never answers Publish) does not end the outage
	// (review15 F5)
	replied atomic.Bool
	// probation: the last subscription went silent (ErrPublishSilent) and
	// none has answered Publish twice since (subSession.probation)
	probation atomic.Bool
}

// unitOf is the unit last handed to OnUnits for point i (mu held).
func (r *runState) unitOf(i int) (NodeUnit, bool) {
	k, ok := slices.BinarySearchFunc(r.units, i, func(u NodeUnit, i int) int { return u.Index - i })
	if !ok {
		return NodeUnit{}, false
	}
	return r.units[k], true
}

// emit hands a cycle to the caller; calls never overlap.
func (r *runState) emit(cyc *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emitLocked(cyc)
}

func (r *runState) emitLocked(cyc *sample.Cycle) {
	if cyc.Replied && !cyc.Lost {
		r.replied.Store(true)
	}
	r.checkKinds(cyc.Samples)
	if r.last == nil {
		r.vetAhead(cyc.Samples)
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
		s := &cyc.Samples[i]
		if r.floor != nil && s.Quality.HasValue() && s.TS != 0 {
			// a heartbeat repeats a value from before the change
			if f := r.floor[s.Index]; f != 0 && (s.TS <= f || r.repeating) {
				r.c.redatedLog.Log(context.Background(), r.c.log, slog.LevelWarn, "opc ua value after a unit change is not newer than the last value published in the unit before; published bad until the server gives a newer SourceTimestamp",
					"node", r.c.points[s.Index].NodeID, "source_ts", s.TS, "last_ts", f, "status", statusHex(statusUnitUnknown))
				s.Quality, s.Status, s.Num, s.Str, s.IsStr = telemetry.QualityBad, statusUnitUnknown, 0, "", false
				r.c.m.bad(statusUnitUnknown)
			} else if !r.repeating {
				r.floor[s.Index], r.valueTS[s.Index] = 0, s.TS
			}
		}
		if s.Quality != telemetry.QualityStale {
			r.last[s.Index] = lastOf(s)
			r.lastAt[s.Index] = now
		}
	}
	r.emitFn(cyc)
}

// forgetReported makes every point unreported for the heartbeat (lastAt
// 0): no copy of a point's last value is sent until the point is reported
// again. After a notification of an unknown client handle, which may have
// carried any point's change, a later keep-alive confirms nothing about
// the old values (review17 F2 carried on: before, the first keep-alive
// after it made the heartbeat repeat the old values good).
func (r *runState) forgetReported() {
	r.mu.Lock()
	clear(r.lastAt)
	r.mu.Unlock()
}

// Point kinds (runState.kinds).
const (
	kindNumber = 1
	kindText   = 2
)

// checkKinds makes a value of another kind than its point's first Bad
// with statusTypeMismatch, counted and logged (one line a minute); mu held.
func (r *runState) checkKinds(ss []sample.Sample) {
	for i := range ss {
		s := &ss[i]
		if !s.Quality.HasValue() {
			continue
		}
		k := uint8(kindNumber)
		if s.IsStr {
			k = kindText
		}
		switch first := r.kinds[s.Index]; first {
		case 0:
			r.kinds[s.Index] = k
		case k:
		default:
			r.c.kindLog.Log(context.Background(), r.c.log, slog.LevelWarn, "opc ua value of another type than the point's first value; published bad (restart the device to accept a changed DataType)",
				"node", r.c.points[s.Index].NodeID, "text", s.IsStr, "status", statusHex(statusTypeMismatch))
			s.Quality, s.Status, s.Num, s.Str, s.IsStr = telemetry.QualityBad, statusTypeMismatch, 0, "", false
			r.c.m.bad(statusTypeMismatch)
		}
	}
}

// since is the time since r.epoch in ns, plus 1 so that it is never 0.
func (r *runState) since() int64 { return int64(time.Since(r.epoch)) + 1 }

// lastStatus is the last status reported for point i.
func (r *runState) lastStatus(i int) uint32 {
	if r.last == nil {
		return r.status[i]
	}
	return r.last[i].status
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
	r := &runState{c: c, emitFn: emit, last: make([]lastSample, len(c.points)), lastAt: make([]int64, len(c.points)), epoch: time.Now(),
		kinds: make([]uint8, len(c.points))}
	if slices.ContainsFunc(c.points, func(p Point) bool { return p.UnitFromNode }) {
		r.valueTS, r.floor = make([]int64, len(c.points)), make([]int64, len(c.points))
	}
	return r
}

// lastSample is what the heartbeat re-reports of a point's last sample:
// all of it but its index (the position) and its source time (a re-report
// is stamped now). 32 bytes a point instead of a 48-byte sample.Sample
// (issue 17).
type lastSample struct {
	num     float64
	str     string
	status  uint32
	quality telemetry.Quality
	isStr   bool
	silent  bool
}

func lastOf(s *sample.Sample) lastSample {
	return lastSample{num: s.Num, str: s.Str, status: s.Status, quality: s.Quality, isStr: s.IsStr, silent: s.Silent}
}

// sample is l as point i's sample at ts.
func (l *lastSample) sample(i int, ts int64) sample.Sample {
	return sample.Sample{Index: i, Num: l.num, Str: l.str, IsStr: l.isStr, Quality: l.quality, Silent: l.silent, Status: l.status, TS: ts}
}

// newForwardState is the state of the gateway's side of a session worker.
func newForwardState(c *Client, emit func(*sample.Cycle)) *runState {
	return &runState{c: c, emitFn: emit, status: make([]uint32, len(c.points)), kinds: make([]uint8, len(c.points))}
}

// runInProcess is Run with isolation none, and the worker's own Run.
func (c *Client) runInProcess(ctx context.Context, emit func(*sample.Cycle)) error {
	r := newRunState(c, emit)
	bo := backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax}
	staleSent := false
	if o := c.outage; o != nil {
		// started again within an outage (review17 F3): it goes on
		staleSent = o.StaleSent
		r.probation.Store(o.Probation)
		for range min(o.Attempts, 64) {
			bo.Next()
		}
	}
	// connectLog: a server that stays unreachable costs one line per
	// minute (with the count of the retries not logged), not one per retry.
	connectLog := logging.Limiter{Every: ConnectLogEvery}
	for {
		c.m.state.Set(StateConnecting)
		connected := false
		r.replied.Store(false)
		err := c.guarded(ctx, "session", func() error {
			return c.session(ctx, r, func() { connected = true })
		})
		if errors.Is(err, ErrPublishSilent) {
			r.probation.Store(true)
		}
		if r.replied.Load() {
			// The outage ended only if the server answered on the session
			// (data, a keep-alive, a read): a session that came up but
			// got no answer (review15 F5: a server that never answers
			// Publish) does not mark the points stale again nor reset the
			// backoff, so the device stays dead, without a birth or a
			// stale flap per attempt, until data flows.
			staleSent = false
			bo.Reset()
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
// ctx ends. up is called once the session is acquiring. When a namespace
// check finds that the server's NamespaceArray now resolves a node id
// differently (a namespace added to the live server, a URI moved), the
// acquisition is rebuilt on the new node table within the same session.
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
	defer c.live.Store(nil)
	lim, err := c.limits(ctx, cl)
	if err != nil {
		return err
	}
	c.setStatus(func(s *Status) { s.Limits = lim })
	for {
		kicks := newNSKicks()
		c.live.Store(&live{cl: cl, nodes: nodes, methods: methods, kicks: kicks})
		err := c.acquire(ctx, cl, r, nodes, lim, up, kicks)
		var ch *nsChanged
		if !errors.As(err, &ch) {
			return err
		}
		nodes, methods, up = ch.nodes, ch.methods, nil
	}
}

// acquire runs a session's acquisition on node table nodes: the units,
// the subscription and its loops, the poll groups, the points of absent
// namespaces, the watchdog and the namespace watch. It returns when one
// of them fails (an *nsChanged from the namespace watch: the caller
// rebuilds it on the new table) or ctx ends. up, when not nil, is called
// once acquiring (the session's first acquisition).
func (c *Client) acquire(ctx context.Context, cl *opcua.Client, r *runState, nodes *nodeTable, lim Limits, up func(), kicks *nsKicks) error {
	props, err := c.units(ctx, cl, nodes, lim, r)
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	emitAbsent := r.emit
	var subIdx, pollIdx []int
	for i, p := range c.points {
		if p.NodeID == "" || nodes.isAbsent(i) {
			continue // an action point, or a namespace not on the server: nothing to acquire
		}
		if p.Mode == ModePoll {
			pollIdx = append(pollIdx, i)
		} else {
			subIdx = append(subIdx, i)
		}
	}
	var sub *subscription
	if len(subIdx) > 0 {
		sub, err = c.subscribe(ctx, cl)
		if err != nil {
			return err
		}
		s := &subSession{c: c, cl: cl, r: r, sub: sub, nodes: nodes, lim: lim, refused: map[int]ua.StatusCode{}, probation: r.probation.Load(), kicks: kicks}
		if err := s.monitor(ctx, subIdx, true); err != nil {
			return err
		}
		emitAbsent = s.emit // held like the refused items while on probation
		g.Go(func() error { return c.guarded(gctx, "publish", func() error { return s.publishLoop(gctx) }) })
		g.Go(func() error {
			return c.guarded(gctx, "monitored item retry", func() error { return s.retryRefused(gctx) })
		})
		if c.cfg.Heartbeat > 0 {
			g.Go(func() error { return c.guarded(gctx, "heartbeat", func() error { return c.heartbeat(gctx, r, sub) }) })
		}
	}
	for iv, idx := range c.absentGroups(nodes) {
		g.Go(func() error {
			return c.guarded(gctx, "absent namespaces", func() error { return c.absentLoop(gctx, emitAbsent, idx, iv) })
		})
	}
	groups := map[time.Duration][]int{}
	for _, i := range pollIdx {
		groups[c.points[i].PollInterval] = append(groups[c.points[i].PollInterval], i)
	}
	for iv, idx := range groups {
		g.Go(func() error {
			return c.guarded(gctx, "poll", func() error {
				p, err := c.newPoller(cl, nodes, props, idx, lim)
				if err != nil {
					return err
				}
				p.kicks = kicks
				return c.poll(gctx, r, p, iv)
			})
		})
	}
	g.Go(func() error { return c.guarded(gctx, "watchdog", func() error { return c.watchdog(gctx, cl) }) })
	g.Go(func() error {
		return c.guarded(gctx, "namespace watch", func() error { return c.watchNamespaces(gctx, cl, nodes, kicks) })
	})
	c.m.state.Set(StateConnected)
	if up != nil {
		c.setStatus(func(s *Status) {
			s.Connected, s.Since, s.LastError = true, time.Now(), ""
			s.Sessions++
		})
		c.log.Info("opc ua session up", "endpoint", c.cfg.Endpoint, "policy", c.cfg.SecurityPolicy, "mode", c.cfg.SecurityMode,
			"subscribed", len(subIdx), "polled", len(pollIdx), "max_nodes_per_read", lim.MaxNodesPerRead,
			"max_monitored_items_per_call", lim.MaxMonitoredItemsPerCall, "namespace_absent", len(nodes.absent))
		up()
	} else {
		c.log.Info("opc ua acquisition rebuilt after a namespace change", "subscribed", len(subIdx), "polled", len(pollIdx),
			"namespace_absent", len(nodes.absent))
	}
	err = g.Wait()
	if stopped(ctx) {
		return nil // a requested stop, not the acquisition's error
	}
	if sub != nil && errors.Is(err, errNamespacesChanged) {
		// the next acquisition subscribes again: this subscription's
		// notifications must not reach its publish loop
		if derr := c.deleteSubscription(ctx, cl, sub); derr != nil {
			return derr
		}
	}
	return err
}

// deleteSubscription deletes sub on the server.
func (c *Client) deleteSubscription(ctx context.Context, cl *opcua.Client, sub *subscription) error {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	resp, _, err := send[*ua.DeleteSubscriptionsResponse](dctx, cl, &ua.DeleteSubscriptionsRequest{SubscriptionIDs: []uint32{sub.id}})
	if err == nil && len(resp.Results) == 1 && resp.Results[0] != ua.StatusOK {
		err = resp.Results[0]
	}
	if err != nil {
		return fmt.Errorf("opcua: delete subscription %d: %w", sub.id, err)
	}
	return nil
}

// units reads the engineering units of the points that take them from
// their node, at session start and again when a unit may have changed, and
// hands them to OnUnits when they are new or changed. A failure fails the
// session: values in a guessed unit would be worse than none, and Run
// reports the device lost meanwhile. props are the property nodes the
// units were read from, by point (nil without UnitFromNode points).
func (c *Client) units(ctx context.Context, cl *opcua.Client, nodes *nodeTable, lim Limits, r *runState) ([]unitProps, error) {
	var idx []int
	for i, p := range c.points {
		if p.UnitFromNode && p.NodeID != "" && !nodes.isAbsent(i) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, nil
	}
	sub, err := nodes.of(idx)
	if err != nil {
		return nil, err
	}
	c.unitsMu.Lock()
	defer c.unitsMu.Unlock()
	got, ps, err := readUnits(ctx, &session{cl: cl, cfg: &c.cfg, lim: lim}, sub)
	if err != nil {
		return nil, fmt.Errorf("opcua: read engineering units: %w", err)
	}
	props := make([]unitProps, len(c.points))
	for j := range got {
		got[j].Index = idx[j]
		props[idx[j]] = ps[j]
	}
	// Under mu: no cycle is emitted between the new units and the
	// generation that marks them (a worker sends them in this order too).
	r.mu.Lock()
	defer r.mu.Unlock()
	if !sameUnits(r.units, got) {
		if r.units != nil {
			c.m.unitChanges(changedUnits(r.units, got))
			if r.floor != nil {
				for _, u := range got {
					k, ok := slices.BinarySearchFunc(r.units, u.Index, func(x NodeUnit, i int) int { return x.Index - i })
					// the unit, not a range alone: a range does not change
					// what a value means
					if !ok || (r.units[k].Err == nil) != (u.Err == nil) || r.units[k].driverUnit().UnitText() != u.driverUnit().UnitText() {
						r.floor[u.Index] = r.valueTS[u.Index]
					}
				}
			}
		}
		r.units = got
		r.unitGen.Add(1)
		if c.onUnits != nil {
			c.onUnits(got)
		}
	}
	return props, nil
}

// changedUnits is how many points' units differ between a and b (both
// by Index, sorted).
func changedUnits(a, b []NodeUnit) int {
	n := 0
	for _, u := range b {
		k, ok := slices.BinarySearchFunc(a, u.Index, func(x NodeUnit, i int) int { return x.Index - i })
		if !ok || !sameUnit(a[k], u) {
			n++
		}
	}
	return n
}

func sameUnits(a, b []NodeUnit) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameUnit(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameUnit(x, y NodeUnit) bool {
	if (x.Err == nil) != (y.Err == nil) || (x.Err != nil && x.Err.Error() != y.Err.Error()) {
		return false
	}
	// a NaN bound (a server's "unknown") is the same as a NaN bound: not a
	// change of units at every check
	if !sameFloat(x.Min, y.Min) || !sameFloat(x.Max, y.Max) {
		return false
	}
	x.Err, y.Err, x.Min, y.Min, x.Max, y.Max = nil, nil, 0, 0, 0, 0
	return x == y
}

func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// nodeTable is a session's node ids: resolve checks every point's at the
// session's start and at parses one again where a request needs it. A
// session keeps no parsed id per point (a *ua.NodeID and its bytes are
// ~70 bytes a node, 1.4 MB for 20,000 nodes for as long as the session
// lives, issue 17); the requests that outlive the start (a poll group's
// reads) hold their own.
type nodeTable struct {
	points []Point
	ns     []string // the server's namespace array; nil when no node id needs it
	// moved: a pinned ns=<index> whose URI the server has at another
	// index this session (index -> its index now); gone: one whose URI is
	// not on the server (index -> pinned URI, "" when never pinned)
	// (namespace.go)
	moved map[uint16]uint16
	gone  map[uint16]string
	// absent: the points whose node is in a namespace not on the server
	// this session, in point order: never read, published bad
	// StatusNodeIDUnknown
	absent []int
	// reading: the URI each namespace index read this session must name
	// (a poll read verifies it, holds); sig: the mapping in short
	// (reading, gone, nsu= URIs missing), equal for two tables that
	// resolve every node id alike
	reading map[uint16]string
	sig     string
}

// holds reports whether arr, a NamespaceArray read now, still has at each
// index this table reads the URI it was resolved to.
func (t *nodeTable) holds(arr []string) bool {
	for k, uri := range t.reading {
		if int(k) >= len(arr) || arr[k] != uri {
			return false
		}
	}
	return true
}

// parse is s as a node id of this session: its nsu=<uri>; form resolved
// with the namespace array, its ns=<index> form mapped to where the
// index's pinned URI is now. A namespace not on the server is an error
// wrapping errNamespaceGone.
func (t *nodeTable) parse(s string) (*ua.NodeID, error) {
	if uri, rest, ok, err := nsURI(s); ok {
		if err != nil {
			return nil, err
		}
		idx := slices.Index(t.ns, uri)
		if idx < 0 {
			return nil, fmt.Errorf("%w: %q (has %s)", errNamespaceGone, uri, nsText(t.ns))
		}
		s = "ns=" + strconv.Itoa(idx) + ";" + rest
	} else if idx, rest, ok := nsIndex(s); ok && idx > 0 {
		if uri, gone := t.gone[idx]; gone {
			if uri == "" {
				return nil, fmt.Errorf("%w: index %d (has %s)", errNamespaceGone, idx, nsText(t.ns))
			}
			return nil, fmt.Errorf("%w: ns=%d was %q at the first session (has %s)", errNamespaceGone, idx, uri, nsText(t.ns))
		}
		if to, moved := t.moved[idx]; moved {
			s = "ns=" + strconv.Itoa(int(to)) + ";" + rest
		}
	}
	return ua.ParseNodeID(s)
}

// at is point i's node id (the point has one: callers skip action
// points). resolve has parsed it once, so an error here is not expected
// but for the points in t.absent.
func (t *nodeTable) at(i int) (*ua.NodeID, error) {
	n, err := t.parse(t.points[i].NodeID)
	if err != nil {
		return nil, fmt.Errorf("opcua: points[%d].node_id: %w", i, err)
	}
	return n, nil
}

// of is the node ids of points idx, in that order.
func (t *nodeTable) of(idx []int) ([]*ua.NodeID, error) {
	out := make([]*ua.NodeID, len(idx))
	for j, i := range idx {
		n, err := t.at(i)
		if err != nil {
			return nil, err
		}
		out[j] = n
	}
	return out, nil
}

// len is the number of points.
func (t *nodeTable) len() int { return len(t.points) }

// isAbsent reports whether point i's namespace is not on the server.
func (t *nodeTable) isAbsent(i int) bool {
	_, ok := slices.BinarySearch(t.absent, i)
	return ok
}

// resolve checks the points' node ids and parses their methods' object
// and method ids for this session, with the server's namespace array
// where a node id needs it (namespaces). A point whose namespace is not
// on the server is not an error: it is listed in the table's absent
// points (its method ids fail its commands).
func (c *Client) resolve(ctx context.Context, cl *opcua.Client) (*nodeTable, []*methodIDs, error) {
	var arr []string
	if used, uris := c.nsUse(); len(used)+len(uris) > 0 {
		var err error
		if arr, err = c.readNamespaceArray(ctx, cl); err != nil {
			return nil, nil, err
		}
	}
	return c.resolveWith(arr)
}

// resolveWith is resolve with arr, the server's NamespaceArray read now
// (nil when no node id needs it).
func (c *Client) resolveWith(arr []string) (*nodeTable, []*methodIDs, error) {
	t := &nodeTable{points: c.points, moved: map[uint16]uint16{}, gone: map[uint16]string{}, reading: map[uint16]string{}}
	if arr != nil {
		used, uris := c.nsUse()
		c.namespaces(arr, used, uris, t)
	}
	var methods []*methodIDs
	// field is formatted only for an error: a 10,000-node device parses
	// every node id at each session start
	parse := func(i int, field, s string) (*ua.NodeID, error) {
		n, err := t.parse(s)
		if err != nil {
			return nil, fmt.Errorf("opcua: points[%d].%s: %w", i, field, err)
		}
		return n, nil
	}
	for i, p := range c.points {
		if p.NodeID != "" {
			if _, err := parse(i, "node_id", p.NodeID); errors.Is(err, errNamespaceGone) {
				t.absent = append(t.absent, i)
			} else if err != nil {
				return nil, nil, err
			}
		}
		if p.Method == nil {
			continue
		}
		if methods == nil {
			methods = make([]*methodIDs, len(c.points))
		}
		obj, err := parse(i, "write.method.object", p.Method.Object)
		if err == nil {
			var meth *ua.NodeID
			meth, err = parse(i, "write.method.method", p.Method.Method)
			methods[i] = &methodIDs{object: obj, method: meth}
		}
		if errors.Is(err, errNamespaceGone) {
			methods[i] = &methodIDs{err: err}
		} else if err != nil {
			return nil, nil, err
		}
	}
	return t, methods, nil
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
// (stamped with the server's last Publish answer), so consumers can tell "unchanged" from "gone": a
// subscription reports changes only. A point's last Good, Uncertain or Bad
// answer is repeated; nothing is invented for a point never heard from.
// "Unchanged" is known only from the server: a point's value is repeated
// only when the server answered a Publish (data or keep-alive) after the
// point was last reported (its notification or the previous heartbeat),
// i.e. confirmed since then that nothing changed, and within two
// keep-alive periods. A server that stops publishing with its connection
// kept open gets no copies after its last answer: silence, not fresh
// values (heartbeat cycles are emitted only then, so the gateway's stall
// watch sees the silence and declares the device dead).
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
		if !sub.confirmedWithin(2 * sub.cycleInterval()) {
			continue
		}
		r.mu.Lock()
		due = due[:0]
		now := time.Now()
		since := r.since()
		// the last answer, on r's clock (lastAt): wall ns to monotonic
		wall := sub.confirmed.Load()
		answered := since - now.UnixNano() + wall
		// a copy is stamped with that answer, the last time the server
		// said the value was unchanged, not with now (review13 F5: a frozen
		// server's values came stamped fresh for up to two keep-alive
		// periods); never later than now
		stamp := min(wall/int64(time.Millisecond), now.UnixMilli())
		for i, p := range c.points {
			if p.Mode == ModeSubscribe && r.lastAt[i] != 0 && answered > r.lastAt[i] && time.Duration(since-r.lastAt[i]) >= hb && r.last[i].quality != telemetry.QualityStale {
				due = append(due, r.last[i].sample(i, stamp))
			}
		}
		if len(due) > 0 {
			r.repeating = true
			r.emitLocked(&sample.Cycle{Samples: due, Start: now, Interval: sub.cycleInterval(), Replied: true, Err: firstBad(due)})
			r.repeating = false
		}
		r.mu.Unlock()
	}
}

// poll reads a group of points every interval, one cycle per read, with
// the units of its UnitFromNode points with every read by default, or
// every unit_check_interval (poller.read, poller.probeUnits). A point whose
// unit changed on the server, whose node gained EngineeringUnits, or whose
// value the server flags SemanticsChanged, is published bad in that cycle;
// the units are then read again by the path of the session's start
// (OnUnits, hence the gateway's conversion and birth, before the next
// cycle) and the next read publishes it in the new unit.
func (c *Client) poll(ctx context.Context, r *runState, p *poller, iv time.Duration) error {
	t := time.NewTicker(iv)
	defer t.Stop()
	every := time.Duration(c.cfg.UnitCheckInterval)
	lastCheck := time.Now() // the session's start read the units
	for {
		start := time.Now()
		check := len(p.check)+len(p.probe) > 0 && (p.forceCheck || c.cfg.UnitCheckInterval == UnitCheckEveryRead ||
			every > 0 && (every <= iv || start.Sub(lastCheck) >= every))
		if check {
			lastCheck = start
		}
		gen := r.unitGen.Load()
		err := p.read(ctx, check)
		if err == nil && check {
			// after the values: a property seen now may have been there
			// when they were read; one not seen was not (docs/opcua.md)
			err = p.probeUnits(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		p.vetNamespaces()
		if p.settle(r, gen, check && len(p.check) > 0, &sample.Cycle{Start: start, Duration: time.Since(start), Interval: iv, Replied: true}) {
			props, err := c.units(ctx, p.cl, p.nodes, p.lim, r)
			if err != nil {
				if stopped(ctx) {
					return nil
				}
				return err
			}
			c.unitReadLog.Log(ctx, c.log, slog.LevelInfo, "opc ua engineering units read again after a polled point's unit changed", "points", len(p.changed))
			// the properties as browsed again (a server may have replaced
			// them): the checks read those from now on
			force := p.forceCheck
			np, err := c.newPoller(p.cl, p.nodes, props, p.idx, p.lim)
			if err != nil {
				return err
			}
			p = np
			p.forceCheck = force
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// statusUnitUnknown is the status of a polled value withheld because its
// node's unit changed (or may have) and is not applied yet:
// Bad_ConfigurationError, the status of a value without a known unit
// (normalize.StatusNoUnit).
const statusUnitUnknown = uint32(0x80890000) // ua.StatusBadConfigurationError

// Kinds of a poll request's item.
const (
	itemValue uint8 = iota
	itemEU
	itemRange
	// itemValueAgain: the value read again after its properties, when
	// they are in a later request than the value (max_nodes_per_read below
	// the point's items): the first read is published only if this one
	// matches it (value, status, SourceTimestamp)
	itemValueAgain
)

// readPlan is a poll group's Read requests: items and the batch bounds
// within MaxNodesPerRead. kind and pos (nil: every item is the value of
// the point at its position) say what each item reads, for which point.
type readPlan struct {
	reqs   []*ua.ReadValueID
	bounds []int // batch k is reqs[bounds[k]:bounds[k+1]]
	kind   []uint8
	pos    []int32
	// ns: the position in reqs of the NamespaceArray item (i=2255, the
	// plan's last item: after every value, in the last batch), -1 when
	// the group's node ids name no namespace
	ns int
}

// poller is one poll group's reads on one session: its requests are built
// once, its buffers reused (a cycle is valid only during emit), so a poll
// allocates nothing of its own beyond what gopcua's Read does.
type poller struct {
	c     *Client
	cl    *opcua.Client
	nodes *nodeTable
	lim   Limits
	idx   []int

	plain readPlan // the values
	// checked: the values with the EngineeringUnits and EURange of the
	// UnitFromNode points, each point's items in one request (a value and
	// the unit it is in are read together)
	checked readPlan
	check   []int // positions (in idx) of the points whose units are checked
	// probe: positions of the UnitFromNode points whose node had no
	// EngineeringUnits property when the units were read: a check browses
	// their properties after reading their values, and appeared gets those
	// that have gained EngineeringUnits (or an EURange) since
	probe     []int
	probeReq  []*ua.BrowseDescription
	probeHad  []unitProps // by probe position: what the node had
	appeared  []int
	checkable []bool     // by position: in check
	units     []NodeUnit // by position: units read with the values
	ss        []sample.Sample
	flagged   []int // positions whose value the server flagged SemanticsChanged
	changed   []int // positions whose unit differs from the one in force
	// moved: positions whose value changed between its read and the
	// read after its properties (split requests): withheld
	moved []int
	// forceCheck: the next read checks the units (a UnitFromNode point's
	// value was flagged SemanticsChanged)
	forceCheck bool
	flagLog    logging.Limiter // SemanticsChanged on points with a configured unit
	// nsOK: the NamespaceArray read with the values (readPlan.ns) still
	// names at each index read the URI it was resolved to (nodeTable.holds)
	nsOK  bool
	kicks *nsKicks // the namespace watch's, nil outside a session
}

func (c *Client) newPoller(cl *opcua.Client, nodes *nodeTable, props []unitProps, idx []int, lim Limits) (*poller, error) {
	batch := max(1, int(lim.MaxNodesPerRead))
	p := &poller{c: c, cl: cl, nodes: nodes, lim: lim, idx: idx, ss: make([]sample.Sample, len(idx)), flagLog: logging.Limiter{Every: time.Minute}}
	// the group's node ids, held by its requests for the session's life
	ids, err := nodes.of(idx)
	if err != nil {
		return nil, err
	}
	value := func(j int) *ua.ReadValueID {
		return &ua.ReadValueID{NodeID: ids[j], AttributeID: ua.AttributeIDValue}
	}
	p.plain.reqs = make([]*ua.ReadValueID, len(idx), len(idx)+1)
	for j := range idx {
		p.plain.reqs[j] = value(j)
	}
	// A group whose node ids depend on the NamespaceArray reads it after
	// its values, in the same request when the batch has room (else in a
	// request of its own after them): the values count only if the
	// indexes still name the URIs they were resolved to (settle).
	p.plain.ns, p.checked.ns = -1, -1
	guard := nodes.ns != nil && slices.ContainsFunc(idx, func(i int) bool { return namesNamespace(c.points[i].NodeID) })
	if guard {
		p.plain.ns = len(p.plain.reqs)
		p.plain.reqs = append(p.plain.reqs, &ua.ReadValueID{NodeID: nsArrayID, AttributeID: ua.AttributeIDValue})
	}
	for from := 0; from < len(p.plain.reqs); from += batch {
		p.plain.bounds = append(p.plain.bounds, from)
	}
	p.plain.bounds = append(p.plain.bounds, len(p.plain.reqs))
	for j, i := range idx {
		if !c.points[i].UnitFromNode || props == nil {
			continue
		}
		if props[i].eu != nil || props[i].rng != nil {
			p.check = append(p.check, j)
		}
		if props[i].eu == nil {
			p.probe = append(p.probe, j)
			p.probeReq = append(p.probeReq, propertiesOf(ids[j]))
			p.probeHad = append(p.probeHad, props[i])
		}
	}
	if len(p.check) == 0 {
		return p, nil
	}
	p.units = make([]NodeUnit, len(idx))
	p.checkable = make([]bool, len(idx))
	for _, j := range p.check {
		p.checkable[j] = true
	}
	pl := &p.checked
	pl.bounds = []int{0}
	n := 0 // items in the current batch
	add := func(r *ua.ReadValueID, kind uint8, j int) {
		if n == batch {
			pl.bounds, n = append(pl.bounds, len(pl.reqs)), 0
		}
		pl.reqs, pl.kind, pl.pos = append(pl.reqs, r), append(pl.kind, kind), append(pl.pos, int32(j))
		n++
	}
	for j, i := range idx {
		k := 1
		if props != nil && c.points[i].UnitFromNode {
			if props[i].eu != nil {
				k++
			}
			if props[i].rng != nil {
				k++
			}
		}
		if n > 0 && n+k > batch && k <= batch {
			pl.bounds, n = append(pl.bounds, len(pl.reqs)), 0 // keep the point's items in one request
		}
		add(p.plain.reqs[j], itemValue, j)
		if k > 1 {
			b := len(pl.bounds)
			if u := props[i].eu; u != nil {
				add(&ua.ReadValueID{NodeID: u, AttributeID: ua.AttributeIDValue}, itemEU, j)
			}
			if u := props[i].rng; u != nil {
				add(&ua.ReadValueID{NodeID: u, AttributeID: ua.AttributeIDValue}, itemRange, j)
			}
			if len(pl.bounds) != b {
				// split: the properties read after the value say which
				// unit was in force then only if the value has not moved
				// meanwhile (a one-step server rewrites the value, and its
				// SourceTimestamp, with every unit change)
				add(p.plain.reqs[j], itemValueAgain, j)
			}
		}
	}
	if guard {
		pl.ns = len(pl.reqs)
		add(p.plain.reqs[p.plain.ns], itemValue, -1)
	}
	pl.bounds = append(pl.bounds, len(pl.reqs))
	return p, nil
}

// read reads the group's values into p.ss (with the units of the checked
// points into p.units when check), in batches within MaxNodesPerRead. The
// positions of values the server flags SemanticsChanged go to p.flagged
// (settle decides). A failed request fails the session.
func (p *poller) read(ctx context.Context, check bool) error {
	c := p.c
	pl := &p.plain
	if check && len(p.check) > 0 {
		pl = &p.checked
		for _, j := range p.check {
			p.units[j] = nodeUnit(p.idx[j])
		}
	}
	p.flagged, p.moved = p.flagged[:0], p.moved[:0]
	p.nsOK = true
	for b := 0; b+1 < len(pl.bounds); b++ {
		from, to := pl.bounds[b], pl.bounds[b+1]
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		resp, err := p.cl.Read(rctx, &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth, NodesToRead: pl.reqs[from:to]})
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
		now := c.received()
		for k, dv := range resp.Results {
			if from+k == pl.ns {
				arr, ok := namespaceArray(dv)
				p.nsOK = ok && p.nodes.holds(arr)
				continue
			}
			j, kind := from+k, itemValue
			if pl.kind != nil {
				j, kind = int(pl.pos[from+k]), pl.kind[from+k]
			}
			switch kind {
			case itemEU:
				p.units[j].setEU(dv)
				continue
			case itemRange:
				p.units[j].setRange(dv)
				continue
			case itemValueAgain:
				again, restamped := c.vetted(p.idx[j], dv, now)
				if s := &p.ss[j]; restamped {
					// both stamped at their receipt: the same reading when
					// the rest is (a moved SourceTimestamp that was credible
					// the first time is not restamped now)
					again.TS = s.TS
				}
				if s := &p.ss[j]; s.Quality.HasValue() && !sameReading(*s, again) {
					p.moved = append(p.moved, j)
				}
				continue
			}
			s := c.sampleAt(p.idx[j], dv, now)
			if s.Status&statusSemanticsChanged != 0 {
				p.flagged = append(p.flagged, j)
			}
			if s.Quality != telemetry.QualityGood {
				c.m.bad(s.Status)
			}
			p.ss[j] = s
		}
	}
	return nil
}

// probeUnits browses the properties of the probed points (a node without
// EngineeringUnits when the units were read) after their values
// were read, and puts in p.appeared those that have gained one: their
// values are withheld and the units read again (settle). A failed browse
// fails the session, as a failed read does.
func (p *poller) probeUnits(ctx context.Context) error {
	p.appeared = p.appeared[:0]
	if len(p.probe) == 0 {
		return nil
	}
	s := &session{cl: p.cl, cfg: &p.c.cfg, lim: p.lim}
	refs, err := s.browse(ctx, p.probeReq)
	if err != nil {
		return err
	}
	for k, rs := range refs {
		had := p.probeHad[k]
		for _, r := range rs {
			if r.BrowseName == nil || r.NodeID == nil {
				continue
			}
			if n := r.BrowseName.Name; n == "EngineeringUnits" && had.eu == nil || n == "EURange" && had.rng == nil {
				p.appeared = append(p.appeared, p.probe[k])
				break
			}
		}
	}
	return nil
}

// settle finishes a read under r.mu and emits its cycle: a checked point
// whose unit differs from the one in force is withheld (statusUnitUnknown)
// and noted in p.changed; when units were handed to OnUnits since the read
// began (gen), every UnitFromNode value of the read is withheld: it may be
// in the unit before.
//
// A value the server flags SemanticsChanged (Part 4, 7.39: the node's
// metadata changed; defined for monitored items, a server may set it on
// Read results too) of a UnitFromNode point is published only when its
// unit was read with it and is the one in force; otherwise it is withheld
// (Bad, the server's status, as on the subscription path) and the units
// are read again. Either way the next read checks the units (forceCheck),
// so a server that keeps flagging its Read results costs a unit check per
// read, not a re-read of the units. A point whose unit is configured keeps
// it: its value is published with the bit cleared (warned about).
//
// settle reports whether the units must be read again.
func (p *poller) settle(r *runState, gen uint64, checked bool, cyc *sample.Cycle) bool {
	c := p.c
	r.mu.Lock()
	defer r.mu.Unlock()
	p.changed = p.changed[:0]
	if checked {
		for _, j := range p.check {
			was, ok := r.unitOf(p.idx[j])
			now := p.units[j]
			if ok && sameUnit(was, now) {
				continue
			}
			p.changed = append(p.changed, j)
			c.unitChangeLog.Log(context.Background(), c.log, slog.LevelWarn, "opc ua engineering units of a polled point changed; its value is published bad until the new unit is applied",
				append([]any{"node", c.points[p.idx[j]].NodeID}, unitChange(was, ok, now, "status", statusHex(statusUnitUnknown))...)...)
			p.withhold(&p.ss[j], statusUnitUnknown)
		}
	}
	for _, j := range p.appeared {
		if slices.Contains(p.changed, j) {
			continue
		}
		p.changed = append(p.changed, j)
		c.unitChangeLog.Log(context.Background(), c.log, slog.LevelWarn, "opc ua engineering units of a polled point changed; its value is published bad until the new unit is applied",
			"node", c.points[p.idx[j]].NodeID, "changed", "a property appeared (EngineeringUnits or EURange)", "status", statusHex(statusUnitUnknown))
		p.withhold(&p.ss[j], statusUnitUnknown)
	}
	p.appeared = p.appeared[:0]
	for _, j := range p.moved {
		c.movedLog.Log(context.Background(), c.log, slog.LevelWarn, "opc ua value of a polled point changed while its engineering units were read in a separate request (max_nodes_per_read); its value is published bad for this read",
			"node", c.points[p.idx[j]].NodeID, "status", statusHex(statusUnitUnknown))
		p.withhold(&p.ss[j], statusUnitUnknown)
	}
	reread := len(p.changed) > 0
	p.forceCheck = false
	for _, j := range p.flagged {
		s := &p.ss[j]
		if !c.points[p.idx[j]].UnitFromNode {
			p.flagLog.Log(context.Background(), c.log, slog.LevelWarn,
				"opc ua server reports changed semantics (SemanticsChanged) on a polled point with a configured unit; keeping the configured unit",
				"node", c.points[p.idx[j]].NodeID)
			s.Status &^= statusSemanticsChanged
			s.Quality = Quality(s.Status)
			continue
		}
		p.forceCheck = true
		if checked && p.checkable[j] && !slices.Contains(p.changed, j) {
			// read with the unit in force: the value is in that unit
			s.Status &^= statusSemanticsChanged
			s.Quality = Quality(s.Status)
			continue
		}
		p.withhold(s, s.Status)
		reread = true
	}
	if r.unitGen.Load() != gen {
		for j, i := range p.idx {
			if c.points[i].UnitFromNode {
				p.withhold(&p.ss[j], statusUnitUnknown)
			}
		}
	}
	cyc.Samples, cyc.Err = p.ss, firstBad(p.ss)
	r.emitLocked(cyc)
	return reread
}

// vetNamespaces withholds (bad StatusNodeIDUnknown) the values of the
// read's points whose node ids name a namespace when the NamespaceArray
// read with them no longer names at their indexes the URIs they were
// resolved to: the server changed its namespace table during the session
// (OPC 10000-5, 6.3.1 forbids modifying or deleting entries while a
// session is open), and a value read under an index that now names
// another namespace may be another node's. The namespace watch checks at
// once and rebuilds the acquisition on the new table. A node the server
// reports unknown (BadNodeIdUnknown) asks for a check soon: its namespace
// may have moved or come.
func (p *poller) vetNamespaces() {
	c := p.c
	unknown := false
	for j, i := range p.idx {
		if !namesNamespace(c.points[i].NodeID) {
			continue
		}
		s := &p.ss[j]
		if !p.nsOK {
			p.withhold(s, StatusNodeIDUnknown)
		}
		unknown = unknown || s.Status == StatusNodeIDUnknown
	}
	if p.kicks == nil {
		return
	}
	if !p.nsOK {
		c.nsGuardLog.Log(context.Background(), c.log, slog.LevelWarn, "opc ua server's namespace array changed during the session: the values of this poll read whose node ids name a namespace are published bad, never read under a stale index; the namespaces are read again now",
			"status", statusHex(StatusNodeIDUnknown))
		kick(p.kicks.now, "read")
	} else if unknown {
		kick(p.kicks.soon, "unknown")
	}
}

// withhold publishes s bad without its value, with status, unless it
// carries no value anyway (the server's Bad stays as it is).
func (p *poller) withhold(s *sample.Sample, status uint32) {
	if s.Quality.HasValue() {
		s.Quality, s.Status, s.Num, s.Str, s.IsStr = telemetry.QualityBad, status, 0, "", false
		p.c.m.bad(status)
	}
}

// unitChange is the log attributes of a point's units that changed from
// was (ok: there were units in force) to now, then more: what changed
// ("unit", "range", "unit and range", or "details" for a DisplayName or
// code that maps to the same unit), the unit before and after when it
// changed, the range before and after when it changed, and the range kept
// when only the unit changed (a range is in the node's unit: kept, it now
// reads in the new unit).
func unitChange(was NodeUnit, ok bool, now NodeUnit, more ...any) []any {
	w, n := was.driverUnit(), now.driverUnit()
	unit := !ok || w.UnitText() != n.UnitText()
	rng := ok && w.RangeText() != n.RangeText()
	what := "details"
	switch {
	case unit && rng:
		what = "unit and range"
	case unit:
		what = "unit"
	case rng:
		what = "range"
	}
	out := []any{"changed", what}
	if unit {
		wasText := "not read yet"
		if ok {
			wasText = w.UnitText()
		}
		out = append(out, "was", wasText, "now", n.UnitText())
	}
	switch {
	case rng:
		out = append(out, "range_was", w.RangeText(), "range_now", n.RangeText())
	case unit && n.HasRange:
		out = append(out, "range_kept", n.RangeText())
	}
	return append(out, more...)
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
	// gopcua's StatusCode.Error ends with the code already: the name only
	name := "unknown status"
	if d, ok := ua.StatusCodes[e.Status]; ok {
		name = d.Name
	}
	return fmt.Sprintf("opcua: point %d: status %s (0x%08X)", e.Index, name, uint32(e.Status))
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
// structures), a Good status without a value, or a value of another kind
// (number or text) than the point's first (runState.kinds).
const statusTypeMismatch = uint32(0x80740000) // BadTypeMismatch

// The gateway's own Uncertain statuses: the severity Uncertain with the
// sub-code of the OPC UA Bad code that names the reason (OPC UA defines no
// Uncertain code for either; sub-codes are unique across severities, so
// these name nothing else). A Good value gets them; a value the server
// already called Uncertain keeps its server's code. docs/opcua.md,
// "Quality rules"; docs/schema.md.
const (
	// StatusSourceTimeUnsure (0x40230000, the sub-code of
	// Bad_InvalidTimestamp): the value's SourceTimestamp was more than
	// Config.MaxFuture ahead of the gateway's clock or before
	// MinSourceTime; ts is the gateway's receive time instead.
	StatusSourceTimeUnsure = uint32(0x40230000)
	// StatusInexact (0x403C0000, the sub-code of Bad_OutOfRange): an
	// Int64 or UInt64 beyond ±2^53, which a float64 (the telemetry value)
	// holds only rounded; the value published is the nearest float64.
	StatusInexact = uint32(0x403C0000)
)

// StatusStringTooLong (0x80080000, Bad_EncodingLimitsExceeded) marks a
// text value longer than Config.MaxStringBytes: published Bad without its
// text (a cut text is not the device's value). docs/opcua.md, "Quality
// rules"; docs/schema.md.
const StatusStringTooLong = uint32(0x80080000)

// MinSourceTime is the earliest SourceTimestamp taken as a source's time
// (2000-01-01 UTC, before any OPC UA server): earlier ones come from a
// server whose clock was never set (1970, OPC UA's zero 1601).
var MinSourceTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// maxExactInt is 2^53: integers up to it in magnitude are exact in a
// float64.
const maxExactInt = 1 << 53

// vetAhead is vetTime's bound ahead, on the gateway's side of a session
// worker: the worker has no data clock (the demo's plant clock is not its
// wall clock), so a value stamped more than MaxFuture ahead of the
// gateway's data clock is stamped with it here instead, a Good one turned
// Uncertain with StatusSourceTimeUnsure. mu held.
func (r *runState) vetAhead(ss []sample.Sample) {
	if r.c.dataNow == nil {
		return
	}
	now := r.c.dataNow()
	limit := now.Add(r.c.cfg.MaxFuture).UnixMilli()
	for i := range ss {
		s := &ss[i]
		if !s.Quality.HasValue() || s.TS <= limit {
			continue
		}
		src := time.UnixMilli(s.TS)
		if r.c.vetTime(s, src, now) && s.Status == StatusSourceTimeUnsure {
			r.c.m.bad(StatusSourceTimeUnsure)
		}
	}
}

// vetTime replaces a SourceTimestamp that cannot be the source's time
// (more than MaxFuture ahead of now, or before MinSourceTime) with now,
// the time the gateway received the value, and turns a Good value
// Uncertain with StatusSourceTimeUnsure (review15 F1). The caller counts
// the status as any other (smelter_opcua_bad_status_total).
//
// now is the receive time on the gateway's data clock (Client.received);
// without a data clock (a session worker) only a time before
// MinSourceTime is judged here, a time ahead by vetAhead.
func (c *Client) vetTime(s *sample.Sample, src time.Time, now time.Time) bool {
	if !src.Before(MinSourceTime) && (c.dataNow == nil || !src.After(now.Add(c.cfg.MaxFuture))) {
		return false
	}
	c.timeLog.Log(context.Background(), c.log, slog.LevelWarn, "opc ua SourceTimestamp not credible; the value is stamped with the gateway's receive time",
		"node", c.points[s.Index].NodeID, "source_ts", src.UTC(), "max_future", c.cfg.MaxFuture, "status", statusHex(StatusSourceTimeUnsure))
	s.TS = now.UnixMilli()
	if s.Quality == telemetry.QualityGood {
		s.Status, s.Quality = StatusSourceTimeUnsure, telemetry.QualityUncertain
	}
	return true
}

// received is the time a value is received, read once per read or
// Publish answer: on the gateway's data clock, or the wall clock in a
// session worker (no data clock).
func (c *Client) received() time.Time {
	if c.dataNow != nil {
		return c.dataNow()
	}
	return time.Now()
}

// sampleAt is toSample of a value received at now (Client.received), its time vetted
// (vetTime).
func (c *Client) sampleAt(i int, dv *ua.DataValue, now time.Time) sample.Sample {
	s, _ := c.vetted(i, dv, now)
	return s
}

// vetted is sampleAt, and whether its SourceTimestamp was replaced. A
// text longer than MaxStringBytes is Bad with StatusStringTooLong.
func (c *Client) vetted(i int, dv *ua.DataValue, now time.Time) (sample.Sample, bool) {
	s := toSample(i, dv)
	if s.IsStr && len(s.Str) > c.cfg.MaxStringBytes {
		c.longLog.Log(context.Background(), c.log, slog.LevelWarn, "opc ua text value longer than max_string_bytes; published bad without it",
			"node", c.points[i].NodeID, "bytes", len(s.Str), "max_string_bytes", c.cfg.MaxStringBytes, "status", statusHex(StatusStringTooLong))
		s.Quality, s.Status, s.Str, s.IsStr = telemetry.QualityBad, StatusStringTooLong, "", false
	}
	if dv != nil && dv.EncodingMask&ua.DataValueSourceTimestamp != 0 {
		// a zero time included: OPC UA's 1601 (gopcua decodes it as
		// Go's zero time, which toSample leaves out of TS)
		return s, c.vetTime(&s, dv.SourceTimestamp, now)
	}
	return s, false
}

// sameReading reports whether a and b are the same reading of a node:
// status, SourceTimestamp and value.
func sameReading(a, b sample.Sample) bool {
	return a.Status == b.Status && a.TS == b.TS && math.Float64bits(a.Num) == math.Float64bits(b.Num) && a.IsStr == b.IsStr && a.Str == b.Str
}

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
	ok, inexact := true, false
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
		inexact = x > maxExactInt || x < -maxExactInt
	case uint64:
		u.Num = float64(x)
		inexact = x > maxExactInt
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
	if inexact && u.Quality == telemetry.QualityGood {
		// review15 F2: 2^53+1 would be published as 2^53, Good
		u.Status, u.Quality = StatusInexact, telemetry.QualityUncertain
	}
	return u
}

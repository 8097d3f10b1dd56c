package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Pool owns the connections. Devices with the same transport and address
// (units behind one RTU gateway, slaves on one serial bus) share one
// connection and take turns, one request in flight at a time.
type Pool struct {
	log *slog.Logger
	m   *Metrics
	// samples lends the groups' pollers the samples of one read and its
	// emit (*[]sample.Sample): a few buffers in use at a time, not one per
	// group for the gateway's life.
	samples sync.Pool

	epoch time.Time // origin of the poll grid (nextTick)
	// now is the gateway's data clock (WithClock; default time.Now): the
	// time a reply arrived, that stamps the samples it decoded
	now func() time.Time

	mu     sync.Mutex
	links  map[string]*link // by connection key (connections.join)
	conns  connections
	closed bool
}

// PoolOption tunes a Pool (NewPool).
type PoolOption func(*Pool)

// WithClock makes now the pool's data clock: a sample the device answered
// about (a value, or an exception) is stamped (sample.Sample.TS, Unix ms)
// with now's reading when its reply arrived. It is the gateway's clock
// (driver.Env.Now), which need not be the wall clock: the demo runs a
// plant clock hours behind and faster than real time. Nil keeps time.Now.
// The poll grid, timeouts and health times stay on the wall clock.
func WithClock(now func() time.Time) PoolOption {
	return func(p *Pool) {
		if now != nil {
			p.now = now
		}
	}
}

// NewPool returns an empty pool. Nil log discards, nil m keeps unregistered metrics.
func NewPool(log *slog.Logger, m *Metrics, opts ...PoolOption) *Pool {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	p := &Pool{log: log, m: m, links: map[string]*link{}, conns: connections{}, epoch: time.Now(), now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p
}

// device returns the reader of unit cfg.UnitID over the pool's connection
// for cfg's transport and endpoint: devices whose addresses name the same
// endpoint (a host name and its IP address, a serial device and a link to
// it; endpointKeys) share one connection, labelled with the address of the
// first. Its only I/O is resolving a TCP address's host name (bounded by
// cfg's timeout). The first device on a connection sets its serial line,
// timeout, silence and reconnect backoff.
func (p *Pool) device(id string, cfg Config) *device {
	cfg.runtimeDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	keys := endpointKeys(ctx, lookupHost, cfg)
	cancel()
	p.mu.Lock()
	key := p.conns.join(cfg.linkKey(), keys)
	l, ok := p.links[key]
	if !ok {
		l = newLink(cfg, p.log, p.m, p.now)
		if p.closed {
			l.closed = true
		}
		p.links[key] = l
	} else {
		if l.address != cfg.Address {
			p.log.Warn("modbus device names the endpoint of a connection by another address; they share the connection",
				"device", id, "address", cfg.Address, "connection", l.key)
		}
		if l.serial != cfg.Serial {
			p.log.Warn("modbus device shares a serial line with different settings; the first device's settings apply",
				"device", id, "connection", l.key)
		}
	}
	p.mu.Unlock()
	m := p.m.device(id)
	// its replies that cannot be tied to a request, at 0 from the start
	// (countSuspect finds the child)
	p.m.suspect.WithLabelValues(l.key, id)
	if cfg.Transport == RTU || cfg.Transport == RTUOverTCP {
		// the noise that followed its replies (link.noiseAhead), at 0 too
		p.m.noise.WithLabelValues(l.key, id)
	}
	return &device{id: id, cfg: cfg, link: l, share: l.turns.joinUnit(id, cfg.UnitID, m), log: p.log.With("device", id), m: m}
}

// Close closes every connection, waiting for requests in flight. Reads after
// Close fail with StatusConnection.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for _, l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	var errs []error
	for _, l := range links {
		errs = append(errs, l.close())
	}
	return errors.Join(errs...)
}

// device reads one unit. Its groups read concurrently (the link serialises
// their requests); the health fields are under mu.
type device struct {
	id    string
	cfg   Config
	link  *link
	share *share // the device's account on its link (turns)
	log   *slog.Logger
	m     *devMetrics

	mu          sync.Mutex
	up          bool // last cycle got an answer (for logging changes)
	seen        bool
	failures    int
	retryAt     time.Time
	lastErr     error
	lastErrAt   time.Time
	lastOK      time.Time
	quarantined int
	loggedKind  string // error kind last logged ("" after good cycles), so a persistent cause logs once
}

// DeviceState is a device's health for the status page.
type DeviceState struct {
	Connected           bool      // the shared connection is open
	LastError           error     // most recent failure, the cause as Cycle.Err gives it (nil if none yet)
	LastErrorTime       time.Time // when it happened
	LastSuccess         time.Time // last answer (data or exception) from the device
	ConsecutiveFailures int       // cycles in a row without any answer
	BackoffUntil        time.Time // reads before this fail fast after timeouts
	Quarantined         int       // points currently quarantined
}

func (d *device) state() DeviceState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DeviceState{
		Connected:           d.link.connected.Load(),
		LastError:           d.lastErr,
		LastErrorTime:       d.lastErrAt,
		LastSuccess:         d.lastOK,
		ConsecutiveFailures: d.failures,
		BackoffUntil:        d.retryAt,
		Quarantined:         d.quarantined,
	}
}

// groupState is one group's mutable view of its plan: the requests
// currently issued (merged requests split where an exception was found) and
// the quarantined points. Owned by the group's poller.
type groupState struct {
	plan  *Plan
	index []int // Sample.Index of each plan point
	reqs  []request
	quar  map[int]*quarantine
	dirty bool // rebuild reqs from the plan minus quarantined points
	buf   []byte
	pdu   []byte
	// at is when the reply to the group's last request arrived (Unix ms
	// on the pool's data clock), 0 when it got no answer (do)
	at   int64
	held bool // the read holds its link (a turn)
	// the device's share.untied when the read took the link: evidence
	// found since discards the read's answers
	untied uint32
	use    []time.Duration // the link's use by device at the start of the read (shared links)
}

type quarantine struct {
	until time.Time
	wait  time.Duration
	code  uint8 // last exception code
}

func newGroupState(p *Plan, index []int) *groupState {
	if index == nil {
		index = make([]int, len(p.points))
		for i := range index {
			index[i] = i
		}
	}
	return &groupState{plan: p, index: index, reqs: p.reqs, quar: map[int]*quarantine{}}
}

func (g *groupState) rebuild() {
	if !g.dirty {
		return
	}
	keep := make([]int, 0, len(g.plan.points))
	for i := range g.plan.points {
		if g.quar[i] == nil {
			keep = append(keep, i)
		}
	}
	g.reqs = g.plan.merge(keep)
	g.dirty = false
}

// isolating reports whether an exception is about addresses (worth bisecting
// a merged request) rather than about the device as a whole: 2 illegal data
// address, 3 illegal data value.
func isolating(err error) bool { return errors.Is(err, Status(2)) || errors.Is(err, Status(3)) }

// silent reports whether err means the device was not heard at all and the
// rest of the device's requests this cycle would fail the same way: a
// timeout, a connection failure, a cancellation, or a Modbus gateway's
// exception 10 or 11 (Status.TargetSilent).
func silent(err error) bool {
	return errors.Is(err, StatusTimeout) || errors.Is(err, StatusConnection) || errors.Is(err, StatusCanceled) ||
		StatusOf(err).TargetSilent()
}

// aborts reports whether err ends a read: the rest of its requests fail
// the same way at once (silent), except after a held answer discarded for
// a second reply in its window (errHeardTwice): the unit spoke, its other
// requests are sent (review 18 L-1: else the read's later points were only
// ever read in the reads where the late request fell on them).
func aborts(err error) bool { return silent(err) && !errors.Is(err, errHeardTwice) }

// answered reports whether err is the device's own answer: nil (data) or an
// exception other than a gateway's 10 or 11.
func answered(err error) bool {
	s := StatusOf(err)
	_, exc := s.Exception()
	return err == nil || exc && !s.TargetSilent()
}

// cycle is the outcome of one read of a group.
type cycle struct {
	replied bool  // some request got an answer (data or exception)
	err     error // first cause of a bad sample
	// On a link shared with other devices: the device that used the link
	// most during the read (this one on a tie), and how long.
	busiest     string
	busiestTime time.Duration
}

// unread is what an entry of a read's output holds until the read sets it.
var unread = bad(StatusCanceled)

// read reads every point of g into out[0:len(points)] (every entry set, good
// or bad, Index from g.index). It returns promptly when ctx ends.
func (d *device) read(ctx context.Context, g *groupState, out []sample.Sample) cycle {
	plan := g.plan
	out = out[:len(plan.points)]
	// Every path below sets every entry; should one ever miss one, it
	// reads bad, never a value left by an earlier read (out is lent by the
	// pool: it may hold another device's samples).
	for i := range out {
		out[i] = unread
	}
	defer func() {
		for i := range out {
			out[i].Index = g.index[i]
		}
	}()
	g.rebuild()
	now := time.Now()
	d.mu.Lock()
	retryAt := d.retryAt
	d.mu.Unlock()
	if now.Before(retryAt) {
		err := fmt.Errorf("unit %d: %w", d.cfg.UnitID, linkErr(StatusTimeout, "not answering; next try in %v",
			retryAt.Sub(now).Round(time.Millisecond)))
		for i := range out {
			out[i] = bad(StatusTimeout)
		}
		return cycle{err: err}
	}

	var c cycle
	shared := d.link.turns.shared()
	if shared {
		g.use = d.link.turns.usage(g.use[:0])
	}
	note := func(err error) {
		if c.err == nil {
			c.err = err
		}
	}
	held := sortedKeys(g.quar) // quarantined before this cycle
	var abort error            // a device- or connection-wide silence: the rest fails fast
	requests := 0
	for ri := 0; ri < len(g.reqs); ri++ {
		r := &g.reqs[ri]
		if abort != nil {
			fill(out, r.points, StatusOf(abort))
			continue
		}
		requests++
		data, err := d.do(ctx, g, r)
		switch {
		case err == nil:
			c.replied = true
			plan.decodeInto(r, data, out)
			stamp(out, r.points, g.at)
		case isolating(err):
			c.replied = true
			keep := d.isolate(ctx, g, *r, err, out, now, note)
			g.reqs = slices.Replace(slices.Clone(g.reqs), ri, ri+1, keep...)
			ri += len(keep) - 1
		default:
			fill(out, r.points, StatusOf(err))
			if answered(err) {
				c.replied = true
				stamp(out, r.points, g.at)
			}
			note(err)
			if aborts(err) {
				abort = err
			}
		}
	}
	// Quarantined points: re-probed alone when due. A group whose points are
	// all quarantined probes the one due soonest every cycle, so that the
	// device's liveness is always known.
	var waiting []int
	force := -1
	if requests == 0 && len(held) > 0 {
		force = held[0]
		for _, i := range held {
			if g.quar[i].until.Before(g.quar[force].until) {
				force = i
			}
		}
	}
	for _, i := range held {
		q := g.quar[i]
		if abort != nil {
			out[i] = bad(StatusOf(abort))
			continue
		}
		if now.Before(q.until) && i != force {
			waiting = append(waiting, i)
			continue
		}
		r := plan.single(i)
		data, err := d.do(ctx, g, &r)
		switch exc := answered(err); {
		case err == nil:
			c.replied = true
			out[i] = plan.decodeOne(&r, i, data)
			out[i].TS = g.at
			delete(g.quar, i)
			g.dirty = true
			d.addQuarantined(-1)
			d.log.Info("modbus point released from quarantine", "table", plan.points[i].Table.String(), "address", plan.points[i].Address)
		case exc:
			c.replied = true
			q.code, _ = StatusOf(err).Exception()
			q.wait = min(2*q.wait, 16*d.cfg.Quarantine)
			q.until = now.Add(q.wait)
			out[i] = bad(Status(q.code) | StatusQuarantined)
			out[i].TS = g.at
			note(fmt.Errorf("%s: %w", pointName(plan.points[i], d.cfg.UnitID), Status(q.code)|StatusQuarantined))
		default:
			out[i] = bad(StatusOf(err))
			note(err)
			if aborts(err) {
				abort = err
			}
		}
	}
	// Points waiting in quarantine carry their last exception while the
	// device answers; in a cycle without any answer they are as silent as
	// the rest.
	for _, i := range waiting {
		switch {
		case abort != nil:
			out[i] = bad(StatusOf(abort))
		case !c.replied && c.err != nil:
			out[i] = bad(StatusOf(c.err))
		default:
			s := Status(g.quar[i].code) | StatusQuarantined
			out[i] = bad(s)
			note(fmt.Errorf("%s: %w", pointName(plan.points[i], d.cfg.UnitID), s))
		}
	}
	if c.err == nil {
		for i := range out {
			if out[i].Quality != telemetry.QualityGood {
				note(fmt.Errorf("%s: %w", pointName(plan.points[i], d.cfg.UnitID), Status(out[i].Status)))
				break
			}
		}
	}
	if g.held {
		d.link.quietAfter(ctx, d.share)
		if d.share.untied != g.untied {
			c.replied = false
			note(fmt.Errorf("unit %d: %w", d.cfg.UnitID, linkErr(StatusUntied,
				"%s: another master on the line, an echoing link or converter, or a unit answering an earlier request; the read's values discarded",
				d.share.untiedWhat)))
			untie(out)
		}
	}
	d.endTurn(g)
	if shared {
		c.busiest, c.busiestTime = d.link.turns.busiest(g.use, d.share)
	}
	d.account(now, c, abort)
	return c
}

func pointName(p Point, unit uint8) string {
	return fmt.Sprintf("%s %d unit %d", p.Table, p.Address, unit)
}

// account updates the device's health after a read. Its changes are
// logged at debug level only: the gateway logs each device's health once
// for every driver (internal/gateway, healthLog), with the cause.
func (d *device) account(now time.Time, c cycle, abort error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if errors.Is(c.err, StatusCanceled) || errors.Is(abort, StatusCanceled) {
		return
	}
	if c.err != nil {
		d.lastErr, d.lastErrAt = c.err, now
		if kind := StatusOf(c.err).Kind(); kind != d.loggedKind && c.replied {
			// the device answers, but not everything is good: say why, once per kind
			d.log.Debug("modbus read failed", "error", c.err)
			d.loggedKind = kind
		}
	} else if d.loggedKind != "" {
		d.log.Debug("modbus reads good again")
		d.loggedKind = ""
	}
	switch {
	case c.replied:
		d.lastOK = now
		d.failures = 0
		d.retryAt = time.Time{}
		if !d.up || !d.seen {
			d.log.Debug("modbus device answering")
		}
		d.up, d.seen = true, true
	case c.err == nil:
		// nothing learned (an empty plan)
	default:
		d.failures++
		if errors.Is(abort, StatusTimeout) {
			d.retryAt = now.Add(backoff.Step(d.failures, d.cfg.BackoffMin, d.cfg.BackoffMax))
		}
		if kind := StatusOf(c.err).Kind(); d.up || !d.seen || kind != d.loggedKind {
			d.log.Debug("modbus device not answering", "error", c.err)
			d.loggedKind = kind
		}
		d.up, d.seen = false, true
	}
}

// isolate bisects a merged request that raised an address exception. Points
// that fail alone are quarantined; the others are read in this same call. It
// returns the requests that now stand in for r.
func (d *device) isolate(ctx context.Context, g *groupState, r request, cause error, out []sample.Sample, now time.Time, note func(error)) []request {
	plan := g.plan
	if len(r.points) == 1 {
		i := r.points[0]
		code, _ := StatusOf(cause).Exception()
		out[i] = bad(Status(code))
		out[i].TS = g.at // the exception's reply: the last of g's requests
		note(cause)
		d.quarantine(g, i, code, now)
		return nil
	}
	var keep []request
	halves := [2][]int{r.points[:len(r.points)/2], r.points[len(r.points)/2:]}
	for _, h := range halves {
		sub := plan.cover(slices.Clone(h))
		data, err := d.do(ctx, g, &sub)
		switch {
		case err == nil:
			plan.decodeInto(&sub, data, out)
			stamp(out, sub.points, g.at)
			keep = append(keep, sub)
		case isolating(err):
			keep = append(keep, d.isolate(ctx, g, sub, err, out, now, note)...)
		default:
			fill(out, sub.points, StatusOf(err))
			if answered(err) {
				stamp(out, sub.points, g.at)
			}
			note(err)
			keep = append(keep, sub)
		}
	}
	return keep
}

func (d *device) quarantine(g *groupState, i int, code uint8, now time.Time) {
	g.quar[i] = &quarantine{until: now.Add(d.cfg.Quarantine), wait: d.cfg.Quarantine, code: code}
	d.addQuarantined(1)
	pt := g.plan.points[i]
	d.log.Warn("modbus point quarantined", "table", pt.Table.String(), "address", pt.Address,
		"error", Status(code).Error(), "retry_in", d.cfg.Quarantine)
}

func (d *device) addQuarantined(n int) {
	d.mu.Lock()
	d.quarantined += n
	d.m.quarantined.Set(float64(d.quarantined))
	d.mu.Unlock()
}

// do performs one read request and returns its data (the bytes after the
// byte count, valid until the group's next do) or the cause of failure,
// wrapped with the request ("read holding 100+10 unit 3: ..."). The read's
// first request takes the link for the read (a turn: turns); the next ones
// first let a device that has used the link less go before.
func (d *device) do(ctx context.Context, g *groupState, r *request) ([]byte, error) {
	g.pdu = readPDU(g.pdu[:0], r.table, r.start, r.count)
	var err error
	if !g.held {
		err = d.link.turns.acquire(ctx, d.share)
		if err == nil {
			g.untied, d.share.slowest = d.share.untied, 0
		}
	} else {
		err = d.link.turns.yield(ctx, d.share)
	}
	g.held = err == nil
	var reply []byte
	if err == nil {
		reply, err = d.link.exchangeHeld(ctx, d.share, d.m, d.cfg.UnitID, g.pdu, g.buf[:0])
	}
	g.at = 0
	if answered(err) {
		// when the reply (data or exception) arrived, on the data clock
		// (review 13 F7, review 14 F3): not the read's end, which may come
		// a timeout or a closing listen later, nor the end of a held
		// answer's window (link.prove)
		g.at = d.link.arrived.UnixMilli()
	}
	if err != nil {
		return nil, fmt.Errorf("read %s %d+%d unit %d: %w", r.table, r.start, r.count, d.cfg.UnitID, err)
	}
	g.buf = reply
	d.m.read(int(r.count), r.table.IsBit())
	return reply[2:], nil // function code, byte count, data
}

// endTurn gives the link up at the end of a read.
func (d *device) endTurn(g *groupState) {
	if g.held {
		d.link.turns.release(d.share)
		g.held = false
	}
}

// stamp sets at, when their reply arrived (Unix ms on the pool's data
// clock), on the samples of idx.
func stamp(out []sample.Sample, idx []int, at int64) {
	for _, i := range idx {
		out[i].TS = at
	}
}

// untie discards the answers of a read whose replies could not all be tied
// to their requests: every sample not already silent is StatusUntied.
func untie(out []sample.Sample) {
	v := bad(StatusUntied)
	for i := range out {
		if !out[i].Silent {
			out[i] = v
		}
	}
}

func fill(out []sample.Sample, idx []int, s Status) {
	v := bad(s)
	for _, i := range idx {
		out[i] = v
	}
}

func sortedKeys(m map[int]*quarantine) []int {
	if len(m) == 0 {
		return nil
	}
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

package modbus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	gmb "github.com/goburrow/modbus"

	"github.com/smelterio/smelter/internal/backoff"
)

// Pool owns the connections. Devices with the same transport and address
// (units behind one RTU gateway, slaves on one serial bus) share one
// connection and take turns, one request in flight at a time.
type Pool struct {
	log *slog.Logger
	m   *Metrics

	mu     sync.Mutex
	links  map[string]*link
	closed bool
}

// NewPool returns an empty pool. Nil log discards, nil m keeps unregistered metrics.
func NewPool(log *slog.Logger, m *Metrics) *Pool {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Pool{log: log, m: m, links: map[string]*link{}}
}

// Device returns a device reading unit cfg.UnitID over the pool's connection
// for cfg's transport and address; it does no I/O. cfg must have passed
// Validate. The first device on a connection sets its serial line, timeout
// and reconnect backoff; later devices share them.
func (p *Pool) Device(id string, cfg Config) *Device {
	cfg.runtimeDefaults()
	p.mu.Lock()
	l, ok := p.links[cfg.linkKey()]
	if !ok {
		l = newLink(cfg, p.log, p.m)
		if p.closed {
			l.closed = true
		}
		p.links[cfg.linkKey()] = l
	} else if l.serial != cfg.Serial {
		p.log.Warn("modbus device shares a serial line with different settings; the first device's settings apply",
			"device", id, "connection", l.key)
	}
	p.mu.Unlock()

	var pk gmb.Packager
	switch cfg.Transport {
	case TCP:
		h := &gmb.TCPClientHandler{}
		h.SlaveId = cfg.UnitID
		pk = h
	case RTU, RTUOverTCP:
		h := &gmb.RTUClientHandler{}
		h.SlaveId = cfg.UnitID
		pk = h
	default:
		h := &gmb.ASCIIClientHandler{}
		h.SlaveId = cfg.UnitID
		pk = h
	}
	return &Device{
		id:     id,
		cfg:    cfg,
		link:   l,
		client: gmb.NewClient2(pk, l),
		log:    p.log.With("device", id),
		m:      p.m.device(id),
		plans:  map[*Plan]*planState{},
	}
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

// Device reads one unit. Read may be called from one goroutine per plan;
// calls are serialised.
type Device struct {
	id     string
	cfg    Config
	link   *link
	client gmb.Client
	log    *slog.Logger
	m      devMetrics

	mu          sync.Mutex
	plans       map[*Plan]*planState
	scratch     []byte
	up          bool // last cycle had a good reply (for logging changes)
	seen        bool
	failures    int
	retryAt     time.Time
	lastErr     error
	lastErrAt   time.Time
	lastOK      time.Time
	quarantined int
}

// DeviceState is a device's health for the status page.
type DeviceState struct {
	Connected           bool      // the shared connection is open
	LastError           error     // most recent failure (nil if none yet)
	LastErrorTime       time.Time // when it happened
	LastSuccess         time.Time // last reply (good or exception) from the device
	ConsecutiveFailures int       // reads in a row with no reply at all
	BackoffUntil        time.Time // reads before this fail fast after timeouts
	Quarantined         int       // points currently quarantined
}

// State returns d's current health.
func (d *Device) State() DeviceState {
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

// planState is a device's mutable view of one plan: the requests currently
// issued (merged requests split where an exception was found) and the
// quarantined points.
type planState struct {
	reqs  []request
	quar  map[int]*quarantine
	dirty bool // rebuild reqs from the plan minus quarantined points
}

type quarantine struct {
	until time.Time
	wait  time.Duration
	code  uint32
}

func (d *Device) stateFor(p *Plan) *planState {
	st, ok := d.plans[p]
	if !ok {
		st = &planState{reqs: p.reqs, quar: map[int]*quarantine{}}
		d.plans[p] = st
	}
	if st.dirty {
		keep := make([]int, 0, len(p.points))
		for i := range p.points {
			if st.quar[i] == nil {
				keep = append(keep, i)
			}
		}
		st.reqs = p.merge(keep)
		st.dirty = false
	}
	return st
}

// isolating reports whether an exception is about addresses (worth bisecting
// a merged request) rather than about the device as a whole.
func isolating(status uint32) bool { return status == 2 || status == 3 }

// Read reads every point of plan into out[i] (len(out) >= plan.Len()); every
// entry is set, good or bad. It returns promptly when ctx ends; points not
// read by then are StatusCanceled.
func (d *Device) Read(ctx context.Context, plan *Plan, out []Value) {
	if len(out) < len(plan.points) {
		panic("modbus: Read: out shorter than plan")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.stateFor(plan)
	now := time.Now()
	if now.Before(d.retryAt) {
		for i := range plan.points {
			out[i] = badValue(StatusTimeout)
		}
		return
	}

	held := sortedKeys(st.quar) // quarantined before this cycle
	var abort uint32            // a device- or connection-wide failure: the rest fails fast
	replied := false
	var firstErr uint32
	for ri := 0; ri < len(st.reqs); ri++ {
		r := &st.reqs[ri]
		if abort != 0 {
			fill(out, r.points, abort)
			continue
		}
		data, status := d.do(ctx, r)
		switch {
		case status == StatusGood:
			replied = true
			plan.decodeInto(r, data, out)
		case status < 0x100:
			replied = true
			if isolating(status) {
				good := d.isolate(ctx, plan, st, *r, status, out, now)
				st.reqs = slices.Replace(slices.Clone(st.reqs), ri, ri+1, good...)
				ri += len(good) - 1
			} else {
				fill(out, r.points, status)
			}
		case status == StatusTimeout || status == StatusConnection || status == StatusCanceled:
			fill(out, r.points, status)
			abort = status
		default: // framing, bad length: this reply was bad, the next may be fine
			fill(out, r.points, status)
		}
		if status != StatusGood && firstErr == 0 {
			firstErr = status
		}
	}
	for _, i := range held {
		q := st.quar[i]
		if abort != 0 {
			out[i] = badValue(abort)
			continue
		}
		if now.Before(q.until) {
			out[i] = badValue(StatusQuarantined)
			continue
		}
		r := plan.single(i)
		data, status := d.do(ctx, &r)
		switch {
		case status == StatusGood:
			replied = true
			out[i] = plan.decodeOne(&r, i, data)
			delete(st.quar, i)
			st.dirty = true
			d.setQuarantined(d.quarantined - 1)
			d.log.Info("modbus point released from quarantine", "table", plan.points[i].Table.String(), "address", plan.points[i].Address)
		case status < 0x100:
			replied = true
			out[i] = badValue(status)
			q.code = status
			q.wait = min(2*q.wait, 16*d.cfg.Quarantine)
			q.until = now.Add(q.wait)
		default:
			out[i] = badValue(status)
			if status == StatusTimeout || status == StatusConnection || status == StatusCanceled {
				abort = status
			}
		}
	}
	d.account(now, replied, abort, firstErr)
}

// account updates the device's health after a read and logs changes.
func (d *Device) account(now time.Time, replied bool, abort, firstErr uint32) {
	if firstErr != 0 && firstErr != StatusCanceled {
		d.lastErr, d.lastErrAt = statusError(firstErr), now
	}
	switch {
	case replied:
		d.lastOK = now
		d.failures = 0
		d.retryAt = time.Time{}
		if !d.up || !d.seen {
			d.log.Info("modbus device answering")
		}
		d.up, d.seen = true, true
	case abort == StatusCanceled || abort == 0 && firstErr == 0:
		// nothing learned (canceled, or an empty plan)
	default:
		d.failures++
		if abort == StatusTimeout {
			d.retryAt = now.Add(backoff.Step(d.failures, d.cfg.BackoffMin, d.cfg.BackoffMax))
		}
		if d.up || !d.seen {
			d.log.Warn("modbus device not answering", "error", d.lastErr)
		}
		d.up, d.seen = false, true
	}
}

// isolate bisects a merged request that raised an address exception. Points
// that fail alone are quarantined; the others are read in this same call. It
// returns the requests that now stand in for r.
func (d *Device) isolate(ctx context.Context, plan *Plan, st *planState, r request, code uint32, out []Value, now time.Time) []request {
	if len(r.points) == 1 {
		i := r.points[0]
		out[i] = badValue(code)
		d.quarantine(plan, st, i, code, now)
		return nil
	}
	var keep []request
	halves := [2][]int{r.points[:len(r.points)/2], r.points[len(r.points)/2:]}
	for _, h := range halves {
		sub := plan.cover(slices.Clone(h))
		data, status := d.do(ctx, &sub)
		switch {
		case status == StatusGood:
			plan.decodeInto(&sub, data, out)
			keep = append(keep, sub)
		case isolating(status):
			keep = append(keep, d.isolate(ctx, plan, st, sub, status, out, now)...)
		default:
			fill(out, sub.points, status)
			keep = append(keep, sub)
		}
	}
	return keep
}

func (d *Device) quarantine(plan *Plan, st *planState, i int, code uint32, now time.Time) {
	st.quar[i] = &quarantine{until: now.Add(d.cfg.Quarantine), wait: d.cfg.Quarantine, code: code}
	d.setQuarantined(d.quarantined + 1)
	pt := plan.points[i]
	d.log.Warn("modbus point quarantined", "table", pt.Table.String(), "address", pt.Address,
		"error", Exception(code).Error(), "retry_in", d.cfg.Quarantine)
}

func (d *Device) setQuarantined(n int) {
	d.quarantined = n
	d.m.quarantined.Set(float64(n))
}

// do performs one request on the shared connection and returns the reply
// data (valid until the next do) or a failure status.
func (d *Device) do(ctx context.Context, r *request) ([]byte, uint32) {
	if ctx.Err() != nil {
		return nil, StatusCanceled
	}
	start := time.Now()
	if err := d.link.acquire(ctx); err != nil {
		return nil, StatusCanceled
	}
	defer d.link.release()
	if st := d.link.ensure(ctx, d.id); st != StatusGood {
		return nil, st
	}
	d.link.ctx = ctx
	var (
		res []byte
		err error
	)
	switch r.table {
	case Coils:
		res, err = d.client.ReadCoils(r.start, r.count)
	case DiscreteInputs:
		res, err = d.client.ReadDiscreteInputs(r.start, r.count)
	case HoldingRegisters:
		res, err = d.client.ReadHoldingRegisters(r.start, r.count)
	default:
		res, err = d.client.ReadInputRegisters(r.start, r.count)
	}
	d.link.ctx = nil
	status := classify(err)
	want := 2 * int(r.count)
	if r.table.IsBit() {
		want = (int(r.count) + 7) / 8
	}
	if status == StatusGood && len(res) != want {
		status = StatusBadLength
	}
	d.link.settle(status)
	d.m.duration.Observe(time.Since(start).Seconds())
	res0 := resultOf(status)
	d.m.result[res0].Inc()
	if c := d.m.errKind[res0]; c != nil {
		c.Inc()
	}
	if status != StatusGood {
		return nil, status
	}
	if r.table.IsBit() {
		d.m.bits.Add(float64(r.count))
	} else {
		d.m.registers.Add(float64(r.count))
	}
	d.scratch = append(d.scratch[:0], res...)
	return d.scratch, StatusGood
}

// classify maps an error from goburrow's client to a status.
func classify(err error) uint32 {
	if err == nil {
		return StatusGood
	}
	var me *gmb.ModbusError
	if errors.As(err, &me) {
		if me.ExceptionCode == 0 {
			return StatusFraming
		}
		return uint32(me.ExceptionCode)
	}
	var le *linkError
	if errors.As(err, &le) {
		return le.status
	}
	// goburrow's own checks after our transporter verified the frame:
	// byte count and data size disagreeing, empty data.
	return StatusBadLength
}

func fill(out []Value, idx []int, status uint32) {
	v := badValue(status)
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

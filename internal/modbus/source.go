package modbus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/sample"
)

// Group is a set of points of one device polled together at one interval.
type Group struct {
	Interval time.Duration // poll period of these points
	Points   []Point       // the points read together
	Index    []int         // Index[j] = device-wide point index of Points[j] (becomes Sample.Index)
}

// Source acquires one device (one unit on a shared link): one poller per
// group, each reading its plan every Interval and handing the gateway one
// sample.Cycle per read.
type Source struct {
	pool   *Pool
	dev    *device
	groups []*sourceGroup
}

type sourceGroup struct {
	interval time.Duration
	st       *groupState
	n        int // points
}

// Source returns the acquisition source of one device (unit cfg.UnitID on
// the pool's shared link for cfg's transport and endpoint: devices whose
// addresses name one endpoint share it, endpointKeys). cfg must have
// passed Validate. Its only I/O is resolving a TCP address's host name
// (bounded by cfg.Timeout; an IP address needs none); it fails only for an
// unplannable group (a point
// that does not validate or exceeds the request caps, an Index whose length
// is not the number of points, a non-positive interval), naming the group.
// The Source keeps each group's Index (read-only: the caller must not
// change it; a compiled configuration's is never changed).
func (p *Pool) Source(id string, cfg Config, groups []Group) (*Source, error) {
	s := &Source{pool: p}
	for gi, g := range groups {
		if g.Interval <= 0 {
			return nil, fmt.Errorf("group %d: interval %v must be positive", gi, g.Interval)
		}
		if len(g.Index) != len(g.Points) {
			return nil, fmt.Errorf("group %d: %d indexes for %d points", gi, len(g.Index), len(g.Points))
		}
		plan, err := NewPlan(g.Points, cfg)
		if err != nil {
			return nil, fmt.Errorf("group %d: %w", gi, err)
		}
		s.groups = append(s.groups, &sourceGroup{interval: g.Interval, st: newGroupState(plan, g.Index), n: len(g.Points)})
	}
	s.dev = p.device(id, cfg)
	return s, nil
}

// Run polls every group until ctx ends and calls emit once per group read,
// never two calls at once. A group is read at once, then on the pool's
// grid for its Interval (the pool's creation + k x Interval, shared by
// every device of the pool: nextTick); a read longer than the interval
// is followed by another at once, and skips the other ticks it overran (on a
// shared link the read waits its turn like any other: turns gives the link
// first to the devices that have used it less, so a device that keeps
// overrunning takes only the link time the others leave). The Cycle
// and its Samples are valid only during the call:
//   - Samples: every point of the group, Index from Group.Index; Good with
//     the value, or Bad with the Status (sample.Sample's doc: an exception
//     or quarantined address is the device's answer, not Silent; timeouts,
//     connection failures, replies that cannot be tied to the request and
//     a gateway's exceptions 10 and 11 are Silent).
//   - Replied: some request of the cycle got an answer, data or an
//     exception other than 10 or 11 (Status.TargetSilent).
//   - Err: the first cause of a bad sample, typed (errors.Is with a Status,
//     errors.As with *ReplyError), wrapped with the request it concerns.
//   - Lost is never set: a Modbus link is reopened on the next request.
//   - LinkBusiest, LinkBusiestTime: on a link shared with other devices,
//     the device that used it most during the read (link time, and the
//     silence waits its failures caused: turns) and how long.
//
// A cycle cut short by ctx is not emitted. Run returns nil when ctx ends.
func (s *Source) Run(ctx context.Context, emit func(*sample.Cycle)) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, g := range s.groups {
		wg.Go(func() {
			s.poll(ctx, g, func(c *sample.Cycle) {
				mu.Lock()
				defer mu.Unlock()
				emit(c)
			})
		})
	}
	wg.Wait()
	<-ctx.Done() // a device without groups still runs until ctx ends
	return nil
}

func (s *Source) poll(ctx context.Context, g *sourceGroup, emit func(*sample.Cycle)) {
	iv, epoch := g.interval, s.pool.epoch
	next := nextTick(epoch, time.Now(), iv)
	timer := time.NewTimer(iv)
	timer.Stop()
	defer timer.Stop()
	c := sample.Cycle{Interval: g.interval}
	for {
		start := time.Now()
		buf := s.pool.borrowSamples(g.n)
		res := s.dev.read(ctx, g.st, *buf)
		if ctx.Err() != nil {
			s.pool.samples.Put(buf)
			return
		}
		c.Samples = (*buf)[:g.n]
		c.Start = start
		c.Duration = time.Since(start)
		c.Replied = res.replied
		c.Err = res.err
		c.LinkBusiest, c.LinkBusiestTime = res.busiest, res.busiestTime
		emit(&c)
		c.Samples = nil
		s.pool.samples.Put(buf)
		if now := time.Now(); !now.Before(next) {
			// The read overran its tick: read again at once (as a
			// ticker's one buffered tick would), then on the grid.
			next = nextTick(epoch, now, iv)
			continue
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next = next.Add(iv)
	}
}

// nextTick returns the first tick of the grid epoch + k x iv after now.
// Every group of a pool with the same interval is read on the same grid:
// the devices of a gateway are polled together, so that their batches
// reach the spool and the uplinks together (shared writes and wake-ups)
// instead of one by one all through the interval.
func nextTick(epoch, now time.Time, iv time.Duration) time.Time {
	return epoch.Add(now.Sub(epoch).Truncate(iv) + iv)
}

// borrowSamples returns a buffer of at least n samples from the pool's
// (its contents are another read's: device.read sets every entry).
func (p *Pool) borrowSamples(n int) *[]sample.Sample {
	if b, ok := p.samples.Get().(*[]sample.Sample); ok {
		if cap(*b) >= n {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]sample.Sample, n)
	return &b
}

// State returns the device's health for /status.
func (s *Source) State() DeviceState { return s.dev.state() }

// Progress implements driver.Progresser: when the device's link last made
// progress (a turn began or ended, an exchange or a bounded wait on the
// line began) while one of the device's reads or writes held the link or
// waited for it, zero when none does; and bound, the longest a working
// link goes without progress: timeout on Modbus TCP, timeout + 11 x
// silence on an RTU or ASCII line (+ the 3.5-character gap on serial RTU) (the longest
// single wait of an exchange: link.stepBound). A read queued behind other
// units' timeouts, or waiting for a slow answer within its timeout, thus
// makes progress; a link wedged without a deadline makes none.
func (s *Source) Progress() (last time.Time, bound time.Duration) {
	return s.dev.link.turns.progress(s.dev.share), s.dev.link.stepBound()
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// DefaultStallFloor is the least time a device's source may go without
// emitting a cycle before the gateway declares it stalled (stallWatch): above
// the longest a healthy driver is silent at the defaults (an OPC UA
// subscription's 6 s keep-alive period and 18 s publish timeout, a Modbus
// read of several requests timing out at 1 s each), so that a slow device
// is never taken for a wedged driver.
const DefaultStallFloor = 30 * time.Second

// ErrStalled is the cause a stalled source's cycle carries (errors.Is): the
// driver emitted no cycle, neither data nor an error, for the stall limit.
var ErrStalled = errors.New("driver stalled: no cycle")

// stallWatch is a device's watchdog over its source, for every driver and
// isolation mode: the gateway's silence rule (track) runs only when a cycle
// arrives, so a driver that stops emitting without an error (wedged in a
// request without timeout, a deadlock, a session whose server keeps the
// connection but stops publishing) would leave the device's points in their
// last good state forever. When no cycle has ended for the limit (limit)
// while the device is alive, it publishes every point heard so far stale
// with its last status (nothing has been heard about it for at least k x
// its interval: docs/schema.md), so the device dies with a reason naming the
// stall; logs it (rate-limited), counts it
// (smelter_gateway_device_stalls_total) and restarts the source: Run's
// context is cancelled and Run called again once it returned. A device
// already dead is left alone: its points were published bad or stale
// already, and a source in its reconnect backoff may be silent for long. So
// is a source that has reported no point yet (an OPC UA device of action
// points only never emits): nothing it published can outlive it.
//
// A source whose cycles may take long while it works (driver.Progresser: a
// Modbus read queued on a shared link behind other units' timeouts, or
// waiting for a slow answer within its timeout) is silent only when it has
// neither emitted a cycle nor made progress, and its limit counts its
// bound (limit): a driver making bounded progress is never declared
// stalled, one wedged without a deadline still is.
//
// mu serialises the source's emits and the watchdog's own cycle, so time
// the gateway spends handing a cycle on (a full spool) is never silence.
type stallWatch struct {
	d     *device
	floor time.Duration
	log   *logging.Limiter

	progress driver.Progresser // the source's progress, nil when it reports none
	bound    time.Duration     // the longest the source goes without progress while it works

	mu          sync.Mutex
	last        time.Time     // end of the last emit, or start of the run
	configured  time.Duration // the longest interval the configuration gives the device's points
	maxInterval time.Duration // the longest cycle interval seen
	maxDuration time.Duration // the longest cycle duration seen
	status      []uint32      // per point: the last status reported
	heard       []uint64      // per point, a bit: reported at least once
	armed       bool          // a point was reported: there is something to make stale
}

func newStallWatch(d *device) *stallWatch {
	w := &stallWatch{d: d, floor: d.g.stallFloor, log: &logging.Limiter{Every: healthLogEvery}, configured: d.cfg.Interval,
		status: make([]uint32, d.cfg.Norm.Len()), heard: make([]uint64, (d.cfg.Norm.Len()+63)/64)}
	if w.floor <= 0 {
		w.floor = DefaultStallFloor
	}
	for i := range d.cfg.Norm.Len() {
		w.configured = max(w.configured, time.Duration(d.cfg.Norm.Point(i).IntervalMS)*time.Millisecond)
	}
	if p, ok := d.src.(driver.Progresser); ok {
		w.progress = p
		_, w.bound = p.Progress()
	}
	return w
}

// limit is how long the source may go without a cycle (nor progress):
// k x (P + max(D, B)), never under the floor, where P is the longest
// interval the device's points are configured with or a cycle carried (a
// poll group's interval, an OPC UA subscription's keep-alive period), D the
// longest time a cycle's requests took (a read waiting for its timeouts or
// a shared line) and B the longest a working source goes without progress
// (driver.Progresser; 0 for other sources). A progressing source is silent
// at most P + B (the wait for its next read, then one bounded wait on its
// link), under a third of the limit. mu held.
func (w *stallWatch) limit() time.Duration {
	return max(w.floor, staleMultiple*(max(w.configured, w.maxInterval)+max(w.maxDuration, w.bound)))
}

// silence returns how long the source has been silent: since its last
// emit or, for a driver.Progresser, since its last progress if later.
// mu held.
func (w *stallWatch) silence(now time.Time) time.Duration {
	last := w.last
	if w.progress != nil {
		if p, _ := w.progress.Progress(); p.After(last) {
			last = p
		}
	}
	return now.Sub(last)
}

// emitted notes a cycle the source emitted (mu held).
func (w *stallWatch) emitted(c *sample.Cycle) {
	w.maxInterval = max(w.maxInterval, c.Interval)
	w.maxDuration = max(w.maxDuration, c.Duration)
	for i := range c.Samples {
		s := &c.Samples[i]
		if s.Index < 0 || s.Index >= len(w.status) {
			continue
		}
		w.status[s.Index] = s.Status
		w.heard[s.Index/64] |= 1 << (s.Index % 64)
		w.armed = true
	}
}

// run runs the device's source until ctx ends, restarting it when it
// stalls. handle takes one cycle: the source's, and the watchdog's own.
func (w *stallWatch) run(ctx context.Context, handle func(*sample.Cycle)) error {
	for {
		rctx, cancel := context.WithCancel(ctx)
		w.mu.Lock()
		w.last = time.Now()
		w.mu.Unlock()
		ran := make(chan struct{})
		stalled := make(chan bool, 1)
		go func() { stalled <- w.watch(rctx, ran, cancel, handle) }()
		err := w.d.src.Run(rctx, func(c *sample.Cycle) {
			w.mu.Lock()
			defer w.mu.Unlock()
			handle(c)
			w.emitted(c)
			w.last = time.Now()
		})
		close(ran)
		cancel()
		restart := <-stalled
		if ctx.Err() != nil || !restart {
			return err
		}
		w.d.log.Info("device's driver restarted after it stalled")
	}
}

// watch waits for the source to stall (then publishes its points stale,
// logs, counts and cancels the run, and reports true) or for rctx to end
// (false). ran is closed when the source's Run returned.
func (w *stallWatch) watch(rctx context.Context, ran <-chan struct{}, cancel func(), stale func(*sample.Cycle)) bool {
	t := time.NewTimer(w.floor)
	defer t.Stop()
	for {
		select {
		case <-rctx.Done():
			return false
		case <-t.C:
		}
		w.mu.Lock()
		limit := w.limit()
		silent := w.silence(time.Now())
		if !w.armed || silent < limit || w.d.state().Dead {
			w.mu.Unlock()
			t.Reset(max(limit-silent, limit/4))
			continue
		}
		w.stall(silent, limit, stale)
		w.mu.Unlock()
		cancel()
		select {
		case <-ran:
		case <-time.After(limit):
			// A driver that ignores its context: the device stays dead
			// (its points stale) until Run returns, whenever that is.
			w.d.log.Error("device's stalled driver has not stopped; it is restarted once it returns", "waited", limit)
		}
		return true
	}
}

// stall publishes the device's heard points stale, with their last status,
// in a cycle whose cause wraps ErrStalled (mu held): the device dies with
// "no reply for <silence>: driver stalled ...". Points never heard are left
// out: nothing was published about them that could outlive the driver.
// The device answered last at least the limit ago, k x its longest
// interval: track declares it dead.
func (w *stallWatch) stall(silent, limit time.Duration, stale func(*sample.Cycle)) {
	d := w.d
	what := ""
	if w.progress != nil {
		what = " and no progress"
	}
	err := fmt.Errorf("%w%s for %v (limit %v): its points are published stale and the driver restarted", ErrStalled, what,
		silent.Round(time.Millisecond), limit.Round(time.Millisecond))
	d.g.m.stalls.WithLabelValues(d.cfg.ID).Inc()
	w.log.Log(context.Background(), d.log, slog.LevelError, "device's driver stalled: no cycle, neither data nor an error, within its limit; publishing its points stale and restarting the driver",
		"silent", silent.Round(time.Millisecond), "limit", limit.Round(time.Millisecond), "protocol", d.cfg.Protocol)
	var ss []sample.Sample
	for i := range w.status {
		if w.heard[i/64]&(1<<(i%64)) != 0 {
			ss = append(ss, sample.Sample{Index: i, Quality: telemetry.QualityStale, Status: w.status[i]})
		}
	}
	stale(&sample.Cycle{Samples: ss, Start: time.Now(), Interval: limit / staleMultiple, Err: err})
}

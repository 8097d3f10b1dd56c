// Package forward moves one uplink's share of the spool to its broker: the
// forwarder reads the uplink's durable spool cursor, publishes, and commits
// only what the broker confirmed. With the live_first backlog policy it
// runs a second, live lane at the tail of the spool while the durable lane
// drains a backlog marked historical (lanes.go is that state machine). It
// fits every message to the uplink's size limit (splitting a batch by
// readings into parts) and sets aside, counted and logged, what the broker
// can never accept, so that no message blocks the ones behind it. See
// docs/reliability.md and docs/schema.md.
package forward

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Uplink is what a forwarder needs of a broker connection.
type Uplink interface {
	Name() string
	// Publish returns nil only when the broker confirmed every message. A
	// message the broker can never accept fails with an error wrapping
	// *uplink.RejectedError naming it. Once it returns, with or without an
	// error, nothing may read an envelope's Data any more (no resend from
	// a client's memory): the spool reuses those bytes after the reader's
	// next Next (spool.Reader.Next).
	Publish(ctx context.Context, msgs []telemetry.Envelope) error
	Ready() bool
}

// PayloadLimiter is implemented by an uplink whose broker limits the size
// of one message: MaxPayload is the most payload bytes one message may
// carry now (0: no limit known).
type PayloadLimiter interface {
	MaxPayload() int
}

// Options configure a Forwarder.
type Options struct {
	Gateway   string // gateway id, for the messages' dedup ids
	LiveFirst bool   // spool.backlog: live_first
	Log       *slog.Logger
	Metrics   *Metrics // nil: unregistered metrics
	// LiveAfter is how far behind (oldest unsent record) the durable
	// reader must be before live_first starts a live lane (default
	// DefaultLiveAfter).
	LiveAfter time.Duration
	// retry bounds the wait between failed publishes (tests; zero: 100 ms
	// doubling to 5 s)
	retry backoff.Backoff
}

// DefaultLiveAfter is Options.LiveAfter's default.
const DefaultLiveAfter = 2 * time.Second

const (
	maxRecords = 512
	maxBytes   = 4 << 20
	// maxAside bounds the set-aside message ids remembered until the
	// cursor passes them.
	maxAside = 4096
)

// State is a forwarder's state as /status shows it.
type State struct {
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	LastAckAt    time.Time `json:"last_ack_at,omitzero"`
	LastSeq      uint64    `json:"last_seq"`
	LiveLane     bool      `json:"live_lane,omitempty"`
	SetAside     uint64    `json:"set_aside,omitempty"`      // messages and readings set aside since start
	LastSetAside string    `json:"last_set_aside,omitempty"` // the newest: message id and reason
}

// Forwarder moves one uplink's share of the spool to its broker.
//
// With the default backlog policy (oldest_first) it is one lane: the
// uplink's durable reader, strictly in seq order. With live_first, when the
// uplink is connected but the durable reader is more than LiveAfter
// behind, a live lane starts at the tail of the spool (a non-durable Tail
// reader) and publishes new batches at once, while the durable reader keeps
// draining the backlog (at most replay_rate records/s from disk), marking
// data batches older than the live lane's start historical. The durable
// cursor stays the only persisted state and only ever moves over contiguous
// confirmed seqs: the backfill lane skips (and commits) what a live lane
// confirmed, and takes over from the live lane when it reaches it. A crash
// or a live-lane failure only causes re-delivery, deduplicated downstream.
type Forwarder struct {
	gateway string
	up      Uplink
	sp      *spool.Spool
	r       *spool.Reader
	log     *slog.Logger
	m       *Metrics
	retry   backoff.Backoff // between failed publishes (Options.retry)

	mu sync.Mutex
	st State

	asideMu  sync.Mutex
	aside    map[string]uint64 // set-aside message id -> seq, until the cursor passes it
	asideLog logging.Limiter

	// Owned by the goroutine running Run.
	lanes lanes
	live  *liveLane
}

// liveLane is one run of the live lane's goroutine.
type liveLane struct {
	confirmed atomic.Uint64 // last seq the broker confirmed (from-1: none yet)
	cancel    context.CancelFunc
	done      chan struct{}
}

// New returns a forwarder of the records r reads to up. sp is r's spool
// (for the live lane's Tail reader). It does no I/O.
func New(up Uplink, sp *spool.Spool, r *spool.Reader, opts Options) *Forwarder {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.LiveAfter <= 0 {
		opts.LiveAfter = DefaultLiveAfter
	}
	if opts.retry.Min <= 0 {
		opts.retry = backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	}
	opts.Metrics.start(up.Name())
	return &Forwarder{gateway: opts.Gateway, up: up, sp: sp, r: r, log: opts.Log, m: opts.Metrics, retry: opts.retry,
		aside: map[string]uint64{}, lanes: lanes{liveFirst: opts.LiveFirst, liveAfter: opts.LiveAfter}}
}

// Name returns the uplink's name.
func (f *Forwarder) Name() string { return f.up.Name() }

// Ready reports whether the uplink is connected.
func (f *Forwarder) Ready() bool { return f.up.Ready() }

// Lag reports how far the durable cursor is behind the spool.
func (f *Forwarder) Lag() spool.Lag { return f.r.Lag() }

// State returns a snapshot of the forwarder's state.
func (f *Forwarder) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// Run forwards until ctx ends (returning its error) or the spool fails.
func (f *Forwarder) Run(ctx context.Context) error {
	defer f.stopLive()
	name := f.up.Name()
	lane := newSender(f)
	retry := f.retry
	// Before the uplink's first connection there is nothing to retry: wait
	// for it instead of logging a failed publish per backoff step.
	if err := waitReady(ctx, f.up, 10*time.Second); err != nil {
		return err
	}
	var items []item
	for {
		f.maybeStartLive(ctx)
		recs, err := f.r.Next(ctx, maxRecords, maxBytes)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("uplink %s: reading spool: %w", name, err)
		}
		p := f.lanes.plan(recs, items)
		items = p.items
		if err := lane.send(ctx, recs, items); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.publishFailed(err, len(items))
			f.r.Rewind()
			if !retryWait(ctx, f.up, retry.Next()) {
				return ctx.Err()
			}
			continue
		}
		retry.Reset()
		if p.last > 0 {
			f.acked(lane.apps, p.last, true)
			f.lanes.committed(p.last)
			f.pruneAside(p.last)
		}
		if p.reachedLive {
			f.takeOver()
		}
	}
}

// acked records a confirmed publish of records appended at appended (unix
// ms); commit moves the durable cursor to last.
func (f *Forwarder) acked(appended []int64, last uint64, commit bool) {
	name := f.up.Name()
	if commit {
		if err := f.r.Commit(last); err != nil {
			f.log.Error("committing spool cursor", "err", err)
		}
	}
	now := time.Now()
	nowMS := now.UnixMilli()
	age := f.m.dataAge.WithLabelValues(name)
	for _, a := range appended {
		age.Observe(float64(nowMS-a) / 1000)
	}
	f.m.published.WithLabelValues(name).Add(float64(len(appended)))
	f.m.uplinkReady.WithLabelValues(name).Set(1)
	f.mu.Lock()
	if f.st.LastError != "" {
		f.log.Info("publishing again", "records", len(appended))
	}
	f.st.LastError = ""
	f.st.LastAckAt = now
	if commit {
		f.st.LastSeq = last
	}
	f.mu.Unlock()
}

func (f *Forwarder) publishFailed(err error, n int) {
	name := f.up.Name()
	f.m.publishErr.WithLabelValues(name).Inc()
	f.m.uplinkReady.WithLabelValues(name).Set(0)
	f.mu.Lock()
	if f.st.LastError != err.Error() {
		f.log.Warn("publish failed; will retry from the spool", "err", err, "records", n)
	}
	f.st.LastError, f.st.LastErrorAt = err.Error(), time.Now()
	f.mu.Unlock()
}

// maybeStartLive retires a live lane that ended (on a publish failure: the
// backfill lane skips what it confirmed) and starts one when the state
// machine wants it, so after another outage live data again goes first.
func (f *Forwarder) maybeStartLive(ctx context.Context) {
	if f.live != nil {
		select {
		case <-f.live.done:
			f.stopLive()
		default:
			return
		}
	}
	if !f.lanes.liveFirst || f.lanes.liveRunning() || !f.lanes.wantLive(f.up.Ready(), f.r.Lag().OldestAge) {
		return
	}
	tail, err := f.sp.Tail(f.up.Name() + "-live")
	if err != nil {
		f.log.Warn("cannot start the live lane", "err", err)
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	from := tail.Committed() + 1
	lv := &liveLane{cancel: cancel, done: make(chan struct{})}
	lv.confirmed.Store(from - 1)
	f.live = lv
	f.lanes.liveStarted(from)
	f.setLive(true)
	f.log.Info("backlog: live lane started; the backlog is sent behind it as historical",
		"from_seq", from, "backlog_records", from-1-f.r.Committed())
	go f.runLive(lctx, lv, tail)
}

// runLive publishes the tail of the spool until ctx ends or a publish
// fails (the backfill lane then re-sends what it did not confirm).
func (f *Forwarder) runLive(ctx context.Context, lv *liveLane, tail *spool.Reader) {
	defer close(lv.done)
	defer f.setLive(false)
	defer tail.Close()
	lane := newSender(f)
	var items []item
	for {
		recs, err := tail.Next(ctx, maxRecords, maxBytes)
		if err != nil {
			return
		}
		if recs[0].Seq != lv.confirmed.Load()+1 {
			// records discarded under the lane (spool full): stop; the
			// backfill lane sends what follows
			return
		}
		items = items[:0]
		for i := range recs {
			items = append(items, item{idx: i})
		}
		if err := lane.send(ctx, recs, items); err != nil {
			if ctx.Err() == nil {
				f.publishFailed(err, len(items))
				f.log.Info("live lane stopped by a publish failure; the backlog lane will re-send its unconfirmed batches")
			}
			return
		}
		last := recs[len(recs)-1].Seq
		_ = tail.Commit(last)
		lv.confirmed.Store(last)
		f.acked(lane.apps, last, false)
	}
}

// takeOver is called when the backfill lane reached the live lane's start:
// the live lane stops, its confirmed range is committed, and the durable
// reader continues from there alone.
func (f *Forwarder) takeOver() {
	if to := f.stopLive(); to > 0 {
		if err := f.r.Commit(to); err != nil {
			f.log.Error("committing spool cursor", "err", err)
		}
		f.mu.Lock()
		f.st.LastSeq = to
		f.mu.Unlock()
	}
	f.lanes.committed(f.r.Committed())
	f.r.Rewind()
	f.log.Info("backlog: caught up with the live lane; back to one lane", "seq", f.r.Committed())
}

// stopLive stops the live lane's goroutine and tells the state machine
// what it confirmed (returned; 0: nothing).
func (f *Forwarder) stopLive() uint64 {
	lv := f.live
	if lv == nil {
		return 0
	}
	lv.cancel()
	<-lv.done
	f.live = nil
	f.setLive(false)
	return f.lanes.liveEnded(lv.confirmed.Load())
}

func (f *Forwarder) setLive(v bool) {
	f.mu.Lock()
	f.st.LiveLane = v
	f.mu.Unlock()
}

// waitReady waits until up is ready, ctx ends (its error is returned) or
// the timeout passes (then publishing starts anyway and its errors show).
// retryWait waits d after a failed publish, and less when the uplink was
// not ready and turns ready meanwhile: a broker back after an outage is
// published to at once, not after the rest of a backoff that grew during
// the outage (up to 5 s: the collector, back first, judged the gateway's
// assets silent meanwhile; review12 F2). It reports false when ctx ended.
func retryWait(ctx context.Context, up Uplink, d time.Duration) bool {
	if up.Ready() { // the broker refused or timed out while connected: the whole backoff
		return backoff.Sleep(ctx, d)
	}
	return waitReady(ctx, up, d) == nil
}

func waitReady(ctx context.Context, up Uplink, timeout time.Duration) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(timeout)
	for !up.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return nil
		case <-t.C:
		}
	}
	return nil
}

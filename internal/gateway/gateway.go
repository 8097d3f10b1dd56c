// Package gateway wires smelter-gateway together: every device's driver
// (a Source: Modbus, OPC UA) delivers cycles of samples to one acquisition
// loop that normalizes them into batches, every batch appended to the
// durable spool, and each uplink forwards the spool to its broker, committing
// its cursor only after the broker confirmed. It is the only package that
// knows the drivers, the spool and the uplinks.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
)

// Uplink is what the gateway needs of a broker connection.
type Uplink interface {
	Name() string
	Run(ctx context.Context) error
	// Publish returns nil only when the broker confirmed every message.
	Publish(ctx context.Context, msgs []telemetry.Envelope) error
	Ready() bool
}

// Options tune a Gateway beyond its configuration file.
type Options struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry // nil: a private registry
	// DrainTimeout bounds how long shutdown keeps forwarding spooled data
	// after polling stopped (default 5 s).
	DrainTimeout time.Duration
	// Now is the data clock that stamps readings and batches (default
	// time.Now). Tests and the demo may run a simulated plant faster than
	// real time and stamp its data with the simulator's clock.
	Now func() time.Time
	// ClockRate is how many data-clock seconds pass per wall second
	// (default 1). Births report signal intervals in data time, so
	// consumers' staleness rules stay right when Now runs fast.
	ClockRate float64
}

// Gateway is one running smelter-gateway.
type Gateway struct {
	cfg       *gwconfig.Config
	log       *slog.Logger
	reg       *prometheus.Registry
	m         *metrics
	now       func() time.Time
	rate      float64
	drain     time.Duration
	pool      *modbus.Pool
	uaMetrics *opcua.Metrics
	spoolM    *spool.Metrics
	uplinks   []Uplink
	devices   []*device

	mu    sync.Mutex
	spool *spool.Spool // set while running
	fwds  []*forwarder
	ready bool
}

// New builds a gateway from a loaded configuration. It does no I/O.
func New(cfg *gwconfig.Config, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClockRate <= 0 {
		opts.ClockRate = 1
	}
	g := &Gateway{cfg: cfg, log: opts.Logger, reg: opts.Registry, now: opts.Now, rate: opts.ClockRate, drain: opts.DrainTimeout}
	g.m = newMetrics(opts.Registry)
	g.spoolM = spool.NewMetrics(opts.Registry)
	g.pool = modbus.NewPool(opts.Logger.With("component", "modbus"), modbus.NewMetrics(opts.Registry))
	if c := cfg.Raw.Uplinks.NATS; c != nil {
		u, err := natsjs.New(*c, opts.Logger.With("uplink", "nats"), natsjs.NewMetrics(opts.Registry))
		if err != nil {
			return nil, fmt.Errorf("uplinks.nats: %w", err)
		}
		g.uplinks = append(g.uplinks, u)
	}
	if c := cfg.Raw.Uplinks.MQTT; c != nil {
		u, err := mqtt.New(*c, opts.Logger.With("uplink", "mqtt"), mqtt.NewMetrics(opts.Registry))
		if err != nil {
			return nil, fmt.Errorf("uplinks.mqtt: %w", err)
		}
		g.uplinks = append(g.uplinks, u)
	}
	g.uaMetrics = opcua.NewMetrics(opts.Registry)
	for _, w := range cfg.Warnings {
		g.log.Warn("configuration", "warning", w.Error())
	}
	for _, d := range cfg.Devices {
		dv, err := newDevice(g, d)
		if err != nil {
			return nil, err
		}
		g.devices = append(g.devices, dv)
	}
	return g, nil
}

// Registry returns the metrics registry the gateway reports into.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// Run opens the spool, starts the uplinks, publishes births and polls until
// ctx is cancelled; then it stops polling, keeps forwarding spooled data for
// up to the drain timeout, and closes the spool.
func (g *Gateway) Run(ctx context.Context) error {
	sp, err := spool.Open(g.cfg.Raw.Spool, g.log.With("component", "spool"), g.spoolM)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	g.mu.Lock()
	g.spool = sp
	g.mu.Unlock()
	defer func() {
		if err := sp.Close(); err != nil {
			g.log.Error("closing spool", "err", err)
		}
		if err := g.pool.Close(); err != nil {
			g.log.Debug("closing modbus connections", "err", err)
		}
	}()

	// Uplinks and their forwarders outlive polling by the drain timeout.
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer upCancel()
	ug, ugCtx := errgroup.WithContext(upCtx)
	fwds := make([]*forwarder, 0, len(g.uplinks))
	for _, u := range g.uplinks {
		r, err := sp.Reader(u.Name())
		if err != nil {
			return fmt.Errorf("spool reader %s: %w", u.Name(), err)
		}
		f := &forwarder{g: g, up: u, sp: sp, r: r, log: g.log.With("uplink", u.Name()),
			liveFirst: g.cfg.Raw.Spool.Backlog == spool.BacklogLiveFirst}
		fwds = append(fwds, f)
		ug.Go(func() error { return u.Run(ugCtx) })
		ug.Go(func() error { return f.run(ugCtx) })
	}
	if err := g.removeStaleReaders(sp); err != nil {
		upCancel()
		return err
	}

	g.mu.Lock()
	g.fwds = fwds
	g.mu.Unlock()
	pg, pctx := errgroup.WithContext(ctx)
	for _, d := range g.devices {
		if err := d.birth(pctx, sp); err != nil {
			upCancel()
			return err
		}
	}
	g.appendStatus(ctx, sp, true)
	g.setReady(true)
	g.log.Info("gateway running", "gateway", g.cfg.ID, "devices", len(g.devices), "uplinks", len(g.uplinks),
		"spool", g.cfg.Raw.Spool.Dir, "seq", sp.LastSeq())
	for _, d := range g.devices {
		pg.Go(func() error { return d.run(pctx, sp) })
	}
	perr := pg.Wait()
	g.setReady(false)
	g.appendStatus(upCtx, sp, false)

	// drain: forward what is spooled, bounded in time
	deadline := time.Now().Add(g.drain)
	for time.Now().Before(deadline) && ugCtx.Err() == nil {
		behind := false
		for _, f := range fwds {
			if f.r.Lag().Records > 0 && f.up.Ready() {
				behind = true
			}
		}
		if !behind {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ugCtx.Done():
		}
	}
	upCancel()
	uerr := ug.Wait()
	if perr != nil && !errors.Is(perr, context.Canceled) {
		return perr
	}
	if uerr != nil && !errors.Is(uerr, context.Canceled) {
		return uerr
	}
	return nil
}

// removeStaleReaders deletes the spool cursors of uplinks that are no longer
// configured: every known cursor holds back deletion, so a forgotten one
// would keep the spool full (and, under when_full: block, stop polling).
// An uplink configured again later starts at the oldest record still
// spooled.
func (g *Gateway) removeStaleReaders(sp *spool.Spool) error {
	configured := make(map[string]bool, len(g.uplinks))
	for _, u := range g.uplinks {
		configured[u.Name()] = true
	}
	for _, name := range sp.Readers() {
		if configured[name] {
			continue
		}
		var lag spool.Lag
		if r, err := sp.Reader(name); err == nil {
			lag = r.Lag()
		}
		if err := sp.RemoveReader(name); err != nil {
			return fmt.Errorf("spool: removing the cursor of unconfigured uplink %s: %w", name, err)
		}
		g.log.Warn("removed the spool cursor of an uplink that is no longer configured; its unsent data is no longer kept for it",
			"uplink", name, "unsent_records", lag.Records)
	}
	return nil
}

func (g *Gateway) setReady(v bool) {
	g.mu.Lock()
	g.ready = v
	g.mu.Unlock()
}

// forwarder moves one uplink's share of the spool to its broker.
//
// With the default backlog policy (oldest_first) it is one lane: the
// uplink's durable reader, strictly in seq order. With live_first, when the
// uplink is connected but the durable reader is more than liveLaneAfter
// behind, a live lane starts at the tail of the spool (a non-durable Tail
// reader) and publishes new batches at once, while the durable reader keeps
// draining the backlog (at most replay_rate records/s from disk), marking
// data batches older than the live lane's start "historical". The durable
// cursor stays the only persisted state and only ever moves over contiguous
// confirmed seqs: the backfill lane skips (and commits) what a live lane
// confirmed, and takes over from the live lane when it reaches it. A crash
// or a live-lane failure only causes re-delivery, deduplicated downstream
// on (gateway, seq). See docs/reliability.md.
type forwarder struct {
	g         *Gateway
	up        Uplink
	sp        *spool.Spool
	r         *spool.Reader
	log       *slog.Logger
	liveFirst bool
	mu        sync.Mutex
	st        forwarderState

	// Owned by the goroutine running run.
	live      *liveLane
	confirmed []seqRange // ranges confirmed by finished live lanes, not yet committed
	histBelow uint64     // data batches below this seq are marked historical
	histBuf   []byte
	sentApp   []int64
}

// liveLane is one run of the live lane.
type liveLane struct {
	from      uint64        // first seq the lane publishes
	confirmed atomic.Uint64 // last seq the broker confirmed (from-1: none yet)
	cancel    context.CancelFunc
	done      chan struct{}
}

type seqRange struct{ from, to uint64 }

type forwarderState struct {
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastAckAt   time.Time `json:"last_ack_at,omitzero"`
	LastSeq     uint64    `json:"last_seq"`
	LiveLane    bool      `json:"live_lane,omitempty"`
}

const (
	forwardMaxRecords = 512
	forwardMaxBytes   = 4 << 20
	// liveLaneAfter is how far behind (oldest unsent batch) the durable
	// reader must be before live_first starts a live lane.
	liveLaneAfter = 2 * time.Second
	// maxConfirmedRanges bounds what finished live lanes leave behind; the
	// oldest range is forgotten beyond it (its batches are re-sent).
	maxConfirmedRanges = 64
)

func (f *forwarder) run(ctx context.Context) error {
	defer f.stopLive()
	name := f.up.Name()
	envs := make([]telemetry.Envelope, 0, forwardMaxRecords)
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	// Before the uplink's first connection there is nothing to retry: wait
	// for it instead of logging a failed publish per backoff step.
	if err := waitReady(ctx, f.up, 10*time.Second); err != nil {
		return err
	}
	for {
		if f.liveFirst {
			f.maybeStartLive(ctx)
		}
		recs, err := f.r.Next(ctx, forwardMaxRecords, forwardMaxBytes)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("uplink %s: reading spool: %w", name, err)
		}
		// Records from the live lane's start on are the live lane's: take
		// over from it (below) instead of publishing them.
		cut := len(recs)
		if f.live != nil {
			for i, rec := range recs {
				if rec.Seq >= f.live.from {
					cut = i
					break
				}
			}
		}
		envs = f.envelopes(envs[:0], recs[:cut])
		if err := f.up.Publish(ctx, envs); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.publishFailed(err, len(envs))
			f.r.Rewind()
			if !backoff.Sleep(ctx, retry.Next()) {
				return nil
			}
			continue
		}
		retry.Reset()
		if cut > 0 {
			f.acked(f.sentApp, recs[cut-1].Seq, true)
			f.pruneConfirmed(recs[cut-1].Seq)
		}
		if cut < len(recs) {
			f.takeOver()
		}
	}
}

// envelopes builds the envelopes of recs, leaving out what a finished live
// lane confirmed and marking old data batches historical; f.sentApp gets
// the append times of the records sent. The envelopes are valid until the
// next call (as the records are).
func (f *forwarder) envelopes(envs []telemetry.Envelope, recs []spool.Record) []telemetry.Envelope {
	f.histBuf = f.histBuf[:0]
	f.sentApp = f.sentApp[:0]
	for _, rec := range recs {
		if f.confirmedByLive(rec.Seq) {
			continue
		}
		f.sentApp = append(f.sentApp, rec.Appended)
		data := rec.Data
		if rec.Seq < f.histBelow && strings.HasSuffix(rec.Subject, "."+string(telemetry.KindData)) {
			start := len(f.histBuf)
			f.histBuf = appendHistorical(f.histBuf, data)
			data = f.histBuf[start:len(f.histBuf):len(f.histBuf)]
		}
		envs = append(envs, telemetry.Envelope{Subject: rec.Subject, MsgID: telemetry.MsgID(f.g.cfg.ID, rec.Seq), Data: data})
	}
	return envs
}

// confirmedByLive reports whether a finished live lane confirmed seq.
func (f *forwarder) confirmedByLive(seq uint64) bool {
	for _, c := range f.confirmed {
		if seq >= c.from && seq <= c.to {
			return true
		}
	}
	return false
}

// pruneConfirmed forgets live-lane ranges the durable cursor has passed (a
// Rewind never goes back behind the cursor).
func (f *forwarder) pruneConfirmed(committed uint64) {
	for len(f.confirmed) > 0 && f.confirmed[0].to <= committed {
		f.confirmed = f.confirmed[1:]
	}
}

// historicalKey is where AppendJSON writes the historical flag: right after
// ts_gw, before the readings (the key cannot occur earlier unescaped).
var historicalKey = []byte(`,"readings":[`)

// appendHistorical appends data, a batch as AppendJSON wrote it, with
// "historical":true added (unchanged when already marked or not a batch).
func appendHistorical(dst, data []byte) []byte {
	i := bytes.Index(data, historicalKey)
	if i < 0 || bytes.Contains(data[:i], []byte(`"historical":`)) {
		return append(dst, data...)
	}
	dst = append(dst, data[:i]...)
	dst = append(dst, `,"historical":true`...)
	return append(dst, data[i:]...)
}

// acked records a confirmed publish of records appended at appended (unix
// ms); commit moves the durable cursor to last.
func (f *forwarder) acked(appended []int64, last uint64, commit bool) {
	name := f.up.Name()
	if commit {
		if err := f.r.Commit(last); err != nil {
			f.log.Error("committing spool cursor", "err", err)
		}
	}
	now := time.Now()
	nowMS := now.UnixMilli()
	age := f.g.m.dataAge.WithLabelValues(name)
	for _, a := range appended {
		age.Observe(float64(nowMS-a) / 1000)
	}
	f.g.m.published.WithLabelValues(name).Add(float64(len(appended)))
	f.g.m.uplinkReady.WithLabelValues(name).Set(1)
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

func (f *forwarder) publishFailed(err error, n int) {
	name := f.up.Name()
	f.g.m.publishErr.WithLabelValues(name).Inc()
	f.g.m.uplinkReady.WithLabelValues(name).Set(0)
	f.mu.Lock()
	if f.st.LastError != err.Error() {
		f.log.Warn("publish failed; will retry from the spool", "err", err, "records", n)
	}
	f.st.LastError, f.st.LastErrorAt = err.Error(), time.Now()
	f.mu.Unlock()
}

// maybeStartLive starts a live lane when none runs, the uplink is connected
// and the durable reader is far behind. A lane that ended on a publish
// failure is retired first (the backfill lane skips what it confirmed), so
// after another outage live data again goes first.
func (f *forwarder) maybeStartLive(ctx context.Context) {
	if f.live != nil {
		select {
		case <-f.live.done:
			f.stopLive()
		default:
			return
		}
	}
	if !f.up.Ready() || f.r.Lag().OldestAge < liveLaneAfter {
		return
	}
	tail, err := f.sp.Tail(f.up.Name() + "-live")
	if err != nil {
		f.log.Warn("cannot start the live lane", "err", err)
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	lv := &liveLane{from: tail.Committed() + 1, cancel: cancel, done: make(chan struct{})}
	lv.confirmed.Store(lv.from - 1)
	f.live = lv
	f.histBelow = max(f.histBelow, lv.from)
	f.setLive(true)
	f.log.Info("backlog: live lane started; the backlog is sent behind it as historical",
		"from_seq", lv.from, "backlog_records", lv.from-1-f.r.Committed())
	go f.runLive(lctx, lv, tail)
}

// runLive publishes the tail of the spool until ctx ends or a publish
// fails (the backfill lane then re-sends what it did not confirm).
func (f *forwarder) runLive(ctx context.Context, lv *liveLane, tail *spool.Reader) {
	defer close(lv.done)
	defer f.setLive(false)
	defer tail.Close()
	envs := make([]telemetry.Envelope, 0, forwardMaxRecords)
	apps := make([]int64, 0, forwardMaxRecords)
	for {
		recs, err := tail.Next(ctx, forwardMaxRecords, forwardMaxBytes)
		if err != nil {
			return
		}
		if recs[0].Seq != lv.confirmed.Load()+1 {
			// records discarded under the lane (spool full): stop; the
			// backfill lane sends what follows
			return
		}
		envs = envs[:0]
		apps = apps[:0]
		for _, rec := range recs {
			envs = append(envs, telemetry.Envelope{Subject: rec.Subject, MsgID: telemetry.MsgID(f.g.cfg.ID, rec.Seq), Data: rec.Data})
			apps = append(apps, rec.Appended)
		}
		if err := f.up.Publish(ctx, envs); err != nil {
			if ctx.Err() == nil {
				f.publishFailed(err, len(envs))
				f.log.Info("live lane stopped by a publish failure; the backlog lane will re-send its unconfirmed batches")
			}
			return
		}
		last := recs[len(recs)-1].Seq
		_ = tail.Commit(last)
		lv.confirmed.Store(last)
		f.acked(apps, last, false)
	}
}

// takeOver is called when the backfill lane reached the live lane's start:
// the live lane stops, its confirmed range is committed, and the durable
// reader continues from there alone.
func (f *forwarder) takeOver() {
	lv := f.live
	f.stopLive()
	if to := lv.confirmed.Load(); to >= lv.from {
		if err := f.r.Commit(to); err != nil {
			f.log.Error("committing spool cursor", "err", err)
		}
		f.mu.Lock()
		f.st.LastSeq = to
		f.mu.Unlock()
	}
	f.pruneConfirmed(f.r.Committed())
	f.r.Rewind()
	f.log.Info("backlog: caught up with the live lane; back to one lane", "seq", f.r.Committed())
}

// stopLive stops the live lane, keeping what it confirmed for the backfill
// lane to skip.
func (f *forwarder) stopLive() {
	lv := f.live
	if lv == nil {
		return
	}
	lv.cancel()
	<-lv.done
	f.live = nil
	f.setLive(false)
	if to := lv.confirmed.Load(); to >= lv.from {
		f.confirmed = append(f.confirmed, seqRange{lv.from, to})
		if len(f.confirmed) > maxConfirmedRanges {
			f.confirmed = f.confirmed[1:]
		}
	}
}

func (f *forwarder) setLive(v bool) {
	f.mu.Lock()
	f.st.LiveLane = v
	f.mu.Unlock()
}

func (f *forwarder) state() forwarderState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// appendStatus spools the gateway's online/offline notice, so consumers of
// the NATS stream see the gateway come and go (MQTT subscribers also get the
// uplink's own retained status and Last Will).
func (g *Gateway) appendStatus(ctx context.Context, sp *spool.Spool, online bool) {
	st := &telemetry.Status{Gateway: g.cfg.ID, Online: online, TSGW: g.now().UnixMilli()}
	_, err := sp.Append(ctx, telemetry.StatusSubject(g.cfg.Site, g.cfg.ID), func(seq uint64, dst []byte) []byte {
		st.Seq = seq
		data, _ := telemetry.MarshalStatus(st) // plain struct: cannot fail
		return append(dst, data...)
	})
	if err != nil && ctx.Err() == nil {
		g.log.Warn("spooling gateway status", "err", err)
	}
}

// waitReady waits until up is ready, ctx ends (its error is returned) or
// the timeout passes (then publishing starts anyway and its errors show).
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

// Package gateway wires smelter-gateway together: Modbus devices are polled,
// their readings normalized into batches, every batch appended to the
// durable spool, and each uplink forwards the spool to its broker, committing
// its cursor only after the broker confirmed. It is the only package that
// knows the drivers, the spool and the uplinks.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
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
	// Now is the clock (default time.Now); tests may replace it.
	Now func() time.Time
}

// Gateway is one running smelter-gateway.
type Gateway struct {
	cfg     *gwconfig.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *metrics
	now     func() time.Time
	drain   time.Duration
	pool    *modbus.Pool
	spoolM  *spool.Metrics
	uplinks []Uplink
	devices []*device

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
	g := &Gateway{cfg: cfg, log: opts.Logger, reg: opts.Registry, now: opts.Now, drain: opts.DrainTimeout}
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
	for _, d := range cfg.Devices {
		g.devices = append(g.devices, newDevice(g, d))
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
		f := &forwarder{g: g, up: u, r: r, log: g.log.With("uplink", u.Name())}
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
	g.setReady(true)
	g.log.Info("gateway running", "gateway", g.cfg.ID, "devices", len(g.devices), "uplinks", len(g.uplinks),
		"spool", g.cfg.Raw.Spool.Dir, "seq", sp.LastSeq())
	for _, d := range g.devices {
		for _, grp := range d.groups {
			pg.Go(func() error { return d.poll(pctx, sp, grp) })
		}
	}
	perr := pg.Wait()
	g.setReady(false)

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
type forwarder struct {
	g   *Gateway
	up  Uplink
	r   *spool.Reader
	log *slog.Logger
	mu  sync.Mutex
	st  forwarderState
}

type forwarderState struct {
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastAckAt   time.Time `json:"last_ack_at,omitzero"`
	LastSeq     uint64    `json:"last_seq"`
}

const (
	forwardMaxRecords = 512
	forwardMaxBytes   = 4 << 20
)

func (f *forwarder) run(ctx context.Context) error {
	name := f.up.Name()
	envs := make([]telemetry.Envelope, 0, forwardMaxRecords)
	backoff := 100 * time.Millisecond
	for {
		recs, err := f.r.Next(ctx, forwardMaxRecords, forwardMaxBytes)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("uplink %s: reading spool: %w", name, err)
		}
		envs = envs[:0]
		for _, rec := range recs {
			envs = append(envs, telemetry.Envelope{Subject: rec.Subject, MsgID: telemetry.MsgID(f.g.cfg.ID, rec.Seq), Data: rec.Data})
		}
		if err := f.up.Publish(ctx, envs); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.g.m.publishErr.WithLabelValues(name).Inc()
			f.g.m.uplinkReady.WithLabelValues(name).Set(0)
			f.mu.Lock()
			if f.st.LastError != err.Error() {
				f.log.Warn("publish failed; will retry from the spool", "err", err, "records", len(envs))
			}
			f.st.LastError, f.st.LastErrorAt = err.Error(), time.Now()
			f.mu.Unlock()
			f.r.Rewind()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		last := recs[len(recs)-1].Seq
		if err := f.r.Commit(last); err != nil {
			f.log.Error("committing spool cursor", "err", err)
		}
		now := time.Now()
		nowMS := now.UnixMilli()
		for _, rec := range recs {
			f.g.m.dataAge.WithLabelValues(name).Observe(float64(nowMS-rec.Appended) / 1000)
		}
		f.g.m.published.WithLabelValues(name).Add(float64(len(recs)))
		f.g.m.uplinkReady.WithLabelValues(name).Set(1)
		f.mu.Lock()
		if f.st.LastError != "" {
			f.log.Info("publishing again", "records", len(recs))
		}
		f.st.LastError = ""
		f.st.LastAckAt = now
		f.st.LastSeq = last
		f.mu.Unlock()
	}
}

func (f *forwarder) state() forwarderState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

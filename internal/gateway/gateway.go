// Package gateway wires smelter-gateway together: every device's driver
// (a Source built by its driver.Driver: Modbus, OPC UA, listed in Drivers)
// delivers cycles of samples to one acquisition loop that normalizes them into batches, every batch appended to the
// durable spool, and each uplink forwards the spool to its broker, committing
// its cursor only after the broker confirmed. It is the only package that
// knows the drivers, the spool and the uplinks.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/forward"
	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
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
	Registry *prometheus.Registry // nil: a private registry (ignored when Metrics is set)
	// Metrics, when set, are the process's metrics kept across reloads:
	// build them once with NewMetrics and give them to every Gateway the
	// process builds, so counters survive a reload. Nil: NewMetrics on
	// Registry, with the drivers registering there too.
	Metrics *Metrics
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
	// Drivers build the devices' sources, by protocol name (default
	// Drivers(): the list the configuration was loaded with).
	Drivers []driver.Driver
	// OnSpool, when set, is called with the spool right after Run opened
	// it (tests inject write failures with spool.FailWrites).
	OnSpool func(*spool.Spool)
}

// Gateway is one running smelter-gateway.
type Gateway struct {
	cfg      *gwconfig.Config
	log      *slog.Logger
	mx       *Metrics
	m        *metrics
	drvReg   *prometheus.Registry // this gateway's driver metrics (nil: in mx's registry)
	now      func() time.Time
	rate     float64
	drain    time.Duration
	sources  map[string]driver.Sources // by protocol
	srcNames []string                  // protocols in Options.Drivers order, to close
	uplinks  []Uplink
	devices  []*device  // every device, or source of a device with sources
	assets   []*asset   // what the devices feed, in file order
	cmd      *commander // nil without a commands block (docs/commands.md)
	// stallFloor is the least stall limit of a device's source
	// (DefaultStallFloor; tests lower it)
	stallFloor time.Duration

	// readings lends the acquisition loops the readings of the cycle they
	// encode (*[]telemetry.Reading): a few buffers in use at a time, not
	// one per device for the gateway's life.
	readings sync.Pool

	// statusDue: the online status notice is not spooled yet (the spool
	// failed); it is retried after the next successful append.
	statusDue atomic.Bool
	// spoolLog rate-limits the gateway's own logs of spool failures other
	// than ErrLost (which the spool logs itself).
	spoolLog logging.Limiter

	mu    sync.Mutex
	spool *spool.Spool // set while running
	fwds  []*forward.Forwarder
	ready bool

	onSpool func(*spool.Spool)
}

// New builds a gateway from a loaded configuration. It does no I/O. It
// compacts cfg (gwconfig.Config.Compact: the gateway keeps cfg while it
// runs, without its YAML parse tree); run cfg.CheckLocal before New.
func New(cfg *gwconfig.Config, opts Options) (*Gateway, error) {
	cfg.Compact()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	shared := opts.Metrics != nil
	if !shared {
		if opts.Registry == nil {
			opts.Registry = prometheus.NewRegistry()
		}
		opts.Metrics = NewMetrics(opts.Registry)
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
	g := &Gateway{cfg: cfg, log: opts.Logger, mx: opts.Metrics, m: opts.Metrics.gw, now: opts.Now, rate: opts.ClockRate, drain: opts.DrainTimeout,
		onSpool: opts.OnSpool}
	drvReg := prometheus.Registerer(g.mx.reg)
	if shared {
		// Drivers register their metrics once per gateway: a gateway
		// built for a reload gets its own registry for them.
		g.drvReg = prometheus.NewRegistry()
		drvReg = g.drvReg
	}
	if opts.Drivers == nil {
		opts.Drivers = Drivers()
	}
	g.sources = make(map[string]driver.Sources, len(opts.Drivers))
	for _, drv := range opts.Drivers {
		if _, dup := g.sources[drv.Name()]; dup {
			return nil, fmt.Errorf("two drivers named %s", drv.Name())
		}
		g.sources[drv.Name()] = drv.Sources(driver.Env{Log: opts.Logger, Registry: drvReg, Now: opts.Now})
		g.srcNames = append(g.srcNames, drv.Name())
	}
	var natsUp *natsjs.Uplink
	var mqttUp *mqtt.Uplink
	if c := cfg.Raw.Uplinks.NATS; c != nil {
		u, err := natsjs.New(*c, opts.Logger, g.mx.natsMetrics(), natsjs.WithClock(opts.Now)) // Smelter-Sent-At on the data clock
		if err != nil {
			return nil, fmt.Errorf("uplinks.nats: %w", err)
		}
		g.uplinks = append(g.uplinks, u)
		natsUp = u
	}
	if c := cfg.Raw.Uplinks.MQTT; c != nil {
		u, err := mqtt.New(*c, opts.Logger, g.mx.mqttMetrics())
		if err != nil {
			return nil, fmt.Errorf("uplinks.mqtt: %w", err)
		}
		g.uplinks = append(g.uplinks, u)
		mqttUp = u
	}
	for _, w := range cfg.Warnings {
		g.log.Warn("configuration", "warning", w.Error())
	}
	g.assets = newAssets(g, cfg.Devices)
	for _, d := range cfg.Devices {
		a := g.assets[slices.IndexFunc(g.assets, func(a *asset) bool { return a.id.ID == d.Asset.ID })]
		dv, err := newDevice(g, a, d)
		if err != nil {
			return nil, err
		}
		a.devs = append(a.devs, dv)
		g.devices = append(g.devices, dv)
	}
	if cfg.Raw.Commands != nil && natsUp != nil {
		var mq mirror
		if mqttUp != nil {
			mq = mqttUp
		}
		cmd, err := newCommander(g, natsUp, mq)
		if err != nil {
			return nil, err
		}
		g.cmd = cmd
	}
	return g, nil
}

// Registry returns the metrics registry the gateway reports into.
func (g *Gateway) Registry() *prometheus.Registry { return g.mx.reg }

// Run opens the spool, starts the uplinks, publishes births and polls until
// ctx is cancelled; then it stops polling, keeps forwarding spooled data for
// up to the drain timeout, and closes the spool.
func (g *Gateway) Run(ctx context.Context) error {
	sp, err := spool.Open(g.cfg.Raw.Spool, g.log, g.mx.spool)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if g.onSpool != nil {
		g.onSpool(sp)
	}
	g.mu.Lock()
	g.spool = sp
	g.mu.Unlock()
	g.mx.cur.Store(sp)
	if g.drvReg != nil {
		g.mx.drivers.Store(g.drvReg)
	}
	// Only this configuration's devices have series (the metrics outlive
	// a reload that removed devices), their failure counts at 0.
	ids := make([]string, len(g.devices))
	for i, d := range g.devices {
		ids[i] = d.cfg.ID
	}
	g.m.configure(ids)
	defer func() {
		if err := sp.Close(); err != nil {
			g.log.Error("closing spool", "err", err)
		}
		for _, name := range g.srcNames {
			if err := g.sources[name].Close(); err != nil {
				g.log.Debug("closing driver connections", "driver", name, "err", err)
			}
		}
	}()

	// Uplinks and their forwarders outlive polling by the drain timeout.
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer upCancel()
	ug, ugCtx := errgroup.WithContext(upCtx)
	fwds := make([]*forward.Forwarder, 0, len(g.uplinks))
	names := make([]string, len(g.uplinks))
	for i, u := range g.uplinks {
		names[i] = u.Name()
	}
	g.mx.fwd.Only(names) // a reload's removed uplinks leave no series
	for _, u := range g.uplinks {
		r, err := sp.Reader(u.Name())
		if err != nil {
			return fmt.Errorf("spool reader %s: %w", u.Name(), err)
		}
		f := forward.New(u, sp, r, forward.Options{Gateway: g.cfg.ID, Log: g.log.With("uplink", u.Name()), Metrics: g.mx.fwd,
			LiveFirst: g.cfg.Raw.Spool.Backlog == spool.BacklogLiveFirst})
		fwds = append(fwds, f)
		ug.Go(func() error { return u.Run(ugCtx) })
		ug.Go(func() error { return f.Run(ugCtx) })
	}
	if err := g.removeStaleReaders(sp); err != nil {
		upCancel()
		return err
	}

	g.mu.Lock()
	g.fwds = fwds
	g.mu.Unlock()
	pg, pctx := errgroup.WithContext(ctx)
	// Births, then the online status. A notice the spool cannot take (disk
	// full) is not fatal: it stays due and is retried later (a device's
	// birth before its next batch, the status after the next successful
	// append). The first failure stops the round, so a full disk costs
	// one seq here, not one per notice.
	g.statusDue.Store(true)
	for _, a := range g.assets {
		a.birthDue.Store(true)
	}
	g.spoolNotices(pctx, sp)
	g.setReady(true)
	g.log.Info("gateway running", "gateway", g.cfg.ID, "devices", len(g.devices), "uplinks", len(g.uplinks),
		"spool", g.cfg.Raw.Spool.Dir, "seq", sp.LastSeq())
	for _, d := range g.devices {
		pg.Go(func() error { return d.run(pctx, sp) })
	}
	if g.cmd != nil {
		pg.Go(func() error { return g.cmd.Run(pctx) })
	}
	perr := pg.Wait()
	g.setReady(false)
	if !g.statusDue.Load() { // no offline notice for an online one never spooled
		_ = g.appendStatus(upCtx, sp, false)
	}

	// drain: forward what is spooled, bounded in time
	deadline := time.Now().Add(g.drain)
	for time.Now().Before(deadline) && ugCtx.Err() == nil {
		behind := false
		for _, f := range fwds {
			if f.Lag().Records > 0 && f.Ready() {
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

// appendStatus spools the gateway's online/offline notice, so consumers of
// the NATS stream see the gateway come and go (MQTT subscribers also get the
// uplink's own retained status and Last Will).
func (g *Gateway) appendStatus(ctx context.Context, sp *spool.Spool, online bool) error {
	st := &telemetry.Status{Gateway: g.cfg.ID, Online: online, TSGW: g.now().UnixMilli()}
	_, err := sp.Append(ctx, telemetry.StatusSubject(g.cfg.Site, g.cfg.ID), func(seq uint64, dst []byte) []byte {
		st.Seq = seq
		data, _ := telemetry.MarshalStatus(st) // plain struct: cannot fail
		return append(dst, data...)
	})
	if err != nil && ctx.Err() == nil {
		g.m.notices.WithLabelValues("status").Inc()
		g.spoolFailed(ctx, g.log, "spooling gateway status; retried after the next successful append", err)
	}
	return err
}

// spoolNotices spools the notices that are due at start: every asset's
// birth, then the online status, stopping at the first failure (the rest
// stay due).
func (g *Gateway) spoolNotices(ctx context.Context, sp *spool.Spool) {
	for _, a := range g.assets {
		if !a.spoolBirth(ctx, sp) {
			return
		}
	}
	g.retryStatus(ctx, sp)
}

// retryStatus spools the online status when it is due. Any acquisition
// loop calls it after a successful append.
func (g *Gateway) retryStatus(ctx context.Context, sp *spool.Spool) {
	if g.statusDue.CompareAndSwap(true, false) {
		if err := g.appendStatus(ctx, sp, true); err != nil {
			g.statusDue.Store(true)
		}
	}
}

// spoolFailed logs a failed append, except a lost record (spool.ErrLost):
// the spool counts and logs those itself, rate-limited. Other errors are
// rate-limited here.
func (g *Gateway) spoolFailed(ctx context.Context, log *slog.Logger, msg string, err error) {
	if errors.Is(err, spool.ErrLost) || ctx.Err() != nil {
		return
	}
	g.spoolLog.Log(ctx, log, slog.LevelError, msg, "err", err)
}

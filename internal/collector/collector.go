// Package collector is smelter-collector: it ingests the normalized
// telemetry stream from NATS JetStream (or MQTT), deduplicates it, runs the
// anomaly rules and energy KPIs, publishes alerts and KPI results back onto
// the brokers, keeps alert state in a JetStream KV bucket and offers an
// in-process query API for the HTTP API and dashboard.
package collector

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
)

// recentCap bounds the recent-alerts history kept for the query API.
const recentCap = 1000

// Collector is one collector instance.
type Collector struct {
	cfg Config
	log *slog.Logger
	cat *catalog.Catalog

	mu      sync.Mutex // guards everything below
	engine  *rules.Engine
	kpis    *kpi.Tracker
	dedup   *ingest.Dedup
	births  *ingest.BirthParts
	active  map[string]alert.Alert
	recent  []alert.Alert
	scratch []alert.Alert
	results []kpi.Result

	live *dashboard.Live // history, KPI windows, gateway health for the dashboard

	out      chan output
	ready    atomic.Bool
	url      atomic.Value // string: NATS URL in use
	httpAddr atomic.Value // string: bound HTTP address

	m   metrics
	reg *prometheus.Registry
}

type output struct {
	subject string
	data    []byte
	kvKey   string // set for alerts: put (active) or delete (cleared)
	kvDel   bool
}

type metrics struct {
	ingested   *prometheus.CounterVec
	duplicates prometheus.Counter
	late       prometheus.Counter
	malformed  *prometheus.CounterVec
	published  *prometheus.CounterVec
	pubErrors  prometheus.Counter
}

// New builds a collector from a validated config and rule set. It does no
// I/O. reg receives the collector's metrics.
func New(cfg Config, set *rules.Set, log *slog.Logger, reg *prometheus.Registry) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if set == nil {
		return nil, errors.New("collector: rule set is nil")
	}
	cat := catalog.Default()
	c := &Collector{cfg: cfg, log: log, cat: cat, engine: rules.New(set, cat, rules.Options{}), kpis: cfg.kpiTracker(set, cat),
		dedup: ingest.NewDedup(cfg.DedupWindow), births: ingest.NewBirthParts(256), active: map[string]alert.Alert{}, out: make(chan output, 4096), reg: reg,
		live: dashboard.NewLive(nil)}
	c.m = metrics{
		ingested:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_ingested_total", Help: "Messages processed, by kind."}, []string{"kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_duplicates_total", Help: "Batches dropped as duplicates of (gateway, seq)."}),
		late:       prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_late_beyond_window_total", Help: "Batches older than the dedup window, accepted unchecked."}),
		malformed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_malformed_total", Help: "Messages rejected, by reason."}, []string{"reason"}),
		published:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_published_total", Help: "Alert and KPI messages published, by kind."}, []string{"kind"}),
		pubErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_publish_errors_total", Help: "Failed publishes and KV writes."}),
	}
	stat := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return f()
		})
	}
	cs := []prometheus.Collector{c.m.ingested, c.m.duplicates, c.m.late, c.m.malformed, c.m.published, c.m.pubErrors,
		stat("smelter_collector_rule_evaluations_total", "Rule evaluations.", func() float64 { return float64(c.engine.Stats().Evaluations) }),
		stat("smelter_collector_late_batches_total", "Batches older than their asset's newest, not evaluated.", func() float64 { return float64(c.engine.Stats().Late) }),
		stat("smelter_collector_readings_total", "Readings evaluated.", func() float64 { return float64(c.engine.Stats().Readings) }),
		stat("smelter_collector_alerts_raised_total", "Alerts raised (rules and KPIs).", func() float64 {
			return float64(c.engine.Stats().Raised + c.kpis.Stats().Raised)
		}),
		stat("smelter_collector_alerts_cleared_total", "Alerts cleared (rules and KPIs).", func() float64 {
			return float64(c.engine.Stats().Cleared + c.kpis.Stats().Cleared)
		}),
		stat("smelter_collector_seq_jumps_total", "Batches whose seq jumped more than the dedup window ahead of every tracked run of their gateway (a new run started).", func() float64 { return float64(c.dedup.Stats().Jumps) }),
		stat("smelter_collector_dedup_gateways_evicted_total", "Gateways dropped from deduplication at its bound (ingest.MaxGateways) to make room for a new gateway id.", func() float64 { return float64(c.dedup.Stats().GatewaysEvicted) }),
		stat("smelter_collector_kpi_computations_total", "KPI windows computed.", func() float64 { return float64(c.kpis.Stats().Windows) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_alerts_active", Help: "Active alerts."}, func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return float64(len(c.active))
		}),
	}
	for _, x := range cs {
		if err := reg.Register(x); err != nil {
			return nil, fmt.Errorf("collector: metrics: %w", err)
		}
	}
	return c, nil
}

// Handle processes one message from any source. Malformed messages are
// counted, logged with their subject and skipped (nil error). It is safe
// for concurrent use; outputs are queued for publishing, and Handle blocks
// while that bounded queue is full.
func (c *Collector) Handle(ctx context.Context, subject string, data []byte) error {
	kind := subject[strings.LastIndexByte(subject, '.')+1:]
	var outs []output
	switch telemetry.Kind(kind) {
	case telemetry.KindData:
		b, err := telemetry.DecodeBatch(data)
		if err != nil {
			return c.malformed(subject, err)
		}
		if err := ingest.Check(subject, b, c.cat); err != nil {
			return c.rejected(subject, err)
		}
		c.mu.Lock()
		dup, late := c.dedup.SeenPart(b.Gateway, b.Seq, b.Part, b.Parts)
		if dup {
			c.mu.Unlock()
			c.m.duplicates.Inc()
			return nil
		}
		if late {
			c.m.late.Inc()
		}
		c.live.ObserveBatch(b)
		al := c.engine.Process(b, c.scratch[:0])
		var res []kpi.Result
		res, al = c.kpis.Process(b, c.results[:0], al)
		outs = c.record(al, res, outs)
		c.scratch, c.results = al[:0], res[:0]
		c.mu.Unlock()
	case telemetry.KindBirth:
		bi, err := telemetry.DecodeBirth(data)
		if err != nil {
			return c.malformed(subject, err)
		}
		if err := ingest.CheckAsset(subject, bi.Gateway, bi.Asset.FromJSON(), c.cat); err != nil {
			return c.rejected(subject, err)
		}
		c.mu.Lock()
		if bi.Parts > 0 { // a part of a split birth: wait for the others
			bi, err = c.births.Add(bi)
			if err != nil || bi == nil {
				c.mu.Unlock()
				if err != nil {
					return c.malformed(subject, err)
				}
				return nil
			}
		}
		c.engine.Birth(bi)
		c.kpis.Birth(bi)
		c.mu.Unlock()
		c.live.ObserveBirth(bi)
	case telemetry.KindDeath:
		var d telemetry.Death
		if err := json.Unmarshal(data, &d); err != nil {
			return c.malformed(subject, fmt.Errorf("%w: %w", telemetry.ErrInvalid, err))
		}
		if d.Schema != telemetry.SchemaDeath {
			return c.malformed(subject, fmt.Errorf("%w: %q (want %q)", telemetry.ErrSchema, d.Schema, telemetry.SchemaDeath))
		}
		if !telemetry.ValidToken(d.Asset.ID) || !telemetry.ValidToken(d.Asset.Class) {
			return c.malformed(subject, fmt.Errorf("%w: death needs asset.id and asset.class tokens", telemetry.ErrInvalid))
		}
		if err := ingest.CheckAsset(subject, d.Gateway, d.Asset.FromJSON(), c.cat); err != nil {
			return c.rejected(subject, err)
		}
		c.mu.Lock()
		c.live.ObserveDeath(&d)
		al := c.engine.Death(&d, c.scratch[:0])
		outs = c.record(al, nil, outs)
		c.scratch = al[:0]
		c.mu.Unlock()
	case telemetry.KindStatus:
		var st telemetry.Status
		if err := json.Unmarshal(data, &st); err != nil {
			return c.malformed(subject, fmt.Errorf("%w: %w", telemetry.ErrInvalid, err))
		}
		ps, err := telemetry.ParseSubject(subject)
		if err != nil || st.Schema != telemetry.SchemaStatus || !telemetry.ValidToken(st.Gateway) {
			return c.malformed(subject, fmt.Errorf("%w: status needs schema %q, a gateway token and a smelter.v1 subject", telemetry.ErrInvalid, telemetry.SchemaStatus))
		}
		c.live.ObserveStatus(ps.Site, &st)
	default:
		return nil // alerts, KPIs and status travel on the same tree
	}
	c.m.ingested.WithLabelValues(kind).Inc()
	return c.enqueue(ctx, outs)
}

func (c *Collector) malformed(subject string, err error) error {
	reason := "invalid"
	if errors.Is(err, telemetry.ErrSchema) {
		reason = "schema"
	}
	c.m.malformed.WithLabelValues(reason).Inc()
	c.log.Warn("malformed message skipped", "subject", subject, "err", err)
	return nil
}

// record updates the alert store and builds outputs; c.mu is held.
func (c *Collector) record(al []alert.Alert, res []kpi.Result, outs []output) []output {
	c.live.ObserveAlerts(al)
	c.live.ObserveKPIs(res)
	for _, a := range al {
		if a.Active() {
			c.active[a.Key] = a
		} else {
			delete(c.active, a.Key)
		}
		if len(c.recent) == recentCap {
			copy(c.recent, c.recent[1:])
			c.recent = c.recent[:recentCap-1]
		}
		c.recent = append(c.recent, a)
		data, err := json.Marshal(a)
		if err != nil {
			continue
		}
		c.log.Info("alert", "state", a.State, "severity", a.Severity, "key", a.Key, "message", a.Message)
		outs = append(outs, output{subject: telemetry.Subject(a.Site, a.Class, a.Asset, telemetry.KindAlert), data: data,
			kvKey: a.Key, kvDel: !a.Active()})
	}
	for _, r := range res {
		data, err := json.Marshal(r)
		if err != nil {
			continue
		}
		outs = append(outs, output{subject: telemetry.Subject(r.Site, r.Class, r.Asset, telemetry.KindKPI), data: data})
	}
	return outs
}

func (c *Collector) enqueue(ctx context.Context, outs []output) error {
	for _, o := range outs {
		select {
		case c.out <- o:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Tick raises silence alerts; Run calls it every second.
func (c *Collector) Tick(ctx context.Context) error {
	c.mu.Lock()
	al := c.engine.Tick(nil)
	outs := c.record(al, nil, nil)
	c.mu.Unlock()
	return c.enqueue(ctx, outs)
}

// Ready reports whether the collector is connected and consuming.
func (c *Collector) Ready() bool { return c.ready.Load() }

// NATSURL returns the URL of the NATS server in use (the embedded one when
// none is configured); empty before Run connected.
func (c *Collector) NATSURL() string {
	s, _ := c.url.Load().(string)
	return s
}

// HTTPAddr returns the bound HTTP address once Run listens.
func (c *Collector) HTTPAddr() string {
	s, _ := c.httpAddr.Load().(string)
	return s
}

// Run connects (starting embedded brokers when no URL is configured),
// restores alert state and consumes until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	url := c.cfg.NATS.URL
	if url == "" {
		dir := filepath.Join(c.cfg.Path(c.cfg.DataDir), "nats")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("collector: data_dir: %w", err)
		}
		ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: dir, Port: c.cfg.NATS.EmbeddedPort})
		if err != nil {
			return fmt.Errorf("collector: embedded nats: %w", err)
		}
		defer ns.Shutdown()
		url = ns.URL()
		c.log.Info("embedded nats-server with JetStream started", "url", url, "store", dir)
	}
	opts, err := c.natsOptions()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("collector: nats connect %s: %w", url, err)
	}
	defer nc.Close()
	c.url.Store(url)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("collector: jetstream: %w", err)
	}
	if c.cfg.NATS.CreateStream {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: c.cfg.NATS.Stream, Subjects: []string{telemetry.SubjectPrefix + ".>"},
			Storage: jetstream.FileStorage, MaxAge: time.Duration(c.cfg.NATS.MaxAge), Duplicates: 2 * time.Minute})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("collector: stream %s: %w", c.cfg.NATS.Stream, err)
		}
	}
	kv, err := js.KeyValue(ctx, c.cfg.NATS.KVBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: c.cfg.NATS.KVBucket, Description: "smelter-collector active alerts", Storage: jetstream.FileStorage})
	}
	if err != nil {
		return fmt.Errorf("collector: kv bucket %s: %w", c.cfg.NATS.KVBucket, err)
	}
	if err := c.restore(ctx, kv); err != nil {
		return err
	}
	var mq mqtt.Client
	g, gctx := errgroup.WithContext(ctx)
	if c.cfg.MQTT.Enabled {
		mo, stop, err := c.mqttOptions()
		if stop != nil { // the embedded broker, also when the options failed
			defer stop()
		}
		if err != nil {
			return err
		}
		pub := mqtt.NewClient(mo.SetClientID(mo.ClientID + "-pub"))
		if tok := pub.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
			return fmt.Errorf("collector: mqtt connect: %w", tok.Error())
		}
		defer pub.Disconnect(250)
		mq = pub
		// gateway status (retained LWT messages) for the dashboard's
		// gateway health; every replica subscribes, not a shared group
		pub.Subscribe(telemetry.Topic(statusFilter), 1, func(_ mqtt.Client, m mqtt.Message) {
			_ = c.Handle(gctx, telemetry.SubjectFromTopic(m.Topic()), m.Payload())
		})
		src := &ingest.MQTT{Options: mo, Group: c.cfg.MQTT.Group, Log: c.log.With("source", "mqtt")}
		g.Go(func() error { return src.Run(gctx, c.Handle) })
	}
	if c.cfg.Sparkplug != nil { // Sparkplug B source (sparkplug.go, docs/sparkplug.md)
		src, err := c.sparkplugSource()
		if err != nil {
			return err
		}
		g.Go(func() error { return src.Run(gctx, c.Handle) })
	}
	statusSub, err := nc.Subscribe(statusFilter, func(m *nats.Msg) { _ = c.Handle(gctx, m.Subject, m.Data) })
	if err != nil {
		return fmt.Errorf("collector: subscribe %s: %w", statusFilter, err)
	}
	defer func() { _ = statusSub.Unsubscribe() }()
	src := &ingest.JetStream{Conn: nc, Stream: c.cfg.NATS.Stream, Consumer: c.cfg.NATS.Consumer, Log: c.log.With("source", "jetstream")}
	g.Go(func() error { return src.Run(gctx, c.Handle) })
	g.Go(func() error { return c.publish(gctx, nc, kv, mq) })
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if err := c.Tick(gctx); err != nil {
					return nil
				}
			}
		}
	})
	if c.cfg.HTTP.Listen != "" {
		token, err := c.httpToken()
		if err != nil {
			return err
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", c.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("collector: http.listen %s: %w", c.cfg.HTTP.Listen, err)
		}
		c.httpAddr.Store(ln.Addr().String())
		c.log.Info("http listening", "addr", ln.Addr().String())
		// handlers (the SSE stream) end with gctx, so Shutdown does not
		// wait on open event streams
		srv := &http.Server{Handler: c.HTTPHandler(token), ReadHeaderTimeout: 5 * time.Second,
			BaseContext: func(net.Listener) context.Context { return gctx }}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	c.ready.Store(true)
	defer c.ready.Store(false)
	err = g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// a source that was still setting up (e.g. creating its consumer)
		// when the collector was told to stop: a clean stop, not a failure
		return nil
	}
	return err
}

// restore loads persisted active alerts into the engine and KPI tracker.
func (c *Collector) restore(ctx context.Context, kv jetstream.KeyValue) error {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("collector: kv list: %w", err)
	}
	n := 0
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var a alert.Alert
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			c.log.Warn("kv: bad alert record skipped", "key", k, "err", err)
			continue
		}
		c.mu.Lock()
		if a.Kind == "kpi" {
			c.kpis.Restore(a)
		} else {
			c.engine.Restore(a)
		}
		c.active[a.Key] = a
		c.mu.Unlock()
		n++
	}
	c.log.Info("alert state restored", "active", n)
	return nil
}

// publish drains the output queue onto NATS (and MQTT) and the KV bucket.
func (c *Collector) publish(ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue, mq mqtt.Client) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case o := <-c.out:
			kind := o.subject[strings.LastIndexByte(o.subject, '.')+1:]
			if err := nc.Publish(o.subject, o.data); err != nil {
				c.m.pubErrors.Inc()
				c.log.Warn("publish", "subject", o.subject, "err", err)
			} else {
				c.m.published.WithLabelValues(kind).Inc()
			}
			if mq != nil {
				mq.Publish(telemetry.Topic(o.subject), 1, false, o.data)
			}
			if o.kvKey != "" {
				var err error
				if o.kvDel {
					err = kv.Delete(ctx, o.kvKey)
				} else {
					_, err = kv.Put(ctx, o.kvKey, o.data)
				}
				if err != nil && ctx.Err() == nil {
					c.m.pubErrors.Inc()
					c.log.Warn("kv write", "key", o.kvKey, "err", err)
				}
			}
		}
	}
}

func (c *Collector) natsOptions() ([]nats.Option, error) {
	n := c.cfg.NATS
	opts := []nats.Option{nats.Name("smelter-collector"), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second)}
	if n.Username != "" {
		var pw secret.Secret
		var err error
		switch {
		case n.PasswordFile != "":
			pw, err = secret.FromFile("nats.password_file", c.cfg.Path(n.PasswordFile))
		case n.PasswordEnv != "":
			pw, err = secret.FromEnv("nats.password_env", n.PasswordEnv)
		}
		if err != nil {
			return nil, fmt.Errorf("collector: %w", err)
		}
		opts = append(opts, nats.UserInfo(n.Username, pw.Reveal()))
	}
	if n.TokenFile != "" {
		tok, err := secret.FromFile("nats.token_file", c.cfg.Path(n.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("collector: %w", err)
		}
		opts = append(opts, nats.Token(tok.Reveal()))
	}
	if n.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.cfg.Path(n.CredsFile)))
	}
	if n.TLS != nil {
		tc, err := c.tlsConfig(n.TLS, "nats.tls")
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// tlsConfig builds the client TLS configuration of a tls: block, with its
// files resolved against the config file's directory.
func (c *Collector) tlsConfig(t *secret.TLS, field string) (*tls.Config, error) {
	rt := *t
	rt.ResolvePaths(c.cfg.dir)
	if rt.InsecureSkipVerify {
		c.log.Warn("TLS server verification disabled", "field", field+".insecure_skip_verify")
	}
	tc, err := rt.Config(field)
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	return tc, nil
}

func (c *Collector) mqttOptions() (*mqtt.ClientOptions, func(), error) {
	m := c.cfg.MQTT
	url := m.URL
	var stop func()
	if url == "" {
		b, err := brokers.StartMQTT(brokers.MQTTOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("collector: embedded mqtt: %w", err)
		}
		url, stop = b.URL(), func() { _ = b.Close() }
		c.log.Info("embedded MQTT broker started", "url", url)
	}
	id := m.ClientID
	if id == "" {
		host, _ := os.Hostname()
		id = "smelter-collector-" + host
	}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(true).SetConnectRetry(true)
	if m.Username != "" {
		o.SetUsername(m.Username)
		if m.PasswordEnv != "" {
			pw, err := secret.FromEnv("mqtt.password_env", m.PasswordEnv)
			if err != nil {
				return nil, stop, fmt.Errorf("collector: %w", err)
			}
			o.SetPassword(pw.Reveal())
		}
	}
	if m.TLS != nil {
		tc, err := c.tlsConfig(m.TLS, "mqtt.tls")
		if err != nil {
			return nil, stop, err
		}
		o.SetTLSConfig(tc)
	}
	return o, stop, nil
}

// Alerts returns the active alerts (sorted by key), or with all the recent
// alert events too, newest last.
func (c *Collector) Alerts(activeOnly bool) []alert.Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !activeOnly {
		return append([]alert.Alert(nil), c.recent...)
	}
	out := make([]alert.Alert, 0, len(c.active))
	for _, a := range c.active {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Assets returns every known asset with its latest values.
func (c *Collector) Assets() []rules.AssetView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.engine.Assets()
}

// Asset returns one asset with its latest values.
func (c *Collector) Asset(site, id string) (rules.AssetView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.engine.Asset(site, id)
}

// KPIs returns the latest finished KPI window of an asset.
func (c *Collector) KPIs(site, id string) (kpi.Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kpis.Last(site, id)
}

// statusFilter matches every gateway's status subject.
var statusFilter = telemetry.Subject("*", telemetry.GatewayClass, "*", telemetry.KindStatus)

// httpToken reads the API bearer token from http.token_env or
// http.token_file ("" when neither is set). Surrounding white space is
// dropped (a bearer token has none); a blank token is an error, never "no
// authentication".
func (c *Collector) httpToken() (string, error) {
	var tok secret.Secret
	var err error
	var src string
	switch {
	case c.cfg.HTTP.TokenEnv != "":
		tok, err = secret.FromEnv("http.token_env", c.cfg.HTTP.TokenEnv)
		src = "http.token_env: environment variable " + c.cfg.HTTP.TokenEnv
	case c.cfg.HTTP.TokenFile != "":
		path := c.cfg.Path(c.cfg.HTTP.TokenFile)
		tok, err = secret.FromFile("http.token_file", path)
		src = "http.token_file: file " + path
	default:
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("collector: %w", err)
	}
	t := strings.TrimSpace(tok.Reveal())
	if t == "" {
		return "", fmt.Errorf("collector: %s is empty: %w", src, secret.ErrMissing)
	}
	return t, nil
}

// Live returns the dashboard's store (history, KPI windows, gateways).
func (c *Collector) Live() *dashboard.Live { return c.live }

// HTTPHandler returns the collector's HTTP handler: /metrics, /healthz,
// /readyz, the JSON API under /api/v1 and the dashboard at /. A non-empty
// token is required as a bearer token on /api (never logged).
func (c *Collector) HTTPHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("/", dashboard.New(c, c.live, dashboard.Options{Token: token, Catalog: c.cat, Log: c.log.With("component", "dashboard"), KPI: c.cfg.kpiConfig()}))
	return mux
}

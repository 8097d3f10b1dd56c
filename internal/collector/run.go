package collector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/history"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/streams"
	"github.com/smelterio/smelter/internal/telemetry"
)

// ErrServerTooOld is returned by Run when cluster.partitions is set and the
// NATS server lacks pinned-client priority groups.
var ErrServerTooOld = errors.New("nats-server too old")

// minPartitionVersion is the first nats-server with pinned_client priority
// groups on pull consumers (ADR-42).
const minPartitionVersion = "2.11.0"

// Run connects (starting embedded brokers when no URL is configured),
// joins its group and consumes until ctx ends. In single replica mode
// (cluster.partitions 0) it refuses to start while another live collector
// of the same group exists; with partitions it consumes the partitions
// the group's live members assign to it and takes over those of a replica
// that died.
func (c *Collector) Run(ctx context.Context) error {
	token, err := c.httpToken() // configuration errors before any I/O
	if err != nil {
		return err
	}
	kcfg, seed, err := c.commandsLocal(token)
	if err != nil {
		return err
	}
	if c.cfg.History != nil {
		if err := c.openHistory(); err != nil {
			return err
		}
		defer func() {
			if h := c.hist.Swap(nil); h != nil {
				h.Close()
			}
		}()
	}
	var ln net.Listener // bound first: an unusable http.listen fails before anything runs
	if c.cfg.HTTP.Listen != "" {
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", c.cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("collector: http.listen %s: %w", c.cfg.HTTP.Listen, err)
		}
		defer ln.Close() // served below (Serve closes it too)
	}
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
		return fmt.Errorf("collector: nats connect %s: %w", secret.RedactURL(url), err)
	}
	defer nc.Close()
	c.url.Store(url)
	c.natsErr = nc.LastError
	parts := c.cfg.Cluster.Partitions
	for _, w := range c.cfg.Warnings() {
		c.log.Warn(w)
	}
	if parts > 0 && !versionAtLeast(nc.ConnectedServerVersion(), minPartitionVersion) {
		return fmt.Errorf("collector: cluster.partitions needs nats-server >= %s (pinned_client priority groups); %s runs %s: %w",
			minPartitionVersion, url, nc.ConnectedServerVersion(), ErrServerTooOld)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<15), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("collector: jetstream: %w", err)
	}
	fence := versionAtLeast(nc.ConnectedServerVersion(), minFenceVersion)
	if !fence {
		c.log.Warn("stream fencing needs nats-server "+minFenceVersion+" or newer: running without it (a replica paused between its ownership check and "+
			"its publish may store an alert event no replica's state holds; docs/collector.md, \"Fencing\")", "server_version", nc.ConnectedServerVersion())
	}
	var partitioned bool
	var kv, mkv jetstream.KeyValue
	// the members bucket is kept in memory: a restarted nats-server loses
	// it, and members.run creates it again (open). It is read before the
	// stream is touched: a replica that must refuse (members.check)
	// changes nothing.
	mcfg := jetstream.KeyValueConfig{Bucket: c.cfg.membersBucket(), Description: "smelter-collector replicas of group " + c.cfg.Group,
		Storage: jetstream.MemoryStorage, Replicas: c.cfg.Cluster.Replicas, TTL: 10 * time.Duration(c.cfg.Cluster.MemberTimeout)}
	err = c.startRetry(ctx, func(ctx context.Context) (err error) {
		mkv, err = c.bucket(ctx, js, mcfg)
		return err
	})
	if err != nil {
		return err
	}
	mem := &members{kv: mkv, self: c.replicaID(), partitions: parts, timeout: time.Duration(c.cfg.Cluster.MemberTimeout), log: c.log, stall: c.stall, checked: c.memberChecked,
		open: func(ctx context.Context) error {
			_, err := c.bucket(ctx, js, mcfg)
			return err
		},
		closed: func() error {
			if !nc.IsClosed() {
				return nil
			}
			if err := nc.LastError(); err != nil {
				return err
			}
			return nats.ErrConnectionClosed
		},
		reconnected: c.reconnects.Load, reconnecting: nc.IsReconnecting, rewatches: c.m.rewatches.WithLabelValues(watchMembers)}
	c.log = c.log.With("replica", mem.self)
	mem.log = c.log
	err = c.startRetry(ctx, func(ctx context.Context) error { return mem.check(ctx, parts == 0) })
	if err == nil {
		err = c.startRetry(ctx, func(ctx context.Context) (err error) {
			partitioned, fence, err = c.ensureStream(ctx, js, fence)
			if err == nil && fence {
				err = c.probeFence(ctx, nc, js)
			}
			return err
		})
	}
	if err == nil {
		err = c.startRetry(ctx, func(ctx context.Context) (err error) {
			kv, err = c.bucket(ctx, js, jetstream.KeyValueConfig{Bucket: c.cfg.stateBucket(), Description: "smelter-collector rule and KPI state per asset",
				Storage: jetstream.FileStorage, Replicas: c.cfg.Cluster.Replicas})
			return err
		})
	}
	if err != nil {
		return err
	}
	if err := mem.join(ctx, parts == 0); err != nil {
		return err
	}
	defer mem.leave(ctx)
	io := &natsIO{nc: nc, js: js, kv: kv, bucket: c.cfg.stateBucket(), fence: fence}
	c.js.Store(io) // before any source: Handle commits through it
	defer c.js.Store(nil)
	// every goroutine of g ends before Run returns, whichever way: on an
	// early return below they are cancelled and awaited before the NATS
	// connection, c.js and the embedded server go (deferred before this)
	rctx, cancelRun := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(rctx)
	waited := false
	defer func() {
		cancelRun()
		if !waited {
			_ = g.Wait()
		}
	}()
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
		c.js.Store(&natsIO{nc: nc, js: js, kv: kv, bucket: c.cfg.stateBucket(), mq: pub, fence: fence})
		// gateway status (retained LWT messages) for the dashboard's
		// gateway health; every replica subscribes, not a shared group
		pub.Subscribe(telemetry.Topic(statusFilter), 1, func(_ mqtt.Client, m mqtt.Message) {
			_ = c.showStatus(telemetry.SubjectFromTopic(m.Topic()), m.Payload()) // counted, when malformed, where the source delivers it (Handle)
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
	// a malformed status is counted by the stream's consumer, not here too
	statusSub, err := nc.Subscribe(statusFilter, func(m *nats.Msg) { _ = c.showStatus(m.Subject, m.Data) })
	if err != nil {
		return fmt.Errorf("collector: subscribe %s: %w", statusFilter, err)
	}
	defer func() { _ = statusSub.Unsubscribe() }()
	if kcfg != nil {
		stop, err := c.startCommands(gctx, g, kcfg, seed, url, js)
		if err != nil {
			return err
		}
		defer stop()
	}
	if h := c.hist.Load(); h != nil { // the history sink: its own consumer, acks after the commit
		sink := history.NewSink(h, js, c.sinkOptions())
		g.Go(func() error { return sink.Run(gctx) })
	}
	g.Go(func() error { return mem.run(gctx) })
	g.Go(func() error { return c.supervise(gctx, c.js.Load(), mem, partitioned) })
	if ln != nil {
		c.serveHTTP(gctx, g, ln, token)
	}
	c.ready.Store(true)
	defer c.ready.Store(false)
	err = g.Wait()
	waited = true
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// serveHTTP serves the API on ln in g until gctx ends.
func (c *Collector) serveHTTP(gctx context.Context, g *errgroup.Group, ln net.Listener, token string) {
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

// StartTimeout bounds how long Run retries creating or updating the
// stream and the buckets while JetStream is not ready (a cluster still
// electing its meta leader or placing replicas, replicas starting at the
// same moment); each attempt waits at most startAttempt.
const (
	StartTimeout = 60 * time.Second
	startAttempt = 5 * time.Second
)

// startRetry runs op until it succeeds, fails with an error retrying
// cannot fix (a configuration conflict), ctx ends or StartTimeout passes
// (then the last error), with a backoff of 250 ms doubling to 4 s.
func (c *Collector) startRetry(ctx context.Context, op func(context.Context) error) error {
	deadline := time.Now().Add(StartTimeout)
	wait := 250 * time.Millisecond
	for {
		var before error
		if c.natsErr != nil {
			before = c.natsErr()
		}
		actx, cancel := context.WithTimeout(ctx, startAttempt)
		err := op(actx)
		cancel()
		if err != nil && c.natsErr != nil && !errors.Is(err, nats.ErrPermissionViolation) { // not told already (probeFence)
			// a JetStream API request the server refused for permissions
			// gets no answer: without this the start retried for
			// StartTimeout and ended with "context deadline exceeded"
			if perr := c.natsErr(); perr != nil && perr != before && errors.Is(perr, nats.ErrPermissionViolation) { //nolint:errorlint // a new error value, not another kind
				return fmt.Errorf("collector: start refused by the NATS server's permissions: %w (the user's permissions must allow what docs/collector.md \"Permissions\" lists for group %q)", perr, c.cfg.Group)
			}
		}
		if err == nil || ctx.Err() != nil || !transient(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		c.log.Warn("JetStream not ready, retrying", "err", err, "in", wait)
		if c.onStartRetry != nil {
			c.onStartRetry(err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 4*time.Second)
	}
}

// errCodeClusterNoPeers is nats-server's JSClusterNoPeersErrF (400,
// 10005): "no suitable peers for placement", which a forming cluster
// answers while the nodes that joined are not current yet ("peer
// offline"); nats.go names no constant for it.
const errCodeClusterNoPeers jetstream.ErrorCode = 10005

// transient reports whether a JetStream API error may go away by itself:
// a timeout, no responders, a server-side (5xx) API error such as
// "JetStream system temporarily unavailable", or no suitable peers yet
// (a cluster still forming; a cluster too small for the replicas stays
// so, and the start gives up after StartTimeout with that error).
func transient(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.Code >= 500 || api.ErrorCode == errCodeClusterNoPeers
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse)
}

// partitionTransform is the stream's subject transform for n partitions:
// smelter.v1.<site>.<class>.<asset>.<kind> is stored with a seventh token,
// the partition of (site, asset) (FNV-1a, the server's partition()).
func partitionTransform(n int) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{Source: telemetry.SubjectPrefix + ".*.*.*.*",
		Destination: telemetry.SubjectPrefix + ".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}.{{partition(" + strconv.Itoa(n) + ",1,3)}}"}
}

// legacy reports whether a telemetry stream's subjects capture the audit
// subjects (a stream from before the audit stream, on smelter.v1.>).
func legacy(subjects []string) bool {
	for _, s := range subjects {
		if telemetry.SubjectsCollide(s, telemetry.KindFilter("*", telemetry.KindAudit)) ||
			telemetry.SubjectsCollide(s, telemetry.KindFilter("*", telemetry.KindCommand)) {
			return true
		}
	}
	return false
}

// ensureStream creates the stream (create_stream) on the telemetry kinds
// and, with fence, the group's fence subjects (fence.go), and with
// partitions sets its partition transform. A stream from before the audit
// stream (capturing .cmd and .audit) is narrowed to the telemetry kinds
// with create_stream, else reported with the fix; one without the fence
// subjects gets them with create_stream, else runs unfenced (logged). It
// reports whether the stream stores partitioned subjects and whether it
// captures the fence subjects (false without fence).
func (c *Collector) ensureStream(ctx context.Context, js jetstream.JetStream, fence bool) (partitioned, fenced bool, err error) {
	n := c.cfg.NATS
	parts := c.cfg.Cluster.Partitions
	want := streams.Telemetry(n.Stream, telemetry.TelemetryStreamSubjects("*"), c.cfg.Cluster.Replicas, time.Duration(n.MaxAge))
	if fence {
		want.Subjects = append(want.Subjects, fenceFilter(c.cfg.Group))
	}
	if parts > 0 {
		want.SubjectTransform = partitionTransform(parts)
	}
	s, err := js.Stream(ctx, n.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && n.CreateStream {
		_, err = js.CreateStream(ctx, want)
		if err == nil {
			return parts > 0, fence, nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile (another replica, a gateway): checked below
			s, err = js.Stream(ctx, n.Stream)
		}
	}
	if err != nil {
		return false, false, fmt.Errorf("collector: stream %s: %w", n.Stream, err)
	}
	have := s.CachedInfo().Config
	if legacy(have.Subjects) {
		if !n.CreateStream {
			c.log.Error("the stream captures the command subjects (.cmd, .audit): the gateways refuse every command until it is narrowed (docs/operations.md, \"Audit stream\")",
				"stream", n.Stream, "subjects", have.Subjects,
				"fix", "nats stream edit "+n.Stream+" --subjects '"+strings.Join(want.Subjects, ",")+"'")
		} else {
			old := have.Subjects
			have.Subjects = slices.Clone(want.Subjects)
			for _, subj := range old { // other groups' fences stay
				if strings.HasPrefix(subj, fencePrefix) && !slices.Contains(have.Subjects, subj) {
					have.Subjects = append(have.Subjects, subj)
				}
			}
			info, err := js.UpdateStream(ctx, have)
			if err != nil {
				return false, false, fmt.Errorf("collector: stream %s: narrow %v to the telemetry kinds %v (docs/operations.md, \"Audit stream\"): %w",
					n.Stream, old, want.Subjects, err)
			}
			have = info.CachedInfo().Config
			c.log.Warn("stream narrowed to the telemetry kinds, so that the command audit stream can exist; commands and audit records stored before stay until max_age",
				"stream", n.Stream, "was", old, "subjects", have.Subjects)
		}
	}
	fenced = fence && telemetry.AnyCovers(have.Subjects, fenceFilter(c.cfg.Group))
	switch {
	case fenced || !fence:
	case !n.CreateStream:
		c.log.Error("the stream does not capture this group's fence subjects and nats.create_stream is off: running without the stream fence (docs/collector.md, \"Fencing\")",
			"stream", n.Stream, "subjects", have.Subjects,
			"fix", "nats stream edit "+n.Stream+" --subjects '"+strings.Join(append(slices.Clone(have.Subjects), fenceFilter(c.cfg.Group)), ",")+"'")
	default:
		old := have.Subjects
		have.Subjects = append(slices.Clone(have.Subjects), fenceFilter(c.cfg.Group))
		info, err := js.UpdateStream(ctx, have)
		if err != nil {
			return false, false, fmt.Errorf("collector: stream %s: add the fence subjects %s (docs/collector.md, \"Fencing\"): %w", n.Stream, fenceFilter(c.cfg.Group), err)
		}
		have = info.CachedInfo().Config
		fenced = true
		c.log.Warn("stream now captures this group's fence subjects (docs/collector.md, \"Fencing\")", "stream", n.Stream, "was", old, "subjects", have.Subjects)
	}
	if parts == 0 {
		return have.SubjectTransform != nil, fenced, nil
	}
	if have.SubjectTransform != nil && *have.SubjectTransform == *want.SubjectTransform {
		return true, fenced, nil
	}
	if !n.CreateStream {
		return false, false, fmt.Errorf("collector: stream %s has no %d-partition transform (want %s -> %s) and nats.create_stream is off",
			n.Stream, parts, want.SubjectTransform.Source, want.SubjectTransform.Destination)
	}
	if have.SubjectTransform != nil && have.SubjectTransform.Source != want.SubjectTransform.Source {
		return false, false, fmt.Errorf("collector: stream %s already transforms %s -> %s", n.Stream, have.SubjectTransform.Source, have.SubjectTransform.Destination)
	}
	have.SubjectTransform = want.SubjectTransform
	if _, err := js.UpdateStream(ctx, have); err != nil {
		return false, false, fmt.Errorf("collector: stream %s: set partition transform: %w", n.Stream, err)
	}
	c.log.Warn("stream re-partitioned: messages stored before keep their subjects and are not consumed by the partitions",
		"stream", n.Stream, "partitions", parts)
	return true, fenced, nil
}

func (c *Collector) bucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("collector: kv bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// replicaID is the member id: replica, else host name and a hash of the
// absolute data_dir.
func (c *Collector) replicaID() string {
	if c.cfg.Replica != "" {
		return c.cfg.Replica
	}
	host, _ := os.Hostname()
	dir, err := filepath.Abs(c.cfg.Path(c.cfg.DataDir))
	if err != nil {
		dir = c.cfg.DataDir
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(dir))
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	if len(id) > 48 {
		id = id[:48]
	}
	return fmt.Sprintf("%s-%08x", id, h.Sum32())
}

// versionAtLeast compares dotted versions (a "-beta" suffix is ignored).
func versionAtLeast(have, want string) bool {
	p := func(v string) [3]int {
		var out [3]int
		v, _, _ = strings.Cut(v, "-")
		for i, s := range strings.SplitN(v, ".", 3) {
			out[i], _ = strconv.Atoi(s)
		}
		return out
	}
	h, w := p(have), p(want)
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}

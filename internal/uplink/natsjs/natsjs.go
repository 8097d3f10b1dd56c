// Package natsjs is the NATS JetStream uplink: it publishes telemetry
// envelopes to a stream, with Nats-Msg-Id set to the envelope's dedup id,
// and reports success only when the stream acknowledged every message.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/streams"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Errors; use errors.Is.
var (
	// ErrNotConnected: the uplink has no usable connection (or stream) now;
	// the message names the last connection error.
	ErrNotConnected = errors.New("not connected")
	// ErrStream: the stream is missing (and create_stream is false) or does
	// not capture the smelter subjects: a configuration problem, not an
	// outage. Run logs it at once as an error, keeps it for LastError and
	// checks again with backoff (up to 30 s), so the uplink becomes ready
	// when the stream is fixed on the server and other uplinks go on.
	ErrStream = errors.New("stream unusable")
)

// Uplink publishes to NATS JetStream. Create it with New, start it with Run.
type Uplink struct {
	cfg  Config
	log  *slog.Logger
	m    *Metrics
	opts []nats.Option
	now  func() time.Time // the data clock of the Smelter-Sent-At header (WithClock)

	cur     atomic.Pointer[session] // nil while not ready
	lastErr atomic.Pointer[error]
}

type session struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	acks *acks // the connection's publishes and their PubAcks
	// reconnects is the client's reconnect count when the stream was
	// checked; after a reconnect the session is not usable until Run has
	// checked the stream again.
	reconnects uint64
}

func (s *session) usable() bool {
	return s != nil && s.nc.IsConnected() && s.nc.Stats().Reconnects == s.reconnects
}

// Option tunes an Uplink beyond its configuration.
type Option func(*Uplink)

// WithClock makes now the clock of every message's Smelter-Sent-At header
// (telemetry.SentAtHeader: the publish time in Unix ms). Give it the
// gateway's data clock, the one that stamps ts_gw and its Modbus and NMEA
// readings (gateway.Options.Now): the collector measures that clock's lead
// from the header and moves a fast gateway's times back by it
// (docs/collector.md). Nil keeps the default, time.Now.
func WithClock(now func() time.Time) Option {
	return func(u *Uplink) {
		if now != nil {
			u.now = now
		}
	}
}

// New checks cfg, reads the secrets and TLS files it names and prepares the
// connection options. It does no network I/O. Errors name the field and the
// variable or file, never a secret. The uplink scopes log with
// uplink=nats itself: pass an unscoped logger.
func New(cfg Config, log *slog.Logger, m *Metrics, options ...Option) (*Uplink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	u := &Uplink{cfg: cfg, log: log.With("uplink", "nats"), m: m, now: time.Now}
	for _, o := range options {
		o(u)
	}

	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.Timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// No buffering while disconnected: a publish then fails at once
		// instead of waiting in client memory; the spool holds the data.
		nats.ReconnectBufSize(-1),
		nats.IgnoreAuthErrorAbort(),
	}
	switch {
	case cfg.Username != "":
		var pw secret.Secret
		var err error
		if cfg.PasswordEnv != "" {
			pw, err = secret.FromEnv(field+".password_env", cfg.PasswordEnv)
		} else {
			pw, err = secret.FromFile(field+".password_file", cfg.PasswordFile)
		}
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(cfg.Username, pw.Reveal()))
	case cfg.TokenFile != "":
		tok, err := secret.FromFile(field+".token_file", cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok.Reveal()))
	case cfg.CredsFile != "":
		if err := secret.CredsFile(field+".creds_file", cfg.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLS.Needed(cfg.URL, "tls://", "wss://") {
		tc, err := cfg.TLS.Config(field + ".tls")
		if err != nil {
			return nil, err
		}
		if cfg.TLS.InsecureSkipVerify {
			u.log.Warn("tls.insecure_skip_verify is set: the broker's certificate is not verified")
		}
		opts = append(opts, nats.Secure(tc))
	}
	u.opts = opts
	return u, nil
}

// HeaderReserve is what MaxPayload keeps free of max_payload for the
// message's headers: NATS counts headers against max_payload, and the
// Nats-Msg-Id and Smelter-Sent-At headers ("NATS/1.0\r\nNats-Msg-Id:
// <id>\r\nSmelter-Sent-At: <ms>\r\n\r\n", the id at most 64+1+20 bytes
// plus a part suffix of at most 18, the time at most 16 digits; about 180
// bytes) stay below it.
const HeaderReserve = 256

// MaxPayload returns how many payload bytes one message may carry: the
// connected server's max_payload (learned from its INFO at every connect;
// 1 MiB by default in nats-server) less HeaderReserve. It returns 0 while
// not connected (no limit known).
func (u *Uplink) MaxPayload() int {
	s := u.cur.Load()
	if s == nil {
		return 0
	}
	if mp := s.nc.MaxPayload(); mp > HeaderReserve {
		return int(mp) - HeaderReserve
	}
	return 0
}

// ConnectLogEvery is how often Run logs a repeating connect or stream check
// failure at most.
const ConnectLogEvery = time.Minute

// Conn returns the uplink's current connection and its JetStream context
// while the uplink is ready (connected, stream checked), and nil, nil
// otherwise. The gateway's other users of the broker (the command server,
// docs/commands.md) share the uplink's one connection through it; they
// must not close it. A later call may return another connection (after the
// uplink replaced a closed one): subscriptions belong to the connection
// they were made on.
func (u *Uplink) Conn() (*nats.Conn, jetstream.JetStream) {
	s := u.cur.Load()
	if s == nil {
		return nil, nil
	}
	return s.nc, s.js
}

// Name returns "nats".
func (u *Uplink) Name() string { return "nats" }

// Ready reports whether the uplink is connected and its stream checked.
func (u *Uplink) Ready() bool {
	return u.cur.Load().usable()
}

// LastError returns the most recent connection or stream error (nil when
// none since the last successful connect).
func (u *Uplink) LastError() error {
	if p := u.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (u *Uplink) setErr(err error) {
	if err == nil {
		u.lastErr.Store(nil)
		return
	}
	u.lastErr.Store(&err)
}

// Run connects, ensures the stream, and keeps the connection up (the client
// reconnects by itself; a closed connection is replaced with backoff) until
// ctx is done. It returns nil on ctx done. Connect and stream-check
// failures are logged at most once per ConnectLogEvery with the count of
// the others (a new outage logs at once) and kept for LastError.
func (u *Uplink) Run(ctx context.Context) error {
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	var failLog logging.Limiter // connect and stream check failures
	failLog.Every = ConnectLogEvery
	var asyncLog logging.Limiter // the server's asynchronous errors (a permissions violation, a slow consumer)
	for attempt := 0; ; attempt++ {
		ev := newEvents()
		opts := append(u.opts[:len(u.opts):len(u.opts)],
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { signal(ev.disconnected, err) }),
			nats.ReconnectHandler(func(*nats.Conn) { signal(ev.reconnected, struct{}{}) }),
			nats.ClosedHandler(func(*nats.Conn) { signal(ev.closed, struct{}{}) }),
			// nats.go's own handler writes a raw line to stderr
			nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
				args := []any{"err", err}
				if sub != nil {
					args = append(args, "subject", sub.Subject)
				}
				asyncLog.Log(ctx, u.log, slog.LevelWarn, "nats asynchronous error", args...)
			}),
		)
		nc, err := nats.Connect(u.cfg.URL, opts...)
		if err != nil {
			err = fmt.Errorf("connect: %w", err)
			u.setErr(err)
			d := bo.Next()
			failLog.Log(ctx, u.log, slog.LevelWarn, "nats connect failed", "err", err, "retry_in", d.Round(time.Millisecond))
			if !backoff.Sleep(ctx, d) {
				return nil //nolint:nilerr // shutting down; the error was logged and kept for LastError
			}
			continue
		}
		if attempt > 0 {
			u.m.Reconnects.Inc()
		}
		err = u.serve(ctx, nc, ev, &failLog)
		u.cur.Store(nil)
		u.m.Connected.Set(0)
		nc.Close()
		if ctx.Err() != nil {
			return nil //nolint:nilerr // shutting down is not a failure
		}
		u.setErr(err)
		bo.Reset()
		d := bo.Next()
		u.log.Warn("nats connection lost", "err", err, "retry_in", d.Round(time.Millisecond))
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

// events carries the client's connection callbacks to Run.
type events struct {
	disconnected        chan error
	reconnected, closed chan struct{}
}

func newEvents() *events {
	return &events{make(chan error, 1), make(chan struct{}, 1), make(chan struct{}, 1)}
}

func signal[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// serve runs one connection until ctx is done or the connection closes.
func (u *Uplink) serve(ctx context.Context, nc *nats.Conn, ev *events, failLog *logging.Limiter) error {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(u.cfg.Timeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pub, err := newAcks(nc, u.cfg.Stream, u.cfg.MaxPending, u.cfg.Timeout, u.m, u.now)
	if err != nil {
		return err
	}
	// Publish calls still waiting when the connection ends fail at once.
	defer pub.close(fmt.Errorf("%w: connection closed", ErrNotConnected))
	u.log.Info("nats connected", "url", secret.RedactURL(nc.ConnectedUrl()), "server_version", nc.ConnectedServerVersion(),
		"server", nc.ConnectedServerName())
	// The stream check is a request of a few hundred bytes; during a
	// cluster's leader election it times out a few times, and the spooled
	// batches wait for it: retried every 5 s at most (it was 30 s: a gateway
	// published again 13 s after a node's loss, and the collector judged
	// its assets silent meanwhile; review12 F2).
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 5 * time.Second}
	check := true
	for {
		if check && nc.IsConnected() {
			reconnects := nc.Stats().Reconnects
			if err := u.ensureStream(ctx, js); err != nil {
				if ctx.Err() != nil {
					return nil //nolint:nilerr // shutting down: the check was interrupted, not failed
				}
				u.setErr(err)
				u.m.StreamCheckFailures.Inc()
				d := bo.Next()
				lvl := slog.LevelWarn
				if errors.Is(err, ErrStream) {
					lvl = slog.LevelError // configuration: it will not go away by itself
				}
				failLog.Log(ctx, u.log, lvl, "nats stream check failed", "stream", u.cfg.Stream, "err", err, "retry_in", d.Round(time.Millisecond))
				select {
				case <-ctx.Done():
					return nil
				case <-ev.closed:
					return errors.New("connection closed")
				case <-time.After(d):
				}
				continue
			}
			check = false
			bo.Reset()
			*failLog = logging.Limiter{Every: ConnectLogEvery} // a new failure logs at once
			u.setErr(nil)
			u.cur.Store(&session{nc: nc, js: js, acks: pub, reconnects: reconnects})
			u.m.Connected.Set(1)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ev.closed:
			return errors.New("connection closed")
		case err := <-ev.disconnected:
			if err == nil {
				err = errors.New("disconnected")
			}
			u.setErr(err)
			u.m.Connected.Set(0)
			u.log.Warn("nats disconnected", "err", err)
			// the replies to what was sent will not come
			pub.fail(fmt.Errorf("%w: %w", ErrNotConnected, err))
		case <-ev.reconnected:
			u.m.Reconnects.Inc()
			u.log.Info("nats reconnected", "url", secret.RedactURL(nc.ConnectedUrl()))
			// The server may have lost or changed the stream: check again
			// before reporting ready.
			u.cur.Store(nil)
			check = true
		}
	}
}

// ensureStream checks (or creates) the telemetry stream.
func (u *Uplink) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	info, err := u.stream(ctx, js, u.telemetrySpec())
	if err != nil {
		return err
	}
	if info.Config.Duplicates <= 0 {
		u.log.Warn("nats stream has no duplicate window: redelivered batches are stored twice", "stream", u.cfg.Stream)
	}
	if over := overlapping(info.Config.Subjects, u.cfg.AuditSubjects); over != "" {
		u.log.Warn("nats stream also captures the command audit subjects: commands are refused until it is narrowed (docs/operations.md, \"Audit stream\")",
			"stream", u.cfg.Stream, "subjects", info.Config.Subjects, "audit_subjects", u.cfg.AuditSubjects)
	}
	return nil
}

// EnsureAuditStream checks (or, with create_stream, creates) the command
// audit stream (audit_stream, default SMELTER_AUDIT, on
// smelter.v1.*.*.*.audit, file storage, audit_max_age) on the uplink's
// current connection. It fails with ErrNotConnected while the uplink is not
// ready, and with ErrStream when the stream is missing and may not be
// created, does not capture the audit subjects, or cannot exist because
// the telemetry stream overlaps it (a stream from before the audit stream,
// on smelter.v1.>): the message says what to change. The gateway's command
// server calls it on every new connection and refuses commands until it
// succeeds.
func (u *Uplink) EnsureAuditStream(ctx context.Context) error {
	s := u.cur.Load()
	if !s.usable() {
		return fmt.Errorf("nats uplink: %w", ErrNotConnected)
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	tel, err := s.js.Stream(ctx, u.cfg.Stream) // again: an operator may have narrowed it since
	if err != nil {
		return fmt.Errorf("stream %s info: %w", u.cfg.Stream, err)
	}
	if subjects := tel.CachedInfo().Config.Subjects; overlapping(subjects, u.cfg.AuditSubjects) != "" {
		return fmt.Errorf("%w: stream %s captures %v, which overlaps the audit subjects %v (%s), and JetStream allows no overlapping streams, "+
			"so audit stream %s cannot exist: narrow %s to the telemetry kinds, e.g. nats stream edit %s --subjects '%s' "+
			"(docs/operations.md, \"Audit stream\")",
			ErrStream, u.cfg.Stream, subjects, u.cfg.AuditSubjects, overlapping(subjects, u.cfg.AuditSubjects), u.cfg.AuditStream, u.cfg.Stream, u.cfg.Stream,
			strings.Join(u.cfg.Subjects, ","))
	}
	info, err := u.stream(ctx, s.js, u.auditSpec())
	if err != nil {
		return err
	}
	if a := info.Config.MaxAge; a > 0 && a < u.cfg.AuditMaxAge {
		u.log.Warn("nats audit stream keeps records for less than audit_max_age", "stream", u.cfg.AuditStream,
			"max_age", a, "audit_max_age", u.cfg.AuditMaxAge)
	}
	if d := info.Config.Duplicates; d < streams.AuditDuplicateWindow {
		u.log.Warn("nats audit stream's duplicate window is shorter than a command's validity: a retry of a command later than it, "+
			"handed to a second gateway configured with the same asset, could be written twice (docs/commands.md, \"One gateway per asset\"); "+
			"raise it, e.g. nats stream edit "+u.cfg.AuditStream+" --dupe-window "+streams.AuditDuplicateWindow.String(),
			"stream", u.cfg.AuditStream, "duplicate_window", d, "want", streams.AuditDuplicateWindow)
	}
	return nil
}

// stream returns the info of want's stream, creating it (create_stream)
// when missing; an existing stream must capture want.Subjects.
func (u *Uplink) stream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if u.cfg.CreateStream != nil && !*u.cfg.CreateStream {
			return nil, fmt.Errorf("%w: stream %s does not exist and %s.create_stream is false", ErrStream, want.Name, field)
		}
		s, err = js.CreateStream(ctx, want)
		var api *jetstream.APIError
		switch {
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			return nil, fmt.Errorf("stream %s: created concurrently, checking again", want.Name)
		case errors.As(err, &api) && api.ErrorCode == errCodeSubjectOverlap:
			return nil, fmt.Errorf("%w: create stream %s on %v: another stream captures some of these subjects (JetStream allows no overlap): "+
				"narrow it to its own kinds (docs/operations.md, \"Audit stream\"): %w", ErrStream, want.Name, want.Subjects, err)
		case err != nil:
			return nil, fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		u.log.Info("nats stream created", "stream", want.Name, "subjects", want.Subjects,
			"max_age", want.MaxAge, "replicas", want.Replicas, "duplicate_window", want.Duplicates)
		return s.CachedInfo(), nil
	case err != nil:
		return nil, fmt.Errorf("stream %s info: %w", want.Name, err)
	}
	info := s.CachedInfo()
	for _, w := range want.Subjects {
		if !telemetry.AnyCovers(info.Config.Subjects, w) {
			return nil, fmt.Errorf("%w: stream %s captures %v, which does not cover %s; add %q to its subjects or name another stream in %s",
				ErrStream, want.Name, info.Config.Subjects, w, w, field)
		}
	}
	return info, nil
}

func (u *Uplink) telemetrySpec() jetstream.StreamConfig {
	return streams.Telemetry(u.cfg.Stream, u.cfg.Subjects, u.cfg.Replicas, u.cfg.MaxAge)
}

// auditSpec is the audit stream: append only (no message delete, no
// purge), file storage, audit_max_age.
func (u *Uplink) auditSpec() jetstream.StreamConfig {
	return streams.Audit(u.cfg.AuditStream, u.cfg.AuditSubjects, u.cfg.Replicas, u.cfg.AuditMaxAge)
}

// errCodeSubjectOverlap is JetStream's "subjects overlap with an existing
// stream" (JSStreamSubjectOverlapErr); nats.go names no constant for it.
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// overlapping returns the first of subjects that a message could match
// together with one of filters ("" when none): two streams on them would
// overlap.
func overlapping(filters, subjects []string) string {
	for _, s := range subjects {
		for _, f := range filters {
			if telemetry.SubjectsCollide(f, s) {
				return f
			}
		}
	}
	return ""
}

// Publish sends every envelope (pipelined, at most max_pending unacknowledged)
// with Nats-Msg-Id = MsgID and Smelter-Sent-At = the data clock (WithClock)
// in Unix ms when the message is handed to the connection, and returns nil only when the stream acknowledged
// all of them. On error some may have been stored: the caller retries the
// whole slice and the stream's duplicate window drops the repeats. A
// message the server can never take (over max_payload, or over the
// stream's max_msg_size) fails with a *uplink.RejectedError naming it.
//
// When Publish returns the uplink holds no reference to any envelope's
// Data: each payload is copied into the connection's write buffer as it is
// sent, and nothing is resent later (acks.go).
func (u *Uplink) Publish(ctx context.Context, msgs []telemetry.Envelope) error {
	if len(msgs) == 0 {
		return nil
	}
	s := u.cur.Load()
	if !s.usable() {
		u.m.Errors.Inc()
		if err := u.LastError(); err != nil {
			return fmt.Errorf("nats uplink: %w: %w", ErrNotConnected, err)
		}
		return fmt.Errorf("nats uplink: %w", ErrNotConnected)
	}
	dups, err := s.acks.publish(ctx, msgs)
	if err != nil {
		u.m.Errors.Inc()
		return fmt.Errorf("nats uplink: %w", err)
	}
	bytes := 0
	for i := range msgs {
		bytes += len(msgs[i].Data)
	}
	u.m.Published.Add(float64(len(msgs)))
	u.m.Bytes.Add(float64(bytes))
	if dups > 0 {
		u.m.Duplicates.Add(float64(dups))
	}
	return nil
}

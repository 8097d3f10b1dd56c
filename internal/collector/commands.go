package collector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Alert rules of the command service (docs/commands.md, "Alerts").
const (
	// RuleUnauthorizedCommand: a rejected command that no trusted key
	// signed (unsigned, unknown key, bad signature, undecodable, a gateway
	// with no trusted keys): alarm.
	RuleUnauthorizedCommand = "unauthorized_command"
	// RuleCommandRejected: a signed command refused by the gateway's other
	// checks (limits, step, interval, expiry, unwritable point): warn.
	RuleCommandRejected = "command_rejected"
	// KindCommand is the alert kind of both.
	KindCommand = "command"
)

// auditFilter matches every audit subject.
var auditFilter = telemetry.Subject("*", "*", "*", telemetry.Kind("audit"))

// commandService is the collector's side of commands: it signs and sends
// operators' commands as the command identity (its own connection), reads
// an asset's audit trail from the audit stream (every replica, directly),
// and raises an alert on every rejected audit record (one durable consumer
// shared by the group's replicas: each record reaches one of them; the
// alert's Nats-Msg-Id makes a redelivered record's alert a duplicate).
type commandService struct {
	cfg  *CommandsConfig
	kp   nkeys.KeyPair // nil: no sending
	cmd  *nats.Conn    // the command identity; nil: no sending
	js   jetstream.JetStream
	c    *Collector
	log  *slog.Logger
	now  func() time.Time
	held sync.Mutex
}

// Sends reports whether operators can command through this collector.
func (s *commandService) Sends() bool { return s.kp != nil && s.cmd != nil }

// newCommandID returns 24 random hex characters.
func newCommandID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Send signs req (issued now, expiring after commands.lifetime) and sends
// it with command.Send, waiting up to commands.timeout for the gateway's
// result. A request with an id reuses it: a retry is answered from the
// gateway's record and never written twice.
func (s *commandService) Send(ctx context.Context, req dashboard.CommandRequest) (*command.Result, error) {
	if !s.Sends() {
		return nil, errors.New("commands: no seed_file and operators configured")
	}
	id := req.ID
	if id == "" {
		id = newCommandID()
	}
	now := s.now().UTC()
	c := &command.Command{Schema: command.Schema, ID: id, Asset: req.Site + "." + req.Class + "." + req.Asset, Signal: req.Signal,
		Value: req.Value, Unit: req.Unit, Requester: req.Requester, IssuedAt: now, ExpiresAt: now.Add(time.Duration(s.cfg.Lifetime))}
	if err := c.Sign(s.kp); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.Timeout))
	defer cancel()
	res, err := command.Send(ctx, s.cmd, c)
	if err != nil {
		return nil, fmt.Errorf("%w; send it again with id %s to learn its outcome without writing twice", reconnecting(s.cmd, err), id)
	}
	return res, nil
}

// reconnecting returns err wrapping dashboard.ErrReconnecting when it
// came from nc being re-established: a request refused by the client
// while it reconnects (nats.ErrReconnectBufExceeded: the collector's
// connections buffer nothing then, ReconnectBufSize -1), or any failure
// while it is reconnecting (a reply lost with the connection). The API
// answers such an error 503 with Retry-After. nil stays nil; nc may be
// nil (no connection to ask).
func reconnecting(nc *nats.Conn, err error) error {
	if err == nil || errors.Is(err, dashboard.ErrReconnecting) {
		return err
	}
	if errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionReconnecting) || (nc != nil && nc.IsReconnecting()) {
		return fmt.Errorf("%w (%w)", dashboard.ErrReconnecting, err)
	}
	return err
}

// Refused appends a rejected record for a command the collector's API
// refused itself (a viewer's) to the asset's audit subject with JetStream,
// PubAck awaited: the audit stream holds every attempt, and the record
// raises its alert through the audit consumer like a gateway's refusal
// (its reason names the permission: unauthorized_command). The record's
// gateway is "collector/<group>", so it is never taken for a gateway's.
func (s *commandService) Refused(ctx context.Context, req dashboard.CommandRequest, reason string) error {
	now := s.now().UTC()
	r := command.Result{Schema: command.ResultSchema, ID: newCommandID(), Gateway: "collector/" + s.c.cfg.Group,
		Asset: req.Site + "." + req.Class + "." + req.Asset, Signal: command.Clip(req.Signal, command.MaxSignal),
		Requester: command.Clip(req.Requester, command.MaxRequester), Verdict: command.Rejected, Reason: reason,
		Requested: command.Clip(req.Value.String(), command.MaxLabel), RequestedUnit: command.Clip(req.Unit, command.MaxUnit), At: now}
	data, err := json.Marshal(&r)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = s.js.Publish(pctx, telemetry.Subject(req.Site, req.Class, req.Asset, telemetry.KindAudit), data, jetstream.WithMsgID("collector-refused:"+r.ID))
	return err
}

// auditConsumerIdle is the inactivity threshold of an audit page's
// ordered consumer (deleted after the page anyway).
const auditConsumerIdle = 10 * time.Second

// maxAuditScan bounds the records one audit page reads from the stream.
const maxAuditScan = 100_000

// Audit returns up to limit audit records of asset (site, id), newest
// first, with stream sequence below before (0: from the newest). It reads
// the stream with an ordered consumer filtered on the asset's audit
// subject, so it works on every replica whichever owns the asset.
func (s *commandService) Audit(ctx context.Context, site, asset string, before uint64, limit int) (dashboard.AuditPage, error) {
	page, err := s.audit(ctx, site, asset, before, limit)
	if err != nil {
		err = reconnecting(s.js.Conn(), err)
	}
	return page, err
}

// audit is Audit without the reconnecting wrap.
func (s *commandService) audit(ctx context.Context, site, asset string, before uint64, limit int) (dashboard.AuditPage, error) {
	var page dashboard.AuditPage
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	subj := telemetry.Subject(site, "*", asset, telemetry.Kind("audit"))
	// deleted when the page is read; the inactivity threshold is the
	// backstop for a collector that dies mid-read (review of #13: every
	// request left a consumer on the server for minutes)
	oc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: auditConsumerIdle}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.AuditStream, oc)
	if err != nil {
		return page, fmt.Errorf("audit stream %s: %w", s.cfg.AuditStream, err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer dcancel()
			_ = s.js.DeleteConsumer(dctx, s.cfg.AuditStream, ci.Name)
		}
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return page, fmt.Errorf("audit stream %s: %w", s.cfg.AuditStream, err)
	}
	pending := info.NumPending
	// keep the newest limit+1 records below before (the extra one says
	// whether an older page exists)
	ring := make([]dashboard.AuditRecord, 0, 2*(limit+1))
	scanned := 0
	for pending > 0 && scanned < maxAuditScan {
		batch, err := cons.Fetch(min(int(pending), 256), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return page, fmt.Errorf("audit stream %s: %w", s.cfg.AuditStream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			scanned++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = md.NumPending
			if before != 0 && md.Sequence.Stream >= before {
				pending = 0 // everything after is newer still
				continue
			}
			r, ok := decodeResult(m.Data())
			if !ok {
				continue
			}
			if len(ring) == cap(ring) { // keep the newest limit+1 (amortized)
				ring = append(ring[:0], ring[len(ring)-limit:]...)
			}
			ring = append(ring, dashboard.AuditRecord{Seq: md.Sequence.Stream, Result: *r})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return page, fmt.Errorf("audit stream %s: %w", s.cfg.AuditStream, err)
		}
		if n == 0 {
			break
		}
	}
	if len(ring) > limit+1 {
		ring = ring[len(ring)-(limit+1):]
	}
	if len(ring) == limit+1 {
		page.Before = ring[1].Seq
		ring = ring[1:]
	}
	slices.Reverse(ring)
	page.Records = ring
	return page, nil
}

// runAlerts consumes the audit stream through the group's shared durable
// consumer and raises an alert on every rejected record, clearing each
// after commands.alert_hold. It retries while the stream does not exist
// yet, creates the consumer again when it is gone (the consumer or the
// whole stream deleted, docs/commands.md "Alerts") and returns when ctx
// ends.
func (s *commandService) runAlerts(ctx context.Context) error {
	var pos auditPosition
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		cons := s.auditConsumer(ctx, &pos)
		if cons == nil {
			return nil // ctx ended
		}
		err := s.consumeAudit(ctx, cons, &pos, tick.C)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("audit consumer gone, creating it again", "stream", s.cfg.AuditStream, "consumer", s.cfg.AuditConsumer, "err", err)
	}
	return nil
}

// auditPosition is what this collector has consumed of the audit stream:
// the stream's creation time and the newest stream sequence handled.
type auditPosition struct {
	created time.Time
	seq     uint64
}

// auditConsumer returns the group's durable audit consumer, binding to it
// when it exists (its position kept) and else creating it: from the start
// of a stream created since this collector last read it (a stream deleted
// and created again: every record in it is new), after the last record
// handled of the same stream, or, at first start, from commands.alert_hold
// ago. It retries until it succeeds; nil when ctx ends.
//
// A stream not created yet is the expected start when the collector comes
// up before the gateways (make demo: the gateway's uplink creates it a
// moment later): said once at INFO, and at WARN on every retry only once
// auditMissingQuiet has passed; any other error is a WARN at once.
func (s *commandService) auditConsumer(ctx context.Context, pos *auditPosition) jetstream.Consumer {
	wait := 250 * time.Millisecond
	start, toldMissing := s.now(), false
	for {
		cons, err := s.bindAudit(ctx, pos)
		if err == nil {
			s.log.Info("audit stream consumed", "stream", s.cfg.AuditStream, "consumer", s.cfg.AuditConsumer)
			return cons
		}
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound) && s.now().Sub(start) < auditMissingQuiet:
			if !toldMissing {
				s.log.Info("audit stream not created yet: waiting for it (a gateway with NATS commands, or nats-init, creates it)",
					"stream", s.cfg.AuditStream, "warn_after", auditMissingQuiet)
				toldMissing = true
			}
		default:
			s.log.Warn("audit stream not ready, retrying", "stream", s.cfg.AuditStream, "consumer", s.cfg.AuditConsumer, "err", err, "in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// auditMissingQuiet is how long auditConsumer waits for a missing audit
// stream before it warns.
const auditMissingQuiet = 30 * time.Second

// bindAudit is one attempt of auditConsumer.
func (s *commandService) bindAudit(ctx context.Context, pos *auditPosition) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(cctx, s.cfg.AuditStream)
	if err != nil {
		return nil, err
	}
	created := st.CachedInfo().Created
	if cons, err := st.Consumer(cctx, s.cfg.AuditConsumer); err == nil {
		if !pos.created.Equal(created) {
			*pos = auditPosition{created: created}
		}
		// what the group handled: where to resume should it be deleted
		pos.seq = max(pos.seq, cons.CachedInfo().AckFloor.Stream)
		return cons, nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	cc := jetstream.ConsumerConfig{Durable: s.cfg.AuditConsumer, Description: "smelter-collector: alerts on rejected commands",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, FilterSubject: auditFilter}
	switch {
	case !pos.created.IsZero() && !pos.created.Equal(created): // a new stream: all of it
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
		s.log.Warn("audit stream was created again: alerting on every record in it", "stream", s.cfg.AuditStream, "created", created)
	case pos.seq > 0: // the consumer alone was deleted: after what was handled
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos.seq+1
	default: // first start, or nothing handled yet: what is still worth an active alert
		t := s.now().Add(-time.Duration(s.cfg.AlertHold))
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := st.CreateConsumer(cctx, cc)
	if errors.Is(err, jetstream.ErrConsumerExists) { // another replica was first
		cons, err = st.Consumer(cctx, s.cfg.AuditConsumer)
	}
	if err != nil {
		return nil, err
	}
	*pos = auditPosition{created: created, seq: pos.seq}
	if cc.DeliverPolicy == jetstream.DeliverAllPolicy {
		pos.seq = 0
	}
	return cons, nil
}

// consumeAudit fetches, alerts and acknowledges until ctx ends (nil) or
// the consumer is gone (the error): a fetch error other than a timeout,
// or no record for 5 s, asks the server whether the consumer still
// exists.
func (s *commandService) consumeAudit(ctx context.Context, cons jetstream.Consumer, pos *auditPosition, tick <-chan time.Time) error {
	idle := time.Now()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err == nil {
			n := 0
			for m := range batch.Messages() {
				n++
				if err := s.auditRecord(ctx, m.Subject(), m.Data()); err != nil {
					s.log.Warn("alert on a rejected command not published; redelivered later", "subject", m.Subject(), "err", err)
					_ = m.Nak()
					continue
				}
				if md, err := m.Metadata(); err == nil {
					pos.seq = max(pos.seq, md.Sequence.Stream)
				}
				_ = m.Ack()
			}
			if n > 0 {
				idle = time.Now()
			}
			err = batch.Error()
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				err = nil
			}
		}
		if ctx.Err() != nil {
			return nil //nolint:nilerr // ctx ended: a fetch error then is no loss of the consumer
		}
		if err != nil || time.Since(idle) > 5*time.Second {
			idle = time.Now()
			if gone := s.auditGone(ctx, cons); gone != nil {
				return gone
			}
			if err != nil {
				s.log.Warn("audit stream fetch", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
		select {
		case <-tick:
			s.clearHeld(ctx)
		default:
		}
	}
	return nil
}

// auditGone returns an error when the audit consumer or its stream no
// longer exists, nil while it does (or the server cannot tell now).
func (s *commandService) auditGone(ctx context.Context, cons jetstream.Consumer) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := cons.Info(cctx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrConsumerDeleted) {
		return err
	}
	return nil
}

// auditRecord handles one audit record: a rejected one raises its alert,
// published with a Nats-Msg-Id of the record, before the record is
// acknowledged. A malformed record is logged and skipped.
func (s *commandService) auditRecord(ctx context.Context, subject string, data []byte) error {
	r, ok := decodeResult(data)
	if !ok {
		s.log.Warn("audit record skipped: not a command result", "subject", subject)
		return nil // malformed: skipped (acknowledged), never redelivered
	}
	if r.Verdict != command.Rejected {
		return nil
	}
	p, err := telemetry.ParseSubject(subject)
	if err != nil {
		s.log.Warn("audit record skipped", "subject", subject, "err", err)
		return nil
	}
	a := commandAlert(p.Site, p.Class, p.Asset, r)
	// one active alert per condition: a refusal while it is active updates
	// it (attempts counted) instead of raising another
	s.held.Lock()
	defer s.held.Unlock()
	if prev, ok := s.c.commandAlert(a.Key); ok {
		n := prev.Values[attemptsValue] + 1
		a.ID, a.RaisedAt, a.State = prev.ID, prev.RaisedAt, alert.Updated
		a.Values = map[string]float64{attemptsValue: n}
		a.Message += fmt.Sprintf(" (%d refused since %s)", int(n), time.UnixMilli(prev.RaisedAt).UTC().Format(time.RFC3339))
	}
	if err := s.publishAlert(ctx, &a, "audit:"+command.Digest(append([]byte(subject+"\n"), data...))); err != nil {
		return err
	}
	s.c.holdCommandAlert(a)
	return nil
}

// attemptsValue is the Values entry of a command alert counting the
// refusals it stands for.
const attemptsValue = "attempts"

// decodeResult decodes one audit record; false when it is not one.
func decodeResult(data []byte) (*command.Result, bool) {
	var r command.Result
	if json.Unmarshal(data, &r) != nil || r.Schema != command.ResultSchema {
		return nil, false
	}
	return &r, true
}

// publishAlert publishes one alert event and awaits its PubAck, then
// mirrors it to MQTT where the collector mirrors alerts.
func (s *commandService) publishAlert(ctx context.Context, a *alert.Alert, msgID string) error {
	pub := *a
	pub.Group = s.c.cfg.Group // as the engine's alerts (record)
	data, err := json.Marshal(&pub)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.js.Publish(pctx, telemetry.Subject(a.Site, a.Class, a.Asset, telemetry.KindAlert), data, jetstream.WithMsgID(s.c.cfg.Group+":"+msgID)); err != nil {
		s.c.m.pubErrors.Inc()
		return err
	}
	s.c.m.published.WithLabelValues("alert").Inc()
	if io := s.c.js.Load(); io != nil && io.mq != nil { // mirrored like every alert (mqtt.enabled)
		io.mq.Publish(telemetry.Topic(telemetry.Subject(a.Site, a.Class, a.Asset, telemetry.KindAlert)), 1, false, data)
	}
	s.log.Info("alert", "state", a.State, "severity", a.Severity, "key", a.Key, "message", a.Message)
	return nil
}

// clearHeld clears the command alerts held longer than alert_hold.
func (s *commandService) clearHeld(ctx context.Context) {
	s.held.Lock()
	defer s.held.Unlock()
	for _, a := range s.c.expiredCommandAlerts(s.now().UnixMilli() - time.Duration(s.cfg.AlertHold).Milliseconds()) {
		a.State, a.ClearedAt, a.UpdatedAt = alert.Cleared, s.now().UnixMilli(), s.now().UnixMilli()
		if err := s.publishAlert(ctx, &a, a.ID+":cleared"); err != nil {
			s.log.Warn("clearing a command alert not published", "key", a.Key, "err", err)
		}
		s.c.recordAlertEvent(a)
	}
}

// unauthorized reports whether a rejected record was refused before a
// trusted key vouched for it: no signer (unsigned, unknown key, bad
// signature, undecodable, no trusted keys) or a broker permission refusal.
func unauthorized(r *command.Result) bool {
	return r.Signer == "" || strings.Contains(strings.ToLower(r.Reason), "permission")
}

// commandAlert is the alert of one rejected audit record, raised. Its key
// is per asset and rule, and per signal for a signed command (an unsigned
// sender chooses the signal: a flood of them stays one alarm). Untrusted
// text (id, requester, signal) is quoted and clipped, the reason cleaned of
// control characters; the id is the key and the record's time.
func commandAlert(site, class, asset string, r *command.Result) alert.Alert {
	rule, sev, what := RuleCommandRejected, alert.Warn, "command refused"
	if unauthorized(r) {
		rule, sev, what = RuleUnauthorizedCommand, alert.Alarm, "unauthorized command"
	}
	sig := ""
	if telemetry.ValidToken(r.Signal) {
		sig = r.Signal
	}
	at := r.At.UnixMilli()
	key := alert.MakeKey(site, asset, rule, sig)
	if rule == RuleUnauthorizedCommand {
		key = alert.MakeKey(site, asset, rule, "")
	}
	id := "(no id)"
	if r.ID != "" {
		id = strconv.Quote(clipToken(r.ID, 64))
	}
	who := "an unknown requester"
	if r.Requester != "" {
		who = strconv.Quote(clipToken(r.Requester, 64))
	}
	on := "-"
	if sig != "" {
		on = sig
	} else if r.Signal != "" {
		on = strconv.Quote(clipToken(r.Signal, 64))
	}
	msg := fmt.Sprintf("%s %s on %s by %s (gateway %s): %s", what, id, on, who, cleanText(orDash(r.Gateway)), cleanText(clipToken(r.Reason, 300)))
	return alert.Alert{Schema: alert.Schema, ID: alert.MakeID(key, at), Key: key, State: alert.Raised, Site: site, Class: class, Asset: asset,
		Rule: rule, Kind: KindCommand, Signal: sig, Severity: sev, Message: msg, RaisedAt: at, UpdatedAt: at,
		Values: map[string]float64{attemptsValue: 1}}
}

// cleanText replaces control characters (a line feed, NUL) of untrusted
// text with U+FFFD.
func cleanText(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return unicode.ReplacementChar
		}
		return r
	}, s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return clipToken(s, 64)
}

// clipToken cuts s to n bytes (at a rune start) for messages and ids.
func clipToken(s string, n int) string { return command.Clip(s, n) }

// holdCommandAlert records a raised or updated command alert: active
// (Alerts(true)) until alert_hold passes after its last update, in the
// recent list, on the event stream.
func (c *Collector) holdCommandAlert(a alert.Alert) {
	c.mu.Lock()
	if c.cmdAlerts == nil {
		c.cmdAlerts = map[string]alert.Alert{}
	}
	c.cmdAlerts[a.Key] = a
	c.mu.Unlock()
	c.recordAlertEvent(a)
}

// commandAlert returns the active command alert of key.
func (c *Collector) commandAlert(key string) (alert.Alert, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.cmdAlerts[key]
	return a, ok
}

// recordAlertEvent appends an alert event to the recent list and the
// dashboard's event log.
func (c *Collector) recordAlertEvent(a alert.Alert) {
	c.appendRecent(a)
	c.live.ObserveAlerts([]alert.Alert{a})
}

// expiredCommandAlerts removes and returns the command alerts last
// updated before cutoff (Unix ms).
func (c *Collector) expiredCommandAlerts(cutoff int64) []alert.Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []alert.Alert
	for key, a := range c.cmdAlerts {
		if a.UpdatedAt < cutoff {
			out = append(out, a)
			delete(c.cmdAlerts, key)
		}
	}
	return out
}

// commandAlertsActive returns the held command alerts.
func (c *Collector) commandAlertsActive() []alert.Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]alert.Alert, 0, len(c.cmdAlerts))
	for _, a := range c.cmdAlerts {
		out = append(out, a)
	}
	return out
}

// commandsLocal reads what the commands block names on this machine
// before any I/O: the seed (mode checked) and the operators' tokens.
// Errors are placed at their field's line (file:line: field: reason).
func (c *Collector) commandsLocal(viewer string) (*CommandsConfig, nkeys.KeyPair, error) {
	k := c.cfg.commands()
	if k == nil {
		return nil, nil, nil
	}
	var kp nkeys.KeyPair
	if k.SeedFile != "" {
		var err error
		if kp, err = command.LoadSeed("commands.seed_file", c.cfg.Path(k.SeedFile)); err != nil {
			return nil, nil, c.cfg.placed(err)
		}
	}
	ops, err := c.cfg.operatorTokens(k, viewer)
	if err != nil {
		return nil, nil, c.cfg.placed(err)
	}
	c.operators = ops
	return k, kp, nil
}

// startCommands connects the command identity (when the collector sends
// commands) and starts the audit alerts in g. url is the collector's NATS
// URL, used when commands.nats.url is empty; stop closes the connection.
func (c *Collector) startCommands(ctx context.Context, g interface{ Go(func() error) }, k *CommandsConfig, kp nkeys.KeyPair,
	url string, js jetstream.JetStream) (stop func(), err error) {
	s := &commandService{cfg: k, js: js, c: c, log: c.log.With("component", "commands"), now: time.Now}
	stop = func() {}
	if kp != nil {
		if k.NATS.URL != "" {
			url = k.NATS.URL
		}
		auth, err := c.cfg.authOptions("commands.nats", k.NATS, s.log)
		if err != nil {
			return stop, fmt.Errorf("collector: %w", err)
		}
		// ReconnectBufSize(-1): a command sent while the connection is
		// down fails at once (503, "reconnecting") instead of waiting in
		// the client's buffer and reaching the gateway when the server is
		// back, after its operator was told no gateway answered: commands
		// are never spooled for later
		opts := append([]nats.Option{nats.Name("smelter-collector-commands"), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
			nats.ReconnectBufSize(-1), c.asyncErrors(s.log, "commands.nats")}, auth...)
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			return stop, fmt.Errorf("collector: commands.nats connect %s: %w", secret.RedactURL(url), err)
		}
		s.kp, s.cmd, stop = kp, nc, nc.Close
		pub, _ := kp.PublicKey()
		s.log.Info("command service ready", "public_key", pub, "operators", len(c.operators))
	}
	c.cmds = s
	g.Go(func() error { return s.runAlerts(ctx) })
	return stop, nil
}

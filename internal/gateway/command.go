package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// Subject kinds of the command path (docs/commands.md).
const (
	kindCommand = telemetry.KindCommand
	kindAudit   = telemetry.KindAudit
)

// conner is what the command server needs of the NATS uplink: its current
// connection (natsjs.Uplink.Conn) and the audit stream's check
// (natsjs.Uplink.EnsureAuditStream).
type conner interface {
	Conn() (*nats.Conn, jetstream.JetStream)
	EnsureAuditStream(ctx context.Context) error
}

// commandQueue is the NATS queue group of every gateway's command
// subscriptions: a command subject with two gateways subscribed is
// delivered to one of them.
const commandQueue = "smelter-gateway-commands"

// auditRecheck is how often the command server checks an unusable audit
// stream again.
const auditRecheck = 5 * time.Second

// mirror is what the command server needs of the MQTT uplink for the
// command mirror topics and, with encoding sparkplug_b, the Sparkplug DCMD
// (mqtt.Uplink).
type mirror interface {
	Subscribe(topic string, handler func(topic string, payload []byte, retained bool))
	SubscribeDCMD(handler func(device string, payload []byte))
	PublishOne(ctx context.Context, topic string, payload []byte) error
}

// mqttMsg is a command that arrived on an MQTT mirror topic, or as a
// Sparkplug DCMD to device.
type mqttMsg struct {
	topic    string
	device   string // a DCMD's device id; topic is then ""
	data     []byte
	retained bool // a retained publish: refused (never stored for later)
}

// commander executes commands (docs/commands.md): it listens on each
// device's smelter.v1.<site>.<class>.<asset>.cmd subject over the NATS
// uplink's connection, checks each command (signature against the trusted
// keys, expiry, idempotency, the point's write block), audits it to
// JetStream at first contact, writes through the device's driver, reads
// back, and answers with a command.Result. Commands run one at a time, in
// Run's goroutine.
type commander struct {
	gw    string // gateway id
	site  string // gateway site
	cfg   command.Config
	keys  []nkeys.KeyPair
	log   *slog.Logger
	up    conner
	mq    mirror           // nil without an MQTT uplink
	now   func() time.Time // wall clock: expiry and min_interval
	path  string           // id store file
	byKey map[string]*device

	m *commandMetrics

	// owned by Run
	store     *command.Store
	lastWrite *command.LastWrites
	// publish publishes one audit record with JetStream under Nats-Msg-Id
	// msgID and reports whether the stream already held that id (a
	// duplicate, not stored again).
	publish   func(ctx context.Context, subject string, data []byte, msgID string) (bool, error)
	auditErr  error     // the audit stream's last check failed: commands are refused
	auditAt   time.Time // when it was checked
	recheck   bool      // an audit record failed: check the stream again
	pendingAt time.Time // when pending outcome records were last tried
	// retainedSeen holds the retained MQTT commands already refused and
	// audited (sha256 of topic, NUL, payload): the broker delivers a
	// retained message again at every subscription, so each reconnect
	// would audit and answer it again (review16 L-1). Cleared when it
	// reaches maxRetainedSeen.
	retainedSeen map[[sha256.Size]byte]struct{}
}

// maxRetainedSeen bounds commander.retainedSeen: past it the set starts
// over and each retained command is refused and audited once more.
const maxRetainedSeen = 4096

// auditUnavailable begins the reason of a command refused unaudited.
const auditUnavailable = "audit unavailable"

// retainedRefusal is the reason a retained MQTT command is refused.
const retainedRefusal = "a retained MQTT message is not a command: commands are never stored for later (publish with retain false)"

// retainedAgain reports whether the retained MQTT message data on topic
// was already refused and audited by this process; audited marks it so.
func (c *commander) retainedAgain(topic string, data []byte, audited bool) bool {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(data)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	if _, ok := c.retainedSeen[k]; ok {
		return true
	}
	if audited {
		if c.retainedSeen == nil || len(c.retainedSeen) >= maxRetainedSeen {
			c.retainedSeen = map[[sha256.Size]byte]struct{}{}
		}
		c.retainedSeen[k] = struct{}{}
	}
	return false
}

func newCommander(g *Gateway, up conner, mq mirror) (*commander, error) {
	cfg := *g.cfg.Raw.Commands
	keys, err := cfg.Keys()
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	c := &commander{gw: g.cfg.ID, site: g.cfg.Site, cfg: cfg, keys: keys, log: g.log.With("component", "commands"), up: up, mq: mq, now: time.Now,
		path: filepath.Join(g.cfg.DataDir, "commands", "ids.jsonl"), byKey: map[string]*device{}, m: g.mx.commandMetrics()}
	for _, d := range g.devices {
		c.byKey[assetKey(d.cfg.Asset)] = d
	}
	return c, nil
}

// source returns the device of asset key that reads signal: of an asset
// fed by several sources, the one reading it; else the asset's device
// (nil: no such asset).
func (c *commander) source(key, signal string) *device {
	d := c.byKey[key]
	if d == nil {
		return nil
	}
	for _, o := range d.a.devs {
		if o.cfg.Norm.Index(signal) >= 0 {
			return o
		}
	}
	return d
}

// assetKey is a command's asset field for a: "<site>.<class>.<asset>".
func assetKey(a telemetry.Asset) string { return a.Site() + "." + a.Class + "." + a.ID }

// Run serves commands until ctx ends. It follows the uplink's connection:
// it subscribes when the uplink is ready and again on a new connection.
func (c *commander) Run(ctx context.Context) error {
	st, err := command.OpenStore(c.path, c.cfg.Remember, c.cfg.MaxLifetime, c.cfg.MaxSkew)
	if err != nil {
		return err
	}
	if n, before := st.LostBefore(); n > 0 {
		c.log.Error("commands: the command id store had records it could not read: commands issued before the cut-off are refused "+
			"until they expire, as one of them may already have been executed", "file", c.path, "lost_records", n,
			"cut_off", before.UTC().Format(time.RFC3339), "refused_until", before.Add(c.cfg.MaxLifetime+2*c.cfg.MaxSkew).UTC().Format(time.RFC3339))
	}
	c.store = st
	defer func() { _ = st.Close() }()
	if c.lastWrite, err = command.OpenLastWrites(filepath.Join(filepath.Dir(c.path), "last_writes.json")); err != nil {
		return err
	}
	if err := c.interrupted(); err != nil {
		return err
	}
	if len(c.keys) == 0 {
		c.log.Warn("commands: no trusted keys: every command is rejected")
	}
	msgs := make(chan *nats.Msg, 64)
	mqMsgs := make(chan mqttMsg, 64)
	if c.mq != nil {
		for _, d := range c.byKey {
			c.mq.Subscribe(telemetry.Topic(telemetry.AssetSubject(d.cfg.Asset, kindCommand)), func(topic string, payload []byte, retained bool) {
				select {
				case mqMsgs <- mqttMsg{topic: topic, data: payload, retained: retained}:
				default:
					c.log.Warn("commands: queue full, MQTT command dropped", "topic", topic)
				}
			})
		}
		c.mq.SubscribeDCMD(func(device string, payload []byte) {
			select {
			case mqMsgs <- mqttMsg{device: device, data: payload}:
			default:
				c.log.Warn("commands: queue full, Sparkplug DCMD dropped", "device", device)
			}
		})
	}
	var (
		cur  *nats.Conn
		subs []*nats.Subscription
	)
	unsubscribe := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		subs = nil
	}
	defer unsubscribe()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if nc, js := c.up.Conn(); nc != nil && nc != cur {
			unsubscribe()
			cur = nc
			c.publish = func(ctx context.Context, subject string, data []byte, msgID string) (bool, error) {
				ack, err := js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
				if err != nil {
					return false, err
				}
				return ack.Duplicate, nil
			}
			for key := range c.byKey {
				d := c.byKey[key]
				subj := telemetry.AssetSubject(d.cfg.Asset, kindCommand)
				// a queue group: where two gateways are configured with one
				// asset (a misconfiguration, docs/commands.md "One gateway
				// per asset"), NATS hands each command to one of them
				s, err := nc.ChanQueueSubscribe(subj, commandQueue, msgs)
				if err != nil {
					c.log.Warn("commands: subscribe failed", "subject", subj, "err", err)
					cur = nil
					continue
				}
				subs = append(subs, s)
			}
			c.log.Info("commands: listening", "assets", len(subs))
			c.checkAudit(ctx)
			c.publishPending(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if c.recheck || c.auditErr != nil && time.Since(c.auditAt) >= auditRecheck {
				c.recheck = false
				c.checkAudit(ctx)
				if c.auditErr == nil {
					c.publishPending(ctx)
				}
			}
			if time.Since(c.pendingAt) >= auditRecheck {
				c.publishPending(ctx)
			}
		case m := <-msgs:
			res := c.handle(ctx, m.Subject, m.Data, "")
			data := encodeResult(res)
			if m.Reply != "" {
				if err := m.Respond(data); err != nil {
					c.log.Warn("commands: reply failed", "id", res.ID, "err", err)
				}
			}
		case m := <-mqMsgs:
			var res command.Result
			if m.topic == "" {
				res, m.topic = c.handleDCMD(ctx, m.device, m.data)
			} else {
				refuse := ""
				if m.retained {
					if c.retainedAgain(m.topic, m.data, false) {
						// refused, audited and answered when first
						// delivered: counted, not again
						c.m.retainedRepeats.Inc()
						continue
					}
					refuse = retainedRefusal
				}
				res = c.handle(ctx, telemetry.SubjectFromTopic(m.topic), m.data, refuse)
				if m.retained && !strings.HasPrefix(res.Reason, auditUnavailable) {
					// audited (refused as retained, or earlier: not a
					// command at all); one refused unaudited is tried
					// again at the next delivery
					c.retainedAgain(m.topic, m.data, true)
				}
			}
			data := encodeResult(res)
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
			if err := c.mq.PublishOne(pctx, m.topic+"/result", data); err != nil {
				c.log.Warn("commands: MQTT result not delivered", "id", res.ID, "err", err)
			}
			cancel()
		}
	}
}

// checkAudit checks (or creates) the audit stream; until it passes,
// every command is refused unaudited (there is nowhere to keep the record).
func (c *commander) checkAudit(ctx context.Context) {
	err := c.up.EnsureAuditStream(ctx)
	c.auditAt = time.Now()
	switch {
	case err != nil && (c.auditErr == nil || c.auditErr.Error() != err.Error()):
		c.log.Error("commands: audit stream unusable: every command is refused", "err", err)
	case err == nil && c.auditErr != nil:
		c.log.Info("commands: audit stream usable")
	}
	c.auditErr = err
}

// handle runs one command to its final result. Every step's record goes
// to the audit stream; the first (verdict "received") before anything
// else is done, so a command the gateway cannot audit is rejected. refuse,
// when not "", is the transport's reason to reject the command after its
// first record (a retained MQTT message).
func (c *commander) handle(ctx context.Context, subject string, data []byte, refuse string) command.Result {
	now := c.now()
	res := c.result(subject, now)
	target := res.Asset
	cmd, derr := command.Decode(data)
	if cmd != nil {
		res.ID, res.Signal, res.Requester = cmd.ID, cmd.Signal, cmd.Requester
		res.Requested, res.RequestedUnit = cmd.Value.String(), cmd.Unit
		res.IssuedAt, res.ExpiresAt = cmd.IssuedAt, cmd.ExpiresAt
	}
	why := ""
	if derr != nil {
		why = derr.Error()
	}
	c.m.received.Inc()
	auditSubj, refused := c.received(ctx, subject, res, why)
	if refused != nil {
		c.m.count(*refused)
		return *refused
	}
	final := func(r command.Result) command.Result { return c.final(ctx, auditSubj, r, false) }
	// the outcome of a signed command is kept in the id store; its audit
	// record is published again later when it cannot be now
	recorded := func(r command.Result) command.Result { return c.final(ctx, auditSubj, r, true) }
	if derr != nil {
		return final(c.reject(res, "%v", derr))
	}
	if refuse != "" { // the transport's own refusal (a retained MQTT message)
		return final(c.reject(res, "%s", refuse))
	}
	// who: only a trusted signature makes a command (and its id) count
	signer, err := cmd.Verify(c.keys)
	switch {
	case errors.Is(err, command.ErrUnsigned):
		return final(c.reject(res, "unsigned: commands must be signed with a trusted key"))
	case len(c.keys) == 0:
		return final(c.reject(res, "this gateway trusts no keys (commands.trusted_keys): it accepts no commands"))
	case err != nil:
		return final(c.reject(res, "%v", err))
	}
	res.Signer = signer
	// the target before the id: a command sent to another asset's subject
	// (or a device the gateway does not have) never learns an id's outcome
	if cmd.Asset != target {
		return final(c.reject(res, "asset %s is not the subject's asset %s", cmd.Asset, target))
	}
	// idempotency: a known id gets its earlier outcome, never a new write
	if prev, ok := c.store.Get(cmd.ID); ok {
		if prev.Asset != cmd.Asset || prev.Signal != cmd.Signal {
			// not recorded: the id keeps its own outcome
			return final(c.reject(res, "id %s already names a command for %s %s: send this one with a new id", cmd.ID, prev.Asset, prev.Signal))
		}
		// a retry is the same command: another value, unit or requester
		// under a known id is a new command that must not be answered with
		// the earlier outcome (a "verified" for a write that never happened)
		if prev.Requested != cmd.Value.String() || prev.RequestedUnit != cmd.Unit || prev.Requester != cmd.Requester {
			// the earlier command's value and requester are not told:
			// whoever reuses an id learns nothing of it (review16 L-3)
			return final(c.reject(res, "id %s already names another command: send this one with a new id", cmd.ID))
		}
		prev.Duplicate = true
		if prev.Verdict == command.Accepted {
			prev.Verdict = command.Failed
			prev.Reason = "outcome unknown: the gateway stopped between accepting this command and its outcome; " +
				"read the point and send a new command (new id) if needed"
		}
		return final(prev)
	}
	if n, before := c.store.LostBefore(); n > 0 && cmd.IssuedAt.Before(before) &&
		now.Before(before.Add(c.cfg.MaxLifetime+2*c.cfg.MaxSkew)) {
		// the id store lost records at start: this command may be one it
		// had accepted (and written); never write it twice
		return final(c.reject(res, "the command id store lost %d record(s) it could not read at start: a command issued before %s "+
			"may already have been executed, so it is refused; send a new command (new id, issued now)", n, before.UTC().Format(time.RFC3339)))
	}
	if c.store.Full() { // never forget an id that may still come back
		return final(c.reject(res, "too many commands in flight: commands.remember (%d) ids are all within their lifetime; "+
			"send it again once the oldest expires (within commands.max_lifetime %v)", c.cfg.Remember, c.cfg.MaxLifetime))
	}
	res, ok := c.check(ctx, cmd, target, res, now)
	if !ok {
		return recorded(res)
	}
	res, stored := c.execute(ctx, cmd, res)
	if stored {
		return recorded(res)
	}
	return final(res)
}

// result starts the result of a command that arrived on subject
// (smelter.v1.<site>.<class>.<asset>.cmd).
func (c *commander) result(subject string, now time.Time) command.Result {
	res := command.Result{Schema: command.ResultSchema, Gateway: c.gw, At: now}
	if p, err := telemetry.ParseSubject(subject); err == nil {
		res.Asset = p.Site + "." + p.Class + "." + p.Asset
	}
	return res
}

// received audits a command's first contact (verdict received, reason
// why) on the audit subject of subject and returns that subject; when it
// cannot, it returns the final result: rejected, nothing done.
func (c *commander) received(ctx context.Context, subject string, res command.Result, why string) (string, *command.Result) {
	if c.auditErr != nil {
		c.log.Warn("command refused unaudited: the audit stream is unusable", "id", res.ID, "asset", res.Asset, "signal", res.Signal)
		r := c.reject(res, auditUnavailable+", nothing done: %v", c.auditErr)
		return "", &r
	}
	auditSubj := strings.TrimSuffix(subject, "."+string(kindCommand)) + "." + string(kindAudit)
	first := res
	first.Verdict = command.Received
	first.Reason = why
	if _, err := c.audit(ctx, auditSubj, first, ""); err != nil {
		c.m.auditFailures.WithLabelValues("received").Inc()
		c.recheck = true // the stream may be gone (a server lost its store): check it at the next tick
		r := c.reject(res, auditUnavailable+", nothing done: %v", err)
		return "", &r
	}
	return auditSubj, nil
}

// final audits and logs a command's outcome and returns it. With record
// (a signed command's outcome) it first records the outcome in the id
// store as pending publication, synced, and marks it published once the
// audit stream acknowledged it: an outcome record that cannot be published
// now (NATS down, the gateway killed) is published later by
// publishPending, so the trail never ends at "accepted".
func (c *commander) final(ctx context.Context, auditSubj string, r command.Result, record bool) command.Result {
	r.At = c.now()
	finite(&r)
	if record {
		if err := c.store.PutPending(r); err != nil {
			c.log.Error("commands: recording the outcome failed", "id", r.ID, "err", err)
			record = false
		}
	}
	switch _, err := c.audit(ctx, auditSubj, r, ""); {
	case err != nil:
		c.m.auditFailures.WithLabelValues("outcome").Inc()
		c.recheck = true
		if record {
			c.m.pending.Set(float64(len(c.store.Pending())))
			c.log.Error("commands: audit of the outcome failed: kept, published again once NATS is back", "id", r.ID, "verdict", r.Verdict, "err", err)
		} else {
			c.log.Error("commands: audit of the outcome failed", "id", r.ID, "verdict", r.Verdict, "err", err)
		}
	case record:
		if err := c.store.Published(r); err != nil {
			c.log.Error("commands: recording the outcome's audit failed", "id", r.ID, "err", err)
		}
	}
	c.m.count(r)
	c.log.Info("command", "id", r.ID, "asset", r.Asset, "signal", r.Signal, "requester", r.Requester,
		"verdict", r.Verdict, "reason", r.Reason)
	return r
}

// interrupted turns the commands of the id store still "accepted" (the
// gateway stopped between accepting one and its outcome: a crash, kill
// -9, a power loss) into their outcome, failed "outcome unknown", pending
// publication to the audit stream. Run calls it once the store is open,
// before any command runs.
func (c *commander) interrupted() error {
	for _, r := range c.store.Interrupted() {
		r.Verdict = command.Failed
		r.Reason = command.OutcomeUnknown + ": the gateway stopped between accepting this command and its outcome; " +
			"read the point and send a new command (new id) if needed"
		r.Target, r.New = r.New, nil
		r.At = c.now()
		if err := c.store.PutPending(r); err != nil {
			return fmt.Errorf("commands: %w", err)
		}
		c.log.Warn("commands: a command was interrupted by a stop: its outcome is unknown", "id", r.ID, "asset", r.Asset, "signal", r.Signal)
	}
	return nil
}

// publishPending publishes the outcome records the id store keeps as
// pending (final could not publish them), oldest first, and stops at the
// first failure: it runs on every new NATS connection and every
// auditRecheck.
func (c *commander) publishPending(ctx context.Context) {
	c.pendingAt = time.Now()
	pend := c.store.Pending()
	defer func() { c.m.pending.Set(float64(len(c.store.Pending()))) }()
	if len(pend) == 0 || c.publish == nil || c.auditErr != nil {
		return
	}
	for _, r := range pend {
		if _, err := c.audit(ctx, telemetry.SubjectPrefix+"."+r.Asset+"."+string(kindAudit), r, ""); err != nil {
			c.log.Warn("commands: a pending outcome record is still not published", "id", r.ID, "pending", len(pend), "err", err)
			return
		}
		if err := c.store.Published(r); err != nil {
			c.log.Error("commands: recording the outcome's audit failed", "id", r.ID, "err", err)
			return
		}
		c.log.Info("commands: pending outcome record published", "id", r.ID, "verdict", r.Verdict, "at", r.At)
	}
}

// finite drops a non-finite value from r (JSON has none; a device or a
// conversion could give one): the record must always encode.
func finite(r *command.Result) {
	for _, p := range []**float64{&r.Old, &r.New, &r.Target, &r.ReadBack} {
		if *p != nil && (math.IsNaN(**p) || math.IsInf(**p, 0)) {
			*p = nil
		}
	}
}

// encodeResult is the reply to a command: r as JSON (finite made every
// value encodable; should it still fail, a rejection saying why, never an
// empty reply).
func encodeResult(r command.Result) []byte {
	data, err := json.Marshal(r)
	if err != nil {
		r.Old, r.New, r.Target, r.ReadBack = nil, nil, nil, nil
		r.Reason = "the result does not encode: " + err.Error() + "; " + r.Reason
		data, _ = json.Marshal(r) // no float left: cannot fail
	}
	return data
}

// handleDCMD runs a Sparkplug DCMD to device (docs/commands.md, "Sparkplug
// DCMD") and returns its result and the MQTT mirror topic of the asset's
// commands, whose .../result gets it. A DCMD carrying the signed command
// as metric smelter/command is handled like any command; a plain DCMD (a
// Sparkplug host's write, no signature) or a malformed one is refused and
// audited. A device that is not one of the gateway's assets is audited on
// the gateway's own subject, smelter.v1.<site>._gateway.<gateway>.audit.
func (c *commander) handleDCMD(ctx context.Context, device string, payload []byte) (command.Result, string) {
	var subject string
	for _, d := range c.byKey {
		if d.cfg.Asset.ID == device {
			subject = telemetry.AssetSubject(d.cfg.Asset, kindCommand)
		}
	}
	if subject == "" {
		subject = telemetry.Subject(c.site, telemetry.GatewayClass, c.gw, kindCommand)
	}
	topic := telemetry.Topic(subject)
	dc, err := sparkplug.ParseDeviceCommand(payload)
	if err == nil && dc.Signed != nil {
		return c.handle(ctx, subject, dc.Signed, ""), topic
	}
	res := c.result(subject, c.now())
	var why string
	if err != nil {
		why = fmt.Sprintf("Sparkplug DCMD to device %s: %s", command.Clip(device, 64), command.Clip(err.Error(), 200))
	} else {
		res.Signal = command.Clip(strings.SplitN(dc.Plain[0], "=", 2)[0], command.MaxSignal)
		res.Requested = command.Clip(strings.Join(dc.Plain, ", "), 256)
		why = fmt.Sprintf("unsigned: a plain Sparkplug DCMD to device %s carries no signature; commands must be signed with a trusted key "+
			"and sent as the String metric %s (docs/commands.md)", command.Clip(device, 64), sparkplug.MetricCommand)
	}
	c.m.received.Inc()
	auditSubj, refused := c.received(ctx, subject, res, why)
	if refused != nil {
		c.m.count(*refused)
		return *refused, topic
	}
	return c.final(ctx, auditSubj, c.reject(res, "%s", why), false), topic
}

func (c *commander) reject(res command.Result, format string, args ...any) command.Result {
	res.Verdict = command.Rejected
	res.Reason = fmt.Sprintf(format, args...)
	return res
}

// refuse rejects a command that passed the limit checks: its value to
// write becomes the record's target (nothing was written, no new value).
func (c *commander) refuse(res command.Result, format string, args ...any) command.Result {
	res.Target, res.New = res.New, nil
	return c.reject(res, format, args...)
}

// audit publishes r on the audit subject with JetStream and waits for its
// PubAck, within commands.timeout and whatever becomes of ctx (a reload or
// stop must not lose a record: ctx only carries values here). msgID is
// the Nats-Msg-Id ("": the record's digest, so a record published again
// within the stream's duplicate window is stored once); it reports whether
// the stream already held msgID.
func (c *commander) audit(ctx context.Context, subject string, r command.Result, msgID string) (bool, error) {
	if c.publish == nil {
		return false, errors.New("no NATS connection")
	}
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	if msgID == "" {
		msgID = "audit:" + command.Digest(data)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
	defer cancel()
	return c.publish(actx, subject, data, msgID)
}

// claimID is the Nats-Msg-Id of a command's "accepted" record: the same
// for every gateway, so that where two gateways serve one asset, the audit
// stream's duplicate window lets only the first accept a command id.
func claimID(r command.Result) string { return "accepted:" + r.Asset + ":" + r.ID }

// check applies every static check (time, target, limits) and reads the
// current value for max_step. It returns the result so far and whether the
// command may be written; a refused result is final.
func (c *commander) check(ctx context.Context, cmd *command.Command, subjTarget string, res command.Result, now time.Time) (command.Result, bool) {
	switch {
	case !now.Before(cmd.ExpiresAt):
		return c.reject(res, "expired at %s (gateway time %s)", cmd.ExpiresAt.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano)), false
	case cmd.ExpiresAt.Sub(cmd.IssuedAt) > c.cfg.MaxLifetime:
		return c.reject(res, "valid for %v, more than commands.max_lifetime %v", cmd.ExpiresAt.Sub(cmd.IssuedAt), c.cfg.MaxLifetime), false
	case cmd.IssuedAt.After(now.Add(c.cfg.MaxSkew)):
		return c.reject(res, "issued at %s, in the future beyond commands.max_skew %v", cmd.IssuedAt.UTC().Format(time.RFC3339Nano), c.cfg.MaxSkew), false
	case cmd.Asset != subjTarget:
		return c.reject(res, "asset %s is not the subject's asset %s", cmd.Asset, subjTarget), false
	}
	d := c.source(cmd.Asset, cmd.Signal)
	if d == nil {
		return c.reject(res, "asset %s is not on this gateway", cmd.Asset), false
	}
	idx := d.cfg.Norm.Index(cmd.Signal)
	if idx < 0 {
		return c.reject(res, "asset %s has no signal %s", cmd.Asset, cmd.Signal), false
	}
	wr := d.cfg.Write(idx)
	if wr == nil {
		return c.reject(res, "signal %s of %s is not writable (no write block in the gateway's configuration)", cmd.Signal, cmd.Asset), false
	}
	w, ok := d.src.(driver.Writer)
	if !ok {
		return c.reject(res, "the %s driver cannot write", d.cfg.Protocol), false
	}
	np := d.cfg.Norm.Point(idx)
	res.Unit = np.Unit
	if last, ok := c.lastWrite.Get(cmd.Asset + "/" + cmd.Signal); ok && wr.MinInterval > 0 && now.Sub(last) < wr.MinInterval {
		return c.reject(res, "written %v ago; write.min_interval is %v", now.Sub(last).Round(time.Millisecond), wr.MinInterval), false
	}
	var canon float64
	if len(wr.States) > 0 {
		if !cmd.Value.IsLabel {
			return c.reject(res, "signal %s is a state: send one of %v", cmd.Signal, wr.Allowed), false
		}
		if !slices.Contains(wr.Allowed, cmd.Value.Label) {
			return c.reject(res, "state %q is not allowed (write.allowed %v)", cmd.Value.Label, wr.Allowed), false
		}
		code, ok := stateCode(np, cmd.Value.Label)
		if !ok {
			return c.reject(res, "state %q has no device code", cmd.Value.Label), false
		}
		canon = code
		res.NewLabel = cmd.Value.Label
	} else {
		if cmd.Value.IsLabel {
			return c.reject(res, "signal %s takes a number, not %q", cmd.Signal, cmd.Value.Label), false
		}
		conv := units.Identity
		if cmd.Unit != "" && cmd.Unit != np.Unit {
			cv, err := units.Convert(cmd.Unit, np.Unit)
			if err != nil {
				return c.reject(res, "unit: %v (signal %s is in %s)", err, cmd.Signal, np.Unit), false
			}
			conv = cv
		}
		canon = conv.Apply(cmd.Value.Num)
		if math.IsNaN(canon) || math.IsInf(canon, 0) {
			// before the limits: no comparison with Inf or NaN refuses it
			return c.reject(res, "%s %s is %v %s: not a finite number (beyond float64's range once converted to the signal's unit)",
				cmd.Value, cmd.Unit, canon, np.Unit), false
		}
		if below(canon, wr.Min) || below(wr.Max, canon) {
			return c.reject(res, "%g %s is outside the write limits %g..%g %s", canon, np.Unit, wr.Min, wr.Max, np.Unit), false
		}
	}
	// the current value: the audit's old value and max_step's reference
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	smp, err := w.ReadPoint(rctx, idx)
	if errors.Is(err, driver.ErrNotReadable) {
		// a write-only point (an OPC UA method without a node): no old
		// value; the configuration refuses max_step there
		res.New = &canon
		return res, true
	}
	if err != nil {
		res = c.reject(res, "cannot read the current value before writing: %v", err)
		res.Code = exceptionCode(err)
		return res, false
	}
	old := toCanonical(np, smp.Num)
	if len(wr.States) > 0 {
		old = smp.Num // a state's value is its code
	}
	if math.IsNaN(old) || math.IsInf(old, 0) {
		return c.reject(res, "the current value %v %s is not a finite number: max_step cannot be checked", old, np.Unit), false
	}
	res.Old = &old
	if len(wr.States) > 0 {
		res.OldLabel = stateLabel(np, smp.Num)
	} else if wr.MaxStep > 0 && below(wr.MaxStep, math.Abs(canon-old)) {
		return c.reject(res, "a change of %g %s from %g exceeds write.max_step %g", canon-old, np.Unit, old, wr.MaxStep), false
	}
	res.New = &canon
	return res, true
}

// execute writes a checked command and reads it back. It reports whether
// the result is the id's outcome to record (the id store holds the
// command as accepted, or another gateway accepted it).
//
// From the "accepted" record on, the command no longer depends on ctx: a
// reload (SIGHUP) or stop while the write is on its way waits for it,
// within commands.timeout, and for the audit of its outcome (the gateway's
// Run waits for this goroutine), so a write the device may have applied
// is never cut off into an unknown outcome by the gateway itself.
func (c *commander) execute(ctx context.Context, cmd *command.Command, res command.Result) (command.Result, bool) {
	d := c.source(cmd.Asset, cmd.Signal)
	idx := d.cfg.Norm.Index(cmd.Signal)
	np := d.cfg.Norm.Point(idx)
	w := d.src.(driver.Writer)
	if err := ctx.Err(); err != nil {
		return c.refuse(res, "the gateway is stopping or reloading, nothing written: send the command again (same id) in a moment"), false
	}
	acc := res
	acc.Verdict = command.Accepted
	acc.At = c.now()
	auditSubj := telemetry.AssetSubject(d.cfg.Asset, kindAudit)
	dup, err := c.audit(ctx, auditSubj, acc, claimID(acc))
	if err != nil {
		c.m.auditFailures.WithLabelValues("accepted").Inc()
		return c.refuse(res, auditUnavailable+", nothing written: %v", err), false
	}
	if dup {
		// the audit stream already holds an "accepted" record of this id
		// for this asset: another gateway serves the asset too (or this
		// gateway's own earlier attempt, whose PubAck it never got)
		c.m.conflicts.Inc()
		c.log.Error("commands: this command id was already accepted for this asset by another gateway: "+
			"is the asset configured on two gateways? Nothing written (docs/commands.md, \"One gateway per asset\")",
			"id", cmd.ID, "asset", cmd.Asset)
		return c.refuse(res, "command id %s was already accepted for %s, by another gateway configured with this asset "+
			"(a misconfiguration: one asset, one gateway) or by an earlier attempt whose audit record was stored late: nothing written", cmd.ID, cmd.Asset), true
	}
	if err := c.store.Put(acc); err != nil {
		return c.refuse(res, "cannot record the command id, nothing written: %v", err), false
	}
	// the write's time, kept across reloads and restarts (min_interval)
	// before the write starts: unrecorded, nothing is written
	if err := c.lastWrite.Set(cmd.Asset+"/"+cmd.Signal, c.now()); err != nil {
		return c.refuse(res, "cannot record the write time, nothing written: %v", err), true
	}
	state := len(d.cfg.Write(idx).States) > 0
	raw := *res.New
	if !state {
		raw = fromCanonical(np, raw)
	}
	canon := func(v float64) float64 {
		if state {
			return v
		}
		return toCanonical(np, v)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
	defer cancel()
	written, err := w.WritePoint(wctx, idx, raw)
	if serr := c.lastWrite.Set(cmd.Asset+"/"+cmd.Signal, c.now()); serr != nil {
		c.log.Error("commands: recording the write time failed", "id", cmd.ID, "err", serr)
	}
	if err != nil {
		return writeFailed(res, err), true
	}
	nv := canon(written)
	res.New = &nv
	smp, rerr := w.ReadPoint(wctx, idx)
	switch {
	case errors.Is(rerr, driver.ErrNotReadable):
		res.Verdict, res.Reason = command.Written, "no read-back: the point has nothing to read"
	case rerr != nil:
		res.Verdict, res.Reason = command.Written, "read-back failed: "+rerr.Error()
	case smp.Num != written:
		rb := canon(smp.Num)
		res.ReadBack = &rb
		res.Verdict, res.Reason = command.Written, fmt.Sprintf("read back %g %s, not %g", rb, np.Unit, nv)
	default:
		rb := canon(smp.Num)
		res.ReadBack = &rb
		res.Verdict = command.Verified
	}
	return res, true
}

// writeFailed is the outcome of a write that returned err: failed, the
// device's exception code, no new value (the requested one is the
// target). Where the request may have reached the device (outcomeUnknown)
// the reason starts with command.OutcomeUnknown.
func writeFailed(res command.Result, err error) command.Result {
	res.Verdict = command.Failed
	res.Code = exceptionCode(err)
	res.Target, res.New = res.New, nil
	res.Reason = err.Error()
	if outcomeUnknown(err) {
		res.Reason = command.OutcomeUnknown + ": the write may have reached the device; read the point before sending a new command (new id): " + res.Reason
	}
	return res
}

// outcomeUnknown reports whether a failed write's request may have reached
// the device, from what the drivers' errors expose:
//   - OPC UA (internal/opcua) says so itself: "outcome unknown" in the
//     error of a Write or Call sent without an answer (a request timeout,
//     a lost connection, a session worker that died with the request);
//   - Modbus (internal/modbus): a modbus.Status that is no exception (a
//     timeout, a connection failure, a cancellation, a reply that cannot
//     be tied to the request or does not echo it), or exception 11 (a
//     Modbus gateway whose target did not answer): the request may have
//     been sent, the driver does not say whether it was;
//   - a context's end, whatever the driver.
//
// OPC UA's "nothing written" (a session worker that never got the
// request) is a known outcome. The drivers expose these only as text
// (OPC UA) or without saying whether the request was sent (Modbus):
// sentinels (opcua.ErrOutcomeUnknown, a "sent" flag of modbus errors)
// would make this exact.
//
// An exception (the device answered and refused), an OPC UA Bad status
// and a refusal before any I/O (modbus.ErrNotWritable, ErrValueRange,
// opcua.ErrTypeMismatch, ErrNoSession) are a known outcome: nothing was
// written.
func outcomeUnknown(err error) bool {
	if strings.Contains(err.Error(), "nothing written") { // OPC UA: the request never left the gateway
		return false
	}
	if strings.Contains(err.Error(), command.OutcomeUnknown) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var st modbus.Status
	if errors.As(err, &st) {
		code, exc := st.Exception()
		return !exc || code == 11
	}
	return false
}

// below reports a < b beyond float64 rounding (a relative 1e-9): a limit
// of 0.1 admits a step of 0.8 - 0.7 = 0.10000000000000009.
func below(a, b float64) bool {
	return b-a > 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func exceptionCode(err error) int {
	var e driver.Exception
	if errors.As(err, &e) {
		if code, ok := e.Exception(); ok {
			return int(code)
		}
	}
	return 0
}

type normPoint = normalize.Point

// toCanonical turns a device value into the signal's canonical unit as
// the normalizer does: raw*scale + offset, then the unit conversion.
func toCanonical(np normPoint, raw float64) float64 {
	s := np.Scale
	if s == 0 {
		s = 1
	}
	return np.Conv.Apply(raw*s + np.Offset)
}

// fromCanonical is toCanonical's inverse: the device value to write.
func fromCanonical(np normPoint, v float64) float64 {
	s := np.Scale
	if s == 0 {
		s = 1
	}
	return ((v-np.Conv.Offset)/np.Conv.Scale - np.Offset) / s
}

// stateCode returns the device code of a state label: the point's enum
// code for it, else the label's index among the signal's states.
func stateCode(np normPoint, label string) (float64, bool) {
	for code, l := range np.Enum() {
		if l == label {
			return float64(code), true
		}
	}
	if len(np.Enum()) > 0 {
		return 0, false
	}
	i := slices.Index(np.States(), label)
	return float64(i), i >= 0
}

// stateLabel returns the label of a device code ("" when unknown).
func stateLabel(np normPoint, code float64) string {
	if l, ok := np.Enum()[int64(code)]; ok {
		return l
	}
	states := np.States()
	if i := int(code); float64(i) == code && i >= 0 && i < len(states) {
		return states[i]
	}
	return ""
}

// commandMetrics are the command server's metrics (docs/operations.md,
// docs/commands.md "Metrics"), registered once per process and kept
// across reloads.
type commandMetrics struct {
	received      prometheus.Counter
	results       *prometheus.CounterVec // result
	auditFailures *prometheus.CounterVec // record
	pending       prometheus.Gauge
	conflicts     prometheus.Counter
	// retainedRepeats: retained MQTT commands delivered again (a
	// reconnect) after their refusal was audited
	retainedRepeats prometheus.Counter
}

// Command results, the label of smelter_gateway_commands_total.
var commandResults = []string{"rejected", "duplicate", "verified", "written", "failed", "outcome_unknown"}

func (mx *Metrics) commandMetrics() *commandMetrics {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if mx.cmd != nil {
		return mx.cmd
	}
	m := &commandMetrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_commands_received_total",
			Help: "Commands that arrived (NATS, the MQTT mirror, Sparkplug DCMD), whatever became of them."}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_commands_total",
			Help: "Commands by result: rejected (refused, nothing written), duplicate (a retry answered from the id store), " +
				"verified, written, failed (the device refused or nothing was sent), outcome_unknown (failed, the write may have reached the device)."},
			[]string{"result"}),
		auditFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_command_audit_failures_total",
			Help: "Audit records that could not be published, by record: received (the command was refused), accepted (nothing written), " +
				"outcome (kept and published again later for a signed command)."}, []string{"record"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_gateway_command_audit_pending",
			Help: "Outcome records kept in the id store until the audit stream takes them."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_command_conflicts_total",
			Help: "Commands refused because the audit stream already held another acceptance of their id for the asset: " +
				"the asset is configured on two gateways (docs/commands.md, \"One gateway per asset\")."}),
		retainedRepeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_command_retained_repeats_total",
			Help: "Retained MQTT commands the broker delivered again (at a reconnect) after this process refused and audited them: dropped, neither audited nor answered again."}),
	}
	for _, r := range commandResults {
		m.results.WithLabelValues(r)
	}
	for _, r := range []string{"received", "accepted", "outcome"} {
		m.auditFailures.WithLabelValues(r)
	}
	mx.reg.MustRegister(m.received, m.results, m.auditFailures, m.pending, m.conflicts, m.retainedRepeats)
	mx.cmd = m
	return m
}

// count counts a command's final result.
func (m *commandMetrics) count(r command.Result) {
	res := string(r.Verdict)
	switch {
	case r.Duplicate:
		res = "duplicate"
	case r.Verdict == command.Failed && strings.HasPrefix(r.Reason, command.OutcomeUnknown):
		res = "outcome_unknown"
	}
	m.results.WithLabelValues(res).Inc()
}

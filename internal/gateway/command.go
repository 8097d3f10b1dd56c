package gateway

import (
	"context"
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

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gateway/driver"
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

	// owned by Run
	store     *command.Store
	lastWrite *command.LastWrites
	publish   func(ctx context.Context, subject string, data []byte) error
	auditErr  error     // the audit stream's last check failed: commands are refused
	auditAt   time.Time // when it was checked
	recheck   bool      // an audit record failed: check the stream again
}

func newCommander(g *Gateway, up conner, mq mirror) (*commander, error) {
	cfg := *g.cfg.Raw.Commands
	keys, err := cfg.Keys()
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	c := &commander{gw: g.cfg.ID, site: g.cfg.Site, cfg: cfg, keys: keys, log: g.log.With("component", "commands"), up: up, mq: mq, now: time.Now,
		path: filepath.Join(g.cfg.DataDir, "commands", "ids.jsonl"), byKey: map[string]*device{}}
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
	c.store = st
	defer func() { _ = st.Close() }()
	if c.lastWrite, err = command.OpenLastWrites(filepath.Join(filepath.Dir(c.path), "last_writes.json")); err != nil {
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
			c.publish = func(ctx context.Context, subject string, data []byte) error {
				_, err := js.Publish(ctx, subject, data)
				return err
			}
			for key := range c.byKey {
				d := c.byKey[key]
				subj := telemetry.AssetSubject(d.cfg.Asset, kindCommand)
				s, err := nc.ChanSubscribe(subj, msgs)
				if err != nil {
					c.log.Warn("commands: subscribe failed", "subject", subj, "err", err)
					cur = nil
					continue
				}
				subs = append(subs, s)
			}
			c.log.Info("commands: listening", "assets", len(subs))
			c.checkAudit(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if c.recheck || c.auditErr != nil && time.Since(c.auditAt) >= auditRecheck {
				c.recheck = false
				c.checkAudit(ctx)
			}
		case m := <-msgs:
			res := c.handle(ctx, m.Subject, m.Data, "")
			data, _ := json.Marshal(res) // plain struct: cannot fail
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
					refuse = "a retained MQTT message is not a command: commands are never stored for later (publish with retain false)"
				}
				res = c.handle(ctx, telemetry.SubjectFromTopic(m.topic), m.data, refuse)
			}
			data, _ := json.Marshal(res) // plain struct: cannot fail
			pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
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
	auditSubj, refused := c.received(ctx, subject, res, why)
	if refused != nil {
		return *refused
	}
	final := func(r command.Result) command.Result { return c.final(ctx, auditSubj, r) }
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
			return final(c.reject(res, "id %s already names another command (%s %s by %s): send this one with a new id",
				cmd.ID, prev.Requested, prev.RequestedUnit, prev.Requester))
		}
		prev.Duplicate = true
		if prev.Verdict == command.Accepted {
			prev.Verdict = command.Failed
			prev.Reason = "outcome unknown: the gateway stopped between accepting this command and its outcome; " +
				"read the point and send a new command (new id) if needed"
		}
		return final(prev)
	}
	if c.store.Full() { // never forget an id that may still come back
		return final(c.reject(res, "too many commands in flight: commands.remember (%d) ids are all within their lifetime; "+
			"send it again once the oldest expires (within commands.max_lifetime %v)", c.cfg.Remember, c.cfg.MaxLifetime))
	}
	res, ok := c.check(ctx, cmd, target, res, now)
	if !ok {
		if err := c.store.Put(res); err != nil {
			c.log.Error("commands: recording the id failed", "id", cmd.ID, "err", err)
		}
		return final(res)
	}
	return final(c.execute(ctx, cmd, res))
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
		r := c.reject(res, "audit unavailable, nothing done: %v", c.auditErr)
		return "", &r
	}
	auditSubj := strings.TrimSuffix(subject, "."+string(kindCommand)) + "." + string(kindAudit)
	first := res
	first.Verdict = command.Received
	first.Reason = why
	if err := c.audit(ctx, auditSubj, first); err != nil {
		c.recheck = true // the stream may be gone (a server lost its store): check it at the next tick
		r := c.reject(res, "audit unavailable, nothing done: %v", err)
		return "", &r
	}
	return auditSubj, nil
}

// final audits and logs a command's outcome and returns it.
func (c *commander) final(ctx context.Context, auditSubj string, r command.Result) command.Result {
	r.At = c.now()
	if err := c.audit(ctx, auditSubj, r); err != nil {
		c.log.Error("commands: audit of the outcome failed", "id", r.ID, "verdict", r.Verdict, "err", err)
	}
	c.log.Info("command", "id", r.ID, "asset", r.Asset, "signal", r.Signal, "requester", r.Requester,
		"verdict", r.Verdict, "reason", r.Reason)
	return r
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
	auditSubj, refused := c.received(ctx, subject, res, why)
	if refused != nil {
		return *refused, topic
	}
	return c.final(ctx, auditSubj, c.reject(res, "%s", why)), topic
}

func (c *commander) reject(res command.Result, format string, args ...any) command.Result {
	res.Verdict = command.Rejected
	res.Reason = fmt.Sprintf(format, args...)
	return res
}

func (c *commander) audit(ctx context.Context, subject string, r command.Result) error {
	if c.publish == nil {
		return errors.New("no NATS connection")
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return c.publish(actx, subject, data)
}

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
	res.Old = &old
	if len(wr.States) > 0 {
		res.OldLabel = stateLabel(np, smp.Num)
	} else if wr.MaxStep > 0 && below(wr.MaxStep, math.Abs(canon-old)) {
		return c.reject(res, "a change of %g %s from %g exceeds write.max_step %g", canon-old, np.Unit, old, wr.MaxStep), false
	}
	res.New = &canon
	return res, true
}

// execute writes a checked command and reads it back.
func (c *commander) execute(ctx context.Context, cmd *command.Command, res command.Result) command.Result {
	d := c.source(cmd.Asset, cmd.Signal)
	idx := d.cfg.Norm.Index(cmd.Signal)
	np := d.cfg.Norm.Point(idx)
	w := d.src.(driver.Writer)
	acc := res
	acc.Verdict = command.Accepted
	acc.At = c.now()
	auditSubj := telemetry.AssetSubject(d.cfg.Asset, kindAudit)
	if err := c.audit(ctx, auditSubj, acc); err != nil {
		return c.reject(res, "audit unavailable, nothing written: %v", err)
	}
	if err := c.store.Put(acc); err != nil {
		return c.reject(res, "cannot record the command id, nothing written: %v", err)
	}
	// the write's time, kept across reloads and restarts (min_interval)
	// before the write starts: unrecorded, nothing is written
	if err := c.lastWrite.Set(cmd.Asset+"/"+cmd.Signal, c.now()); err != nil {
		res = c.reject(res, "cannot record the write time, nothing written: %v", err)
		if perr := c.store.Put(res); perr != nil {
			c.log.Error("commands: recording the outcome failed", "id", cmd.ID, "err", perr)
		}
		return res
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
	wctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	written, err := w.WritePoint(wctx, idx, raw)
	if serr := c.lastWrite.Set(cmd.Asset+"/"+cmd.Signal, c.now()); serr != nil {
		c.log.Error("commands: recording the write time failed", "id", cmd.ID, "err", serr)
	}
	if err != nil {
		res.Verdict = command.Failed
		res.Reason = err.Error()
		res.Code = exceptionCode(err)
	} else {
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
	}
	if err := c.store.Put(res); err != nil {
		c.log.Error("commands: recording the outcome failed", "id", cmd.ID, "err", err)
	}
	return res
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

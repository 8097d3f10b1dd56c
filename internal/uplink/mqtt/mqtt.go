// Package mqtt is the MQTT uplink: it publishes telemetry envelopes on topics
// that mirror the NATS subjects, at QoS 1 by default, over a persistent
// session, with a retained online/offline status on the gateway's status
// topic (the offline notice is the broker-held Last Will).
package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/mqttclient"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
)

// ErrNotConnected: the uplink has no open connection now; the message names
// the last connection error. Use errors.Is.
var ErrNotConnected = mqttclient.ErrNotConnected

// ErrUnconfirmed: the connection was re-established while a Publish waited
// for acknowledgements: some messages were resent on the new connection, or
// dropped by a broker that lost the session: the caller retries the slice.
var ErrUnconfirmed = errors.New("connection re-established during publish; acknowledgements unconfirmed")

// Uplink publishes to an MQTT broker. Create it with New, start it with Run.
type Uplink struct {
	cfg   Config
	qos   byte
	log   *slog.Logger
	m     *Metrics
	mc    *mqttclient.Client // encoding json
	topic string             // status topic

	// attempts counts connection attempts; Publish compares it before and
	// after waiting (see ErrUnconfirmed).
	attempts  atomic.Uint64
	connected atomic.Bool
	everUp    atomic.Bool
	lastErr   atomic.Pointer[error]

	pool sync.Pool // *window

	sp *spUplink // set with encoding sparkplug_b

	topicMu sync.Mutex
	topics  map[string]string // subject to topic, so Publish converts each subject once

	subMu sync.Mutex                         // Subscribe and the subscriptions of a connect
	subs  atomic.Pointer[map[string]handler] // Subscribe's, renewed on every connect; copied on write
}

type handler = func(topic string, payload []byte, retained bool)

// New checks cfg, reads the password and TLS files it names and prepares the
// client. It does no network I/O. Errors name the field and the variable or
// file, never a secret.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Uplink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	u := &Uplink{cfg: cfg, qos: byte(*cfg.QoS), log: log.With("uplink", "mqtt"), m: m, topic: cfg.StatusTopic()}
	cr, err := u.credentials()
	if err != nil {
		return nil, err
	}
	if cfg.Encoding == EncodingSparkplug {
		if u.sp, err = newSparkplug(u, u.clientOptions(cr)); err != nil {
			return nil, err
		}
		return u, nil
	}
	will, err := statusPayload(cfg.Gateway, false)
	if err != nil {
		return nil, err
	}
	o := mqttclient.Options{
		ClientID:      cfg.ClientID,
		Username:      cfg.Username,
		Password:      []byte(cr.password.Reveal()),
		HasPassword:   cfg.Username != "" && (cfg.PasswordEnv != "" || cfg.PasswordFile != ""),
		TLS:           cr.tls,
		Keepalive:     cfg.Keepalive,
		Timeout:       cfg.Timeout,
		MaxPacketSize: min(cfg.MaxPacketSize, MaxIncomingPacket),
		Will:          &mqttclient.Will{Topic: u.topic, Payload: will, QoS: 1, Retain: true},
		OnMessage:     u.onMessage,
		Log:           u.log,
	}
	for _, b := range strings.Split(cfg.URL, ",") {
		o.Brokers = append(o.Brokers, strings.TrimSpace(b))
	}
	u.mc = mqttclient.New(o)
	u.pool.New = func() any { return &window{t: u.mc.NewTracker()} }
	return u, nil
}

// creds are what New reads from the environment and files.
type creds struct {
	password secret.Secret
	tls      *tls.Config
}

func (u *Uplink) credentials() (creds, error) {
	cfg := u.cfg
	var cr creds
	var err error
	switch {
	case cfg.Username == "":
	case cfg.PasswordEnv != "":
		cr.password, err = secret.FromEnv(field+".password_env", cfg.PasswordEnv)
	case cfg.PasswordFile != "":
		cr.password, err = secret.FromFile(field+".password_file", cfg.PasswordFile)
	}
	if err != nil {
		return creds{}, err
	}
	if cfg.TLS.Needed(cfg.URL, "ssl://", "tls://", "mqtts://", "wss://") {
		if cr.tls, err = cfg.TLS.Config(field + ".tls"); err != nil {
			return creds{}, err
		}
		if cfg.TLS.InsecureSkipVerify {
			u.log.Warn("tls.insecure_skip_verify is set: the broker's certificate is not verified")
		}
	}
	return cr, nil
}

// clientOptions are paho's connection options for the Sparkplug edge node:
// brokers, client id, timeouts, credentials and TLS.
func (u *Uplink) clientOptions(cr creds) *paho.ClientOptions {
	cfg := u.cfg
	o := paho.NewClientOptions()
	for _, b := range strings.Split(cfg.URL, ",") {
		o.AddBroker(strings.TrimSpace(b))
	}
	o.SetClientID(cfg.ClientID)
	o.SetKeepAlive(cfg.Keepalive)
	o.SetPingTimeout(cfg.Timeout)
	o.SetConnectTimeout(cfg.Timeout)
	o.SetWriteTimeout(cfg.Timeout)
	o.SetConnectRetry(false) // Run retries the first connection itself
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
		o.SetPassword(cr.password.Reveal())
	}
	if cr.tls != nil {
		o.SetTLSConfig(cr.tls)
	}
	return o
}

func statusPayload(gateway string, online bool) ([]byte, error) {
	b, err := json.Marshal(telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: gateway, Online: online,
		TSGW: time.Now().UnixMilli()})
	if err != nil {
		return nil, fmt.Errorf("mqtt uplink: status payload: %w", err)
	}
	return b, nil
}

// onConnect runs on Run's goroutine after every connect: it renews the
// subscriptions and publishes the retained online status.
func (u *Uplink) onConnect(ctx context.Context, cn *mqttclient.Connection) {
	if u.everUp.Swap(true) {
		u.m.Reconnects.Inc()
	}
	u.setErr(nil)
	u.connected.Store(true)
	u.m.Connected.Set(1)
	u.log.Info("mqtt connected", "broker", cn.Broker, "client_id", u.cfg.ClientID, "session_present", cn.SessionPresent, "status_topic", u.topic)
	u.subscribeAll(ctx)
	p, err := statusPayload(u.cfg.Gateway, true)
	if err != nil {
		u.log.Error("mqtt online status", "err", err)
		return
	}
	sctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	if err := u.publishWait(sctx, u.topic, p, true, cn.Done()); err != nil {
		u.log.Warn("mqtt online status not acknowledged", "err", err)
	}
}

// publishWait publishes one QoS 1 message and waits for its PUBACK until
// ctx ends or lost is closed (nil: wait across reconnects); on return the
// client holds no reference to payload.
func (u *Uplink) publishWait(ctx context.Context, topic string, payload []byte, retain bool, lost <-chan struct{}) error {
	t := u.mc.NewTracker()
	t.Reset(1)
	defer t.Release()
	if err := u.mc.Publish(t, 0, topic, payload, 1, retain); err != nil {
		return err
	}
	if err := u.mc.Flush(); err != nil {
		return err
	}
	for {
		ok, err := t.Acked(0)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-t.C():
		case <-lost:
			return ErrNotConnected
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// onMessage dispatches an incoming PUBLISH to the handler of the matching
// subscription, on the client's reader goroutine.
func (u *Uplink) onMessage(topic string, payload []byte, retained bool) {
	subs := u.subs.Load()
	if subs == nil {
		return
	}
	for filter, h := range *subs {
		if match(filter, topic) {
			h(topic, bytes.Clone(payload), retained) // the client reuses its read buffer
		}
	}
}

// match reports whether topic matches the subscription filter (MQTT 3.1.1
// section 4.7: + one level, # the rest).
func match(filter, topic string) bool {
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// Subscribe asks for the messages on topic, now when connected and again
// after every reconnect, at QoS 0: a broker never keeps them for a
// disconnected gateway (commands are never delivered late,
// docs/commands.md). handler runs on the client's goroutine: it must hand
// the message off at once. retained says the broker kept the message (a
// retained publish): the command server refuses those, a command is never
// stored for later.
//
// With encoding sparkplug_b it does nothing (Sparkplug commands are DCMD:
// SubscribeDCMD).
func (u *Uplink) Subscribe(topic string, h func(topic string, payload []byte, retained bool)) {
	if u.sp != nil {
		return
	}
	u.subMu.Lock()
	defer u.subMu.Unlock()
	subs := map[string]handler{}
	if old := u.subs.Load(); old != nil {
		for k, v := range *old {
			subs[k] = v
		}
	}
	subs[topic] = h
	u.subs.Store(&subs)
	if u.connected.Load() {
		// this topic only: subscribing the others again would make the
		// broker send their retained messages again (one critical section
		// with the registration: a connect's subscribeAll cannot slip in
		// between and subscribe it twice)
		ctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
		defer cancel()
		u.subscribeOne(ctx, topic)
	}
}

func (u *Uplink) subscribeAll(ctx context.Context) {
	u.subMu.Lock()
	defer u.subMu.Unlock()
	subs := u.subs.Load()
	if subs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	for topic := range *subs {
		u.subscribeOne(ctx, topic)
	}
}

// subscribeOne subscribes topic at QoS 0; the caller holds subMu.
func (u *Uplink) subscribeOne(ctx context.Context, topic string) {
	if err := u.mc.Subscribe(ctx, topic); err != nil {
		u.log.Warn("mqtt subscribe failed", "topic", topic, "err", err)
	}
}

// SubscribeDCMD makes the Sparkplug edge node (encoding sparkplug_b)
// subscribe to its devices' commands, spBv1.0/<group>/DCMD/<edge node>/+,
// at QoS 1 (tck-id-message-flow-device-dcmd-subscribe), now when connected
// and on every new connection (clean sessions: the broker keeps nothing
// for a disconnected gateway). handler gets the device id and the payload
// on the client's goroutine: it must hand them off at once. Without
// sparkplug_b it does nothing (commands then come by Subscribe).
func (u *Uplink) SubscribeDCMD(handler func(device string, payload []byte)) {
	if u.sp != nil {
		u.sp.subscribeDCMD(handler)
	}
}

// PublishOne publishes payload on topic at QoS 1, not retained, and waits
// for the broker's acknowledgement until ctx ends (a command's result).
// With encoding sparkplug_b it publishes on the edge node's current
// connection, outside the Sparkplug namespace and its seq numbers.
func (u *Uplink) PublishOne(ctx context.Context, topic string, payload []byte) error {
	if u.sp != nil {
		c := u.sp.current()
		if c == nil {
			return fmt.Errorf("mqtt: publish %s: %w", topic, ErrNotConnected)
		}
		t := c.Publish(topic, 1, false, payload)
		select {
		case <-t.Done():
			return t.Error()
		case <-ctx.Done():
			return fmt.Errorf("mqtt: publish %s: %w", topic, ctx.Err())
		}
	}
	if err := u.publishWait(ctx, topic, payload, false, nil); err != nil {
		return fmt.Errorf("mqtt: publish %s: %w", topic, err)
	}
	return nil
}

// MaxIncomingPacket bounds what the broker may send the gateway (the
// command subscriptions: a command request is at most 4 KiB,
// docs/commands.md), whatever max_packet_size allows the gateway to send:
// a broker configured for large packets could otherwise make the gateway
// buffer one of up to 256 MiB. A larger packet closes the connection
// (logged and counted as a protocol error).
const MaxIncomingPacket = 64 << 10

// TopicReserve is what MaxPayload keeps free of max_packet_size for a
// PUBLISH packet's framing: the fixed header (at most 5 bytes), the packet
// id (2) and the topic with its length (2 + at most 6 tokens of 64 bytes
// and their separators: well under 512).
const TopicReserve = 512

// MaxPayload returns how many payload bytes one message may carry:
// max_packet_size less TopicReserve. Publish checks each packet's exact
// size as well.
func (u *Uplink) MaxPayload() int { return u.cfg.MaxPacketSize - TopicReserve }

// packetSize is the size of the PUBLISH packet carrying payload on topic at
// qos (MQTT 3.1.1 section 3.3).
func packetSize(topic string, payload int, qos byte) int {
	rem := 2 + len(topic) + payload
	if qos > 0 {
		rem += 2
	}
	n := 1 + 1
	for v := rem; v > 127; v >>= 7 {
		n++
	}
	return n + rem
}

// Name returns "mqtt".
func (u *Uplink) Name() string { return "mqtt" }

// Ready reports whether the connection is open.
func (u *Uplink) Ready() bool {
	if u.sp != nil {
		return u.sp.ready()
	}
	return u.connected.Load() && u.mc.Connected()
}

// StatusTopic is the retained online/offline topic.
func (u *Uplink) StatusTopic() string { return u.topic }

// LastError returns the most recent connection error (nil once connected).
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

// Run connects (retrying with backoff), reconnects after a loss (the
// client resends unacknowledged QoS 1 messages when the broker kept the
// session), and on ctx done publishes the retained offline status and
// disconnects. It returns nil on ctx done.
func (u *Uplink) Run(ctx context.Context) error {
	if u.sp != nil {
		return u.sp.run(ctx)
	}
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	for {
		u.attempts.Add(1)
		cn, err := u.mc.Connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // shutting down: a connect cut short is no error
			}
			err = fmt.Errorf("connect: %w", err)
			u.setErr(err)
			d := bo.Next()
			u.log.Warn("mqtt connect failed", "err", err, "retry_in", d.Round(time.Millisecond))
			if !backoff.Sleep(ctx, d) {
				return nil
			}
			continue
		}
		up := time.Now()
		u.onConnect(ctx, cn)
		select {
		case <-cn.Done():
		case <-ctx.Done():
			u.goodbye(cn)
			return nil
		}
		u.connected.Store(false)
		u.m.Connected.Set(0)
		err = cn.Err()
		u.setErr(fmt.Errorf("connection lost: %w", err))
		if errors.Is(err, mqttclient.ErrMalformed) || errors.Is(err, mqttclient.ErrTooLarge) {
			u.m.Errors.Inc()
			u.log.Error("mqtt protocol error from the broker: connection closed", "err", err)
		}
		if time.Since(up) > time.Minute {
			bo.Reset()
		}
		d := bo.Next()
		u.log.Warn("mqtt connection lost", "err", err, "retry_in", d.Round(time.Millisecond))
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

// goodbye publishes the retained offline status and disconnects.
func (u *Uplink) goodbye(cn *mqttclient.Connection) {
	if cn.Err() == nil {
		if p, err := statusPayload(u.cfg.Gateway, false); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
			if err := u.publishWait(ctx, u.topic, p, true, cn.Done()); err != nil {
				u.log.Warn("mqtt offline status not acknowledged", "err", err)
			}
			cancel()
		}
	}
	u.connected.Store(false)
	u.m.Connected.Set(0)
	u.mc.Disconnect()
}

// maxTopics bounds the subject to topic cache (a gateway has a few
// subjects per asset).
const maxTopics = 4096

// topicOf returns telemetry.Topic(subject), from a cache: converting
// allocates a string.
func (u *Uplink) topicOf(subject string) string {
	u.topicMu.Lock()
	defer u.topicMu.Unlock()
	if t, ok := u.topics[subject]; ok {
		return t
	}
	if u.topics == nil || len(u.topics) >= maxTopics {
		u.topics = make(map[string]string)
	}
	t := telemetry.Topic(subject)
	u.topics[subject] = t
	return t
}

// window is the per-call bookkeeping Publish reuses.
type window struct {
	t    *mqttclient.Tracker
	sent []time.Time
}

// Publish sends every envelope on telemetry.Topic(Subject) (retained when
// Envelope.Retained) with at most max_inflight unacknowledged, and returns
// nil only when every PUBACK arrived (QoS 1; at QoS 0 when every message was
// written). On error the caller retries the whole slice; consumers drop
// duplicates by (gateway, seq). A message whose packet would exceed
// max_packet_size is never sent (a broker disconnects a client that sends
// one, and the persistent session would resend it after every reconnect):
// Publish fails with a *uplink.RejectedError naming it, before sending
// anything after it.
//
// When Publish returns the client holds no reference to any envelope's
// Data: acknowledged messages left the resend store at their PUBACK, the
// others are dropped from it before Publish returns (they are not resent
// after a later reconnect; the caller's retry sends them again).
func (u *Uplink) Publish(ctx context.Context, msgs []telemetry.Envelope) error {
	if len(msgs) == 0 {
		return nil
	}
	if u.sp != nil {
		return u.sp.publish(ctx, msgs)
	}
	if !u.Ready() {
		u.m.Errors.Inc()
		if err := u.LastError(); err != nil {
			return fmt.Errorf("mqtt uplink: %w: %w", ErrNotConnected, err)
		}
		return fmt.Errorf("mqtt uplink: %w", ErrNotConnected)
	}
	err := u.publish(ctx, msgs)
	if err != nil {
		u.m.Errors.Inc()
	}
	return err
}

func (u *Uplink) publish(ctx context.Context, msgs []telemetry.Envelope) error {
	attempts := u.attempts.Load()
	w := u.pool.Get().(*window)
	w.t.Reset(len(msgs))
	defer func() {
		w.t.Release()
		w.sent = w.sent[:0]
		u.pool.Put(w)
	}()
	timer := time.NewTimer(u.cfg.Timeout)
	defer timer.Stop()
	done, nbytes := 0, 0
	// advance counts the acknowledged messages from done on.
	advance := func() error {
		for done < len(w.sent) {
			ok, err := w.t.Acked(done)
			if err != nil {
				return fmt.Errorf("mqtt uplink: publish %s: %w", msgs[done].MsgID, err)
			}
			if !ok {
				return nil
			}
			u.m.Latency.Observe(time.Since(w.sent[done]).Seconds())
			nbytes += len(msgs[done].Data)
			done++
		}
		return nil
	}
	// wait sends what is buffered and waits until message done is
	// acknowledged (each message waits at most timeout).
	wait := func() error {
		if err := u.mc.Flush(); err != nil {
			return fmt.Errorf("mqtt uplink: publish %s: %w", msgs[done].MsgID, err)
		}
		timer.Reset(u.cfg.Timeout)
		for i := done; ; {
			if err := advance(); err != nil {
				return err
			}
			if done > i {
				return nil
			}
			select {
			case <-w.t.C():
			case <-ctx.Done():
				return fmt.Errorf("mqtt uplink: waiting for PUBACK of %s: %w", msgs[i].MsgID, ctx.Err())
			case <-timer.C:
				// a broker that takes the messages and never acknowledges
				// them keeps a connection that answers pings: drop it, so
				// the reconnect resends on a fresh one (the session keeps them)
				err := fmt.Errorf("mqtt uplink: publish %s: no PUBACK within %v", msgs[i].MsgID, u.cfg.Timeout)
				u.mc.Drop(err)
				return err
			}
		}
	}
	for i := range msgs {
		if u.qos > 0 {
			if err := advance(); err != nil {
				return err
			}
			for len(w.sent)-done >= u.cfg.MaxInflight {
				if err := wait(); err != nil {
					return err
				}
			}
		}
		e := &msgs[i]
		topic := u.topicOf(e.Subject)
		if n := packetSize(topic, len(e.Data), u.qos); n > u.cfg.MaxPacketSize {
			return fmt.Errorf("mqtt uplink: publish %s: %w", e.MsgID, &uplink.RejectedError{MsgID: e.MsgID, Reason: uplink.ReasonTooLarge,
				Err: fmt.Errorf("a %d-byte packet exceeds max_packet_size %d", n, u.cfg.MaxPacketSize)})
		}
		w.sent = append(w.sent, time.Now())
		if err := u.mc.Publish(w.t, i, topic, e.Data, u.qos, e.Retained); err != nil {
			return fmt.Errorf("mqtt uplink: publish %s: %w", e.MsgID, err)
		}
	}
	if u.qos == 0 {
		if err := u.mc.Flush(); err != nil {
			return fmt.Errorf("mqtt uplink: publish: %w", err)
		}
		for i := range msgs {
			nbytes += len(msgs[i].Data)
		}
	}
	for done < len(w.sent) && u.qos > 0 {
		if err := wait(); err != nil {
			return err
		}
	}
	if u.attempts.Load() != attempts {
		return fmt.Errorf("mqtt uplink: %w", ErrUnconfirmed)
	}
	u.m.Published.Add(float64(len(msgs)))
	u.m.Bytes.Add(float64(nbytes))
	return nil
}

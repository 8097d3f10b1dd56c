// Package mqtt is the MQTT uplink: it publishes telemetry envelopes on topics
// that mirror the NATS subjects, at QoS 1 by default, over a persistent
// session, with a retained online/offline status on the gateway's status
// topic (the offline notice is the broker-held Last Will).
package mqtt

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
)

// ErrNotConnected: the uplink has no open connection now; the message names
// the last connection error. Use errors.Is.
var ErrNotConnected = errors.New("not connected")

// ErrUnconfirmed: the connection was re-established while a Publish waited
// for acknowledgements, so some PUBACKs may belong to the old connection's
// resend bookkeeping rather than the broker: the caller retries the slice.
var ErrUnconfirmed = errors.New("connection re-established during publish; acknowledgements unconfirmed")

// Uplink publishes to an MQTT broker. Create it with New, start it with Run.
type Uplink struct {
	cfg    Config
	qos    byte
	log    *slog.Logger
	m      *Metrics
	client paho.Client
	topic  string // status topic

	// attempts counts connection attempts; Publish compares it before and
	// after waiting (see ErrUnconfirmed).
	attempts  atomic.Uint64
	connected atomic.Bool
	everUp    atomic.Bool
	lastErr   atomic.Pointer[error]

	pool sync.Pool // *window

	sp *spUplink // set with encoding sparkplug_b

	subMu sync.Mutex
	subs  map[string]func(topic string, payload []byte, retained bool) // Subscribe's, renewed on every connect
}

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
	u.pool.New = func() any { return new(window) }

	o, err := u.clientOptions()
	if err != nil {
		return nil, err
	}
	if cfg.Encoding == EncodingSparkplug {
		if u.sp, err = newSparkplug(u, o); err != nil {
			return nil, err
		}
		return u, nil
	}
	o.SetCleanSession(false)
	o.SetAutoReconnect(true)
	o.SetMaxReconnectInterval(30 * time.Second)
	// Not SetMaxResumePubInFlight: in paho v1.5.1 its helper goroutine races
	// with reconnect (go test -race). Publish never has more than
	// max_inflight messages outstanding, so a resume resends at most that.
	o.SetOrderMatters(false)
	o.SetStore(newCopyStore())
	will, err := statusPayload(cfg.Gateway, false)
	if err != nil {
		return nil, err
	}
	o.SetBinaryWill(u.topic, will, 1, true)
	o.SetConnectionAttemptHandler(func(_ *url.URL, c *tls.Config) *tls.Config {
		u.attempts.Add(1)
		return c
	})
	o.SetOnConnectHandler(u.onConnect)
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		u.connected.Store(false)
		u.m.Connected.Set(0)
		u.setErr(fmt.Errorf("connection lost: %w", err))
		u.log.Warn("mqtt connection lost", "err", err)
	})
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		u.log.Debug("mqtt reconnecting")
	})
	u.client = paho.NewClient(o)
	return u, nil
}

// clientOptions are the connection options both encodings share: brokers,
// client id, timeouts, credentials and TLS.
func (u *Uplink) clientOptions() (*paho.ClientOptions, error) {
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
		var pw secret.Secret
		var err error
		switch {
		case cfg.PasswordEnv != "":
			pw, err = secret.FromEnv(field+".password_env", cfg.PasswordEnv)
		case cfg.PasswordFile != "":
			pw, err = secret.FromFile(field+".password_file", cfg.PasswordFile)
		}
		if err != nil {
			return nil, err
		}
		o.SetPassword(pw.Reveal())
	}
	var tc *tls.Config
	if cfg.TLS.Needed(cfg.URL, "ssl://", "tls://", "mqtts://", "wss://") {
		var err error
		if tc, err = cfg.TLS.Config(field + ".tls"); err != nil {
			return nil, err
		}
		if cfg.TLS.InsecureSkipVerify {
			u.log.Warn("tls.insecure_skip_verify is set: the broker's certificate is not verified")
		}
		o.SetTLSConfig(tc)
	}
	return o, nil
}

func statusPayload(gateway string, online bool) ([]byte, error) {
	b, err := json.Marshal(telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: gateway, Online: online,
		TSGW: time.Now().UnixMilli()})
	if err != nil {
		return nil, fmt.Errorf("mqtt uplink: status payload: %w", err)
	}
	return b, nil
}

// onConnect runs (in a goroutine of the client) after every connect and
// reconnect: it publishes the retained online status.
func (u *Uplink) onConnect(c paho.Client) {
	if u.everUp.Swap(true) {
		u.m.Reconnects.Inc()
	}
	u.setErr(nil)
	u.connected.Store(true)
	u.m.Connected.Set(1)
	r := c.OptionsReader()
	u.log.Info("mqtt connected", "client_id", r.ClientID(), "status_topic", u.topic)
	u.subscribeAll(c)
	p, err := statusPayload(u.cfg.Gateway, true)
	if err != nil {
		u.log.Error("mqtt online status", "err", err)
		return
	}
	t := c.Publish(u.topic, 1, true, p)
	if !t.WaitTimeout(u.cfg.Timeout) {
		u.log.Warn("mqtt online status not acknowledged", "timeout", u.cfg.Timeout)
		return
	}
	if err := t.Error(); err != nil {
		u.log.Warn("mqtt online status", "err", err)
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
func (u *Uplink) Subscribe(topic string, handler func(topic string, payload []byte, retained bool)) {
	if u.sp != nil {
		return
	}
	u.subMu.Lock()
	defer u.subMu.Unlock()
	if u.subs == nil {
		u.subs = map[string]func(string, []byte, bool){}
	}
	u.subs[topic] = handler
	if u.connected.Load() {
		// this topic only: subscribing the others again would make the
		// broker send their retained messages again (one critical section
		// with the registration: a connect's subscribeAll cannot slip in
		// between and subscribe it twice)
		u.subscribeOne(u.client, topic, handler)
	}
}

func (u *Uplink) subscribeAll(c paho.Client) {
	u.subMu.Lock()
	defer u.subMu.Unlock()
	for topic, h := range u.subs {
		u.subscribeOne(c, topic, h)
	}
}

// subscribeOne subscribes topic at QoS 0; the caller holds subMu.
func (u *Uplink) subscribeOne(c paho.Client, topic string, h func(string, []byte, bool)) {
	t := c.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload(), m.Retained()) })
	if !t.WaitTimeout(u.cfg.Timeout) || t.Error() != nil {
		u.log.Warn("mqtt subscribe failed", "topic", topic, "err", t.Error())
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
	c := u.client
	if u.sp != nil {
		if c = u.sp.current(); c == nil {
			return fmt.Errorf("mqtt: publish %s: %w", topic, ErrNotConnected)
		}
	}
	t := c.Publish(topic, 1, false, payload)
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return fmt.Errorf("mqtt: publish %s: %w", topic, ctx.Err())
	}
}

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
	return u.connected.Load() && u.client.IsConnectionOpen()
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

// Run connects (retrying with backoff), lets the client reconnect by itself
// after a loss, and on ctx done publishes the retained offline status and
// disconnects. It returns nil on ctx done.
func (u *Uplink) Run(ctx context.Context) error {
	if u.sp != nil {
		return u.sp.run(ctx)
	}
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	for {
		t := u.client.Connect()
		select {
		case <-t.Done():
		case <-ctx.Done():
			u.client.Disconnect(0)
			return nil
		}
		err := t.Error()
		if err == nil {
			break
		}
		err = fmt.Errorf("connect: %w", err)
		u.setErr(err)
		d := bo.Next()
		u.log.Warn("mqtt connect failed", "err", err, "retry_in", d.Round(time.Millisecond))
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
	<-ctx.Done()
	if u.client.IsConnectionOpen() {
		if p, err := statusPayload(u.cfg.Gateway, false); err == nil {
			t := u.client.Publish(u.topic, 1, true, p)
			t.WaitTimeout(u.cfg.Timeout)
		}
	}
	u.connected.Store(false)
	u.m.Connected.Set(0)
	u.client.Disconnect(250)
	return nil
}

// window is the per-call bookkeeping Publish reuses.
type window struct {
	toks []paho.Token
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
	attempts := u.attempts.Load()
	w := u.pool.Get().(*window)
	defer func() {
		clear(w.toks)
		w.toks, w.sent = w.toks[:0], w.sent[:0]
		u.pool.Put(w)
	}()
	timer := time.NewTimer(u.cfg.Timeout)
	defer timer.Stop()
	done, bytes := 0, 0
	wait := func() error {
		i := done
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(u.cfg.Timeout)
		select {
		case <-w.toks[i].Done():
		case <-ctx.Done():
			return fmt.Errorf("mqtt uplink: waiting for PUBACK of %s: %w", msgs[i].MsgID, ctx.Err())
		case <-timer.C:
			return fmt.Errorf("mqtt uplink: publish %s: no PUBACK within %v", msgs[i].MsgID, u.cfg.Timeout)
		}
		if err := w.toks[i].Error(); err != nil {
			return fmt.Errorf("mqtt uplink: publish %s: %w", msgs[i].MsgID, err)
		}
		u.m.Latency.Observe(time.Since(w.sent[i]).Seconds())
		bytes += len(msgs[i].Data)
		done++
		return nil
	}
	for i := range msgs {
		for len(w.toks)-done >= u.cfg.MaxInflight {
			if err := wait(); err != nil {
				u.m.Errors.Inc()
				return err
			}
		}
		if !u.client.IsConnectionOpen() {
			u.m.Errors.Inc()
			return fmt.Errorf("mqtt uplink: publish %s: %w", msgs[i].MsgID, ErrNotConnected)
		}
		e := &msgs[i]
		topic := telemetry.Topic(e.Subject)
		if n := packetSize(topic, len(e.Data), u.qos); n > u.cfg.MaxPacketSize {
			u.m.Errors.Inc()
			return fmt.Errorf("mqtt uplink: publish %s: %w", e.MsgID, &uplink.RejectedError{MsgID: e.MsgID, Reason: uplink.ReasonTooLarge,
				Err: fmt.Errorf("a %d-byte packet exceeds max_packet_size %d", n, u.cfg.MaxPacketSize)})
		}
		w.sent = append(w.sent, time.Now())
		w.toks = append(w.toks, u.client.Publish(topic, u.qos, e.Retained, e.Data))
	}
	for done < len(w.toks) {
		if err := wait(); err != nil {
			u.m.Errors.Inc()
			return err
		}
	}
	if u.attempts.Load() != attempts {
		u.m.Errors.Inc()
		return fmt.Errorf("mqtt uplink: %w", ErrUnconfirmed)
	}
	u.m.Published.Add(float64(len(msgs)))
	u.m.Bytes.Add(float64(bytes))
	return nil
}

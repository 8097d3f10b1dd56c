package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/mqttclient"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/internal/wait"
)

func startMQTT(t testing.TB, o brokers.MQTTOptions) *brokers.MQTT {
	t.Helper()
	b, err := brokers.StartMQTT(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

type running struct {
	u    *Uplink
	m    *Metrics
	stop context.CancelFunc
	done chan error
}

func runUplink(t testing.TB, cfg Config, log *slog.Logger) *running {
	t.Helper()
	cfg.SetDefaults("gw-test", "plant")
	m := NewMetrics(nil)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := New(cfg, log, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{u: u, m: m, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- u.Run(ctx) }()
	t.Cleanup(r.shutdown(t))
	return r
}

func (r *running) shutdown(t testing.TB) func() {
	return func() {
		r.stop()
		select {
		case <-r.done:
			r.done <- nil
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
}

type msg struct {
	topic    string
	payload  []byte
	qos      byte
	retained bool
}

// subscriber is a paho client collecting every message on filter.
type subscriber struct {
	c  paho.Client
	ch chan msg
}

func subscribe(t testing.TB, url, id string, clean bool, filter string, tc func(*paho.ClientOptions)) *subscriber {
	t.Helper()
	s := &subscriber{ch: make(chan msg, 20000)}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).SetAutoReconnect(false)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		s.ch <- msg{m.Topic(), bytes.Clone(m.Payload()), m.Qos(), m.Retained()}
	})
	if tc != nil {
		tc(o)
	}
	s.c = paho.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if filter != "" {
		if tok := s.c.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

func (s *subscriber) next(t testing.TB, what string) msg {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no message: %s", what)
		return msg{}
	}
}

// nextStatus waits for a status message with Online == online, skipping
// others (a resumed session may deliver an earlier status twice).
func (s *subscriber) nextStatus(t testing.TB, online bool) telemetry.Status {
	t.Helper()
	for {
		m := s.nextOn(t, statusTopic)
		if st := status(t, m); st.Online == online {
			return st
		}
	}
}

// nextOn waits for the next message on topic, skipping others.
func (s *subscriber) nextOn(t testing.TB, topic string) msg {
	t.Helper()
	for {
		m := s.next(t, "on "+topic)
		if m.topic == topic {
			return m
		}
	}
}

func envelopes(gateway string, from, n, size int) []telemetry.Envelope {
	out := make([]telemetry.Envelope, n)
	for i := range out {
		seq := uint64(from + i)
		data := bytes.Repeat([]byte{'a' + byte(seq%26)}, size)
		copy(data, fmt.Sprintf(`{"seq":%d}`, seq))
		out[i] = telemetry.Envelope{
			Subject: telemetry.Subject("plant", "motor", fmt.Sprintf("m-%d", seq%3), telemetry.KindData),
			MsgID:   telemetry.MsgID(gateway, seq),
			Data:    data,
		}
	}
	return out
}

func publish(t testing.TB, u *Uplink, msgs []telemetry.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := u.Publish(ctx, msgs); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func status(t testing.TB, m msg) telemetry.Status {
	t.Helper()
	var s telemetry.Status
	if err := json.Unmarshal(m.payload, &s); err != nil {
		t.Fatalf("status payload %q: %v", m.payload, err)
	}
	if s.Schema != telemetry.SchemaStatus || s.Gateway != "gw-test" || s.TSGW <= 0 {
		t.Fatalf("status %+v", s)
	}
	return s
}

func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}

const statusTopic = "smelter/v1/plant/_gateway/gw-test/status"

func TestPublishDeliversExactPayloadsAtQoS1(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{})
	sub := subscribe(t, b.URL(), "sub-1", true, "smelter/v1/plant/motor/#", nil)
	r := runUplink(t, Config{URL: b.URL(), MaxInflight: 16}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)

	msgs := envelopes("gw-test", 1, 300, 500)
	msgs[7].Retained = true
	publish(t, r.u, msgs)
	for i, want := range msgs {
		m := sub.next(t, want.MsgID)
		if m.topic != telemetry.Topic(want.Subject) || !bytes.Equal(m.payload, want.Data) || m.qos != 1 {
			t.Fatalf("message %d: topic %s qos %d payload %q..., want %s %q...", i, m.topic, m.qos, m.payload[:12], telemetry.Topic(want.Subject), want.Data[:12])
		}
	}
	if got := metricValue(r.m.Published); got != 300 {
		t.Fatalf("published metric = %v", got)
	}
	if got := metricValue(r.m.Bytes); got != 300*500 {
		t.Fatalf("bytes metric = %v", got)
	}
	// The retained envelope is kept by the broker for late subscribers.
	late := subscribe(t, b.URL(), "sub-late", true, telemetry.Topic(msgs[7].Subject), nil)
	if m := late.next(t, "retained"); !m.retained || !bytes.Equal(m.payload, msgs[7].Data) {
		t.Fatalf("late subscriber got %+v", m)
	}
}

func TestQoS0(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{})
	sub := subscribe(t, b.URL(), "sub-q0", true, "smelter/v1/plant/motor/#", nil)
	q := 0
	r := runUplink(t, Config{URL: b.URL(), QoS: &q}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	msgs := envelopes("gw-test", 1, 20, 50)
	publish(t, r.u, msgs)
	for _, want := range msgs {
		if m := sub.next(t, want.MsgID); !bytes.Equal(m.payload, want.Data) || m.qos != 0 {
			t.Fatalf("got %+v", m)
		}
	}
}

func TestStatusOnlineRetainedAndWillOnAbruptLoss(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{})
	proxy := brokertest.NewProxy(t, b.Addr())
	r := runUplink(t, Config{URL: "tcp://" + proxy.Addr(), Keepalive: 2 * time.Second}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	if r.u.StatusTopic() != statusTopic {
		t.Fatalf("status topic %s", r.u.StatusTopic())
	}

	// Subscribing after the connect: the retained online status is there.
	sub := subscribe(t, b.URL(), "watcher", true, statusTopic, nil)
	m := sub.next(t, "retained online status")
	if !m.retained || !status(t, m).Online {
		t.Fatalf("first status %+v retained=%v, want retained online", status(t, m), m.retained)
	}

	// The network dies without a DISCONNECT: the broker publishes the will.
	proxy.Cut()
	m = sub.nextOn(t, statusTopic)
	if status(t, m).Online {
		t.Fatalf("after the cut got %s, want the offline will", m.payload)
	}
	// The client reconnects by itself and says online again.
	sub.nextStatus(t, true)
	wait.For(t, 10*time.Second, "uplink ready again", r.u.Ready)
	if got := metricValue(r.m.Reconnects); got != 1 {
		t.Fatalf("reconnects metric = %v", got)
	}
	// The offline notice is retained while the gateway is away: check with
	// the broker dropping the client.
	// mochi v2.7.9 drops the will when the drop lands while its read loop
	// handles a packet (Client.Read then returns nil, as after a
	// DISCONNECT): the gateway reconnects and is dropped again until a will
	// arrives.
	wait.For(t, 20*time.Second, "the will after the broker drops the client", func() bool {
		if !r.u.Ready() || !b.DropClient("gw-test") {
			return false
		}
		for {
			select {
			case m := <-sub.ch:
				if m.topic == statusTopic && !status(t, m).Online {
					return true
				}
			case <-time.After(time.Second):
				return false
			}
		}
	})
}

func TestShutdownPublishesOfflineStatus(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{})
	r := runUplink(t, Config{URL: b.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	sub := subscribe(t, b.URL(), "watcher", true, statusTopic, nil)
	if !status(t, sub.next(t, "online")).Online {
		t.Fatal("not online")
	}
	r.shutdown(t)()
	m := sub.nextOn(t, statusTopic)
	if status(t, m).Online {
		t.Fatalf("after shutdown got %s", m.payload)
	}
	late := subscribe(t, b.URL(), "late", true, statusTopic, nil)
	if m := late.next(t, "retained offline"); !m.retained || status(t, m).Online {
		t.Fatalf("retained status after shutdown: %s", m.payload)
	}
}

func TestUsernamePassword(t *testing.T) {
	const pass = "mqtt-Pa55-secret"
	b := startMQTT(t, brokers.MQTTOptions{Username: "smelter", Password: pass})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/pw", []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	log := logs.Logger(slog.LevelDebug)
	ok := runUplink(t, Config{URL: b.URL(), Username: "smelter", PasswordFile: dir + "/pw"}, log)
	wait.For(t, 10*time.Second, "uplink ready", ok.u.Ready)
	publish(t, ok.u, envelopes("gw-test", 1, 3, 10))

	t.Setenv("SMELTER_TEST_MQTT_BAD", "not-the-password")
	bad := runUplink(t, Config{URL: b.URL(), ClientID: "gw-bad", Username: "smelter", PasswordEnv: "SMELTER_TEST_MQTT_BAD"}, log)
	wait.For(t, 10*time.Second, "auth error", func() bool { return bad.u.LastError() != nil })
	err := bad.u.Publish(context.Background(), envelopes("gw-test", 1, 1, 10))
	if !errors.Is(err, ErrNotConnected) || !errors.Is(err, mqttclient.RefusedNotAuthorized) || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("publish with a wrong password = %v, want not connected: not authorized", err)
	}
	out := logs.String()
	if !strings.Contains(out, "mqtt connect failed") {
		t.Fatalf("auth failure not logged:\n%s", out)
	}
	for _, s := range []string{pass, "not-the-password"} {
		if strings.Contains(out, s) {
			t.Fatalf("log output contains a password:\n%s", out)
		}
	}
}

func TestTLSWithClientCertificate(t *testing.T) {
	pki := brokertest.NewPKI(t)
	b := startMQTT(t, brokers.MQTTOptions{TLS: pki.ServerTLS(true)})
	if !strings.HasPrefix(b.URL(), "ssl://") {
		t.Fatalf("URL %s", b.URL())
	}
	sub := subscribe(t, b.URL(), "sub-tls", true, "smelter/v1/plant/motor/#", func(o *paho.ClientOptions) { o.SetTLSConfig(pki.ClientTLS()) })
	r := runUplink(t, Config{URL: b.URL(), TLS: secret.TLS{CAFile: pki.CAFile, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile}}, nil)
	wait.For(t, 10*time.Second, "uplink ready over mTLS", r.u.Ready)
	msgs := envelopes("gw-test", 1, 5, 100)
	publish(t, r.u, msgs)
	for _, want := range msgs {
		if m := sub.next(t, want.MsgID); !bytes.Equal(m.payload, want.Data) {
			t.Fatalf("payload %q", m.payload)
		}
	}
	nocert := runUplink(t, Config{URL: b.URL(), ClientID: "gw-nocert", TLS: secret.TLS{CAFile: pki.CAFile}}, nil)
	wait.For(t, 10*time.Second, "handshake error", func() bool { return nocert.u.LastError() != nil })
	if nocert.u.Ready() {
		t.Fatal("ready without client certificate")
	}
	other := brokertest.NewPKI(t)
	wrong := runUplink(t, Config{URL: b.URL(), ClientID: "gw-wrongca", TLS: secret.TLS{CAFile: other.CAFile, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile}}, nil)
	wait.For(t, 10*time.Second, "verification error", func() bool { return wrong.u.LastError() != nil })
	if !strings.Contains(wrong.u.LastError().Error(), "certificate") {
		t.Fatalf("error = %v", wrong.u.LastError())
	}
}

// TestBrokerRestartMidStream: while the broker is down Publish fails; after
// it is back every message published (and retried) reaches a subscriber
// with a persistent session, none missing.
func TestBrokerRestartMidStream(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{KeepSessions: true})
	sub := subscribe(t, b.URL(), "collector", false, "smelter/v1/plant/motor/#", func(o *paho.ClientOptions) {
		o.SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(100 * time.Millisecond)
	})
	r := runUplink(t, Config{URL: b.URL(), Timeout: 2 * time.Second}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)

	want := map[string]bool{}
	add := func(ms []telemetry.Envelope) {
		for _, m := range ms {
			want[string(m.Data)] = true
		}
	}
	first := envelopes("gw-test", 1, 100, 100)
	publish(t, r.u, first)
	add(first)

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "uplink notices the outage", func() bool { return !r.u.Ready() })
	during := envelopes("gw-test", 101, 100, 100)
	if err := r.u.Publish(context.Background(), during); err == nil {
		t.Fatal("publish during the outage reported success")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "uplink ready again", r.u.Ready)
	publish(t, r.u, during) // the caller's retry
	add(during)
	last := envelopes("gw-test", 201, 100, 100)
	publish(t, r.u, last)
	add(last)

	got := map[string]bool{}
	for len(got) < len(want) {
		m := sub.next(t, fmt.Sprintf("%d of %d distinct messages", len(got), len(want)))
		if !want[string(m.payload)] {
			t.Fatalf("unexpected payload %q", m.payload[:12])
		}
		got[string(m.payload)] = true
	}
}

// TestPersistentSessionSurvivesBrokerRestart: QoS 1 messages queued for an
// offline persistent subscriber survive a broker restart (the embedded
// broker keeps sessions in memory across restarts, like a disk store).
func TestPersistentSessionSurvivesBrokerRestart(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{KeepSessions: true})
	sub := subscribe(t, b.URL(), "collector-p", false, "smelter/v1/plant/motor/#", nil)
	sub.c.Disconnect(100) // offline, session kept

	r := runUplink(t, Config{URL: b.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	msgs := envelopes("gw-test", 1, 50, 100)
	publish(t, r.u, msgs)

	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	again := subscribe(t, b.URL(), "collector-p", false, "", nil)
	seen := map[string]bool{}
	for len(seen) < len(msgs) {
		m := again.next(t, fmt.Sprintf("queued message %d of %d", len(seen)+1, len(msgs)))
		if m.topic == statusTopic {
			continue
		}
		seen[string(m.payload)] = true
	}
	for _, e := range msgs {
		if !seen[string(e.Data)] {
			t.Fatalf("message %s lost across the restart", e.MsgID)
		}
	}
}

func TestPublishBeforeRun(t *testing.T) {
	var c Config
	c.SetDefaults("gw", "site")
	u, err := New(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Publish(context.Background(), envelopes("gw", 1, 1, 1)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("publish before Run = %v", err)
	}
	if u.Name() != "mqtt" || u.Ready() {
		t.Fatal("name or ready")
	}
}

func TestMetricsShareRegistryWithNATS(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	natsjs.NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "smelter_uplink_published_messages_total" && len(mf.GetMetric()) != 2 {
			t.Fatalf("want one series per uplink, got %d", len(mf.GetMetric()))
		}
	}
}

// TestSubscribeReportsRetained: a message the broker kept (published with
// retain before the uplink subscribed) reaches the handler flagged
// retained, a live one not: the command server refuses retained commands
// (docs/commands.md, "MQTT mirror").
func TestSubscribeReportsRetained(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{})
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("retainer").SetCleanSession(true))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	const topic = "smelter/v1/plant/generic/ac-1/cmd"
	if tok := pub.Publish(topic, 1, true, []byte("kept")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	type got struct {
		payload  string
		retained bool
	}
	ch := make(chan got, 4)
	r := runUplink(t, Config{URL: b.URL()}, nil)
	r.u.Subscribe(topic, func(_ string, payload []byte, retained bool) { ch <- got{string(payload), retained} })
	// the subscription may be made twice while the uplink connects (on
	// connect and from Subscribe), and the broker then sends the kept
	// message again: wait for it flagged retained, ignore repeats
	deadline := time.After(10 * time.Second)
	for kept := false; !kept; {
		select {
		case g := <-ch:
			kept = g == (got{"kept", true})
		case <-deadline:
			t.Fatal("the retained message never arrived flagged retained")
		}
	}
	wait.For(t, 10*time.Second, "a live message", func() bool {
		if tok := pub.Publish(topic, 1, false, []byte("live")); !tok.WaitTimeout(time.Second) {
			return false
		}
		for {
			select {
			case g := <-ch:
				if g.payload == "kept" {
					continue // a repeat of the kept message
				}
				if g != (got{"live", false}) {
					t.Errorf("a live message: %+v, want not retained", g)
				}
				return true
			case <-time.After(300 * time.Millisecond):
				return false
			}
		}
	})
}

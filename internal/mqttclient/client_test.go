package mqttclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/wait"
)

func startBroker(t testing.TB, o brokers.MQTTOptions) *brokers.MQTT {
	t.Helper()
	b, err := brokers.StartMQTT(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// closeBroker closes b before the test's cleanups run (call it with defer).
// mochi v2.7.9 can deadlock in Close when a clean-session client disconnects
// at the same moment (Clients.GetByListener read-locks twice, a Delete
// waits between): closed first, the broker ends the connections itself.
func closeBroker(b *brokers.MQTT) { _ = b.Close() }

func connect(t testing.TB, c *Client) *Connection {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cn, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Disconnect)
	return cn
}

type received struct {
	topic    string
	payload  string
	retained bool
}

// listen connects a client that subscribes to filter and collects messages.
func listen(t testing.TB, url, id, filter string, tc *tls.Config) chan received {
	t.Helper()
	ch := make(chan received, 1000)
	c := New(Options{Brokers: []string{url}, ClientID: id, CleanSession: true, TLS: tc, Timeout: 5 * time.Second,
		OnMessage: func(topic string, payload []byte, retained bool) { ch <- received{topic, string(payload), retained} }})
	connect(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, filter); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return ch
}

// publishAll publishes payloads at QoS 1 on topic and waits for every PUBACK.
func publishAll(t testing.TB, c *Client, topic string, payloads ...string) {
	t.Helper()
	tr := c.NewTracker()
	tr.Reset(len(payloads))
	defer tr.Release()
	for i, p := range payloads {
		if err := c.Publish(tr, i, topic, []byte(p), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, tr, len(payloads))
}

func waitAcked(t testing.TB, tr *Tracker, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for i := 0; i < n; {
		ok, err := tr.Acked(i)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if ok {
			i++
			continue
		}
		select {
		case <-tr.C():
		case <-deadline:
			t.Fatalf("message %d of %d not acknowledged", i, n)
		}
	}
}

func next(t testing.TB, ch chan received) received {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
		return received{}
	}
}

func TestPublishQoS1Acknowledged(t *testing.T) {
	b := startBroker(t, brokers.MQTTOptions{})
	defer closeBroker(b)
	sub := listen(t, b.URL(), "sub", "a/#", nil)
	c := New(Options{Brokers: []string{b.URL()}, ClientID: "pub", Timeout: 5 * time.Second})
	connect(t, c)
	var want []string
	for i := range 500 {
		want = append(want, fmt.Sprintf("m-%d-%s", i, bytes.Repeat([]byte{'x'}, i*37)))
	}
	publishAll(t, c, "a/b", want...)
	for i, w := range want {
		if m := next(t, sub); m.topic != "a/b" || m.payload != w || m.retained {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	c.mu.Lock()
	n := len(c.store)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d entries left in the store after every PUBACK", n)
	}
}

// holdProxy forwards TCP to a broker; while held it swallows what the client
// sends (the broker never sees it, so never acknowledges it).
type holdProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	held   bool
	conns  []net.Conn
}

func newHoldProxy(t testing.TB, target string) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target}
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(c, u); _ = c.Close(); _ = u.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					p.mu.Lock()
					held := p.held
					p.mu.Unlock()
					if n > 0 && !held {
						if _, err := u.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				_ = c.Close()
				_ = u.Close()
			}()
		}
	}()
	return p
}

// cut closes every connection (the client sees a reset or EOF).
func (p *holdProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *holdProxy) hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
}

func (p *holdProxy) url() string { return "tcp://" + p.ln.Addr().String() }

// publishLog records the PUBLISH packets a broker receives.
type publishLog struct {
	mochi.HookBase
	mu   sync.Mutex
	pubs []packets.Packet
}

func (h *publishLog) ID() string           { return "publish-log" }
func (h *publishLog) Provides(b byte) bool { return b == mochi.OnPublish }
func (h *publishLog) get() []packets.Packet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]packets.Packet(nil), h.pubs...)
}
func (h *publishLog) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	h.pubs = append(h.pubs, pk)
	h.mu.Unlock()
	return pk, nil
}

// TestResendWithDUPAfterRestart: messages the broker never acknowledged are
// resent after a reconnect with session present, with DUP, their packet ids
// and in order; a Release before the reconnect means no resend at all.
func TestResendWithDUPAfterRestart(t *testing.T) {
	for _, release := range []bool{false, true} {
		t.Run(fmt.Sprintf("release=%v", release), func(t *testing.T) {
			b := startBroker(t, brokers.MQTTOptions{KeepSessions: true})
			defer closeBroker(b)
			p := newHoldProxy(t, b.Addr())
			c := New(Options{Brokers: []string{p.url()}, ClientID: "resender", Timeout: 5 * time.Second})
			cn := connect(t, c)
			if cn.SessionPresent {
				t.Fatal("session present on the first connect")
			}
			publishAll(t, c, "r/0", "before")

			p.hold(true)
			tr := c.NewTracker()
			tr.Reset(3)
			payloads := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
			for i, pl := range payloads {
				if err := c.Publish(tr, i, "r/"+strconv.Itoa(i), pl, 1, i == 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if release {
				tr.Release()
				for i := range payloads {
					payloads[i][0] = 'X' // the caller's bytes are its own again
				}
			}
			if err := b.Restart(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-cn.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection did not end with the broker")
			}
			log := &publishLog{}
			if err := b.Server().AddHook(log, nil); err != nil {
				t.Fatal(err)
			}
			p.hold(false)
			cn = connect(t, c)
			if !cn.SessionPresent {
				t.Fatal("no session present after the restart")
			}
			if release {
				publishAll(t, c, "r/9", "after") // a barrier: anything resent came before
				got := log.get()
				if len(got) != 1 || got[0].TopicName != "r/9" {
					t.Fatalf("released messages were resent: %d packets, first %s %q", len(got), got[0].TopicName, got[0].Payload)
				}
				return
			}
			waitAcked(t, tr, 3)
			tr.Release()
			got := log.get()
			if len(got) != 3 {
				t.Fatalf("broker got %d resent packets, want 3", len(got))
			}
			for i, pk := range got {
				if !pk.FixedHeader.Dup || pk.FixedHeader.Qos != 1 || pk.TopicName != "r/"+strconv.Itoa(i) || string(pk.Payload) != string(payloads[i]) || pk.FixedHeader.Retain != (i == 1) {
					t.Fatalf("resent %d: dup=%v qos=%d topic=%s payload=%q retain=%v", i, pk.FixedHeader.Dup, pk.FixedHeader.Qos, pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
				}
				if i > 0 && pk.PacketID != got[i-1].PacketID+1 {
					t.Fatalf("packet ids %d then %d: not the original order", got[i-1].PacketID, pk.PacketID)
				}
			}
		})
	}
}

func TestWillOnAbruptLoss(t *testing.T) {
	b := startBroker(t, brokers.MQTTOptions{})
	defer closeBroker(b)
	sub := listen(t, b.URL(), "watch", "status/#", nil)
	proxy := brokertest.NewProxy(t, b.Addr())
	c := New(Options{Brokers: []string{"tcp://" + proxy.Addr()}, ClientID: "dying", Timeout: 5 * time.Second,
		Will: &Will{Topic: "status/dying", Payload: []byte("offline"), QoS: 1, Retain: true}})
	cn := connect(t, c)
	proxy.Cut()
	<-cn.Done()
	if m := next(t, sub); m.topic != "status/dying" || m.payload != "offline" {
		t.Fatalf("got %+v, want the will", m)
	}
	late := listen(t, b.URL(), "late", "status/#", nil)
	if m := next(t, late); !m.retained || m.payload != "offline" {
		t.Fatalf("the will is not retained: %+v", m)
	}
}

// fakeBroker accepts one connection, reads the CONNECT and runs serve.
func fakeBroker(t testing.TB, serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		rd := &reader{r: r, max: 1 << 20}
		if _, err := readAny(rd); err != nil {
			return
		}
		serve(c, r)
	}()
	return "tcp://" + ln.Addr().String()
}

// readAny reads one packet of any type (the fake broker reads CONNECT and
// PINGREQ, which a client never receives).
func readAny(rd *reader) (byte, error) {
	h, err := rd.r.ReadByte()
	if err != nil {
		return 0, err
	}
	rem := 0
	for mul := 1; ; mul *= 128 {
		d, err := rd.r.ReadByte()
		if err != nil {
			return 0, err
		}
		rem += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
	}
	_, err = rd.r.Discard(rem)
	return h, err
}

func TestPingTimeoutSilentPeer(t *testing.T) {
	pinged := make(chan struct{})
	url := fakeBroker(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = c.Write([]byte{typeConnack << 4, 2, 0, 0})
		rd := &reader{r: r, max: 1 << 20}
		for {
			h, err := readAny(rd)
			if err != nil {
				return
			}
			if h == typePingreq<<4 {
				close(pinged)
				_, _ = io.Copy(io.Discard, r) // silent from now on
				return
			}
		}
	})
	c := New(Options{Brokers: []string{url}, ClientID: "pinger", Keepalive: 200 * time.Millisecond, Timeout: 300 * time.Millisecond})
	cn := connect(t, c)
	select {
	case <-cn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection to a silent peer stayed up")
	}
	<-pinged
	if !errors.Is(cn.Err(), ErrPingTimeout) {
		t.Fatalf("err = %v, want ping timeout", cn.Err())
	}
	if c.Connected() {
		t.Fatal("still connected")
	}
}

func TestConnackRefusals(t *testing.T) {
	for code := RefusedProtocolVersion; code <= RefusedNotAuthorized; code++ {
		t.Run(code.Error(), func(t *testing.T) {
			url := fakeBroker(t, func(c net.Conn, _ *bufio.Reader) { _, _ = c.Write([]byte{typeConnack << 4, 2, 0, byte(code)}) })
			c := New(Options{Brokers: []string{url}, ClientID: "refused", Timeout: 5 * time.Second})
			_, err := c.Connect(context.Background())
			if !errors.Is(err, code) {
				t.Fatalf("err = %v, want %v", err, code)
			}
		})
	}
	b := startBroker(t, brokers.MQTTOptions{Username: "u", Password: "right"})
	defer closeBroker(b)
	c := New(Options{Brokers: []string{b.URL()}, ClientID: "bad", Username: "u", Password: []byte("wrong"), HasPassword: true, Timeout: 5 * time.Second})
	if _, err := c.Connect(context.Background()); !errors.Is(err, RefusedNotAuthorized) {
		t.Fatalf("mochi with a wrong password: %v", err)
	}
}

func TestBadIncomingPacketClosesConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
		want error
	}{
		{"oversized", append([]byte{typePublish << 4, 0x80, 0x08, 0, 1, 'a'}, make([]byte, 1021)...), ErrTooLarge},
		{"topic longer than packet", []byte{typePublish << 4, 4, 0, 9, 'a', 'b'}, ErrMalformed},
		{"qos 3", []byte{typePublish<<4 | 6, 3, 0, 1, 'a'}, ErrMalformed},
		{"remaining length of 5 bytes", []byte{typePublish << 4, 0xff, 0xff, 0xff, 0xff, 0x7f}, ErrMalformed},
		{"pubrel", []byte{typePubrel<<4 | 2, 2, 0, 1}, ErrMalformed},
		// a broker that shuts down or drops the client (mochi, MQTT 5
		// brokers): closed on purpose, not malformed
		{"disconnect", []byte{typeDisconnect << 4, 0}, ErrBrokerDisconnect},
		{"disconnect with an MQTT 5 reason code", []byte{typeDisconnect << 4, 1, 0x8b}, ErrBrokerDisconnect},
		{"disconnect with flags", []byte{typeDisconnect<<4 | 1, 0}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := fakeBroker(t, func(c net.Conn, r *bufio.Reader) {
				_, _ = c.Write(append([]byte{typeConnack << 4, 2, 0, 0}, tc.pkt...))
				_, _ = io.Copy(io.Discard, r)
			})
			c := New(Options{Brokers: []string{url}, ClientID: "victim", Timeout: 5 * time.Second, MaxPacketSize: 1024,
				OnMessage: func(string, []byte, bool) { t.Error("a bad packet reached the handler") }})
			cn := connect(t, c)
			select {
			case <-cn.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection survived a bad packet")
			}
			if !errors.Is(cn.Err(), tc.want) {
				t.Fatalf("err = %v, want %v", cn.Err(), tc.want)
			}
			if errors.Is(tc.want, ErrBrokerDisconnect) && errors.Is(cn.Err(), ErrMalformed) {
				t.Fatalf("err = %v: a DISCONNECT is not malformed", cn.Err())
			}
		})
	}
}

func TestWebsocketAndTLS(t *testing.T) {
	pki := brokertest.NewPKI(t)
	plain := startBroker(t, brokers.MQTTOptions{})
	defer closeBroker(plain)
	tlsB := startBroker(t, brokers.MQTTOptions{TLS: pki.ServerTLS(true)})
	defer closeBroker(tlsB)
	for _, tc := range []struct {
		name string
		b    *brokers.MQTT
		url  string
		tls  *tls.Config
	}{
		{"ws", plain, addWebsocket(t, plain, nil, "ws"), nil},
		{"wss", plain, addWebsocket(t, plain, pki.ServerTLS(false), "wss"), pki.ClientTLS()},
		{"ssl", tlsB, tlsB.URL(), pki.ClientTLS()},
		{"mqtts", tlsB, "mqtts://" + tlsB.Addr(), pki.ClientTLS()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := listen(t, tc.b.URL(), "sub-"+tc.name, "w/#", pki.ClientTLS())
			c := New(Options{Brokers: []string{"tcp://127.0.0.1:1", tc.url}, ClientID: "pub-" + tc.name, TLS: tc.tls, Timeout: 5 * time.Second})
			cn := connect(t, c)
			if cn.Broker != tc.url {
				t.Fatalf("connected to %s", cn.Broker)
			}
			big := string(bytes.Repeat([]byte("0123456789"), 20000)) // spans websocket messages
			publishAll(t, c, "w/"+tc.name, "small", big)
			if m := next(t, sub); m.payload != "small" {
				t.Fatalf("got %q", m.payload)
			}
			if m := next(t, sub); m.payload != big {
				t.Fatalf("got %d bytes", len(m.payload))
			}
		})
	}
}

// addWebsocket adds a websocket listener to the running broker and returns
// its URL.
func addWebsocket(t testing.TB, b *brokers.MQTT, tc *tls.Config, scheme string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	s := b.Server()
	l := listeners.NewWebsocket(listeners.Config{ID: scheme, Address: addr, TLSConfig: tc})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	s.Listeners.Serve(scheme, s.EstablishConnection)
	wait.For(t, 10*time.Second, "websocket listener", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return scheme + "://" + addr + "/"
}

func TestSubscribeRetainedFlag(t *testing.T) {
	b := startBroker(t, brokers.MQTTOptions{})
	defer closeBroker(b)
	c := New(Options{Brokers: []string{b.URL()}, ClientID: "keeper", Timeout: 5 * time.Second})
	connect(t, c)
	tr := c.NewTracker()
	tr.Reset(1)
	if err := c.Publish(tr, 0, "k/1", []byte("kept"), 1, true); err != nil {
		t.Fatal(err)
	}
	_ = c.Flush()
	waitAcked(t, tr, 1)
	tr.Release()
	sub := listen(t, b.URL(), "later", "k/+", nil)
	if m := next(t, sub); m != (received{"k/1", "kept", true}) {
		t.Fatalf("got %+v", m)
	}
	publishAll(t, c, "k/2", "live")
	// the broker may also deliver k/1 live to a subscription made while it
	// was still fanning k/1 out (after its PUBACK): a copy without the flag
	m := next(t, sub)
	if m == (received{"k/1", "kept", false}) {
		m = next(t, sub)
	}
	if m != (received{"k/2", "live", false}) {
		t.Fatalf("got %+v", m)
	}
}

// TestInteropMosquittoResend: against the machine's Mosquitto
// (SMELTER_INTEROP=1), messages swallowed before a connection loss are
// resent on the resumed session and acknowledged, and reach a subscriber.
func TestInteropMosquittoResend(t *testing.T) { //nolint:misspell // the broker's name
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test against the machine's Mosquitto: set SMELTER_INTEROP=1 (and SMELTER_MQTT_ADDR, default 127.0.0.1:1883)") //nolint:misspell // the broker's name
	}
	addr := os.Getenv("SMELTER_MQTT_ADDR")
	if addr == "" {
		addr = "127.0.0.1:1883"
	}
	id := fmt.Sprintf("smelter-it-%d", time.Now().UnixNano())
	topic := id + "/data"
	sub := listen(t, "tcp://"+addr, id+"-sub", topic, nil)
	p := newHoldProxy(t, addr)
	c := New(Options{Brokers: []string{p.url()}, ClientID: id, Timeout: 5 * time.Second})
	t.Cleanup(func() { // end the persistent session
		e := New(Options{Brokers: []string{"tcp://" + addr}, ClientID: id, CleanSession: true, Timeout: 5 * time.Second})
		if _, err := e.Connect(context.Background()); err == nil {
			e.Disconnect()
		}
	})
	cn := connect(t, c)
	p.hold(true)
	tr := c.NewTracker()
	tr.Reset(3)
	for i, pl := range []string{"one", "two", "three"} {
		if err := c.Publish(tr, i, topic, []byte(pl), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	p.cut()
	<-cn.Done()
	p.hold(false)
	if cn = connect(t, c); !cn.SessionPresent {
		t.Fatal("Mosquitto did not keep the session") //nolint:misspell // the broker's name
	}
	waitAcked(t, tr, 3)
	tr.Release()
	for _, want := range []string{"one", "two", "three"} {
		if m := next(t, sub); m.payload != want {
			t.Fatalf("got %q, want %q", m.payload, want)
		}
	}
}

// TestPingWhileWritingToSilentBroker: a broker that reads everything and
// answers nothing is found even while the client writes all the time (a
// ping goes out when nothing whole was read for half the keepalive).
func TestPingWhileWritingToSilentBroker(t *testing.T) {
	url := fakeBroker(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = c.Write([]byte{typeConnack << 4, 2, 0, 0})
		_, _ = io.Copy(io.Discard, r) // reads, never answers
	})
	c := New(Options{Brokers: []string{url}, ClientID: "writer", Keepalive: 200 * time.Millisecond, Timeout: 300 * time.Millisecond})
	cn := connect(t, c)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case <-cn.Done():
			done = true
		case <-tick.C:
			_ = c.Publish(nil, 0, "t", []byte("x"), 0, false)
			_ = c.Flush()
		case <-deadline:
			t.Fatal("a broker that never answers kept the connection up while the client wrote")
		}
	}
	if !errors.Is(cn.Err(), ErrPingTimeout) {
		t.Fatalf("err = %v, want ping timeout", cn.Err())
	}
}

// TestDropClosesWithoutDisconnect: Drop ends the connection with its error
// and sends no DISCONNECT (the broker keeps the session and the will).
func TestDropClosesWithoutDisconnect(t *testing.T) {
	got := make(chan byte, 4)
	url := fakeBroker(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = c.Write([]byte{typeConnack << 4, 2, 0, 0})
		rd := &reader{r: r, max: 1 << 20}
		for {
			h, err := readAny(rd)
			if err != nil {
				close(got)
				return
			}
			got <- h
		}
	})
	c := New(Options{Brokers: []string{url}, ClientID: "dropper", Timeout: time.Second})
	cn := connect(t, c)
	boom := errors.New("no PUBACK")
	c.Drop(boom)
	<-cn.Done()
	if !errors.Is(cn.Err(), boom) || c.Connected() {
		t.Fatalf("err = %v, connected %v", cn.Err(), c.Connected())
	}
	for h := range got {
		if h == typeDisconnect<<4 {
			t.Fatal("Drop sent DISCONNECT")
		}
	}
}

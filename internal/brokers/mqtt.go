package brokers

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// MQTTOptions configures an embedded mochi MQTT broker.
type MQTTOptions struct {
	Host string // default 127.0.0.1
	Port int    // 0 picks a random free port (kept across restarts)

	// Username and Password, when Username is set, are the only accepted
	// credentials; otherwise every client is allowed.
	Username string
	Password string

	TLS *tls.Config // optional; the listener then speaks TLS only

	// KeepSessions keeps sessions, subscriptions, in-flight QoS 1/2
	// messages and retained messages in memory across Close and Start, so a
	// restart looks like a broker with persistent storage.
	KeepSessions bool

	Log *slog.Logger // broker log; nil discards it

	// MaxPacketSize is the largest packet the broker accepts (bytes; 0: no
	// limit). A client that sends a larger one is disconnected.
	MaxPacketSize uint32
}

// MQTT is a running (or stopped) embedded mochi broker.
type MQTT struct {
	opts  MQTTOptions
	store *memStore // nil unless KeepSessions

	mu   sync.Mutex
	srv  *mqtt.Server
	port int
}

// StartMQTT starts the broker and returns once its listener is bound.
func StartMQTT(opts MQTTOptions) (*MQTT, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Username == "" && opts.Password != "" {
		return nil, errors.New("brokers: mqtt: Password without Username")
	}
	m := &MQTT{opts: opts, port: opts.Port}
	if opts.KeepSessions {
		m.store = newMemStore()
	}
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, nil
}

// Start starts the broker again after Close, on the same port.
func (m *MQTT) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		return errors.New("brokers: mqtt: already running")
	}
	log := m.opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mo := &mqtt.Options{Logger: log.With("broker", "mqtt"), InlineClient: true}
	if m.opts.MaxPacketSize > 0 {
		mo.Capabilities = mqtt.NewDefaultServerCapabilities()
		mo.Capabilities.MaximumPacketSize = m.opts.MaxPacketSize
	}
	s := mqtt.New(mo)
	var auth mqtt.Hook = &allowAll{}
	if m.opts.Username != "" {
		auth = &passwordAuth{user: []byte(m.opts.Username), pass: []byte(m.opts.Password)}
	}
	if err := s.AddHook(auth, nil); err != nil {
		return fmt.Errorf("brokers: mqtt: auth hook: %w", err)
	}
	if m.store != nil {
		if err := s.AddHook(&storeHook{st: m.store}, nil); err != nil {
			return fmt.Errorf("brokers: mqtt: store hook: %w", err)
		}
	}
	addr := net.JoinHostPort(m.opts.Host, strconv.Itoa(m.port))
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr, TLSConfig: m.opts.TLS})
	if err := s.AddListener(l); err != nil {
		return fmt.Errorf("brokers: mqtt: listen %s: %w", addr, err)
	}
	if err := s.Serve(); err != nil {
		_ = s.Close()
		return fmt.Errorf("brokers: mqtt: serve: %w", err)
	}
	if m.port == 0 {
		_, p, err := net.SplitHostPort(l.Address())
		if err == nil {
			m.port, _ = strconv.Atoi(p)
		}
	}
	m.srv = s
	return nil
}

// Close stops the broker; the port is kept for Start. Closing a stopped
// broker does nothing.
func (m *MQTT) Close() error {
	m.mu.Lock()
	s := m.srv
	m.srv = nil
	m.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Close()
}

// Disconnect closes the connection of the client with id id, as a broker
// that drops a client does; the client's session stays (it reconnects to
// it). It reports whether that client was connected. Unlike Restart it
// leaves the listener running, so clients connecting meanwhile are served.
func (m *MQTT) Disconnect(id string) bool {
	m.mu.Lock()
	s := m.srv
	m.mu.Unlock()
	if s == nil {
		return false
	}
	cl, ok := s.Clients.Get(id)
	if !ok || cl.Closed() {
		return false
	}
	cl.Stop(errors.New("brokers: mqtt: disconnected"))
	return true
}

// Restart is Close followed by Start.
func (m *MQTT) Restart() error {
	if err := m.Close(); err != nil {
		return err
	}
	return m.Start()
}

// Addr is host:port of the listener.
func (m *MQTT) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return net.JoinHostPort(m.opts.Host, strconv.Itoa(m.port))
}

// URL is tcp://host:port, or ssl://host:port with TLS.
func (m *MQTT) URL() string {
	if m.opts.TLS != nil {
		return "ssl://" + m.Addr()
	}
	return "tcp://" + m.Addr()
}

// Server returns the running mochi server (nil when stopped).
func (m *MQTT) Server() *mqtt.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srv
}

// DropClient disconnects the client with the given id without a protocol
// goodbye, so the broker publishes its will. It reports whether the client
// was connected.
func (m *MQTT) DropClient(id string) bool {
	s := m.Server()
	if s == nil {
		return false
	}
	cl, ok := s.Clients.Get(id)
	if !ok || cl.Closed() {
		return false
	}
	cl.Stop(errors.New("dropped by test broker"))
	return true
}

type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

// passwordAuth accepts exactly one username/password pair (compared in
// constant time; no wildcard semantics).
type passwordAuth struct {
	mqtt.HookBase
	user, pass []byte
}

func (h *passwordAuth) ID() string { return "password" }
func (h *passwordAuth) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *passwordAuth) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	u := subtle.ConstantTimeCompare(pk.Connect.Username, h.user)
	p := subtle.ConstantTimeCompare(pk.Connect.Password, h.pass)
	return u&p == 1
}
func (h *passwordAuth) OnACLCheck(cl *mqtt.Client, _ string, _ bool) bool {
	return bytes.Equal(cl.Properties.Username, h.user)
}

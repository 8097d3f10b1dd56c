// Package brokers runs the embedded brokers Smelter uses in tests, as the
// collector's default broker and in the demo: nats-server with JetStream and
// the mochi MQTT broker, in-process, bound to loopback by default. Both can
// be stopped and started again on the same port (and, for NATS, the same
// store directory), which is how tests simulate a broker outage.
package brokers

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures an embedded nats-server.
type NATSOptions struct {
	Host     string // default 127.0.0.1
	Port     int    // 0 picks a random free port (kept across restarts)
	StoreDir string // JetStream file store; required (tests pass t.TempDir())

	Username string // optional user/password authentication
	Password string
	Token    string // optional token authentication (exclusive with Username)

	TLS *tls.Config // optional; the listener then requires TLS
	// VerifyClients requires a client certificate signed by TLS.ClientCAs (mTLS).
	VerifyClients bool

	Log *slog.Logger // server log (notices, warnings, errors); nil discards it

	MaxPayload int32 // max_payload in bytes; 0: the server's default (1 MiB)

	ReadyTimeout time.Duration // how long Start waits for the listener; default 10s
}

// NATS is a running (or stopped) embedded nats-server.
type NATS struct {
	opts NATSOptions

	mu   sync.Mutex
	srv  *server.Server
	port int
}

// StartNATS starts a nats-server with JetStream and waits until it accepts
// connections.
func StartNATS(opts NATSOptions) (*NATS, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("brokers: nats: StoreDir is required for JetStream")
	}
	if opts.Username != "" && opts.Token != "" {
		return nil, errors.New("brokers: nats: Username and Token are exclusive")
	}
	if opts.VerifyClients && opts.TLS == nil {
		return nil, errors.New("brokers: nats: VerifyClients needs TLS")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Second
	}
	n := &NATS{opts: opts, port: opts.Port}
	if err := n.Start(); err != nil {
		return nil, err
	}
	return n, nil
}

// Start starts the server again after Shutdown, on the same port and store
// directory. Starting a running server is an error.
func (n *NATS) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return errors.New("brokers: nats: already running")
	}
	port := n.port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	so := &server.Options{
		ServerName:    "smelter-embedded",
		Host:          n.opts.Host,
		Port:          port,
		JetStream:     true,
		StoreDir:      n.opts.StoreDir,
		Username:      n.opts.Username,
		Password:      n.opts.Password,
		Authorization: n.opts.Token,
		NoSigs:        true,
		NoLog:         n.opts.Log == nil,
		MaxPayload:    n.opts.MaxPayload,
		// HTTP monitoring stays off; clients reconnect quickly in tests.
	}
	if n.opts.TLS != nil {
		so.TLS = true
		so.TLSConfig = n.opts.TLS.Clone()
		so.TLSVerify = n.opts.VerifyClients
		so.TLSTimeout = 2
		if n.opts.VerifyClients {
			so.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	s, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("brokers: nats: %w", err)
	}
	if n.opts.Log != nil {
		s.SetLoggerV2(&natsLogger{l: n.opts.Log.With("broker", "nats")}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(n.opts.ReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("brokers: nats: not ready for connections on %s:%d within %v", n.opts.Host, port, n.opts.ReadyTimeout)
	}
	if n.port == 0 {
		if a, ok := s.Addr().(*net.TCPAddr); ok {
			n.port = a.Port
		}
	}
	n.srv = s
	return nil
}

// Shutdown stops the server and waits until it is down. The port and store
// directory are kept for Start. Shutting down a stopped server does nothing.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart is Shutdown followed by Start.
func (n *NATS) Restart() error {
	n.Shutdown()
	return n.Start()
}

// Running reports whether the server is up.
func (n *NATS) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// Addr is host:port of the client listener.
func (n *NATS) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return net.JoinHostPort(n.opts.Host, strconv.Itoa(n.port))
}

// URL is the client URL: nats://host:port, or tls://host:port with TLS.
func (n *NATS) URL() string {
	scheme := "nats://"
	if n.opts.TLS != nil {
		scheme = "tls://"
	}
	return scheme + n.Addr()
}

// Server returns the running server (nil when stopped), for tests that
// need its internals.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// natsLogger adapts slog to nats-server's Logger.
type natsLogger struct{ l *slog.Logger }

func (g *natsLogger) Noticef(format string, v ...any) { g.l.Info(fmt.Sprintf(format, v...)) }
func (g *natsLogger) Warnf(format string, v ...any)   { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g *natsLogger) Fatalf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g *natsLogger) Errorf(format string, v ...any)  { g.l.Error(fmt.Sprintf(format, v...)) }
func (g *natsLogger) Debugf(format string, v ...any)  { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g *natsLogger) Tracef(format string, v ...any)  { g.l.Debug(fmt.Sprintf(format, v...)) }

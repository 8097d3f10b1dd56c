package brokertest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/smelterio/smelter/internal/brokers"
)

// NATS starts an embedded nats-server with o (its store in a test temp
// directory when o.StoreDir is empty) and shuts it down with the test.
func NATS(t testing.TB, o brokers.NATSOptions) *brokers.NATS {
	t.Helper()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	n, err := brokers.StartNATS(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// Server starts a nats-server with o as given (tests set Port -1, NoLog,
// NoSigs and what they exercise: nkeys, operators, limits, clusters),
// waits until it accepts connections and shuts it down with the test.
func Server(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server %s not ready in 10 s", o.ServerName)
	}
	return ns
}

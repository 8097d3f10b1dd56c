package brokertest

import (
	"testing"

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

package collector

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// An http.listen address in use, with the embedded NATS server: Run fails
// with the address named and leaves no goroutine behind that outlives its
// NATS connection (it used to panic in work after Run returned: the
// partition workers were started before the listen failed and were never
// awaited).
func TestRunListenInUseFailsCleanly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for range 3 {
		cfg := Defaults()
		cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = "", busy.Addr().String(), t.TempDir()
		c := newCollector(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := c.Run(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "http.listen "+busy.Addr().String()) {
			t.Fatalf("Run with http.listen in use: %v", err)
		}
		if c.Ready() {
			t.Fatal("ready after a failed Run")
		}
	}
}

package opcua

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/wait"
)

// TestConnectFailuresAreRateLimited: a server that is not there costs one
// "opc ua connect failed" line per ConnectLogEvery, however often the
// client retries (here every 20-50 ms).
func TestConnectFailuresAreRateLimited(t *testing.T) {
	var logs logtest.Buffer
	cfg := Config{Endpoint: "opc.tcp://127.0.0.1:1", DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond,
		BackoffMax: 50 * time.Millisecond, PublishInterval: 50 * time.Millisecond, Watchdog: 200 * time.Millisecond,
		RequestTimeout: time.Second}
	c, err := New("dev-1", cfg, []Point{{NodeID: "ns=2;s=x", Mode: ModePoll, PollInterval: 50 * time.Millisecond}},
		logs.Logger(slog.LevelDebug), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, newRecorder().emit) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	wait.For(t, 10*time.Second, "ten failed connects", func() bool { return testutil.ToFloat64(c.m.reconnects) >= 10 })
	if n := strings.Count(logs.String(), "opc ua connect failed"); n != 1 {
		t.Fatalf("%d connect-failure lines for %v attempts, want 1:\n%s", n, testutil.ToFloat64(c.m.reconnects), logs.String())
	}
}

package collector

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/wait"
)

// TestWorkerRestartingLogsError: a partition worker that keeps stopping on
// the same condition (here: its consumer's name is taken by a push
// consumer, which a pull consumer cannot replace) is logged at WARN the
// first time and at ERROR from the first retry on; before, every restart
// was a WARN and a collector that evaluated nothing for ever looked
// healthy in an ERROR-level alerting.
func TestWorkerRestartingLogsError(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	first := startCfg(t, cfg) // creates the stream and the consumer
	js := jsClient(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := cfg.consumerName(-1)
	wait.For(t, 10*time.Second, "the consumer created", func() bool { _, err := js.Consumer(ctx, cfg.NATS.Stream, name); return err == nil })
	first.stop()
	if err := js.DeleteConsumer(ctx, cfg.NATS.Stream, name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, cfg.NATS.Stream, jetstream.ConsumerConfig{Durable: name, DeliverSubject: "elsewhere", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	var lb logtest.Buffer
	c := newCollectorLog(t, cfg, &lb)
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { stop(); <-done }()
	stopped := func(level string) func() bool {
		return func() bool {
			for _, l := range strings.Split(lb.String(), "\n") {
				if strings.Contains(l, "level="+level) && strings.Contains(l, `msg="partition worker stopped"`) {
					return true
				}
			}
			return false
		}
	}
	wait.For(t, 10*time.Second, "a worker stop logged at WARN", stopped("WARN"))
	wait.For(t, 10*time.Second, "the next one logged at ERROR", stopped("ERROR"))
	if n := strings.Count(lb.String(), "level=WARN msg=\"partition worker stopped\""); n != 1 {
		t.Errorf("%d worker stops logged at WARN, want the first only:\n%s", n, lb.String())
	}
}

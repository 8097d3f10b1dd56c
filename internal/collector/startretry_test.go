package collector

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/wait"
)

// A collector started while its JetStream cluster cannot create the stream
// yet (one node of three up: no meta leader) retries within StartTimeout
// instead of exiting, and becomes ready once the other nodes join.
func TestRunRetriesStreamUntilClusterReady(t *testing.T) {
	ports := freePorts(t, 3)
	node := func(i int) *server.Server { return startNode(t, "smelter-retry", ports, i) }
	first := node(0)

	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = first.ClientURL(), "", t.TempDir()
	cfg.Cluster.Replicas = 3
	c := newCollector(t, cfg)
	var retries atomic.Int64
	c.onStartRetry = func(error) { retries.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	wait.For(t, 30*time.Second, "a retried stream creation", func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run gave up while the cluster formed: %v", err)
		default:
		}
		return retries.Load() > 0
	})
	node(1)
	node(2)
	wait.For(t, StartTimeout, "collector ready once the cluster formed", func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run ended: %v", err)
		default:
		}
		return c.Ready()
	})
}

// TestTransientNoPeers: while a cluster forms, stream creation can answer
// 400 "no suitable peers for placement, peer offline" (10005) after the
// meta leader exists and before the joined nodes are current; the start
// retries it (TestRunRetriesStreamUntilClusterReady failed on it once under
// load) and still gives up at once on a configuration conflict.
func TestTransientNoPeers(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{fmt.Errorf("collector: stream SMELTER: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005}), true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}, false},
		{errors.New("other"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

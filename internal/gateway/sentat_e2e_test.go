package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestGatewaySentAtOnItsDataClock: the gateway gives its NATS uplink its
// data clock (Options.Now), so every message's Smelter-Sent-At is the
// publish time on the clock that stamped its ts_gw (here 2 h behind the
// wall clock, as the demo's plant clock), never before that ts_gw. The
// collector measures the gateway clock's lead by it; on the wall clock
// (the uplink's default) a gateway whose data clock differs would be
// measured wrong by the difference. Fails without natsjs.WithClock in New.
func TestGatewaySentAtOnItsDataClock(t *testing.T) {
	r := newRig(t, "")
	t0 := time.Now().Add(-2 * time.Hour)
	start := time.Now()
	now := func() time.Time { return t0.Add(time.Since(start)) }
	runGatewayWith(t, r.cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t), Now: now}, nil)

	type msg struct {
		subject string
		sentAt  string
		tsgw    int64
	}
	var mu sync.Mutex
	var got []msg
	nc, err := nats.Connect(r.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var cons jetstream.Consumer
	wait.For(t, 10*time.Second, "the gateway to create stream SMELTER", func() bool {
		cons, err = js.OrderedConsumer(context.Background(), "SMELTER", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"smelter.v1.*.*.*.data"}})
		return err == nil
	})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		b, err := telemetry.DecodeBatch(m.Data())
		if err != nil {
			t.Errorf("undecodable batch: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, msg{m.Subject(), m.Headers().Get(telemetry.SentAtHeader), b.TSGW})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	wait.For(t, 15*time.Second, "3 batches", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	end := now().UnixMilli()
	mu.Lock()
	defer mu.Unlock()
	for _, m := range got {
		at, ok := telemetry.ParseSentAt(m.sentAt)
		if !ok || at < m.tsgw || at > end {
			t.Errorf("%s: %s %q, want the data clock at publish: between its ts_gw %d and %d (the wall clock is 2 h ahead)",
				m.subject, telemetry.SentAtHeader, m.sentAt, m.tsgw, end)
		}
	}
}

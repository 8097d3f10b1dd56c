package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/wait"
)

// TestMQTTSharedSubscription runs two collector replicas on one shared
// subscription group against a real broker: every message is handled by
// exactly one of them and none is lost.
func TestMQTTSharedSubscription(t *testing.T) {
	mb, err := brokers.StartMQTT(brokers.MQTTOptions{KeepSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mb.Close() })

	var mu sync.Mutex
	seen := map[string][]string{} // payload -> replicas that handled it
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, name := range []string{"replica-a", "replica-b"} {
		src := &MQTT{Options: paho.NewClientOptions().AddBroker(mb.URL()).SetClientID(name), Group: "collectors",
			Log: slog.New(slog.DiscardHandler)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = src.Run(ctx, func(_ context.Context, subject string, data []byte) error {
				mu.Lock()
				defer mu.Unlock()
				if subject != "smelter.v1.s1.motor.m1.data" {
					return fmt.Errorf("unexpected subject %s", subject)
				}
				seen[string(data)] = append(seen[string(data)], name)
				return nil
			})
		}()
	}
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(mb.URL()).SetClientID("gateway"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	// wait until both replicas subscribed: a probe message reaches one of them
	wait.For(t, 10*time.Second, "the replicas to subscribe", func() bool {
		pub.Publish("smelter/v1/s1/motor/m1/data", 1, false, "probe").WaitTimeout(time.Second)
		mu.Lock()
		defer mu.Unlock()
		return len(seen["probe"]) > 0
	})
	const n = 200
	for i := range n {
		if tok := pub.Publish("smelter/v1/s1/motor/m1/data", 1, false, fmt.Sprintf("msg-%d", i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	wait.For(t, 20*time.Second, "every message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range n {
			if len(seen[fmt.Sprintf("msg-%d", i)]) == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	per := map[string]int{}
	for i := range n {
		hs := seen[fmt.Sprintf("msg-%d", i)]
		if len(hs) != 1 {
			t.Errorf("msg-%d handled by %v, want exactly one replica", i, hs)
		}
		per[hs[0]]++
	}
	if per["replica-a"] == 0 || per["replica-b"] == 0 {
		t.Errorf("the shared subscription did not spread the load: %v", per)
	}
}

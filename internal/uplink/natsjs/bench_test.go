package natsjs

import (
	"context"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// BenchmarkPublish1000 publishes slices of 1000 envelopes of 10 KB (about a
// 100-reading batch each) to embedded JetStream (file storage) and waits for
// every PubAck. Message ids are fresh each round so nothing is deduplicated.
func BenchmarkPublish1000(b *testing.B) {
	srv := startNATS(b, brokers.NATSOptions{})
	r := runUplink(b, Config{URL: srv.URL(), Timeout: 30 * time.Second}, nil)
	wait.For(b, 10*time.Second, "uplink ready", r.u.Ready)
	ctx := context.Background()
	b.SetBytes(1000 * 10 * 1024)
	b.ReportAllocs()
	msgs := envelopes("gw-bench", 1, 1000, 10*1024)
	round := 0
	for b.Loop() {
		b.StopTimer()
		for i := range msgs {
			msgs[i].MsgID = telemetry.MsgID("gw-bench", uint64(round*1000+i))
		}
		round++
		b.StartTimer()
		if err := r.u.Publish(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(round*1000)/b.Elapsed().Seconds(), "msgs/s")
}

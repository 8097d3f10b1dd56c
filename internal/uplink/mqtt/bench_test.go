package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/wait"
)

// BenchmarkPublish1000 publishes slices of 1000 envelopes of 10 KB (about a
// 100-reading batch each) to the embedded mochi broker at QoS 1 and waits
// for every PUBACK.
func BenchmarkPublish1000(b *testing.B) {
	br := startMQTT(b, brokers.MQTTOptions{})
	r := runUplink(b, Config{URL: br.URL(), Timeout: 30 * time.Second}, nil)
	wait.For(b, 10*time.Second, "uplink ready", r.u.Ready)
	msgs := envelopes("gw-test", 1, 1000, 10*1024)
	ctx := context.Background()
	b.SetBytes(int64(len(msgs) * 10 * 1024))
	b.ReportAllocs()
	for b.Loop() {
		if err := r.u.Publish(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}

package spool

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkJetStream is the engine DESIGN.md recommends for the spool, run
// the way the gateway would embed it: an in-process nats-server with a
// file-storage stream (size limit, discard old), the gateway publishing
// each batch and waiting for the PubAck (the durability point that matches
// Append returning), and an ordered consumer reading it back. Process CPU
// includes the embedded server. Compare with BenchmarkLive/BenchmarkAppend.
func BenchmarkJetStream(b *testing.B) {
	for _, mode := range []string{"sync", "async"} {
		for _, sync := range []string{"default", "always"} {
			b.Run(mode+"/fsync-"+sync, func(b *testing.B) { benchJetStream(b, mode == "async", sync == "always") })
		}
	}
}

func benchJetStream(b *testing.B, async, syncAlways bool) {
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(),
		NoLog: true, NoSigs: true, SyncAlways: syncAlways,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	b.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SPOOL", Subjects: []string{"spool.>"}, Storage: jetstream.FileStorage,
		MaxBytes: 8 << 30, Discard: jetstream.DiscardOld, Duplicates: 0,
	}); err != nil {
		b.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, "SPOOL", jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(it.Stop)
	buf := make([]byte, 0, benchRecord+64)
	const window = 100
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	cpu0, start, n := cpuTime(), time.Now(), 0
	var seq uint64
	read := func() {
		msg, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		if len(msg.Data()) < benchRecord-100 {
			b.Fatalf("short message %d", len(msg.Data()))
		}
	}
	if !async {
		for b.Loop() {
			seq++
			buf = encodeBench(seq, buf[:0])
			if _, err := js.Publish(ctx, "spool.site.cls.asset.data", buf); err != nil {
				b.Fatal(err)
			}
			read()
			n++
		}
	} else {
		// Best case for JetStream: a window of publishes in flight, then
		// the consumer drains them.
		var pending int
		for b.Loop() {
			seq++
			buf = encodeBench(seq, buf[:0])
			if _, err := js.PublishAsync("spool.site.cls.asset.data", append([]byte(nil), buf...)); err != nil {
				b.Fatal(err)
			}
			pending++
			n++
			if pending == window {
				<-js.PublishAsyncComplete()
				for range pending {
					read()
				}
				pending = 0
			}
		}
		<-js.PublishAsyncComplete()
		for range pending {
			read()
		}
	}
	reportCPU(b, cpu0, start, n)
}

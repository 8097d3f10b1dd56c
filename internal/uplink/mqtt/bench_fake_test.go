package mqtt

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/wait"
)

// ackBroker is a minimal MQTT 3.1.1 peer for benchmarks: it accepts
// connections, answers CONNECT with CONNACK, PUBLISH at QoS 1 with PUBACK
// and PINGREQ with PINGRESP, and drops everything else. It allocates
// nothing per packet, so a benchmark against it measures the client.
func ackBroker(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveAcks(c)
		}
	}()
	return "tcp://" + ln.Addr().String()
}

func serveAcks(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	var hdr [2]byte
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		rem := 0
		for mul := 1; ; mul *= 128 {
			d, err := r.ReadByte()
			if err != nil {
				return
			}
			rem += int(d&0x7f) * mul
			if d&0x80 == 0 {
				break
			}
		}
		switch h >> 4 {
		case 1: // CONNECT
			_, _ = w.Write([]byte{0x20, 2, 0, 0}) // once per connection
		case 3: // PUBLISH
			if (h>>1)&3 == 0 {
				break
			}
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			n := int(hdr[0])<<8 | int(hdr[1])
			if _, err := r.Discard(n); err != nil {
				return
			}
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			rem -= 4 + n
			_ = w.WriteByte(0x40)
			_ = w.WriteByte(2)
			_ = w.WriteByte(hdr[0])
			_ = w.WriteByte(hdr[1])
		case 12: // PINGREQ
			_ = w.WriteByte(0xd0)
			_ = w.WriteByte(0)
		}
		if _, err := r.Discard(rem); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// BenchmarkPublish1000AckBroker is BenchmarkPublish1000 against ackBroker:
// the allocations are the uplink's and its client's only.
func BenchmarkPublish1000AckBroker(b *testing.B) {
	r := runUplink(b, Config{URL: ackBroker(b), Timeout: 30 * time.Second}, nil)
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

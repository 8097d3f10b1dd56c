package mqtt

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/uplink"
	"github.com/smelterio/smelter/internal/wait"
)

// TestOversizedPacketRejectedNotSent: a message whose packet exceeds
// max_packet_size fails Publish with a RejectedError naming it, without
// being sent (the broker, which disconnects a client sending a packet over
// its limit, keeps the connection); messages that fit still go.
func TestOversizedPacketRejectedNotSent(t *testing.T) {
	const maxPacket = 4096
	b := startMQTT(t, brokers.MQTTOptions{MaxPacketSize: maxPacket})
	r := runUplink(t, Config{URL: b.URL(), MaxPacketSize: maxPacket}, nil)
	wait.For(t, 10*time.Second, "connected", r.u.Ready)
	if got := r.u.MaxPayload(); got != maxPacket-TopicReserve {
		t.Fatalf("MaxPayload %d", got)
	}
	fits := envelopes("gw-test", 1, 1, r.u.MaxPayload())
	big := envelopes("gw-test", 2, 1, maxPacket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.u.Publish(ctx, append(fits, big...))
	var rej *uplink.RejectedError
	if !errors.As(err, &rej) || !errors.Is(err, uplink.ErrRejected) || rej.MsgID != big[0].MsgID || rej.Reason != uplink.ReasonTooLarge {
		t.Fatalf("publish of an oversized message: %v", err)
	}
	publish(t, r.u, fits)
	if !r.u.Ready() || metricValue(r.m.Reconnects) != 0 {
		t.Fatal("the connection was lost: the oversized packet reached the broker")
	}
}

// TestMalformedIncomingPacketCounted: a packet from the broker that breaks
// the protocol (here a PUBLISH whose topic is longer than the packet) closes
// the connection with a logged error and counts as an uplink error.
func TestMalformedIncomingPacketCounted(t *testing.T) {
	url := oneConnectionBroker(t, func(c net.Conn) {
		_, _ = c.Write([]byte{0x20, 2, 0, 0, 0x30, 4, 0, 9, 'a', 'b'})
	})
	logs := &logtest.Buffer{}
	r := runUplink(t, Config{URL: url}, logs.Logger(slog.LevelDebug))
	wait.For(t, 10*time.Second, "the protocol error counted", func() bool { return metricValue(r.m.Errors) >= 1 })
	if out := logs.String(); !strings.Contains(out, "mqtt protocol error") || !strings.Contains(out, "malformed packet") {
		t.Fatalf("not logged:\n%s", out)
	}
}

// TestSubscriptionRenewedAfterReconnect: a command subscription made once
// works again after a broker restart that lost the session (and with it
// the subscription): the uplink subscribes again on every connect.
func TestSubscriptionRenewedAfterReconnect(t *testing.T) {
	b := startMQTT(t, brokers.MQTTOptions{})
	r := runUplink(t, Config{URL: b.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	const topic = "smelter/v1/plant/generic/ac-1/cmd"
	got := make(chan string, 100)
	r.u.Subscribe(topic, func(_ string, payload []byte, _ bool) { got <- string(payload) })
	pub := subscribe(t, b.URL(), "commander", true, "", nil)
	sendUntil := func(what, payload string) {
		wait.For(t, 10*time.Second, what, func() bool {
			pub.c.Publish(topic, 0, false, []byte(payload)).WaitTimeout(time.Second)
			select {
			case p := <-got:
				return p == payload
			case <-time.After(200 * time.Millisecond):
				return false
			}
		})
	}
	sendUntil("a command before the restart", "before")
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	pub = subscribe(t, b.URL(), "commander-2", true, "", nil)
	wait.For(t, 10*time.Second, "reconnected", func() bool { return metricValue(r.m.Reconnects) == 1 && r.u.Ready() })
	sendUntil("a command after the reconnect", "after")
}

// TestNoPubackDropsConnection: a broker that answers pings but never
// acknowledges a PUBLISH fails Publish within the timeout, and the uplink
// drops that connection and connects again (the session resends on the
// new one) instead of keeping a connection that never confirms anything.
func TestNoPubackDropsConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				first := true
				for {
					h, err := r.ReadByte()
					if err != nil {
						return
					}
					rem, mul := 0, 1
					for {
						d, err := r.ReadByte()
						if err != nil {
							return
						}
						rem += int(d&0x7f) * mul
						mul *= 128
						if d&0x80 == 0 {
							break
						}
					}
					if _, err := r.Discard(rem); err != nil {
						return
					}
					switch {
					case first: // CONNECT: accepted, session present
						first = false
						_, _ = c.Write([]byte{0x20, 2, 1, 0})
					case h == 0xc0: // PINGREQ: answered
						_, _ = c.Write([]byte{0xd0, 0})
					} // PUBLISH: never acknowledged
				}
			}()
		}
	}()
	r := runUplink(t, Config{URL: "tcp://" + ln.Addr().String(), Timeout: 300 * time.Millisecond}, nil)
	wait.For(t, 10*time.Second, "connected", r.u.Ready)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.u.Publish(ctx, envelopes("gw-test", 1, 1, 100)); err == nil || !strings.Contains(err.Error(), "no PUBACK") {
		t.Fatalf("publish to a broker that never acknowledges: %v", err)
	}
	wait.For(t, 10*time.Second, "a new connection", func() bool { return conns.Load() >= 2 })
}

// TestIncomingPacketBounded: whatever max_packet_size lets the gateway
// send, a packet from the broker above MaxIncomingPacket closes the
// connection (counted) before it is buffered.
func TestIncomingPacketBounded(t *testing.T) {
	url := oneConnectionBroker(t, func(c net.Conn) {
		// CONNACK, then a PUBLISH announcing MaxIncomingPacket+1 bytes
		n := MaxIncomingPacket + 1
		hdr := []byte{0x20, 2, 0, 0, 0x30}
		for {
			d := byte(n & 0x7f)
			if n >>= 7; n > 0 {
				d |= 0x80
			}
			hdr = append(hdr, d)
			if n == 0 {
				break
			}
		}
		_, _ = c.Write(hdr)
	})
	r := runUplink(t, Config{URL: url, MaxPacketSize: 16 << 20}, nil)
	wait.For(t, 10*time.Second, "the oversized incoming packet counted", func() bool { return metricValue(r.m.Errors) >= 1 })
}

// oneConnectionBroker accepts one connection, reads the CONNECT, runs
// serve, then reads and discards until the client goes; it returns the
// broker's URL.
func oneConnectionBroker(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		if _, err := c.Read(buf); err != nil { // the CONNECT
			return
		}
		serve(c)
		_, _ = io.Copy(io.Discard, c)
	}()
	return "tcp://" + ln.Addr().String()
}

package mqtt

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
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

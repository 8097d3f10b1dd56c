package natsjs

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
	"github.com/smelterio/smelter/internal/wait"
)

// TestOverMaxPayloadRejected: MaxPayload follows the server's max_payload,
// and a message over it fails Publish with a RejectedError naming it (not
// a retryable error); a message that fits is stored.
func TestOverMaxPayloadRejected(t *testing.T) {
	const maxPayload = 8192
	srv := startNATS(t, brokers.NATSOptions{MaxPayload: maxPayload})
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	if got := r.u.MaxPayload(); got != maxPayload-HeaderReserve {
		t.Fatalf("MaxPayload %d, want %d", got, maxPayload-HeaderReserve)
	}
	big := envelopes("gw-test", 1, 1, maxPayload)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.u.Publish(ctx, big)
	var rej *uplink.RejectedError
	if !errors.As(err, &rej) || rej.MsgID != big[0].MsgID || rej.Reason != uplink.ReasonTooLarge {
		t.Fatalf("publish over max_payload: %v", err)
	}
	publish(t, r.u, envelopes("gw-test", 2, 1, r.u.MaxPayload()))
}

// TestOverStreamMaxMsgSizeRejected: a stream with max_msg_size refuses a
// larger message in its PubAck; Publish reports it as rejected, so the
// caller sets it aside instead of retrying it for ever.
func TestOverStreamMaxMsgSizeRejected(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: telemetry.TelemetryStreamSubjects("*"),
		MaxMsgSize: 1024, Duplicates: DuplicateWindow}); err != nil {
		t.Fatal(err)
	}
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	big := envelopes("gw-test", 1, 1, 2000)
	err = r.u.Publish(ctx, big)
	var rej *uplink.RejectedError
	if !errors.As(err, &rej) || rej.MsgID != big[0].MsgID {
		t.Fatalf("publish over the stream's max_msg_size: %v", err)
	}
	publish(t, r.u, envelopes("gw-test", 2, 1, 500))
}

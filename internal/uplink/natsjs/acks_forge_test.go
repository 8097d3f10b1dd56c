package natsjs

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestForgedAckForAnUnseenMessage (review8 R8-F1): another client
// of the server that sees one of the uplink's messages (it may subscribe
// to some telemetry subjects, or is any client allowed to publish to
// _INBOX.>) learns the reply prefix, and since the sequences are
// consecutive it can answer the next message, which it never saw, with a
// PubAck. The uplink then reports that message stored (the forwarder
// commits it and never sends it again) although no stream ever had it.
// Each message's reply subject now carries a random token of its own: the
// forged replies are unmatched and the message is never taken as stored.
func TestForgedAckForAnUnseenMessage(t *testing.T) {
	r := newAckRig(t, 64, 2*time.Second)
	// the hidden subject has a subscriber that never answers: the message
	// is sent, delivered, and never stored (a stream that is slow, full,
	// or whose leader is gone)
	sink, _ := client(t, r.srv.URL())
	if _, err := sink.Subscribe("hidden.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}
	msgs := []telemetry.Envelope{
		{Subject: "fake.0", MsgID: telemetry.MsgID("gw-ack", 1), Data: []byte(`{"i":0}`)},
		{Subject: "hidden.1", MsgID: telemetry.MsgID("gw-ack", 2), Data: []byte(`{"i":1}`)},
	}
	ch := r.publishAsync(context.Background(), msgs)
	seen := r.take(t, 1)[0] // the forger sees only fake.0
	seq, token, ok := parseReply(seen.Reply, r.a.prefix)
	if !ok {
		t.Fatalf("reply subject %q", seen.Reply)
	}
	// answer the seen message honestly, and forge the next message's reply
	// from it: its sequence is the next, its token unknown
	r.answer(t, seen.Reply, fmt.Sprintf(stored, 1))
	next := r.a.prefix + strconv.FormatUint(seq+1, 10)
	for _, forged := range []string{next, next + "_" + strconv.FormatUint(token, 36), next + "_" + strconv.FormatUint(token+1, 36),
		next + "_0", next + "_" + strconv.FormatUint(^uint64(0), 36)} {
		r.answer(t, forged, fmt.Sprintf(stored, 2))
	}
	res := result(t, ch)
	if res.err == nil {
		t.Fatalf("publish returned nil: %s (never stored, never seen by the forger) was taken as acknowledged by a reply the forger computed from %s",
			msgs[1].MsgID, seen.Reply)
	}
}

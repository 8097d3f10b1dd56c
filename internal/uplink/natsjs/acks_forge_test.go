package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
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

// TestAckOfAnotherStreamIsNotStored (review8 F2): a reply on a message's
// own reply subject (a client that sees the message sees its reply
// subject) that is a PubAck of another stream than the configured one is
// no proof the configured stream stored the message: the Publish fails
// with ErrWrongStream naming the message, the reply is counted, and the
// message is not reported stored (the forwarder commits nothing; the
// record stays in the spool and is sent again).
func TestAckOfAnotherStreamIsNotStored(t *testing.T) {
	for _, body := range []string{`{"stream":"OTHER","seq":2}`, `{"stream":"FAK","seq":2}`, `{"stream":"FAKE ","seq":2}`,
		`{"stream":"fake","seq":2}`, `{"stream":"OTHER","seq":2,"duplicate":true}`, `{"stream":"FAKE","seq":2,"stream":"OTHER"}`,
		`{"stream":"F\u0041KEX","seq":2}`} {
		t.Run(body, func(t *testing.T) {
			r := newAckRig(t, 64, 5*time.Second)
			msgs := fakeEnvelopes(3)
			ch := r.publishAsync(context.Background(), msgs)
			got := r.take(t, 3)
			// the wrong stream's reply last: the Publish returns on it,
			// and a reply handled after that finds no call (unmatched)
			r.answer(t, got[0].Reply, fmt.Sprintf(stored, 1))
			r.answer(t, got[2].Reply, fmt.Sprintf(stored, 3))
			r.answer(t, got[1].Reply, body)
			res := result(t, ch)
			if !errors.Is(res.err, ErrWrongStream) || !strings.Contains(res.err.Error(), msgs[1].MsgID) {
				t.Fatalf("publish with %s answering %s: %v, want ErrWrongStream naming it", body, msgs[1].MsgID, res.err)
			}
			if got := testutil.ToFloat64(r.m.WrongStreamAcks); got != 1 {
				t.Errorf("wrong stream acks counted %v, want 1", got)
			}
			if got := testutil.ToFloat64(r.m.UnmatchedAcks); got != 0 {
				t.Errorf("unmatched acks %v, want 0: the reply answered its message", got)
			}
		})
	}
}

// TestAckOfAnotherStreamCapturingTheSubjects: after the uplink checked its
// stream, the stream is changed to capture other subjects and a stream
// OTHER captures the telemetry subjects (JetStream forbids two streams
// with overlapping subjects, so this is how another stream's PubAck comes
// back from the server itself). OTHER stores the messages, the configured
// stream does not: the Publish fails with ErrWrongStream, so the
// forwarder keeps the records in the spool; once the configured stream
// captures the subjects again, the same messages are published again and
// stored there.
func TestAckOfAnotherStreamCapturingTheSubjects(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	first := envelopes("gw-test", 1, 5, 64)
	publish(t, r.u, first)

	_, js := client(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	own := st.CachedInfo().Config
	moved := own
	moved.Subjects = []string{"elsewhere.>"}
	if _, err := js.UpdateStream(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: own.Subjects, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}

	next := envelopes("gw-test", 6, 5, 64)
	err = r.u.Publish(ctx, next)
	if !errors.Is(err, ErrWrongStream) || !strings.Contains(err.Error(), `"OTHER"`) {
		t.Fatalf("publish acknowledged by stream OTHER: %v, want ErrWrongStream naming it", err)
	}
	if got := testutil.ToFloat64(r.m.WrongStreamAcks); got < 1 {
		t.Errorf("wrong stream acks counted %v, want at least 1", got)
	}
	checkStream(t, readStream(t, js, DefaultStream), first)
	// Publish returns at the first wrong acknowledgement: the messages
	// after it may or may not have been sent (and stored by OTHER) by then,
	// so OTHER holds at least that one and at most all of them; none is in
	// the configured stream, and the retry below stores them all there
	if got := len(readStream(t, js, "OTHER")); got < 1 || got > len(next) {
		t.Fatalf("OTHER holds %d messages, want 1..%d", got, len(next))
	}

	// the configured stream captures the subjects again: the retry stores
	// every message there
	if err := js.DeleteStream(ctx, "OTHER"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(ctx, own); err != nil {
		t.Fatal(err)
	}
	publish(t, r.u, next)
	checkStream(t, readStream(t, js, DefaultStream), append(first, next...))
}

package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
	"github.com/smelterio/smelter/internal/wait"
)

// ackRig is an acks on a real connection whose messages (on fake.>, which
// no stream captures) are answered by the test instead of JetStream.
type ackRig struct {
	a   *acks
	m   *Metrics
	srv *brokers.NATS
	nc  *nats.Conn // the responder's connection
	got chan *nats.Msg
}

func newAckRig(t *testing.T, maxPending int, timeout time.Duration) *ackRig {
	t.Helper()
	srv := startNATS(t, brokers.NATSOptions{})
	pubNC, _ := client(t, srv.URL())
	respNC, _ := client(t, srv.URL())
	r := &ackRig{m: NewMetrics(nil), srv: srv, nc: respNC, got: make(chan *nats.Msg, 1024)}
	sub, err := respNC.ChanSubscribe("fake.>", r.got)
	if err != nil {
		t.Fatal(err)
	}
	if err := respNC.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	a, err := newAcks(pubNC, fakeStream, maxPending, timeout, r.m, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.close(errors.New("test over")) })
	r.a = a
	return r
}

func fakeEnvelopes(n int) []telemetry.Envelope {
	out := make([]telemetry.Envelope, n)
	for i := range out {
		out[i] = telemetry.Envelope{Subject: fmt.Sprintf("fake.%d", i), MsgID: telemetry.MsgID("gw-ack", uint64(i+1)), Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}
	}
	return out
}

// take receives n messages the publisher sent.
func (r *ackRig) take(t *testing.T, n int) []*nats.Msg {
	t.Helper()
	out := make([]*nats.Msg, 0, n)
	for len(out) < n {
		select {
		case m := <-r.got:
			out = append(out, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("received %d of %d messages", len(out), n)
		}
	}
	return out
}

func (r *ackRig) answer(t *testing.T, reply, body string) {
	t.Helper()
	if err := r.nc.Publish(reply, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

type pubResult struct {
	dups int
	err  error
}

func (r *ackRig) publishAsync(ctx context.Context, msgs []telemetry.Envelope) <-chan pubResult {
	ch := make(chan pubResult, 1)
	go func() {
		d, err := r.a.publish(ctx, msgs)
		ch <- pubResult{d, err}
	}()
	return ch
}

func result(t *testing.T, ch <-chan pubResult) pubResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("publish did not return")
	}
	return pubResult{}
}

// fakeStream is the stream the ack rig's uplink is configured with.
const fakeStream = "FAKE"

const stored = `{"stream":"FAKE","seq":%d}`

// Replies answered out of order are each tied to their own message, by the
// sequence in their subject; a duplicate PubAck counts as a duplicate.
func TestAcksTieRepliesToTheirMessages(t *testing.T) {
	r := newAckRig(t, 64, 10*time.Second)
	msgs := fakeEnvelopes(10)
	ch := r.publishAsync(context.Background(), msgs)
	got := r.take(t, 10)
	for i := len(got) - 1; i >= 0; i-- {
		m := got[i]
		if m.Header.Get(jetstream.MsgIDHeader) != msgs[i].MsgID || string(m.Data) != string(msgs[i].Data) || m.Subject != msgs[i].Subject {
			t.Fatalf("message %d on the wire: %s %q %q", i, m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Data)
		}
		body := fmt.Sprintf(stored, i+1)
		if i == 3 {
			body = `{"stream":"FAKE","seq":4,"duplicate":true}`
		}
		r.answer(t, m.Reply, body)
	}
	res := result(t, ch)
	if res.err != nil || res.dups != 1 {
		t.Fatalf("publish = %d duplicates, %v; want 1, nil", res.dups, res.err)
	}
	if n := testutil.ToFloat64(r.m.UnmatchedAcks); n != 0 {
		t.Fatalf("%v unmatched replies", n)
	}
}

// A reply that answers no waiting message (a second answer, an answer after
// its call timed out, a sequence never sent, a subject not of ours) is
// counted and dropped: it never completes another message.
func TestAcksUnmatchedRepliesAreDropped(t *testing.T) {
	r := newAckRig(t, 4, 300*time.Millisecond)
	msgs := fakeEnvelopes(4)

	// 1. the call times out: its replies come late
	ch := r.publishAsync(context.Background(), msgs)
	late := r.take(t, 4)
	res := result(t, ch)
	if res.err == nil || !strings.Contains(res.err.Error(), "no ack within") || !strings.Contains(res.err.Error(), msgs[0].MsgID) {
		t.Fatalf("publish without replies = %v", res.err)
	}
	// the next call reuses no sequence of the first: its messages are not
	// completed by the late replies, and max_pending (4) was given back
	ch = r.publishAsync(context.Background(), msgs)
	now := r.take(t, 4)
	for _, m := range late {
		r.answer(t, m.Reply, fmt.Sprintf(stored, 1))
	}
	wait.For(t, 10*time.Second, "4 late replies counted", func() bool { return testutil.ToFloat64(r.m.UnmatchedAcks) == 4 })
	select {
	case res := <-ch:
		t.Fatalf("the second call returned %v on the first call's late replies", res.err)
	default:
	}
	// 2. answered twice; a sequence never sent; subjects not of ours
	for _, m := range now {
		r.answer(t, m.Reply, fmt.Sprintf(stored, 2))
		r.answer(t, m.Reply, `{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}`)
	}
	r.answer(t, r.a.prefix+"999999", fmt.Sprintf(stored, 3))
	r.answer(t, r.a.prefix+"007", fmt.Sprintf(stored, 3))
	r.answer(t, r.a.prefix+"x", fmt.Sprintf(stored, 3))
	if res := result(t, ch); res.err != nil {
		t.Fatalf("second call: %v", res.err)
	}
	wait.For(t, 10*time.Second, "11 unmatched replies", func() bool { return testutil.ToFloat64(r.m.UnmatchedAcks) == 4+4+3 })
}

// A stream's error reply fails the call naming its message: a message over
// the stream's max_msg_size is rejected for good (RejectedError); an
// answer that is no PubAck is an error, never taken as an acknowledgement.
func TestAcksErrorReplies(t *testing.T) {
	cases := []struct {
		name, body string
		check      func(error) bool
	}{
		{"max_msg_size", `{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}`, func(err error) bool {
			var rej *uplink.RejectedError
			return errors.As(err, &rej) && rej.MsgID == telemetry.MsgID("gw-ack", 3)
		}},
		{"other API error", `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`, func(err error) bool {
			var api *jetstream.APIError
			return errors.As(err, &api) && api.ErrorCode == 10077 && !errors.Is(err, uplink.ErrRejected)
		}},
		{"not a PubAck", `{"seq":3}`, func(err error) bool { return errors.Is(err, jetstream.ErrInvalidJSAck) }},
		{"not JSON", `+OK`, func(err error) bool { return errors.Is(err, jetstream.ErrInvalidJSAck) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newAckRig(t, 64, 10*time.Second)
			msgs := fakeEnvelopes(5)
			ch := r.publishAsync(context.Background(), msgs)
			for i, m := range r.take(t, 5) {
				body := fmt.Sprintf(stored, i+1)
				if i == 2 {
					body = tc.body
				}
				r.answer(t, m.Reply, body)
			}
			res := result(t, ch)
			if res.err == nil || !tc.check(res.err) || !strings.Contains(res.err.Error(), msgs[2].MsgID) {
				t.Fatalf("publish = %v", res.err)
			}
		})
	}
}

// max_pending bounds the messages awaiting a reply over every call of the
// connection (the live and the backlog lane publish at once).
func TestAcksMaxPendingAcrossCalls(t *testing.T) {
	const maxPending = 4
	r := newAckRig(t, maxPending, 10*time.Second)
	var outstanding, worst atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case m := <-r.got:
				if n := outstanding.Add(1); n > worst.Load() {
					worst.Store(n)
				}
				time.Sleep(time.Millisecond) // the stream is slow to answer
				outstanding.Add(-1)
				seq, _, _ := strings.Cut(strings.TrimPrefix(m.Reply, r.a.prefix), "_")
				if err := r.nc.Publish(m.Reply, []byte(`{"stream":"FAKE","seq":`+seq+`}`)); err != nil {
					t.Error(err)
				}
			case <-stop:
				return
			}
		}
	})
	a := r.publishAsync(context.Background(), fakeEnvelopes(60))
	b := r.publishAsync(context.Background(), fakeEnvelopes(60))
	for _, ch := range []<-chan pubResult{a, b} {
		if res := result(t, ch); res.err != nil {
			t.Fatal(res.err)
		}
	}
	close(stop)
	wg.Wait()
	// the responder sees a message once it was sent; it answers one at a
	// time, so at most max_pending are ever queued for it
	if w := worst.Load(); w > maxPending {
		t.Fatalf("%d messages awaited a reply at once, max_pending %d", w, maxPending)
	}
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	if r.a.inflight != 0 || len(r.a.calls) != 0 {
		t.Fatalf("after both calls: %d in flight, %d calls", r.a.inflight, len(r.a.calls))
	}
}

// A lost connection ends the wait of every call at once with its error.
func TestAcksConnectionLossFailsWaitingCalls(t *testing.T) {
	r := newAckRig(t, 64, time.Minute)
	ch := r.publishAsync(context.Background(), fakeEnvelopes(3))
	r.take(t, 3)
	lost := errors.New("connection lost")
	r.a.fail(lost)
	if res := result(t, ch); !errors.Is(res.err, lost) {
		t.Fatalf("publish = %v, want the connection's loss", res.err)
	}
}

// TestPublishKeepsNoPayloadAfterReturn: once Publish returned, even with
// an error, the uplink never sends the envelopes' Data again, so the
// caller may reuse their bytes. nats.go's asynchronous publish resent a
// message answered by no responders from its own copy of the *nats.Msg,
// after Publish had given up; the bytes then sent were whatever the buffer
// held by then, under the old Nats-Msg-Id, and the stream kept them.
func TestPublishKeepsNoPayloadAfterReturn(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	_, js := client(t, srv.URL())
	ctx := context.Background()
	if err := js.DeleteStream(ctx, DefaultStream); err != nil {
		t.Fatal(err)
	}
	msgs := envelopes("gw-test", 1, 3, 100)
	want := make([][]byte, len(msgs))
	for i := range msgs {
		want[i] = append([]byte(nil), msgs[i].Data...)
	}
	pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := r.u.Publish(pctx, msgs)
	cancel()
	if err == nil {
		t.Fatal("published with no stream")
	}
	for i := range msgs { // the caller reuses the bytes
		for j := range msgs[i].Data {
			msgs[i].Data[j] = 'X'
		}
	}
	// the stream again; right after a delete the server may still be
	// removing its store ("error creating store for stream", 500 10049:
	// CI, session 9), so the creation is retried until it holds
	var cerr error
	wait.For(t, 10*time.Second, "the stream created again", func() bool {
		_, cerr = js.CreateStream(ctx, r.u.telemetrySpec())
		return cerr == nil
	})
	// nats.go's asynchronous publish resent a message answered by no
	// responders from its own reference, 250 ms later, even after Publish had
	// given up; our Publish keeps none (the call is back in its pool before
	// Publish returns). A resend of the overwritten bytes before the retry
	// below would be stored under the message's id and the retry dropped as
	// its duplicate: checkStream would find the X's.
	for i := range msgs {
		msgs[i].Data = want[i]
	}
	publish(t, r.u, msgs) // the caller's retry
	checkStream(t, readStream(t, js, DefaultStream), msgs)
}

func TestParsePubAck(t *testing.T) {
	cases := []struct {
		in      string
		stream  string // named (when valid); default "S"
		dup     bool
		invalid bool // wraps ErrInvalidJSAck
		api     jetstream.ErrorCode
	}{
		{in: `{"stream":"SMELTER","seq":41}`, stream: "SMELTER"},
		{in: `{"stream":"SMELTER","seq":41,"duplicate":true}`, stream: "SMELTER", dup: true},
		{in: ` { "stream" : "S" , "domain":"hub", "seq" : 1 , "duplicate" : false } `},
		{in: `{"stream":"S","seq":1,"duplicate":true,"duplicate":false}`},
		{in: `{"stream":"S","seq":1,"batch":"b","count":3}`},
		{in: `{"stream":"S","seq":1,"val":"12"}`},
		{in: `{"Stream":"S","seq":1}`}, // encoding/json matches names without case
		{in: `{"stream":"S\u0041","seq":1,"DUPLICATE":true}`, stream: "SA", dup: true},
		{in: `{"stream":"S","seq":1,"stream":"T"}`, stream: "T"}, // the last one counts, as in encoding/json
		{in: `{"stream":"S","seq":1,"Stream":"T"}`, stream: "T"},
		{in: `{"stream":"","seq":1}`, invalid: true},
		{in: `{"seq":1}`, invalid: true},
		{in: `{}`, invalid: true},
		{in: `{"stream":"S","seq":1`, invalid: true},
		{in: `{"stream":"S","seq":1}x`, invalid: true},
		{in: `{"stream":"S","seq":-1}`, invalid: true},
		{in: `{"stream":1,"seq":1}`, invalid: true},
		{in: `[]`, invalid: true},
		{in: `null`, invalid: true},
		{in: `{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}`, api: 10054},
		{in: `{"stream":"S","seq":1,"error":{"code":503,"err_code":10077}}`, api: 10077},
		{in: `{"stream":"S","seq":1,"Error":{"code":503,"err_code":10077}}`, api: 10077},
	}
	for _, tc := range cases {
		stream, dup, err := parsePubAck([]byte(tc.in))
		if tc.stream == "" {
			tc.stream = "S"
		}
		var api *jetstream.APIError
		switch {
		case tc.invalid:
			if !errors.Is(err, jetstream.ErrInvalidJSAck) {
				t.Errorf("%s: %v, want invalid", tc.in, err)
			}
		case tc.api != 0:
			if !errors.As(err, &api) || api.ErrorCode != tc.api {
				t.Errorf("%s: %v, want API error %d", tc.in, err, tc.api)
			}
		case err != nil || dup != tc.dup || string(stream) != tc.stream:
			t.Errorf("%s: %q %v %v, want %q %v", tc.in, stream, dup, err, tc.stream, tc.dup)
		}
	}
}

// FuzzParsePubAck: the flat reader and encoding/json agree on every input
// the flat reader takes.
func FuzzParsePubAck(f *testing.F) {
	for _, s := range []string{`{"stream":"S","seq":41}`, `{"stream":"S","seq":4,"duplicate":true,"domain":"x"}`,
		`{"error":{"code":400,"err_code":10054}}`, `{"Seq":1,"stream":"a"}`, `{}`, ` {"stream":"a","n":0} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		stream, dup, ok := flatPubAck(d)
		if !ok {
			_, _, _ = parsePubAck(d)
			return
		}
		var r struct {
			Error     *jetstream.APIError `json:"error"`
			Stream    string              `json:"stream"`
			Seq       uint64              `json:"seq"`
			Duplicate bool                `json:"duplicate"`
		}
		if err := json.Unmarshal(d, &r); err != nil {
			t.Fatalf("flat reader took %q, encoding/json: %v", d, err)
		}
		if r.Error != nil || r.Stream != string(stream) || r.Duplicate != dup {
			t.Fatalf("%q: flat stream=%q dup=%v, encoding/json %+v", d, stream, dup, r)
		}
	})
}

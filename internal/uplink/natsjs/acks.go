package natsjs

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
)

// acks publishes to JetStream on one connection and ties each PubAck to its
// message, without nats.go's per-message bookkeeping (a future with its
// channels and timer, a map entry, a copy of the message kept for a later
// resend, the PubAck decoded by reflection).
//
// One wildcard subscription, <inbox>.*, takes every reply of the
// connection. Each message is sent with the reply subject <inbox>.<n>_<t>,
// n a sequence of this connection's own that is never reused (a Publish
// call holds the consecutive sequences of its messages) and t a random
// 64-bit token of that message alone (ChaCha8 seeded from crypto/rand per
// call), in base 36. A reply is applied only to the message whose sequence
// and token its subject carries, while that message's call still waits for
// it and only once: any other reply (a second answer, an answer after its
// call gave up, a subject that is not one of ours, a wrong token) is
// counted in smelter_uplink_unmatched_acks_total and dropped, never guessed.
// The token is what makes a reply unforgeable: a client allowed to publish
// on _INBOX.> (NATS's default without permissions) that sees one message's
// reply subject (a core subscriber of the telemetry subjects sees it) could
// otherwise ack the following messages, which JetStream never stored, and
// the gateway would delete them from its spool (review8 F1). Seeing any
// number of messages tells nothing of another message's token.
//
// A message's payload is copied into the connection's write buffer before
// PublishMsg returns, and nothing is kept to resend it: once Publish
// returns, the uplink holds no reference to any envelope's Data.
type acks struct {
	nc          *nats.Conn
	prefix      string // "<inbox>."
	sub         *nats.Subscription
	stream      string        // the configured stream: a PubAck must name it
	max         int           // max_pending
	timeout     time.Duration // how long a stalled send or the wait for PubAcks lasts
	unmatched   prometheus.Counter
	wrongStream prometheus.Counter
	latency     prometheus.Observer
	now         func() time.Time // the data clock of the Smelter-Sent-At header

	mu       sync.Mutex
	next     uint64  // the next sequence to hand out
	calls    []*call // the calls waiting for replies
	inflight int     // messages sent whose reply is awaited, over all calls
	room     chan struct{}

	pool sync.Pool // *call
}

// call is one Publish's messages: sequences first .. first+len(state)-1.
type call struct {
	first uint64
	sent  int         // messages handed to the connection
	state []ackState  // per message
	at    []time.Time // send time per message
	token []uint64    // reply token per message (written before the call is registered)
	left  int         // sent and unanswered
	err   error       // the first failure
	errAt int         // its message
	wake  chan struct{}
}

type ackState uint8

const (
	ackPending ackState = iota
	ackStored
	ackDuplicate
	ackFailed
)

// newAcks subscribes to the connection's replies. A PubAck counts as
// stored only when it names stream.
// now is the data clock of every message's Smelter-Sent-At header
// (telemetry.SentAtHeader).
func newAcks(nc *nats.Conn, stream string, maxPending int, timeout time.Duration, m *Metrics, now func() time.Time) (*acks, error) {
	a := &acks{nc: nc, prefix: nc.NewInbox() + ".", stream: stream, max: maxPending, timeout: timeout,
		unmatched: m.UnmatchedAcks, wrongStream: m.WrongStreamAcks, latency: m.Latency, now: now, next: 1}
	a.pool.New = func() any { return &call{wake: make(chan struct{}, 1)} }
	sub, err := nc.Subscribe(a.prefix+"*", a.reply)
	if err != nil {
		return nil, fmt.Errorf("subscribe to PubAcks: %w", err)
	}
	a.sub = sub
	return a, nil
}

// close unsubscribes and fails every waiting call with err.
func (a *acks) close(err error) {
	_ = a.sub.Unsubscribe()
	a.fail(err)
}

// fail ends the wait of every call with err (the connection was lost: their
// replies will not come).
func (a *acks) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.calls {
		for i := 0; i < c.sent; i++ {
			if c.state[i] == ackPending {
				c.resolve(a, i, ackFailed, err)
			}
		}
	}
}

// resolve records message i's outcome. Caller holds a.mu.
func (c *call) resolve(a *acks, i int, st ackState, err error) {
	c.state[i] = st
	c.left--
	a.inflight--
	if err != nil && c.err == nil {
		c.err, c.errAt = err, i
	}
	if c.left == 0 || err != nil {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	if a.room != nil && a.inflight < a.max {
		close(a.room)
		a.room = nil
	}
}

// reply handles a message on the reply subscription.
func (a *acks) reply(m *nats.Msg) {
	seq, token, ok := parseReply(m.Subject, a.prefix)
	if !ok {
		a.unmatched.Inc()
		return
	}
	st, err := pubAckResult(m, a.stream)
	now := time.Now()
	a.mu.Lock()
	c, i := a.find(seq)
	if c == nil || i >= c.sent || c.token[i] != token || c.state[i] != ackPending {
		a.mu.Unlock()
		a.unmatched.Inc()
		return
	}
	// counted before the waiting Publish is woken: once it returns, its
	// caller sees the reply counted (TestAckOfAnotherStreamIsNotStored read
	// the counter before this goroutine incremented it, now and then)
	if errors.Is(err, ErrWrongStream) {
		a.wrongStream.Inc()
	}
	if err == nil {
		a.latency.Observe(now.Sub(c.at[i]).Seconds())
	}
	c.resolve(a, i, st, err)
	a.mu.Unlock()
}

// find returns the call holding seq and its index there. Caller holds a.mu.
func (a *acks) find(seq uint64) (*call, int) {
	for _, c := range a.calls {
		if seq >= c.first && seq-c.first < uint64(len(c.state)) {
			return c, int(seq - c.first)
		}
	}
	return nil, 0
}

// parseReply reads n and t from prefix+n_t, n decimal and t base 36 as
// written by strconv (no leading zeros).
func parseReply(subject, prefix string) (n, t uint64, ok bool) {
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return 0, 0, false
	}
	d, tok, found := strings.Cut(subject[len(prefix):], "_")
	if !found || len(d) > 1 && d[0] == '0' || len(tok) > 1 && tok[0] == '0' {
		return 0, 0, false
	}
	n, err := strconv.ParseUint(d, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	t, err = strconv.ParseUint(tok, 36, 64)
	return n, t, err == nil
}

// errNoStream: a publish was answered by the server's no-responders status:
// no stream captures the subject (deleted, or its leader being elected).
var errNoStream = errors.New("no stream answered (no responders)")

// ErrWrongStream: a PubAck named another stream than the configured one.
// The message is not taken as stored: the Publish fails with this error,
// so the forwarder commits nothing and sends the record again from the
// spool (review8 F2). Counted in smelter_uplink_wrong_stream_acks_total.
var ErrWrongStream = errors.New("PubAck of another stream")

// pubAckResult decodes a reply: stored (in stream), a duplicate, or the
// error it carries (the stream's API error, no responders, not a PubAck,
// a PubAck naming another stream: ErrWrongStream).
func pubAckResult(m *nats.Msg, stream string) (ackState, error) {
	if len(m.Data) == 0 {
		if st := m.Header.Get("Status"); st == "503" {
			return ackFailed, fmt.Errorf("%w: %w", jetstream.ErrNoStreamResponse, errNoStream)
		}
		return ackFailed, fmt.Errorf("%w: a reply without a body (status %q %q)", jetstream.ErrInvalidJSAck,
			m.Header.Get("Status"), m.Header.Get("Description"))
	}
	named, dup, err := parsePubAck(m.Data)
	switch {
	case err != nil:
		return ackFailed, err
	case string(named) != stream:
		// Another stream's PubAck (a forged reply, or a stream that is not
		// the configured one capturing the subject): not in our stream.
		return ackFailed, fmt.Errorf("%w: it names stream %q, the uplink's is %q: not taken as stored", ErrWrongStream, logSafe(named), stream)
	case dup:
		return ackDuplicate, nil
	}
	return ackStored, nil
}

// logSafe bounds a stream name taken from a reply for an error message.
func logSafe(b []byte) string {
	const limit = 64
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}

// parsePubAck decodes a JetStream PubAck ({"stream":"S","seq":41[,
// "duplicate":true][,"domain":"d"]}) and returns the stream it names
// (non-empty; a view into d on the flat path) and whether it names a
// duplicate. A reply carrying an error returns it (a *jetstream.APIError);
// one that is not a PubAck naming its stream returns an error wrapping
// jetstream.ErrInvalidJSAck. Flat replies of plain fields are read without
// encoding/json (flatPubAck); anything else is decoded by it, and both give
// the same result for every input (FuzzParsePubAck).
func parsePubAck(d []byte) (stream []byte, dup bool, err error) {
	if stream, dup, ok := flatPubAck(d); ok {
		if len(stream) == 0 {
			return nil, false, fmt.Errorf("%w: no stream named", jetstream.ErrInvalidJSAck)
		}
		return stream, dup, nil
	}
	var r struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Seq       uint64              `json:"seq"` // not used; as nats.go, a PubAck whose seq is no uint64 is invalid
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(d, &r); err != nil {
		return nil, false, fmt.Errorf("%w: %w", jetstream.ErrInvalidJSAck, err)
	}
	if r.Error != nil {
		return nil, false, r.Error
	}
	if r.Stream == "" {
		return nil, false, fmt.Errorf("%w: no stream named", jetstream.ErrInvalidJSAck)
	}
	return []byte(r.Stream), r.Duplicate, nil
}

// flatPubAck reads a JSON object whose values are all strings without
// escapes, unsigned integers or true/false, with keys without escapes. It
// returns the "stream" string (nil when absent) and whether "duplicate" is
// true (the last occurrence of each counts, as in encoding/json). ok is
// false for anything
// else, left to encoding/json: nested values (an "error" object), escapes,
// other numbers, null, a key that matches stream, seq, duplicate or error
// only without regard to case (encoding/json would take it), or a value of
// another type under stream, seq or duplicate.
func flatPubAck(d []byte) (stream []byte, dup, ok bool) {
	i := skipSpace(d, 0)
	if i >= len(d) || d[i] != '{' {
		return nil, false, false
	}
	i = skipSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		return nil, false, skipSpace(d, i+1) == len(d)
	}
	for {
		key, j, ok := plainString(d, i)
		if !ok {
			return nil, false, false
		}
		i = skipSpace(d, j)
		if i >= len(d) || d[i] != ':' {
			return nil, false, false
		}
		i = skipSpace(d, i+1)
		if i >= len(d) {
			return nil, false, false
		}
		var val []byte
		kind := d[i]
		switch {
		case kind == '"':
			val, j, ok = plainString(d, i)
		case kind >= '0' && kind <= '9':
			j = i
			for j < len(d) && d[j] >= '0' && d[j] <= '9' {
				j++
			}
			val, ok = d[i:j], len(d[i:j]) == 1 || d[i] != '0'
		case bytes.HasPrefix(d[i:], []byte("true")):
			val, j, ok = d[i:i+4], i+4, true
		case bytes.HasPrefix(d[i:], []byte("false")):
			val, j, ok = d[i:i+5], i+5, true
		default:
			return nil, false, false
		}
		if !ok {
			return nil, false, false
		}
		switch string(key) {
		case "stream":
			if kind != '"' {
				return nil, false, false
			}
			stream = val
		case "seq":
			if kind < '0' || kind > '9' {
				return nil, false, false
			}
			if _, err := strconv.ParseUint(string(val), 10, 64); err != nil {
				return nil, false, false
			}
		case "duplicate":
			if kind != 't' && kind != 'f' {
				return nil, false, false
			}
			dup = kind == 't'
		default:
			if foldsTo(key, "stream", "seq", "duplicate", "error") {
				return nil, false, false
			}
		}
		i = skipSpace(d, j)
		if i >= len(d) {
			return nil, false, false
		}
		switch d[i] {
		case ',':
			i = skipSpace(d, i+1)
		case '}':
			return stream, dup, skipSpace(d, i+1) == len(d)
		default:
			return nil, false, false
		}
	}
}

// plainString reads the JSON string at d[i] when it has no escape and no
// control byte or byte outside ASCII (encoding/json would check or
// replace those), and returns its contents and the index after it.
func plainString(d []byte, i int) ([]byte, int, bool) {
	if i >= len(d) || d[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(d); j++ {
		switch c := d[j]; {
		case c == '"':
			return d[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// publish sends msgs, at most max_pending awaiting a PubAck over every
// call of the connection, and waits for every reply. It returns nil only
// when each message was stored or found a duplicate (dups counts those),
// and on error the first failure, naming its message. stop ends the wait
// early with its error (the connection's loss).
func (a *acks) publish(ctx context.Context, msgs []telemetry.Envelope) (dups int, err error) {
	c := a.pool.Get().(*call)
	c.reset(len(msgs))
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand)
	rng := rand.NewChaCha8(seed)
	for i := range c.token {
		c.token[i] = rng.Uint64()
	}
	a.mu.Lock()
	c.first = a.next
	a.next += uint64(len(msgs))
	a.calls = append(a.calls, c)
	a.mu.Unlock()
	defer a.done(c)

	// one message and header reused for every envelope: PublishMsg copies
	// them into the connection's buffer before it returns
	id, sentAt := []string{""}, []string{""}
	m := &nats.Msg{Header: nats.Header{jetstream.MsgIDHeader: id, telemetry.SentAtHeader: sentAt}}
	reply := make([]byte, 0, len(a.prefix)+34)
	var at []byte // the Smelter-Sent-At value
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for i := range msgs {
		e := &msgs[i]
		if err := a.admit(ctx, c, i, &timer, e.MsgID); errors.Is(err, errCallFailed) {
			break // a reply failed or the connection was lost: reported below
		} else if err != nil {
			return 0, err
		}
		reply = strconv.AppendUint(append(strconv.AppendUint(append(reply[:0], a.prefix...), c.first+uint64(i), 10), '_'), c.token[i], 36)
		// the data clock when the message leaves: the collector measures
		// the gateway clock's lead by it (a backlog's ts_gw is older)
		at = telemetry.AppendSentAt(at[:0], a.now().UnixMilli())
		m.Subject, m.Reply, m.Data, id[0], sentAt[0] = e.Subject, string(reply), e.Data, e.MsgID, string(at)
		if err := a.nc.PublishMsg(m); err != nil {
			a.unsend(c, i)
			if errors.Is(err, nats.ErrMaxPayload) {
				err = &uplink.RejectedError{MsgID: e.MsgID, Reason: uplink.ReasonTooLarge,
					Err: fmt.Errorf("%d bytes over the server's max_payload of %d: %w", len(e.Data), a.nc.MaxPayload(), err)}
			}
			return 0, fmt.Errorf("publish %s on %s: %w", e.MsgID, e.Subject, err)
		}
	}
	if timer == nil {
		timer = time.NewTimer(a.timeout)
	} else {
		timer.Reset(a.timeout)
	}
	for {
		a.mu.Lock()
		left, cerr, at := c.left, c.err, c.errAt
		a.mu.Unlock()
		if cerr != nil {
			if errors.Is(cerr, jetstream.ErrStreamMessageExceedsMaximum) {
				cerr = &uplink.RejectedError{MsgID: msgs[at].MsgID, Reason: uplink.ReasonTooLarge, Err: cerr}
			}
			return 0, fmt.Errorf("publish %s: no ack: %w", msgs[at].MsgID, cerr)
		}
		if left == 0 {
			break
		}
		select {
		case <-c.wake:
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for ack of %s: %w", msgs[a.firstPending(c)].MsgID, ctx.Err())
		case <-timer.C:
			return 0, fmt.Errorf("publish %s: no ack within %v", msgs[a.firstPending(c)].MsgID, a.timeout)
		}
	}
	for _, st := range c.state {
		if st == ackDuplicate {
			dups++
		}
	}
	return dups, nil
}

// admit waits until message i of c may be sent (fewer than max_pending
// awaiting a reply), at most the timeout, and counts it as sent.
func (a *acks) admit(ctx context.Context, c *call, i int, timer **time.Timer, msgID string) error {
	a.mu.Lock()
	for {
		if c.err != nil {
			a.mu.Unlock()
			return errCallFailed
		}
		if a.inflight < a.max {
			break
		}
		if a.room == nil {
			a.room = make(chan struct{})
		}
		room := a.room
		a.mu.Unlock()
		if *timer == nil {
			*timer = time.NewTimer(a.timeout)
		} else {
			(*timer).Reset(a.timeout)
		}
		select {
		case <-room:
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", msgID, ctx.Err())
		case <-(*timer).C:
			return fmt.Errorf("publish %s: %d messages awaited a PubAck for %v (max_pending)", msgID, a.max, a.timeout)
		}
		(*timer).Stop()
		a.mu.Lock()
	}
	a.inflight++
	c.left++
	c.sent = i + 1
	c.at[i] = time.Now()
	a.mu.Unlock()
	return nil
}

// errCallFailed: admit found the call failed (a reply carried an error or
// the connection was lost); publish reports that failure.
var errCallFailed = errors.New("call failed")

// unsend takes back message i, which PublishMsg refused (nothing was
// sent): no reply can come for it.
func (a *acks) unsend(c *call, i int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c.sent = i
	c.left--
	a.inflight--
	if a.room != nil && a.inflight < a.max {
		close(a.room)
		a.room = nil
	}
}

func (a *acks) firstPending(c *call) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 0; i < c.sent; i++ {
		if c.state[i] == ackPending {
			return i
		}
	}
	return 0
}

// done forgets c: its unanswered messages no longer count against
// max_pending, and their replies, should they come, are unmatched.
func (a *acks) done(c *call) {
	a.mu.Lock()
	for i, o := range a.calls {
		if o == c {
			last := len(a.calls) - 1
			copy(a.calls[i:], a.calls[i+1:])
			a.calls[last] = nil // no stale pointer past the end
			a.calls = a.calls[:last]
			break
		}
	}
	a.inflight -= c.left
	if a.room != nil && a.inflight < a.max {
		close(a.room)
		a.room = nil
	}
	a.mu.Unlock()
	a.pool.Put(c)
}

func (c *call) reset(n int) {
	if cap(c.state) < n {
		c.state = make([]ackState, n)
		c.at = make([]time.Time, n)
		c.token = make([]uint64, n)
	}
	c.state, c.at, c.token = c.state[:n], c.at[:n], c.token[:n]
	clear(c.state)
	c.sent, c.left, c.err, c.errAt = 0, 0, nil, 0
	select {
	case <-c.wake:
	default:
	}
}

package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/natswire"
)

// puller pulls a partition consumer's messages over a NATS connection and
// subscription of the worker's own (natswire: no copy nor allocation per
// message; the collector's nats.go connection is where it dials, with its
// credentials and TLS), instead of jetstream's Fetch: Fetch subscribes a
// fresh inbox for every pull and hands every message from the client's
// read loop to a goroutine of its own and from there to the caller (two
// channel hand-offs, a timer and a metadata parse per message, a wrapper
// per message). Here pull k of the consumer is a request to
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> replied to <inbox>.<k>,
// and the worker reads its messages from the subscription of <inbox>.*
// itself.
//
// It behaves as Fetch with FetchMaxWait and FetchPriorityGroup did: the
// request asks for up to n messages within expires (and idle heartbeats
// with heartbeat > 0), with the priority group and, once the server gave
// one (the Nats-Pin-Id header of a message delivered to this consumer),
// the pin id; the pull ends with n messages, with a status reply (408
// request expired and 404 no messages: no error; 100 idle heartbeats are
// skipped; 423 pin id mismatch: jetstream.ErrPinIDMismatch and the pin id
// forgotten; 409 consumer deleted, leadership change and the others:
// jetstream's errors for them; 503 no responders: nats.ErrNoResponders),
// or when nothing came for expires + 1 s (a pause of this process, a
// reconnect): no error; what already came by then is still read. A
// connection error ends the pull with that error; the next pull dials
// again (the server the collector's connection is on, else the configured
// servers in turn).
//
// A delivery carries the stream's subject, not the pull's reply subject,
// so the messages of two pulls on one subscription cannot be told apart:
// a pull that ended with its n messages or the server's status has
// nothing more coming, but one that ended on the client's side (its
// timer, missed heartbeats, a connection error) may still be delivered
// to; the next pull then subscribes a fresh inbox, and what comes to the
// old one reaches no one, as with Fetch, which unsubscribed its inbox
// after every pull: it is redelivered after ack_wait, and the worker's gap
// and inHand checks tell it was lost. A message on the inbox whose reply
// is not a JetStream acknowledgement subject is not a delivery of this
// consumer and is dropped.
type puller struct {
	nc      *nats.Conn     // the collector's: its server, options and inboxes
	wire    *natswire.Conn // nil until dialed, and after an error
	inbox   string
	subject string // the consumer's next-message API subject
	group   string // priority group ("": none)
	pinID   string // the server's pin for this consumer's pulls ("": none yet)

	k       uint64 // the current pull
	reply   string // inbox.k
	n       int    // messages it asked for
	hb      time.Duration
	end     time.Time // expires + 1 s after it was sent
	done    bool      // ended (n messages, a status, or its timer)
	dirty   bool      // ended by its timer or a client error: more of it may come
	out     []*jsMsg
	slab    []jsMsg // the current pull's messages (a new one per pull: callers hold them)
	req     []byte
	stopped bool
	// dialed, when set, is told of every dial of the pull connection
	// (nil: succeeded)
	dialed func(error)
	// after a failed dial or a pull refused by the server's permissions,
	// no pull is sent before retryAt (retry doubles from pullRetryMin to
	// pullRetryMax; a pull the server answered resets it): a pull
	// meanwhile waits, up to its expiry, and fails with backErr
	backErr error
	retryAt time.Time
	retry   time.Duration
}

// The pause after a failed dial of a pull connection, or a pull refused by
// the server's permissions, doubled after each failure up to pullRetryMax
// (docs/collector.md, "Pull connections"). Without it, a server that
// refused the connection at once (maximum connections exceeded,
// credentials revoked) was dialed again by every pull, and the order check
// (recoverOrder), which pulls again at once after a failed pull, dialed in
// a tight loop; a pull refused for its permissions (whose -ERR closes the
// pull connection) was dialed again about 5 times a second.
const (
	pullRetryMin = 100 * time.Millisecond
	pullRetryMax = 5 * time.Second
)

// newPuller dials the pull connection and subscribes the inbox of a
// consumer's pulls; dialed (nil: none) is told of every dial. A dial that
// fails is no error here: the puller's first pull waits for the next
// dial (backoff), as every later pull does, so the worker keeps running
// instead of stopping and starting again. Errors: only a subscription the
// fresh connection refused.
func newPuller(nc *nats.Conn, stream, consumer, group string, dialed func(error)) (*puller, error) {
	p := &puller{nc: nc, group: group, subject: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer, dialed: dialed}
	if err := p.resubscribe(); err != nil && p.backErr == nil {
		return nil, err
	}
	return p, nil
}

// backOff delays the next pull after err (a failed dial, a refused pull):
// by pullRetryMin at first, doubling up to pullRetryMax.
func (p *puller) backOff(err error) {
	p.retry = min(max(2*p.retry, pullRetryMin), pullRetryMax)
	p.backErr, p.retryAt = err, time.Now().Add(p.retry)
}

// answered records that the server answered a pull of the puller's
// connection (a message or a status): the backoff starts over.
func (p *puller) answered() {
	p.backErr, p.retry = nil, 0
}

// resubscribe replaces the inbox subscription by a fresh one (dialing
// first when the puller has no connection): what is still delivered to
// the old one is skipped.
func (p *puller) resubscribe() error {
	if p.stopped {
		return nats.ErrConnectionClosed
	}
	if p.wire != nil && p.wire.Err() != nil {
		p.wire = nil
	}
	fresh := p.wire == nil
	if fresh {
		if time.Now().Before(p.retryAt) {
			return p.backErr
		}
		w, err := dialPull(p.nc)
		if p.dialed != nil {
			p.dialed(err)
		}
		if err != nil {
			p.backOff(err)
			return err
		}
		p.wire = w
	}
	p.inbox = p.nc.NewInbox()
	// the messages of a pull wait in the socket and the server, never
	// more than one pull's (max_ack_pending bounds a late one's)
	if err := p.wire.Subscribe(p.inbox + ".*"); err != nil {
		p.wire = nil
		return fmt.Errorf("collector: subscribe to the pulls' inbox: %w", err)
	}
	if !fresh {
		// the last pull ended without the server's word: a connection
		// whose link died silently fails no write and no read, so every
		// later pull would time out on it in turn; the server must answer
		// a PING (what of the old inbox still comes meanwhile is dropped)
		if err := p.wire.Flush(time.Now().Add(pullDialTimeout)); err != nil {
			if errors.Is(err, nats.ErrPermissionViolation) {
				// the subscription was refused; the connection is good
				// (natswire keeps it): the next try waits, on it
				p.backOff(err)
				return fmt.Errorf("collector: pull connection: %w", err)
			}
			p.wire = nil
			return fmt.Errorf("collector: pull connection: %w", err)
		}
	}
	p.dirty = false
	return nil
}

// pullDialTimeout bounds a pull connection's dial and handshake.
const pullDialTimeout = 5 * time.Second

// dialPull opens a pull connection with nc's credentials and TLS to the
// server nc is on, else to nc's configured servers in turn (the first
// error is returned when none answers).
func dialPull(nc *nats.Conn) (*natswire.Conn, error) {
	o := nc.Opts
	o.Name += " pull"
	urls := make([]string, 0, 1+len(o.Servers)+1)
	connected := nc.ConnectedUrl()
	if connected != "" {
		urls = append(urls, connected)
	}
	urls = append(urls, o.Servers...)
	if o.Url != "" {
		urls = append(urls, o.Url)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("collector: pull connection: %w", nats.ErrNoServers)
	}
	var first error
	for i, u := range urls {
		uo := &o
		if i == 0 && connected != "" {
			uo = learnedTLSName(&o, u)
		}
		ctx, cancel := context.WithTimeout(context.Background(), pullDialTimeout)
		w, err := natswire.Dial(ctx, u, uo)
		cancel()
		if err == nil {
			return w, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("collector: pull connection: %w", first)
}

// learnedTLSName returns o with the TLS server name nats.go verifies a
// server under when the client learned it from the cluster by its IP
// address (its tlsName): the host name of the URLs o was given. o as it
// is for a configured URL, a URL by name, or without TLS options.
func learnedTLSName(o *nats.Options, raw string) *nats.Options {
	if o.TLSConfig == nil && !o.Secure {
		return o
	}
	if o.TLSConfig != nil && o.TLSConfig.ServerName != "" {
		return o
	}
	host := hostOf(raw)
	if net.ParseIP(host) == nil {
		return o
	}
	name := ""
	for _, c := range append(append([]string(nil), o.Servers...), o.Url) {
		if c == "" {
			continue
		}
		h := hostOf(c)
		if h == host {
			return o // configured as it is
		}
		if name == "" && net.ParseIP(h) == nil {
			name = h
		}
	}
	if name == "" {
		return o
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSConfig != nil {
		tc = o.TLSConfig.Clone()
	}
	tc.ServerName = name
	no := *o
	no.TLSConfig = tc
	return &no
}

// hostOf is the host of a server URL ("" where it does not parse).
func hostOf(raw string) string {
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// stop closes the puller's connection.
func (p *puller) stop() {
	if !p.stopped {
		p.stopped = true
		if p.wire != nil {
			_ = p.wire.Close()
		}
	}
}

// send sends pull k+1: up to n messages within expires, idle heartbeats
// every hb (0: none; as Fetch, at most expires / 2).
func (p *puller) send(n int, expires, hb time.Duration) error {
	if n < 1 {
		return fmt.Errorf("%w: batch size must be at least 1", nats.ErrInvalidArg)
	}
	if hb > 0 && expires < 2*hb {
		return fmt.Errorf("%w: expiry time should be at least 2 times the heartbeat", jetstream.ErrInvalidOption)
	}
	// the pull connection lives by the main one, as jetstream's Fetch
	// did on it: no pull while it is down (what would be pulled could
	// neither be acknowledged nor its alerts published) or closed
	switch {
	case p.nc.IsClosed():
		p.stop()
		return nats.ErrConnectionClosed
	case !p.nc.IsConnected():
		return nats.ErrConnectionReconnecting
	}
	if d := time.Until(p.retryAt); d > 0 {
		// the last dial failed, or the last pull was refused: this pull
		// waits for the next try, as a pull that found nothing waits for
		// its expiry
		time.Sleep(min(d, expires))
		if time.Now().Before(p.retryAt) {
			return p.backErr
		}
	}
	if p.dirty || p.wire == nil || p.wire.Err() != nil { // the last pull ended without the server's word: its messages may still come
		if err := p.resubscribe(); err != nil {
			return err
		}
	}
	p.k++
	p.reply = p.inbox + "." + strconv.FormatUint(p.k, 10)
	p.n, p.hb, p.done = n, hb, false
	p.end = time.Now().Add(expires + time.Second)
	// the JSON of jetstream's pull request for these fields: expires and
	// idle_heartbeat in nanoseconds, the pin id as "id"
	b := append(p.req[:0], `{"expires":`...)
	b = strconv.AppendInt(b, int64(expires), 10)
	b = append(b, `,"batch":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	if hb > 0 {
		b = append(b, `,"idle_heartbeat":`...)
		b = strconv.AppendInt(b, int64(hb), 10)
	}
	if p.pinID != "" {
		b = append(b, `,"id":`...)
		b = strconv.AppendQuote(b, p.pinID)
	}
	if p.group != "" {
		b = append(b, `,"group":`...)
		b = strconv.AppendQuote(b, p.group)
	}
	b = append(b, '}')
	p.req = b
	p.slab = make([]jsMsg, 0, n) // the last pull's messages stay with whoever holds them
	if err := p.wire.Publish(p.subject, p.reply, b); err != nil {
		p.done, p.dirty = true, true
		return err
	}
	return nil
}

// release tells the pull connection that no message collect returned so
// far is used any more (natswire.Conn.Release): its read chunks are read
// into again. The worker calls it once its cycle is done with them.
func (p *puller) release() {
	if p.wire != nil {
		p.wire.Release()
	}
}

// collect reads the messages of the current pull until it ends. The slice
// is the puller's: valid until the next collect. Messages that came
// before an error are returned with it, as Fetch did.
func (p *puller) collect() ([]*jsMsg, error) {
	clear(p.out)
	p.out = p.out[:0]
	for !p.done {
		m, err := p.next()
		if err != nil {
			return p.out, err
		}
		if m != nil {
			p.out = append(p.out, m)
		}
	}
	return p.out, nil
}

// lose reads the current pull to its end and drops its messages: they
// reach no one, as when jetstream's Fetch timer fired before they were
// read (tests: a pull over a pause of the process).
func (p *puller) lose() {
	for !p.done {
		if _, err := p.next(); err != nil {
			return
		}
	}
}

// next returns the current pull's next message, or nil when something else
// came (a heartbeat, a stale or foreign message) or the pull ended (done).
// Once the pull's time is up, what already came is still read.
func (p *puller) next() (*jsMsg, error) {
	wait, hbWait := time.Until(p.end), false
	if p.hb > 0 && 2*p.hb < wait {
		wait, hbWait = 2*p.hb, true
	}
	if p.wire == nil {
		p.done, p.dirty = true, true
		return nil, nats.ErrConnectionClosed
	}
	// past the end, what already came is still read: what the chunk and,
	// within a few milliseconds, the socket hold
	v, err := p.wire.Next(time.Now().Add(max(wait, 5*time.Millisecond)))
	switch {
	case errors.Is(err, natswire.ErrTimeout):
		p.done, p.dirty = true, true
		if hbWait { // no message nor heartbeat for 2 x heartbeat
			return nil, jetstream.ErrNoHeartbeat
		}
		return nil, nil // expires + 1 s without the server's end of the pull
	case err != nil:
		p.done, p.dirty = true, true
		if errors.Is(err, nats.ErrPermissionViolation) {
			// refused as every pull will be until the permissions change:
			// the next waits, on the same connection (natswire keeps it
			// on a permissions violation, as the server does)
			p.backOff(err)
		}
		return nil, err
	}
	// a delivery of the consumer has an acknowledgement subject for reply,
	// whatever its header block says (a publisher may give it an inline
	// status, which 2.9 keeps); the server's status replies have none
	a := parseAck(v.Reply)
	if !a.ok {
		user, err := pullStatus(&v)
		if user || v.Subject != p.reply {
			return nil, nil // not a delivery, nor this pull's status: not counted
		}
		p.answered()
		if err != nil {
			p.done = true
			if errors.Is(err, jetstream.ErrPinIDMismatch) {
				p.pinID = ""
			}
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, jetstream.ErrMaxBytesExceeded) {
				return nil, nil
			}
			return nil, err
		}
		return nil, nil // an idle heartbeat
	}
	p.answered()
	p.slab = append(p.slab, jsMsg{Msg: v, ack: a})
	m := &p.slab[len(p.slab)-1]
	if id := m.Header(pinIDHeader); id != "" && id != p.pinID {
		p.pinID = strings.Clone(id) // kept past the message
	}
	p.n--
	if p.n == 0 {
		p.done = true
	}
	return m, nil
}

// The pull status replies' codes and descriptions (nats-server consumer.go;
// jetstream's checkMsg reads the same).
const (
	pinIDHeader       = "Nats-Pin-Id" // on every message delivered to a pinned client
	statusHeartbeat   = "100"
	statusBadRequest  = "400"
	statusNoMsgs      = "404"
	statusTimeout     = "408"
	statusConflict    = "409"
	statusPinMismatch = "423"
	statusNoResponder = "503"
)

// pullStatus tells a pull's message (user) from a status reply, and
// returns a status reply's meaning as jetstream's Fetch did (its
// checkMsg): 100 no error, not a message; 404 jetstream.ErrNoMessages; 408
// nats.ErrTimeout; 423 jetstream.ErrPinIDMismatch; 409 by its description
// (message size exceeds maxbytes, batch completed, consumer deleted,
// leadership change, server shutdown); 503 nats.ErrNoResponders; any
// other status an error with its description.
func pullStatus(m *natswire.Msg) (user bool, err error) {
	if len(m.Data) > 0 || len(m.Hdr) == 0 {
		return true, nil
	}
	code, descr := m.Status()
	if code == "" {
		return true, nil
	}
	switch code {
	case statusHeartbeat:
		return false, nil
	case statusBadRequest:
		return false, jetstream.ErrBadRequest
	case statusNoResponder:
		return false, nats.ErrNoResponders
	case statusNoMsgs:
		return false, jetstream.ErrNoMessages
	case statusTimeout:
		return false, nats.ErrTimeout
	case statusPinMismatch:
		return false, jetstream.ErrPinIDMismatch
	case statusConflict:
		d := strings.ToLower(descr)
		switch {
		case strings.Contains(d, "message size exceeds maxbytes"):
			return false, jetstream.ErrMaxBytesExceeded
		case strings.Contains(d, "batch completed"):
			return false, jetstream.ErrBatchCompleted
		case strings.Contains(d, "consumer deleted"):
			return false, jetstream.ErrConsumerDeleted
		case strings.Contains(d, "leadership change"):
			return false, jetstream.ErrConsumerLeadershipChanged
		case strings.Contains(d, "server shutdown"):
			return false, jetstream.ErrServerShutdown
		}
	}
	return false, fmt.Errorf("nats: %s", descr)
}

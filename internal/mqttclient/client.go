// Package mqttclient is the MQTT 3.1.1 client of the plain MQTT uplink: it
// does what the uplink needs and no more, without an allocation per
// published message.
//
// One Client keeps one session (CleanSession false by default) across its
// connections: Connect opens a connection (brokers tried in turn), resends
// the unacknowledged QoS 1 messages with DUP when the broker says session
// present, then serves the connection until it is lost (Connection.Done).
// Reconnecting is the caller's loop.
//
// Publishing writes the packet into the connection's buffered writer under
// a lock, copying the fixed header, topic and packet id into a reused buffer
// and the payload straight into the writer (whose buffer, or the socket for
// a payload larger than it, takes the bytes); Flush sends what is buffered
// (one write(2) for many PUBLISHes). QoS 1 messages are tracked per Tracker.
//
// Payload ownership: the client keeps a reference to a QoS 1 payload, for a
// resend after a reconnect, from Publish until its PUBACK arrives or until
// Tracker.Release returns, whichever comes first. Release drops the
// Tracker's unacknowledged messages from the resend store while holding the
// lock a resend holds, so once it returns no resend can read the payload.
// A QoS 0 payload is not referenced after Publish returns.
package mqttclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotConnected: there is no open connection.
var ErrNotConnected = errors.New("not connected")

// ErrSessionLost: the broker had no session for the client on reconnect
// (session present 0), so unacknowledged messages were dropped, not resent.
var ErrSessionLost = errors.New("the broker lost the session: unacknowledged messages dropped")

// ErrPingTimeout: no PINGRESP within Options.Timeout of a PINGREQ.
var ErrPingTimeout = errors.New("ping timeout: no PINGRESP")

// ErrClosed: the connection was ended by Disconnect.
var ErrClosed = errors.New("disconnected by the client")

// ErrNoPacketID: every packet id is in use.
var ErrNoPacketID = errors.New("no free packet id")

// ConnectReturnCode is the CONNACK return code (MQTT 3.1.1 section
// 3.2.2.3); a refusal is returned as an error, usable with errors.Is.
type ConnectReturnCode byte

// The CONNACK return codes.
const (
	Accepted                     ConnectReturnCode = 0
	RefusedProtocolVersion       ConnectReturnCode = 1
	RefusedIdentifierRejected    ConnectReturnCode = 2
	RefusedServerUnavailable     ConnectReturnCode = 3
	RefusedBadUsernameOrPassword ConnectReturnCode = 4
	RefusedNotAuthorized         ConnectReturnCode = 5
)

func (c ConnectReturnCode) Error() string {
	var s string
	switch c {
	case Accepted:
		s = "accepted"
	case RefusedProtocolVersion:
		s = "unacceptable protocol version"
	case RefusedIdentifierRejected:
		s = "client identifier rejected"
	case RefusedServerUnavailable:
		s = "server unavailable"
	case RefusedBadUsernameOrPassword:
		s = "bad user name or password"
	case RefusedNotAuthorized:
		s = "not authorized"
	default:
		s = "unknown return code"
	}
	return fmt.Sprintf("connection refused: %s (CONNACK return code %d)", s, byte(c))
}

// Will is the Last Will the broker publishes when the connection ends
// without a DISCONNECT.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// Options configure a Client.
type Options struct {
	Brokers      []string // tcp:// mqtt:// ssl:// tls:// mqtts:// ws:// wss://, tried in turn
	ClientID     string
	Username     string
	Password     []byte
	HasPassword  bool
	TLS          *tls.Config // for ssl:// tls:// mqtts:// wss://
	CleanSession bool
	Keepalive    time.Duration // 0: no keepalive
	// Timeout bounds a connect (dial, TLS, CONNACK), every write and the
	// wait for a PINGRESP.
	Timeout time.Duration
	// MaxPacketSize is the largest packet accepted from the broker (bytes);
	// a larger one closes the connection with ErrTooLarge.
	MaxPacketSize int
	Will          *Will
	// OnMessage receives incoming PUBLISHes on the connection's reader
	// goroutine; topic and payload are valid only during the call.
	OnMessage func(topic string, payload []byte, retained bool)
	Log       *slog.Logger
}

// Client is an MQTT 3.1.1 client with one session. Its methods are safe
// for concurrent use.
type Client struct {
	o Options

	wmu sync.Mutex // serialises writes on the current connection
	hdr []byte     // PUBLISH header buffer, under wmu

	mu     sync.Mutex
	cur    *Connection
	nextID uint16
	store  map[uint16]*entry // QoS 1 PUBLISH awaiting PUBACK, tombstones, SUBSCRIBEs awaiting SUBACK
	head   entry             // sentinel of the list of resendable entries, in send order
	free   []*entry
}

// entry is a packet id in use.
type entry struct {
	id         uint16
	topic      string
	payload    []byte
	retain     bool
	t          *Tracker
	i          int
	suback     chan byte // SUBSCRIBE
	prev, next *entry    // in the resend list when linked
}

// New returns a Client; it does no I/O.
func New(o Options) *Client {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxPacketSize <= 0 || o.MaxPacketSize > maxRemaining+5 {
		o.MaxPacketSize = maxRemaining + 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	c := &Client{o: o, store: map[uint16]*entry{}, hdr: make([]byte, 0, 64)}
	c.head.next, c.head.prev = &c.head, &c.head
	return c
}

// Connection is one network connection of the client.
type Connection struct {
	Broker         string // the URL connected to
	SessionPresent bool

	c     *Client
	nc    net.Conn
	w     *bufio.Writer
	done  chan struct{}
	once  sync.Once
	err   error
	pong  chan struct{}
	wrote atomic.Int64 // unix nanos of the last write
	heard atomic.Int64 // unix nanos of the last whole packet read
}

// Done is closed when the connection ends; Err then says why.
func (cn *Connection) Done() <-chan struct{} { return cn.done }

// Err is why the connection ended (nil while it is open).
func (cn *Connection) Err() error {
	select {
	case <-cn.done:
		return cn.err
	default:
		return nil
	}
}

func (cn *Connection) close(err error) {
	cn.once.Do(func() {
		cn.err = err
		_ = cn.nc.Close()
		cn.c.mu.Lock()
		if cn.c.cur == cn {
			cn.c.cur = nil
		}
		cn.c.mu.Unlock()
		close(cn.done)
	})
}

// Drop closes the open connection, if any, with err (no DISCONNECT: the
// broker keeps the session and publishes the will); the caller's loop
// connects again, which resends what is unacknowledged. The uplink drops a
// connection on which a PUBACK did not come within its timeout.
func (c *Client) Drop(err error) {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn != nil {
		cn.close(err)
	}
}

// Connected reports whether a connection is open.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Connect opens a connection to the first broker that accepts one, resends
// the session's unacknowledged QoS 1 messages (with DUP, in their original
// order, when the broker has the session) and serves the connection. It
// fails if a connection is open.
func (c *Client) Connect(ctx context.Context) (*Connection, error) {
	if c.Connected() {
		return nil, errors.New("mqttclient: already connected")
	}
	var errs []error
	for _, b := range c.o.Brokers {
		cn, err := c.connect(ctx, strings.TrimSpace(b))
		if err == nil {
			return cn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

func (c *Client) connect(ctx context.Context, broker string) (*Connection, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	nc, err := dial(ctx, broker, c.o.TLS)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", broker, err)
	}
	cn, err := c.handshake(ctx, nc, broker)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("%s: %w", broker, err)
	}
	return cn, nil
}

func (c *Client) handshake(ctx context.Context, nc net.Conn, broker string) (*Connection, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	cn := &Connection{Broker: broker, c: c, nc: nc, w: bufio.NewWriterSize(nc, 64<<10), done: make(chan struct{}), pong: make(chan struct{}, 1)}
	ka := c.o.Keepalive / time.Second
	if ka > 65535 {
		ka = 65535
	}
	p := connectPacket{clientID: c.o.ClientID, username: c.o.Username, password: c.o.Password, hasPassword: c.o.HasPassword,
		cleanSession: c.o.CleanSession, keepalive: uint16(ka), will: c.o.Will}
	if _, err := cn.w.Write(p.append(nil)); err != nil {
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	if err := cn.w.Flush(); err != nil {
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	rd := &reader{r: bufio.NewReaderSize(nc, 16<<10), max: c.o.MaxPacketSize}
	pk, err := rd.read()
	if err != nil {
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if pk.kind() != typeConnack {
		return nil, fmt.Errorf("%w: packet type %d instead of CONNACK", ErrMalformed, pk.kind())
	}
	if code := ConnectReturnCode(pk.body[1]); code != Accepted {
		return nil, code
	}
	cn.SessionPresent = pk.body[0]&1 == 1
	if !stop() { // the deadline may have been cut short
		return nil, ctx.Err()
	}
	_ = nc.SetDeadline(time.Time{})

	// Resend under both locks: a Release waits until it is done, and no
	// Publish can write before the resent messages (cur is still nil).
	c.wmu.Lock()
	c.mu.Lock()
	err = c.resume(cn)
	if err == nil {
		c.cur = cn
	}
	c.mu.Unlock()
	c.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	cn.wrote.Store(time.Now().UnixNano())
	cn.heard.Store(time.Now().UnixNano())
	go cn.readLoop(rd)
	if c.o.Keepalive > 0 {
		go cn.keepalive()
	}
	return cn, nil
}

// resume clears tombstones and SUBSCRIBE waiters of the old connection and
// resends (session present) or drops (no session) the unacknowledged QoS 1
// messages. The caller holds wmu and mu.
func (c *Client) resume(cn *Connection) error {
	for id, e := range c.store {
		if e.prev == nil { // a tombstone or a SUBSCRIBE: nothing more comes for it
			if e.suback != nil {
				close(e.suback)
			}
			delete(c.store, id)
			c.recycle(e)
		}
	}
	if !cn.SessionPresent || c.o.CleanSession {
		for e := c.head.next; e != &c.head; {
			next := e.next
			c.unlink(e)
			delete(c.store, e.id)
			e.t.fail(ErrSessionLost)
			c.recycle(e)
			e = next
		}
		return nil
	}
	_ = cn.nc.SetWriteDeadline(time.Now().Add(c.o.Timeout))
	for e := c.head.next; e != &c.head; e = e.next {
		c.hdr = appendPublishHeader(c.hdr[:0], e.topic, e.id, len(e.payload), 1, e.retain, true)
		if _, err := cn.w.Write(c.hdr); err != nil {
			return fmt.Errorf("resend: %w", err)
		}
		if _, err := cn.w.Write(e.payload); err != nil {
			return fmt.Errorf("resend: %w", err)
		}
	}
	if err := cn.w.Flush(); err != nil {
		return fmt.Errorf("resend: %w", err)
	}
	return nil
}

// Disconnect sends DISCONNECT and closes the connection (the broker then
// discards the will).
func (c *Client) Disconnect() {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil {
		return
	}
	_ = cn.write([]byte{typeDisconnect << 4, 0})
	cn.close(ErrClosed)
}

// write writes a whole control packet and flushes.
func (cn *Connection) write(b []byte) error {
	c := cn.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(c.o.Timeout))
	_, err := cn.w.Write(b)
	if err == nil {
		err = cn.w.Flush()
	}
	if err != nil {
		cn.close(fmt.Errorf("write: %w", err))
		return err
	}
	cn.wrote.Store(time.Now().UnixNano())
	return nil
}

func (cn *Connection) readLoop(rd *reader) {
	for {
		pk, err := rd.read()
		if err != nil {
			cn.close(fmt.Errorf("read: %w", err))
			return
		}
		cn.heard.Store(time.Now().UnixNano())
		if err := cn.handle(pk); err != nil {
			cn.close(err)
			return
		}
	}
}

func (cn *Connection) handle(pk packet) error {
	c := cn.c
	switch pk.kind() {
	case typePuback:
		c.ack(uint16(pk.body[0])<<8 | uint16(pk.body[1]))
	case typeSuback:
		id := uint16(pk.body[0])<<8 | uint16(pk.body[1])
		c.mu.Lock()
		e := c.store[id]
		if e != nil && e.suback != nil {
			e.suback <- pk.body[2]
			delete(c.store, id)
			c.recycle(e)
		}
		c.mu.Unlock()
	case typePingresp:
		select {
		case cn.pong <- struct{}{}:
		default:
		}
	case typePublish:
		m, _ := parsePublish(pk) // checked by read
		if c.o.OnMessage != nil {
			c.o.OnMessage(string(m.topic), m.payload, m.retain)
		}
		if m.qos == 1 {
			return cn.write([]byte{typePuback << 4, 2, byte(m.id >> 8), byte(m.id)})
		}
	case typeConnack:
		return fmt.Errorf("%w: a second CONNACK", ErrMalformed)
	case typeUnsuback:
		// never subscribed away; ignore
	}
	return nil
}

// ack completes the QoS 1 message id: its payload is no longer referenced.
func (c *Client) ack(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.store[id]
	if e == nil || e.suback != nil {
		return
	}
	delete(c.store, id)
	if e.prev != nil {
		c.unlink(e)
	}
	if e.t != nil {
		e.t.acked(e.i)
	}
	c.recycle(e)
}

func (cn *Connection) keepalive() {
	ka := max(cn.c.o.Keepalive, 2*time.Millisecond)
	tick := time.NewTicker(ka / 2)
	defer tick.Stop()
	for {
		select {
		case <-cn.done:
			return
		case <-tick.C:
		}
		// A ping goes out when nothing was written or nothing whole was
		// read for half the keepalive: a client that publishes all the
		// time never needs one to keep the session (MQTT 3.1.1 3.1.2.10),
		// but a broker that reads and never answers, or dribbles one
		// packet for ever, is found only by a PINGRESP that does not come.
		if time.Since(time.Unix(0, cn.wrote.Load())) < ka/2 && time.Since(time.Unix(0, cn.heard.Load())) < ka/2 {
			continue
		}
		select { // a stale PINGRESP
		case <-cn.pong:
		default:
		}
		if err := cn.write([]byte{typePingreq << 4, 0}); err != nil {
			return
		}
		t := time.NewTimer(cn.c.o.Timeout)
		select {
		case <-cn.done:
			t.Stop()
			return
		case <-cn.pong:
			t.Stop()
		case <-t.C:
			cn.close(fmt.Errorf("%w within %v", ErrPingTimeout, cn.c.o.Timeout))
			return
		}
	}
}

func (c *Client) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Client) recycle(e *entry) {
	*e = entry{}
	c.free = append(c.free, e)
}

// newEntry takes a free packet id; the caller holds mu.
func (c *Client) newEntry() (*entry, error) {
	for range 65535 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.store[c.nextID]; used {
			continue
		}
		var e *entry
		if n := len(c.free); n > 0 {
			e, c.free = c.free[n-1], c.free[:n-1]
		} else {
			e = new(entry)
		}
		e.id = c.nextID
		c.store[e.id] = e
		return e, nil
	}
	return nil, ErrNoPacketID
}

// Publish writes a PUBLISH into the connection's buffer (call Flush to send
// what is buffered). At QoS 1 it needs t and i: the PUBACK marks message i
// of t acknowledged; until then, or until t.Release, the client keeps
// payload for a resend. It fails with ErrNotConnected without a connection,
// and closes the connection when the write fails.
func (c *Client) Publish(t *Tracker, i int, topic string, payload []byte, qos byte, retain bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	cn := c.cur
	if cn == nil {
		c.mu.Unlock()
		return ErrNotConnected
	}
	var id uint16
	if qos > 0 {
		e, err := c.newEntry()
		if err != nil {
			c.mu.Unlock()
			return err
		}
		e.topic, e.payload, e.retain, e.t, e.i = topic, payload, retain, t, i
		e.prev, e.next = c.head.prev, &c.head
		c.head.prev.next = e
		c.head.prev = e
		id = e.id
		t.out++
	}
	c.mu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(c.o.Timeout))
	c.hdr = appendPublishHeader(c.hdr[:0], topic, id, len(payload), qos, retain, false)
	_, err := cn.w.Write(c.hdr)
	if err == nil {
		_, err = cn.w.Write(payload)
	}
	if err != nil {
		cn.close(fmt.Errorf("write: %w", err))
		return fmt.Errorf("%w: write: %w", ErrNotConnected, err)
	}
	return nil
}

// Flush sends what Publish buffered. Without a connection it does nothing:
// the QoS 1 messages of a lost connection stay in the store and are resent
// after the next Connect (session present).
func (c *Client) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil || cn.w.Buffered() == 0 {
		return nil
	}
	_ = cn.nc.SetWriteDeadline(time.Now().Add(c.o.Timeout))
	if err := cn.w.Flush(); err != nil {
		cn.close(fmt.Errorf("write: %w", err))
		return fmt.Errorf("%w: write: %w", ErrNotConnected, err)
	}
	cn.wrote.Store(time.Now().UnixNano())
	return nil
}

// Subscribe subscribes topic at QoS 0 on the current connection and waits
// for the SUBACK until ctx ends.
func (c *Client) Subscribe(ctx context.Context, topic string) error {
	c.mu.Lock()
	cn := c.cur
	if cn == nil {
		c.mu.Unlock()
		return ErrNotConnected
	}
	e, err := c.newEntry()
	if err != nil {
		c.mu.Unlock()
		return err
	}
	ch := make(chan byte, 1)
	e.suback = ch
	id := e.id
	c.mu.Unlock()
	b := []byte{typeSubscribe<<4 | 2}
	b = appendRemaining(b, 2+2+len(topic)+1)
	b = append(b, byte(id>>8), byte(id))
	b = appendString(b, topic)
	b = append(b, 0)
	if err := cn.write(b); err != nil {
		return err
	}
	select {
	case code, ok := <-ch:
		if !ok {
			return ErrNotConnected
		}
		if code == 0x80 {
			return fmt.Errorf("subscribe %s: refused by the broker", topic)
		}
		return nil
	case <-cn.done:
		return ErrNotConnected
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Tracker follows the acknowledgements of a group of QoS 1 messages,
// numbered by the caller. Reuse it after Release.
type Tracker struct {
	c   *Client
	ch  chan struct{}
	ack []bool // under c.mu
	out int    // messages in the store, under c.mu
	err error  // under c.mu
}

// NewTracker returns a Tracker for messages 0..n-1 (grown as needed).
func (c *Client) NewTracker() *Tracker { return &Tracker{c: c, ch: make(chan struct{}, 1)} }

// Reset prepares t for messages 0..n-1; t must hold nothing (Release).
func (t *Tracker) Reset(n int) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if cap(t.ack) < n {
		t.ack = make([]bool, n)
	}
	t.ack = t.ack[:n]
	clear(t.ack)
	t.err = nil
	select {
	case <-t.ch:
	default:
	}
}

// C is signalled when an acknowledgement or an error arrives.
func (t *Tracker) C() <-chan struct{} { return t.ch }

// Acked reports whether message i was acknowledged, and the error that
// ended the tracking (ErrSessionLost) if any.
func (t *Tracker) Acked(i int) (bool, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.ack[i], t.err
}

func (t *Tracker) acked(i int) { // under c.mu
	t.ack[i] = true
	t.out--
	t.signal()
}

func (t *Tracker) fail(err error) { // under c.mu
	t.out--
	t.err = err
	t.signal()
}

func (t *Tracker) signal() {
	select {
	case t.ch <- struct{}{}:
	default:
	}
}

// Release forgets t's unacknowledged messages: none is resent after it
// returns and the client holds no reference to their payloads. A message
// that may still be acknowledged on the current connection keeps its
// packet id (without the payload) until its PUBACK or the connection's end,
// so a late PUBACK cannot confirm another message.
func (t *Tracker) Release() {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.out == 0 {
		return
	}
	for e := c.head.next; e != &c.head && t.out > 0; {
		next := e.next
		if e.t == t {
			c.unlink(e)
			e.topic, e.payload, e.t = "", nil, nil
			t.out--
			if c.cur == nil {
				delete(c.store, e.id)
				c.recycle(e)
			}
		}
		e = next
	}
}

// dial opens the network connection for a broker URL.
func dial(ctx context.Context, broker string, tc *tls.Config) (net.Conn, error) {
	u, err := url.Parse(broker)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	switch u.Scheme {
	case "tcp", "mqtt":
		return d.DialContext(ctx, "tcp", hostPort(u, "1883"))
	case "ssl", "tls", "mqtts":
		td := tls.Dialer{NetDialer: &d, Config: tc}
		return td.DialContext(ctx, "tcp", hostPort(u, "8883"))
	case "ws", "wss":
		return dialWebsocket(ctx, u, tc)
	}
	return nil, fmt.Errorf("scheme %q not supported", u.Scheme)
}

func hostPort(u *url.URL, port string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), port)
}

package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
)

// ReasonUntranslatable is the rejection reason of a spooled message that
// does not decode, so that it cannot become a Sparkplug message.
const ReasonUntranslatable = "untranslatable"

// ErrWaitingForHost: encoding sparkplug_b with primary_host_id, and that
// host application has not reported online; nothing is published.
var ErrWaitingForHost = errors.New("waiting for the primary host application to be online")

// spUplink is the uplink with encoding sparkplug_b: the gateway as a
// Sparkplug B edge node (docs/sparkplug.md).
//
// Every connection is a new paho client, because each CONNECT carries a
// will (the NDEATH) with the next bdSeq and paho fixes the will when the
// client is created. Sessions are clean
// (tck-id-principles-persistence-clean-session-311): nothing of an old
// session is resent, and after every connect the node publishes its birth
// sequence before any data.
//
// Sparkplug messages go at QoS 0 (tck-id-topics-ddata-mqtt and siblings).
// To keep the forwarder's rule that it commits only what the broker
// confirmed, Publish ends with an UNSUBSCRIBE of a topic the node never
// subscribes to and waits for its UNSUBACK: the broker handles a client's
// packets in order, so the acknowledgement follows the processing of every
// message published before it on that connection.
type spUplink struct {
	u    *Uplink
	opts paho.ClientOptions // the shared options; a copy is made per connection
	host string             // primary host id, "" for none

	rebirth chan struct{} // NCMD rebirth requests and the host's return
	restart chan struct{} // the primary host went offline: end the session

	mu       sync.Mutex // serializes publishing: wire order is seq order
	node     *sparkplug.Node
	client   paho.Client // the current connection, nil between them
	bdSeq    uint64      // of the current connection
	bd       sparkplug.Seq
	session  uint64 // counts connections
	hostUp   bool
	hostTS   int64 // timestamp of the last STATE message accepted from the host
	conn     atomic.Bool
	hostSeen atomic.Bool
	walk     int // servers to skip: one more each time the primary host went offline

	dcmd atomic.Pointer[func(device string, payload []byte)] // SubscribeDCMD's handler
}

// current returns the connection of the session, nil between sessions.
func (s *spUplink) current() paho.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.conn.Load() {
		return nil
	}
	return s.client
}

// dcmdFilter is the topic filter of the node's device commands.
func (s *spUplink) dcmdFilter() string {
	return sparkplug.DeviceTopic(s.node.Group(), sparkplug.DCMD, s.node.ID(), "+")
}

// subscribeDCMD sets the DCMD handler and subscribes on the current
// connection; connect subscribes on the next ones (and on the one being
// made, checking the handler again once it counts as connected).
func (s *spUplink) subscribeDCMD(handler func(device string, payload []byte)) {
	s.dcmd.Store(&handler)
	if c := s.current(); c != nil {
		s.subscribeOn(c)
	}
}

func (s *spUplink) subscribeOn(c paho.Client) {
	t := c.Subscribe(s.dcmdFilter(), 1, s.onMessage)
	if !t.WaitTimeout(s.u.cfg.Timeout) || t.Error() != nil {
		s.u.log.Warn("sparkplug DCMD subscribe failed", "topic", s.dcmdFilter(), "err", t.Error())
	}
}

func newSparkplug(u *Uplink, o *paho.ClientOptions) (*spUplink, error) {
	c := u.cfg.Sparkplug
	node, err := sparkplug.NewNode(c.GroupID, c.EdgeNodeID)
	if err != nil {
		return nil, fmt.Errorf("%s.sparkplug: %w", field, err)
	}
	o.SetCleanSession(true)
	o.SetAutoReconnect(false)
	o.SetOrderMatters(false)
	maxPacket := u.cfg.MaxPacketSize
	node.SetLimit(func(topic string, n int) bool { return packetSize(topic, n, 0) <= maxPacket })
	return &spUplink{u: u, opts: *o, host: c.PrimaryHostID, node: node,
		rebirth: make(chan struct{}, 1), restart: make(chan struct{}, 1)}, nil
}

func (s *spUplink) ready() bool {
	return s.conn.Load() && (s.host == "" || s.hostSeen.Load())
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run connects, re-connecting with backoff after every loss, until ctx
// ends; then it publishes the NDEATH and disconnects
// (tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath).
func (s *spUplink) run(ctx context.Context) error {
	u := s.u
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		lost := make(chan struct{})
		c, err := s.connect(ctx, lost)
		switch {
		case err == nil:
			bo.Reset()
			s.serve(ctx, c, lost)
		case ctx.Err() == nil: // not merely stopped while connecting
			u.setErr(err)
			d := bo.Next()
			u.log.Warn("mqtt connect failed", "err", err, "retry_in", d.Round(time.Millisecond))
			backoff.Sleep(ctx, d)
		}
	}
	return nil
}

// serve runs one connection until it is lost, ctx ends or the primary
// host goes offline, then forgets it; on ctx done or a host gone offline
// it publishes the NDEATH and disconnects.
func (s *spUplink) serve(ctx context.Context, c paho.Client, lost chan struct{}) {
	if s.host == "" {
		s.birth(c)
	}
	restart := s.session1(ctx, c, lost)
	s.mu.Lock()
	s.client = nil
	s.conn.Store(false)
	s.u.m.Connected.Set(0)
	s.node.EndSession()
	s.mu.Unlock()
	if ctx.Err() != nil || restart {
		s.goodbye(c)
	}
	if restart {
		// tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk:
		// the next session starts at the next server of the url list
		s.mu.Lock()
		s.walk++
		s.mu.Unlock()
	}
}

// session1 serves one connection until it is lost, ctx ends or the primary
// host goes offline (restart true).
func (s *spUplink) session1(ctx context.Context, c paho.Client, lost chan struct{}) (restart bool) {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-lost:
			return false
		case <-s.restart:
			s.u.log.Warn("sparkplug primary host application offline: ending the session", "host", s.host)
			return true
		case <-s.rebirth:
			s.mu.Lock()
			ok := s.host == "" || s.hostUp
			s.mu.Unlock()
			if ok {
				s.birth(c)
			}
		}
	}
}

// goodbye publishes the NDEATH and disconnects.
func (s *spUplink) goodbye(c paho.Client) {
	s.mu.Lock()
	bd := s.bdSeq
	s.mu.Unlock()
	if p, err := s.node.Death(bd, time.Now().UnixMilli()); err == nil && c.IsConnectionOpen() {
		t := c.Publish(s.node.DeathTopic(), 1, false, p)
		t.WaitTimeout(s.u.cfg.Timeout)
	}
	c.Disconnect(250)
}

// connect opens a connection with the next bdSeq's NDEATH as its will,
// subscribes to NCMD (and the primary host's STATE) and makes it current.
func (s *spUplink) connect(ctx context.Context, lost chan struct{}) (paho.Client, error) {
	u := s.u
	s.mu.Lock()
	bd := s.bd.Next() // tck-id-topics-nbirth-bdseq-increment
	walk := s.walk
	s.mu.Unlock()
	will, err := s.node.Death(bd, time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	o := s.opts
	// paho tries the servers in order and holds one connection at a time
	// (tck-id-operational-behavior-primary-application-state-with-multiple-servers-single-server)
	o.Servers = walkServers(s.opts.Servers, walk)
	o.SetBinaryWill(s.node.DeathTopic(), will, 1, false) // tck-id-payloads-ndeath-will-message-qos, -retain
	var once sync.Once
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		u.setErr(fmt.Errorf("connection lost: %w", err))
		u.log.Warn("mqtt connection lost", "err", err)
		s.conn.Store(false)
		once.Do(func() { close(lost) })
	})
	c := paho.NewClient(&o)
	t := c.Connect()
	u.attempts.Add(1)
	select {
	case <-t.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	subs := map[string]byte{s.node.CommandTopic(): 1} // tck-id-message-flow-edge-node-ncmd-subscribe
	if s.host != "" {
		subs[sparkplug.StateTopic(s.host)] = 1
	}
	dcmd := s.dcmd.Load() != nil
	if dcmd {
		subs[s.dcmdFilter()] = 1 // tck-id-message-flow-device-dcmd-subscribe
	}
	s.mu.Lock()
	s.client, s.bdSeq = c, bd
	s.session++
	s.hostUp = false
	s.hostSeen.Store(false)
	// the host's STATE timestamps are per server session: the retained STATE
	// of this server is its latest, even if older than the last one seen on
	// the server left (the host's session there may have begun earlier)
	s.hostTS = 0
	s.node.EndSession()
	if s.host == "" { // live from now; with a primary host, from its STATE online
		s.node.SetLiveSince(time.Now().UnixMilli())
	}
	s.mu.Unlock()
	u.m.Sparkplug.BdSeq.Set(float64(bd))
	st := c.SubscribeMultiple(subs, s.onMessage)
	if !st.WaitTimeout(u.cfg.Timeout) || st.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe %v: %w", subs, errors.Join(st.Error(), errors.New("no SUBACK")))
	}
	if u.everUp.Swap(true) {
		u.m.Reconnects.Inc()
	}
	u.setErr(nil)
	s.conn.Store(true)
	if !dcmd && s.dcmd.Load() != nil {
		// SubscribeDCMD came while connecting: it found no connection
		s.subscribeOn(c)
	}
	u.m.Connected.Set(1)
	u.log.Info("mqtt connected as sparkplug edge node", "group", s.node.Group(), "edge_node", s.node.ID(), "bdSeq", bd)
	return c, nil
}

// walkServers returns servers rotated left by n: the server after the one
// whose primary host went offline first, the others after it in list order.
func walkServers(servers []*url.URL, n int) []*url.URL {
	if len(servers) == 0 {
		return nil
	}
	n %= len(servers)
	return append(slices.Clone(servers[n:]), servers[:n]...)
}

// onMessage handles NCMD, DCMD and the primary host's STATE.
func (s *spUplink) onMessage(_ paho.Client, m paho.Message) {
	if t, err := sparkplug.ParseTopic(m.Topic()); err == nil && t.Type == sparkplug.DCMD {
		if h := s.dcmd.Load(); h != nil && t.Group == s.node.Group() && t.Node == s.node.ID() {
			(*h)(t.Device, m.Payload())
		}
		return
	}
	if m.Topic() == s.node.CommandTopic() {
		p, err := sparkplug.Decode(m.Payload())
		if err != nil {
			s.u.m.Sparkplug.NCMDErrors.Inc()
			s.u.log.Warn("sparkplug NCMD", "err", err)
			return
		}
		if sparkplug.RebirthRequested(p) { // tck-id-operational-behavior-data-commands-rebirth-action-1
			s.u.m.Sparkplug.RebirthRequests.Inc()
			s.u.log.Info("sparkplug rebirth requested")
			s.mu.Lock()
			s.node.EndSession()
			s.mu.Unlock()
			signal(s.rebirth)
		}
		return
	}
	var st sparkplug.State
	if err := json.Unmarshal(m.Payload(), &st); err != nil {
		s.u.log.Warn("sparkplug STATE", "topic", m.Topic(), "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp,
	// tck-id-operational-behavior-edge-node-termination-host-offline-timestamp
	if st.Timestamp < s.hostTS {
		return
	}
	s.hostTS = st.Timestamp
	switch {
	case st.Online && !s.hostUp:
		s.hostUp = true
		s.hostSeen.Store(true)
		s.node.EndSession()
		s.node.SetLiveSince(time.Now().UnixMilli()) // what was spooled before is backlog
		signal(s.rebirth)
	case !st.Online && s.hostUp:
		s.hostUp = false
		s.hostSeen.Store(false)
		signal(s.restart)
	}
}

// birth publishes the birth sequence on c unless a Publish already did in
// this session (rebirth requests and the host's return end the session's
// birth first).
func (s *spUplink) birth(c paho.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != c || s.node.Born() {
		return
	}
	if err := s.birthLocked(context.Background()); err != nil {
		s.u.log.Warn("sparkplug birth", "err", err)
	}
}

func (s *spUplink) birthLocked(ctx context.Context) error {
	msgs, err := s.node.Birth(s.bdSeq, time.Now().UnixMilli())
	s.logSetAside()
	if err != nil {
		return err
	}
	if err := s.send(ctx, s.client, msgs, ""); err != nil {
		s.node.EndSession()
		return err
	}
	if err := s.confirm(ctx, s.client); err != nil {
		return err
	}
	s.u.m.Sparkplug.Births.Inc()
	return nil
}

// logSetAside logs and counts, once each, the devices the node set aside
// because their DBIRTH does not fit max_packet_size.
func (s *spUplink) logSetAside() {
	for _, a := range s.node.TakeSetAside() {
		s.u.m.Sparkplug.SetAside.Inc()
		s.u.log.Error("sparkplug device set aside: its DBIRTH exceeds max_packet_size; its messages are set aside until a birth of it fits",
			"device", a.Device, "dbirth_bytes", a.Bytes, "max_packet_size", s.u.cfg.MaxPacketSize)
	}
}

// send publishes msgs at QoS 0, not retained, waiting until each is
// written. msgID names the spooled message they came from in errors.
func (s *spUplink) send(ctx context.Context, c paho.Client, msgs []sparkplug.Message, msgID string) error {
	for i := range msgs {
		m := &msgs[i]
		if n := packetSize(m.Topic, len(m.Payload), 0); n > s.u.cfg.MaxPacketSize {
			return &uplink.RejectedError{MsgID: msgID, Reason: uplink.ReasonTooLarge,
				Err: fmt.Errorf("a %d-byte %s packet exceeds max_packet_size %d", n, m.Type, s.u.cfg.MaxPacketSize)}
		}
		t := c.Publish(m.Topic, 0, false, m.Payload)
		if err := s.waitToken(ctx, t, "publish "+string(m.Type)); err != nil {
			return err
		}
		s.u.m.Bytes.Add(float64(len(m.Payload)))
	}
	return nil
}

func (s *spUplink) waitToken(ctx context.Context, t paho.Token, what string) error {
	timer := time.NewTimer(s.u.cfg.Timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case <-timer.C:
		return fmt.Errorf("%s: not done within %v", what, s.u.cfg.Timeout)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// confirm waits until the broker processed everything sent before (see
// spUplink).
func (s *spUplink) confirm(ctx context.Context, c paho.Client) error {
	return s.waitToken(ctx, c.Unsubscribe(sparkplug.NodeTopic(s.node.Group(), sparkplug.NDATA, s.node.ID())), "confirm (UNSUBACK)")
}

// publish translates msgs to Sparkplug messages and publishes them,
// starting with the birth sequence when the session has none yet. It
// returns nil only when the broker processed all of them on one
// connection.
func (s *spUplink) publish(ctx context.Context, msgs []telemetry.Envelope) error {
	u := s.u
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) error {
		u.m.Errors.Inc()
		return fmt.Errorf("mqtt uplink: %w", err)
	}
	c := s.client
	if c == nil || !s.conn.Load() {
		if err := u.LastError(); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrNotConnected, err))
		}
		return fail(ErrNotConnected)
	}
	if s.host != "" && !s.hostUp {
		return fail(fmt.Errorf("%w %q", ErrWaitingForHost, s.host))
	}
	session := s.session
	start := time.Now()
	if !s.node.Born() {
		if err := s.birthLocked(ctx); err != nil {
			return fail(fmt.Errorf("birth: %w", err))
		}
	}
	now := time.Now().UnixMilli()
	for i := range msgs {
		e := &msgs[i]
		out, err := s.node.Translate(e, now)
		s.logSetAside()
		if errors.Is(err, sparkplug.ErrBirthTooLarge) {
			// this device alone: nothing of it was sent, the session
			// goes on (the forwarder sets the message aside)
			return fail(fmt.Errorf("publish %s: %w", e.MsgID, &uplink.RejectedError{MsgID: e.MsgID, Reason: uplink.ReasonTooLarge, Err: err}))
		}
		if err != nil {
			s.node.EndSession() // the next attempt starts with a birth sequence
			return fail(fmt.Errorf("publish %s: %w", e.MsgID, &uplink.RejectedError{MsgID: e.MsgID, Reason: ReasonUntranslatable, Err: err}))
		}
		if err := s.send(ctx, c, out, e.MsgID); err != nil {
			s.node.EndSession()
			return fail(fmt.Errorf("publish %s: %w", e.MsgID, err))
		}
	}
	if err := s.confirm(ctx, c); err != nil {
		s.node.EndSession()
		return fail(err)
	}
	if s.session != session {
		return fail(ErrUnconfirmed)
	}
	u.m.Latency.Observe(time.Since(start).Seconds())
	u.m.Published.Add(float64(len(msgs)))
	return nil
}

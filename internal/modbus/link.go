package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/modbus/checksum"
)

// port is an open connection: a TCP socket or a serial line opened
// non-blocking (openSerial). Both honour deadlines and expose their
// descriptor for the drainer.
type port interface {
	io.ReadWriteCloser
	SetDeadline(t time.Time) error
	SyscallConn() (syscall.RawConn, error)
}

// linkError is a failure of the link itself: its Status (timeout,
// connection, canceled) and the cause, both visible to errors.Is/As.
type linkError struct {
	status Status
	err    error
}

func (e *linkError) Error() string   { return e.status.Error() + ": " + e.err.Error() }
func (e *linkError) Unwrap() []error { return []error{e.status, e.err} }

func linkErr(s Status, format string, args ...any) error {
	return &linkError{status: s, err: fmt.Errorf(format, args...)}
}

// quietLimit bounds one wait for a silent line, in multiples of the
// silence: a line that keeps talking longer fails the request as framing.
const quietLimit = 10

// link is one connection (TCP socket or serial port) shared by every device
// on the same transport and address. Its turns keep exactly one device (and
// one request) on it at a time and decide who goes next; all fields below
// turns are owned by the device holding the link.
//
// The "never guess an RTU reply" rule lives here, in exchange: RTU and
// ASCII carry no transaction id, so before a request the link discards any
// input already pending (a reply to nobody), and after anything but a
// well-formed answer (a timeout, a broken or foreign frame, a cancellation,
// a fresh connection, unsolicited bytes) it first waits until the line has
// been silent for `silence`, discarding and counting what arrives, so that
// a late reply has come and gone before the next request is sent.
//
// A reply later than that (timeout + silence after its request) cannot be
// told from an answer by its content, so the link also ties late replies
// to the unit that sent them and never lets one be taken for an answer:
//   - a unit whose request timed out is "pending" (share.lateSent): until
//     it answers in a way that can only be its answer, its replies are
//     untrusted. Its next answer is held (confirm) until the line has stayed
//     silent for as long as separates its unanswered request from this one,
//     plus silence: had the answer been the late reply to the earlier
//     request, the real answer to this one comes in that window, and both
//     are discarded (the request fails as a timeout).
//   - a well-formed frame from another unit of the link while a unit is
//     asked is that unit's late reply: counted against it (its errors of
//     kind wrong_unit, suspect replies), the silence wait that follows is
//     charged to it, and the asked unit's read is sent again on the quiet
//     line (reads only: a write is not repeated).
//   - bytes found on the line while a unit is pending (before a request,
//     or during the silence wait after its timeout) are its late reply.
//   - a held answer is never published as it is (prove): after the silent
//     window a read of another shape (tieRead: a probe of another byte
//     count, a read the unit answered before, the read one register
//     wider) must be answered with its own shape, then the request is sent
//     again (a unit one request behind keeps the window silent); on Modbus
//     TCP too after a timeout or any exception (a converter answers 10/11,
//     or 4, 6, 3 at once, in place of a slow slave and relays its answer
//     later), for answers of the unanswered request's shape whichever unit
//     they come from. An
//     exception in doubt is returned as the unit's answer; the doubt stays.
//   - a second frame after an accepted reply, or a reply from the asked
//     unit with another function or byte count, is evidence (untied): the
//     device's read is discarded (StatusUntied) and the unit is pending.
//   - on RTU, bytes that are no frame ahead of the asked unit's
//     well-formed answer (resync) trail the frame received before them:
//     evidence against its answer (noiseAhead); the asked unit's answer
//     is discarded and asked for again on the quiet line, it is not blamed.
//   - while a unit in doubt holds an answer to a read with a probe, it
//     lends the link to other units' turns for the window (confirm,
//     lendTurns, turns.lend): only the asked unit's answer is accepted in
//     them, anything else heard is evidence against the held answer.
//
// Each is counted in smelter_modbus_suspect_replies_total{device} and
// warned about naming the unit and device, with how late it answered and
// the silence that would cover it.
type link struct {
	key       string
	transport Transport
	address   string
	serial    SerialConfig
	timeout   time.Duration
	silence   time.Duration
	backMin   time.Duration
	backMax   time.Duration
	log       *slog.Logger
	// The connection's counters, at 0 from the start (newLink, and a
	// device's suspect replies from when it joins: Pool.device); owned by
	// the device holding the link.
	discarded prometheus.Counter
	suspect   map[string]prometheus.Counter // by device ("": unknown): replies that cannot be tied to their request
	reopened  prometheus.Counter            // reconnects after a reply in doubt (not logged one by one)
	noise     map[string]prometheus.Counter // by device ("": none): runs of bytes that are no frame ahead of an answer (noiseAhead)
	owed      map[string]prometheus.Counter // by device ("": unknown unit): requests left owed their answer (owe)
	strays    map[byte]prometheus.Counter   // by the unit id claimed: frames of units no device reads (stray)
	lastStray time.Time                     // last stray frame warning (one a minute)

	turns     turns
	connected atomic.Bool
	m         *Metrics
	abort     abort // ends a wait in flight when its context ends (roundTrip)

	watched   <-chan struct{} // Done of the context abort is registered with
	stopWatch func() bool     // that registration's stop

	p           port
	drainer     *drainer
	closed      bool
	failures    int
	nextDial    time.Time
	lastDialErr error
	downLog     bool
	announce    bool // log the next successful connect at INFO: the first one, or after a failure or loss
	tid         uint16
	quiet       bool      // framed-serial encodings: wait for a silent line before the next request
	lastRx      time.Time // last byte received or end of the last exchange
	lastWarn    time.Time // last discard warning (rate-limited to one a minute)
	accepted    bool      // the last exchange ended with an accepted reply (data or exception)
	heard       bool      // a byte was received on this connection since it opened (silentPeer)
	lastSuspect time.Time // last "late reply may have been taken" warning (one a minute)
	got         int       // bytes received in the current exchange
	sentAt      time.Time // when the current (last) request was sent
	pending     *share    // framed lines: the device whose request was last left unanswered, until it answers for certain
	afterTO     bool      // the line is in doubt after a timeout: bytes in the silence wait are pending's late reply
	cur, last   *share    // the device of the current exchange, and of the one before
	doubt       *share    // the device whose exchange left the line in doubt: it pays for the silence wait
	buf         [maxADU]byte
	// RTU lines (review 18 M-2): frameOf is the device whose answer (its
	// request sent at frameSent) is the last thing received on the line,
	// nil once the line has been silent for silence since (prepare), or a
	// connection is opened; noisy is the number of bytes that are no frame
	// found ahead of the asked unit's well-formed answer in the last
	// roundTrip (resync), 0 when none; noiseOf, noiseSent are frameOf and
	// frameSent when that request was sent: the frame the bytes trailed
	frameOf, noiseOf     *share
	frameSent, noiseSent time.Time
	noisy                int
	// Modbus TCP reads what is available into rx (one read per reply as
	// a rule) and frames from it. Bytes after the reply stay in rx:
	// prepare discards and counts them with the socket's.
	rx             [maxADU]byte
	rxHead, rxTail int   // rx[rxHead:rxTail] is received and not yet framed
	rxErr          error // how the last read of rx ended, returned once rx is empty
	junk           [256]byte
	skipFn         func(frame []byte) // l.skipMBAP, made once
	answeredTids   [8]uint16          // Modbus TCP: the last transaction ids answered on this socket
	nAnswered      int
	req            []byte
	probe          []byte // prove's read of another shape (tieRead)
	// the exchange in progress (exchangeHeld): its device's metrics, and
	// whether it sent a request already (trip counts the others)
	tripDev *devMetrics
	tripped bool
	// lentFor is the unit in doubt that lent the link to other units
	// while its held answer's window runs (confirm, lendWindow); lentSeen
	// says what was heard on the line meanwhile that was not the asked
	// unit's answer ("" nothing): evidence against its held answer
	lentFor  *share
	lentSeen string
	// Modbus TCP: the requests (unit and PDU) left unanswered on the
	// connection (a timeout, an exception: a gateway's 10/11 or any other
	// a converter may answer in place of its slave, a reply that was another
	// request's) in the last owedFor: the answers the connection still
	// owes. A gateway may relay such a request's late answer to any later
	// request on the connection, whichever unit it asks, also after a proof
	// passed (review 18 H-1, H-2): a proof ties the answers it saw, not an
	// answer still on its way, so no answer ends the doubt; an entry is
	// forgotten owedFor after it was last owed, whatever else failed
	// meanwhile (review attack-mb H1). An answer goes through prove when
	// one of them has its shape (function and byte count) but is another
	// request: a relay of it would pass every check and carry other
	// registers' values. An answer of another shape cannot be such a relay
	// (it fails the byte count or function check), and a relay of the same
	// request (unit and PDU) carries the same registers' values, read
	// earlier, stamped when it arrived: so a dead unit's timeouts do not put
	// its neighbours' other reads in doubt, nor does a unit's own timeout
	// its next read of the same registers (review 14 F2).
	//
	// owedReqs holds at most maxRelay of them; when one more is owed, the
	// one owed longest ago leaves the list but its shape stays in doubt
	// (owedShapes: when the last request of that shape that left was last
	// owed): every answer of that shape, to any request, is proven until
	// owedFor after it. Nothing owed is forgotten before its owedFor.
	owedReqs   []owedReq
	owedShapes map[replyShape]time.Time
	// now is the pool's data clock (WithClock); arrived is its reading
	// when the last answer (data or exception) was complete in roundTrip:
	// the time of the answer exchange returns, which prove may return
	// after a held answer's window (review 14 F3)
	now     func() time.Time
	arrived time.Time
}

// maxRelay bounds the unanswered requests a Modbus TCP link remembers one
// by one; beyond it a request's shape is remembered (link.owedShapes).
const maxRelay = 8

// owedTimeouts is how long, in request timeouts, a Modbus TCP link keeps
// an unanswered request's late answer owed (owedFor): a gateway relaying
// an answer later than that to another request of its shape is not caught.
const owedTimeouts = 30

// owedFor is how long an unanswered request's answer stays owed.
func (l *link) owedFor() time.Duration { return owedTimeouts * l.timeout }

// replyShape is the function and byte count of a request's reply
// (readShape; count -1 for a write).
type replyShape struct {
	fc    byte
	count int
}

// relayKey is a request left unanswered on Modbus TCP: its unit, the
// shape of its reply, and its PDU's first 5 bytes (a read's whole PDU).
type relayKey struct {
	unit byte
	replyShape
	pdu [5]byte
}

func relayKeyOf(unit byte, pdu []byte) relayKey {
	k := relayKey{unit: unit}
	k.fc, k.count = readShape(pdu)
	copy(k.pdu[:], pdu)
	return k
}

// owedReq is a request left unanswered and when it last was; ats is
// when it was, each time in the last owedFor (oldest first, the newest
// maxAgree+1 kept): as many of its answers may still come (a unit with a
// queue of replies sends each late), each until owedFor after it was owed.
type owedReq struct {
	key relayKey
	at  time.Time
	ats []time.Time
}

// live is how many of o's answers may still come at now: the times it
// was owed in the last owedFor.
func (o *owedReq) live(now time.Time, owedFor time.Duration) int {
	n := 0
	for _, at := range o.ats {
		if now.Sub(at) < owedFor {
			n++
		}
	}
	return n
}

// relayDoubt records the request last sent on Modbus TCP as unanswered:
// its late answer may be relayed to a later request.
func (l *link) relayDoubt() {
	if !l.framed() && len(l.req) > mbapHeader {
		l.owe(l.req[6], l.req[mbapHeader:])
	}
}

// owe records unit's request pdu as owed its answer (owedReqs, owedShapes;
// counted in smelter_modbus_owed_answers_total): on Modbus TCP any request
// left unanswered; on an RTU or ASCII line a read the unit answered with
// an exception (oweException; review attack-mb L1) or with another
// request's function or byte count, whose real answer may follow late, to
// a later request of the unit. When maxRelay requests are owed already,
// the one owed longest ago leaves the list and its shape stays owed until
// owedFor after it (owedShapes).
func (l *link) owe(unit byte, pdu []byte) {
	l.countBy(&l.owed, l.m.owed, l.turns.byUnit(unit))
	now := time.Now()
	l.forgetPaid(now)
	k := relayKeyOf(unit, pdu)
	oldest := -1
	for i, o := range l.owedReqs {
		if o.key == k {
			o := &l.owedReqs[i]
			o.at = now
			if len(o.ats) > maxAgree {
				o.ats = append(o.ats[:0], o.ats[1:]...) // more than agree outnumbers either way
			}
			o.ats = append(o.ats, now)
			return
		}
		if oldest < 0 || o.at.Before(l.owedReqs[oldest].at) {
			oldest = i
		}
	}
	if len(l.owedReqs) >= maxRelay {
		o := l.owedReqs[oldest]
		if at, ok := l.owedShapes[o.key.replyShape]; !ok || at.Before(o.at) {
			if !ok {
				l.log.Warn("modbus more requests owed their answers on the connection than it remembers one by one: every answer of the shape is proven until they are no longer owed",
					"function", o.key.fc, "bytes", o.key.count, "owed", len(l.owedReqs)+1, "for", l.owedFor())
			}
			if l.owedShapes == nil {
				l.owedShapes = map[replyShape]time.Time{}
			}
			l.owedShapes[o.key.replyShape] = o.at
		}
		l.owedReqs = append(l.owedReqs[:oldest], l.owedReqs[oldest+1:]...)
	}
	l.owedReqs = append(l.owedReqs, owedReq{key: k, at: now, ats: []time.Time{now}})
}

// owedAnswers returns how many answers of shape unit may still owe (owe:
// each time a request was owed, in the last owedFor, each counted until
// owedFor after it; on Modbus TCP of any unit, on an RTU or ASCII line of
// unit), and false when that is not known: a request of that shape left
// the list (owedShapes).
func (l *link) owedAnswers(unit byte, shape replyShape) (int, bool) {
	now := time.Now()
	n := 0
	for i := range l.owedReqs {
		if o := &l.owedReqs[i]; o.key.replyShape == shape && (!l.framed() || o.key.unit == unit) {
			n += o.live(now, l.owedFor())
		}
	}
	at, ok := l.owedShapes[shape]
	return n, !ok || now.Sub(at) >= l.owedFor()
}

// shapeOf is read pdu's reply shape.
func shapeOf(pdu []byte) replyShape {
	fc, count := readShape(pdu)
	return replyShape{fc, count}
}

// forgetPaid forgets the requests and shapes last owed owedFor or more
// before now.
func (l *link) forgetPaid(now time.Time) {
	for i := range l.owedReqs {
		o := &l.owedReqs[i]
		o.ats = slices.DeleteFunc(o.ats, func(at time.Time) bool { return now.Sub(at) >= l.owedFor() })
	}
	l.owedReqs = slices.DeleteFunc(l.owedReqs, func(o owedReq) bool { return len(o.ats) == 0 })
	maps.DeleteFunc(l.owedShapes, func(_ replyShape, at time.Time) bool { return now.Sub(at) >= l.owedFor() })
}

// inDoubt reports whether s's answer to unit's request pdu must be proven
// (prove): on an RTU or ASCII line when s's own request went unanswered
// (s.lateSent); on Modbus TCP when a request left unanswered on the
// connection has the shape of pdu's reply but is another request (another
// unit or PDU): a gateway relaying its late answer would give other
// registers' values; or when a request of that shape left the list
// (owedShapes: it may have been any request, this one's too).
//
// On an RTU or ASCII line also when the unit owes the answer to another
// read of pdu's reply shape that it answered with an exception (owedBy).
func (l *link) inDoubt(s *share, unit byte, pdu []byte) bool {
	if l.framed() {
		return !s.lateSent.IsZero() || l.owedBy(unit, pdu)
	}
	return l.owedBy(unit, pdu)
}

// owedBy reports whether a request owed its answer (owe) has the shape of
// pdu's reply but is another request: on Modbus TCP of any unit (a
// gateway relays one unit's answer to another's request); or whether a
// request of that shape left the list (owedShapes: any unit).
//
// On an RTU or ASCII line, whether unit owes any answer of that shape,
// pdu's own too (a frame carries the unit that sent it): a unit with a
// queue of replies sends the answers it owes in turn, and an answer it
// sent in place of another read's may have left that read's own in its
// queue, proven or not (review mb-proof MEDIUM-1: which request an owed
// answer belongs to is not known, only how many of the shape may come).
func (l *link) owedBy(unit byte, pdu []byte) bool {
	if len(l.owedReqs) == 0 && len(l.owedShapes) == 0 {
		return false // the healthy path: no key to build
	}
	k := relayKeyOf(unit, pdu)
	now := time.Now()
	for _, o := range l.owedReqs {
		if o.key.replyShape == k.replyShape && now.Sub(o.at) < l.owedFor() &&
			(l.framed() && o.key.unit == unit || !l.framed() && o.key != k) {
			return true
		}
	}
	at, ok := l.owedShapes[k.replyShape]
	return ok && now.Sub(at) < l.owedFor()
}

func newLink(cfg Config, log *slog.Logger, m *Metrics, now func() time.Time) *link {
	key := cfg.linkKey()
	l := &link{
		key:       key,
		transport: cfg.Transport,
		address:   cfg.Address,
		serial:    cfg.Serial,
		timeout:   cfg.Timeout,
		silence:   cfg.silence(),
		backMin:   cfg.BackoffMin,
		backMax:   cfg.BackoffMax,
		log:       log.With("connection", key),
		m:         m,
		announce:  true,
		now:       now,
	}
	l.skipFn = l.skipMBAP
	// The series a user alerts on exist from the start: the connection
	// down (never connected yet), bytes dropped, replies that cannot be
	// tied to their request (from an unknown sender here; from a device
	// of the link: Pool.device), reopens after a reply in doubt.
	m.connUp.WithLabelValues(key).Set(0)
	l.discarded = m.discarded.WithLabelValues(key)
	l.reopened = m.reopened.WithLabelValues(key)
	l.suspect = map[string]prometheus.Counter{"": m.suspect.WithLabelValues(key, "")}
	return l
}

// skipMBAP discards a Modbus TCP frame that does not answer the request
// in flight. A frame repeating a transaction already answered on this
// socket is a duplicate reply: a suspect reply of the device reading its
// unit (the MBAP header says which), warned about naming it.
func (l *link) skipMBAP(frame []byte) {
	l.discard(len(frame))
	l.answeredFrame(frame)
}

// answeredFrame reports whether b starts with the MBAP header of a
// transaction already answered on this socket, and counts it as a
// duplicate reply of its unit if so.
func (l *link) answeredFrame(b []byte) bool {
	if len(b) < mbapHeader {
		return false
	}
	tid := binary.BigEndian.Uint16(b)
	for i := range min(l.nAnswered, len(l.answeredTids)) {
		if l.answeredTids[i] == tid {
			l.duplicate(b[6])
			return true
		}
	}
	return false
}

// duplicate counts and reports a duplicate reply from unit on Modbus TCP.
func (l *link) duplicate(unit byte) {
	s := l.turns.byUnit(unit)
	l.countSuspect(s)
	if time.Since(l.lastSuspect) < time.Minute {
		return
	}
	l.lastSuspect = time.Now()
	dev := ""
	if s != nil {
		dev = s.id
	}
	l.log.Warn("modbus unit sent a second reply to a request already answered (a duplicate): its accepted replies may not be its answers",
		"unit", unit, "device", dev)
}

// stepBound is the longest the link goes without progress (turns.moved)
// while it works: every wait of an exchange is bounded by a deadline set
// just before it (setDeadline), the longest being a held answer's confirm
// window (timeout + (quietLimit+1) x silence) on an RTU or ASCII line and
// a dial or a reply (timeout) on Modbus TCP; serial RTU's 3.5-character
// gap is added. What happens between two waits is computation.
func (l *link) stepBound() time.Duration {
	if !l.framed() {
		return l.timeout
	}
	b := l.timeout + (quietLimit+1)*l.silence
	if l.transport == RTU {
		b += t35(l.serial.Baud) // prepare's gap, a timer
	}
	return b
}

// framed reports whether the encoding carries no transaction id (RTU or
// ASCII, on a serial line or tunnelled over TCP).
func (l *link) framed() bool { return l.transport != TCP }

// exchange sends one request PDU (function code first) to unit and appends
// the reply's PDU to dst. It opens the connection if needed (failing at
// once while backing off after failed attempts), keeps one request in
// flight per link, and returns:
//   - a Status error for an exception reply (errors.Is(err, Status(2)));
//   - a *ReplyError for a reply that does not answer the request (wrong
//     transaction id, unit, function, byte count or checksum; malformed);
//   - a *linkError with StatusTimeout, StatusConnection or StatusCanceled.
//
// s is the requesting device's account on the link (turns), dev its
// metrics: every request sent is counted by result and error kind, every
// failed connect attempt as a connection error (a request failing fast
// during reconnect backoff is not counted).
func (l *link) exchange(ctx context.Context, s *share, dev *devMetrics, unit byte, pdu, dst []byte) ([]byte, error) {
	if err := l.turns.acquire(ctx, s); err != nil {
		return nil, err
	}
	defer l.turns.release(s)
	return l.exchangeHeld(ctx, s, dev, unit, pdu, dst)
}

// exchangeHeld is exchange for s holding the link already (a read's turn).
func (l *link) exchangeHeld(ctx context.Context, s *share, dev *devMetrics, unit byte, pdu, dst []byte) ([]byte, error) {
	l.turns.mark()
	defer l.turns.mark()
	// a Modbus TCP socket to reopen after another exchange's doubt closed
	// it (settle), neither lost nor failed (announce)
	reopen := l.p == nil && !l.framed() && !l.announce && !l.closed
	until := time.Now().Add(l.timeout) // reopen's retries end then
	if reopen {
		if err := l.reopen(ctx, dev, until); err != nil {
			return nil, err // counted by dialFailed, as any failed connect
		}
	} else if err := l.ensure(ctx, dev); err != nil {
		return nil, err
	}
	l.cur = s
	defer func() { l.last, l.cur = s, nil }()
	defer func(dev *devMetrics, tripped bool) { l.tripDev, l.tripped = dev, tripped }(l.tripDev, l.tripped)
	l.tripDev, l.tripped = dev, false // an exchange lent the line in a window ends before its lender's goes on
	start := time.Now()
	reply, late, err := l.askOwn(ctx, s, unit, pdu, start)
	for lost := 1; reopen && StatusOf(err) == StatusConnection && isRead(pdu) && ctx.Err() == nil; lost++ {
		// the socket reopened for this request was lost before an answer:
		// a converter serving one client at a time, still waiting for the
		// slave whose request timed out, finds its slot taken by the socket
		// just closed and closes this one (review mbconv M1). Not this
		// unit's fault: its read is sent again on a new socket (an answer
		// to it is its answer; a relay of the late one is owed), once,
		// then while the request's timeout lasts (review attack-mb M1)
		l.log.Debug("modbus connection reopened after a reply in doubt was lost before an answer: the request sent again on a new one",
			"error", err, "unit", unit)
		l.drop()
		if lost > 1 && time.Now().After(until) {
			err = linkErr(StatusConnection, "connection closed before an answer on %d sockets in %v after the socket was closed on a reply in doubt (a converter serving one client at a time, still waiting for a slave?): %w",
				lost, time.Since(start).Round(time.Millisecond), err)
			break
		}
		if err = l.reopen(ctx, dev, until); err != nil {
			return nil, err // counted by dialFailed, as any failed connect
		}
		reply, late, err = l.askOwn(ctx, s, unit, pdu, start)
	}
	if late == nil && s != nil {
		l.oweException(unit, pdu, err)
	}
	if late == nil && s != nil && l.inDoubt(s, unit, pdu) && answeredErr(err) && !StatusOf(err).TargetSilent() {
		reply, err = l.prove(ctx, s, unit, pdu, reply, err)
	}
	if late == nil && s != nil {
		switch StatusOf(err) {
		case StatusWrongFunction, StatusBadLength:
			// the asked unit answered, but not this request: it answers
			// another (an earlier one, or another master's); on Modbus TCP
			// this request's own answer may be relayed to a later one
			l.untied(s, "a reply from the unit with another function or byte count than asked")
			l.owe(unit, pdu)
		case StatusGood:
			s.slowest = max(s.slowest, l.lastRx.Sub(l.sentAt))
			s.answeredShape(pdu)
		}
	}
	l.settle(err)
	if late != nil {
		l.doubt = late // settle blamed the asked unit
	}
	dev.duration.Observe(time.Since(start).Seconds())
	dev.request(StatusOf(err).kind())
	if err != nil {
		return nil, err
	}
	return append(dst, reply...), nil
}

// askOwn sends pdu to unit for s and returns the reply. A well-formed
// frame from another unit of the link (foreign: its late reply; on Modbus
// TCP relayed by a gateway) is counted against that unit, and a read is
// sent again, twice at most (review 18 M-1 on Modbus TCP); late is that
// unit when the last reply was still its frame. start is when the
// exchange began (the delay charged to the late unit).
func (l *link) askOwn(ctx context.Context, s *share, unit byte, pdu []byte, start time.Time) ([]byte, *share, error) {
	reply, err := l.trip(ctx, unit, pdu)
	var late *share
	for attempt, tries := start, 0; ; tries++ {
		late = l.foreign(s, err)
		if by, ok := l.strayUnit(s, late, err); ok {
			// a frame of a unit no device reads (misaddressed, or another
			// master's traffic): not the asked unit's answer nor its
			// fault; counted by the unit it claims, and the read sent
			// again on the quiet line (MEDIUM-3)
			l.stray(by, unit, pdu)
			if tries == 2 || !isRead(pdu) {
				break // every send met by a stray frame: see strayUnit
			}
			attempt = time.Now()
			reply, err = l.trip(ctx, unit, pdu)
			continue
		}
		if late == nil && l.noisy == 0 {
			break
		}
		if late == nil {
			// bytes that are no frame ahead of the asked unit's answer
			// (review 18 M-2): the trail of the frame before it, not the
			// asked unit's fault; its answer is not taken (never guess)
			// but asked for again on the quiet line
			if by := l.noiseAhead(s); by != nil {
				l.turns.charge(by, time.Since(attempt))
			}
			if tries == 2 || !isRead(pdu) {
				break
			}
			attempt = time.Now()
			reply, err = l.trip(ctx, unit, pdu)
			continue
		}
		// another unit's late reply while unit was asked: that unit's
		// fault, not this one's; the line is quiet before anything else
		if late.lateSent.IsZero() {
			// from a unit in good standing: one of its accepted replies
			// may not have been its answer (another master's frame, a
			// copy): its read in progress is discarded (device.read)
			late.untied++
			late.untiedWhat = "a frame from the unit while another unit was asked"
		}
		if late.dev != nil {
			late.dev.replyError(kindWrongUnit)
		}
		if l.framed() {
			l.lateReply(late, "frame from this unit while another unit was asked", late.answeredLate())
			l.quiet, l.lastRx, l.doubt, l.afterTO = true, time.Now(), late, false
		} else {
			// a gateway relayed the unit's late answer to this request
			// (review 18 M-1): this request's own answer is owed now
			l.countSuspect(late)
			l.log.Debug("modbus late answer of another unit relayed to a request", "unit", late.unit, "device", late.id, "asked_unit", unit)
			l.owe(unit, pdu)
		}
		l.turns.charge(late, time.Since(attempt))
		if tries == 2 || !isRead(pdu) {
			break
		}
		attempt = time.Now()
		reply, err = l.trip(ctx, unit, pdu)
	}
	return reply, late, err
}

// strayUnit reports the unit id of the well-formed frame err reports when
// no device of the link reads that unit (late, from foreign, is nil) and
// s's unit was asked. When every send of a request is met by such a frame
// the request fails with it (wrong_unit, naming both units), as before:
// the asked unit cannot be told from a unit answering with another id
// itself (a device answering every address with its own), whose cause the
// operator must see (TestPersistentMismatches, TestEdgeTruthModbus).
func (l *link) strayUnit(s *share, late *share, err error) (byte, bool) {
	if late != nil || err == nil || s == nil {
		return 0, false
	}
	var re *ReplyError
	if !errors.As(err, &re) || re.Status != StatusWrongUnit || re.Got < 0 || re.Got > 255 || l.turns.byUnit(byte(re.Got)) != nil {
		return 0, false
	}
	return byte(re.Got), true
}

// stray counts a frame of unit by, which no device of the link reads,
// heard while asked was asked, warns about it at most once a minute, and
// leaves the line in doubt: on RTU/ASCII the next request waits for
// silence (the asked unit's own answer may follow: discarded, not
// guessed); on Modbus TCP the asked request's own answer may be relayed
// later (owed).
func (l *link) stray(by, asked byte, pdu []byte) {
	c, ok := l.strays[by]
	if !ok {
		if l.strays == nil {
			l.strays = map[byte]prometheus.Counter{}
		}
		c = l.m.stray.WithLabelValues(l.key, strconv.Itoa(int(by)))
		l.strays[by] = c
	}
	c.Inc()
	args := []any{"unit", by, "asked_unit", asked}
	if time.Since(l.lastStray) >= time.Minute {
		l.lastStray = time.Now()
		l.log.Warn("modbus frame from a unit no device of this connection reads, while another unit was asked: discarded, the request sent again (a misaddressed unit answering, or another master on the line)", args...)
	} else {
		l.log.Debug("modbus stray frame discarded", args...)
	}
	if l.framed() {
		l.quiet, l.lastRx, l.afterTO = true, time.Now(), false
	} else {
		l.owe(asked, pdu)
	}
}

// oweException records, on an RTU or ASCII line, unit's read pdu answered
// with an exception (err; not 10 or 11, which are timeouts: settle) as
// owed its answer (review attack-mb L1): a unit, or a converter for it,
// may answer an exception at once and the real answer later, to the
// unit's next request, in a bisection a read of another register with the
// same function and count. The unit's answers of its shape to other reads
// are then proven (prove) for owedFor. Every request of the link's own
// (exchangeHeld) and of a proof (askProof) goes through it.
func (l *link) oweException(unit byte, pdu []byte, err error) {
	if !l.framed() || !isRead(pdu) {
		return
	}
	if _, exc := StatusOf(err).Exception(); exc && !StatusOf(err).TargetSilent() {
		l.owe(unit, pdu)
	}
}

// askProof is a request of prove: on Modbus TCP another unit's frame
// relayed to it is that unit's (askOwn); on an RTU or ASCII line it is
// evidence, returned as the error (roundTrip).
func (l *link) askProof(ctx context.Context, s *share, unit byte, pdu []byte) ([]byte, error) {
	if l.framed() {
		reply, err := l.trip(ctx, unit, pdu)
		l.oweException(unit, pdu, err)
		return reply, err
	}
	reply, _, err := l.askOwn(ctx, s, unit, pdu, time.Now())
	return reply, err
}

// trip is roundTrip for the exchange in progress (exchangeHeld): every
// request after its first (the read sent again after another unit's
// frame or noise, or on a new socket; a proof's reads: prove, closeProof,
// agree) is counted in smelter_modbus_requests_total by its own result;
// the first is counted once the exchange ends, by the exchange's result
// (the answer, or what the proof made of it: untied). So the series sum
// to the requests sent on the wire.
func (l *link) trip(ctx context.Context, unit byte, pdu []byte) ([]byte, error) {
	reply, err := l.roundTrip(ctx, unit, pdu)
	if l.tripped && l.tripDev != nil {
		l.tripDev.sent(StatusOf(err).kind())
	}
	l.tripped = true
	return reply, err
}

// ensure opens the connection if needed. While backing off after failed
// attempts it fails at once without I/O. Caller holds the link.
func (l *link) ensure(ctx context.Context, dev *devMetrics) error {
	if l.closed {
		return linkErr(StatusConnection, "connection pool closed")
	}
	if l.p != nil {
		return nil
	}
	now := time.Now()
	if now.Before(l.nextDial) {
		return linkErr(StatusConnection, "reconnecting in %v after: %w", l.nextDial.Sub(now).Round(time.Millisecond), l.lastDialErr)
	}
	p, dr, err := l.open(ctx)
	if err != nil {
		return l.dialFailed(ctx, dev, now, err)
	}
	l.opened(p, dr)
	return nil
}

// open dials the connection and makes its drainer.
func (l *link) open(ctx context.Context) (port, *drainer, error) {
	p, err := l.dial(ctx)
	var dr *drainer
	if err == nil {
		if dr, err = newDrainer(p); err != nil {
			_ = p.Close()
		}
	}
	return p, dr, err
}

// reopenRetry is the first retry of reopen (review attack-mb M1), doubled
// per attempt up to reopenRetryMax.
const (
	reopenRetry    = 5 * time.Millisecond
	reopenRetryMax = 40 * time.Millisecond
)

// reopen opens a Modbus TCP socket closed after a reply in doubt (settle),
// not lost: a converter that serves one client at a time refuses the new
// one (or closes it) while it still waits for the slave whose request
// timed out (review attack-mb M1). So a connect that fails is retried,
// reopenRetry doubling up to reopenRetryMax, until until (the request's
// timeout after it began); then it fails as ensure does (backoff), with an
// error saying the converter refused the connection. Caller holds the link.
func (l *link) reopen(ctx context.Context, dev *devMetrics, until time.Time) error {
	if l.closed || l.p != nil {
		return l.ensure(ctx, dev)
	}
	wait := reopenRetry
	for tries := 1; ; tries++ {
		p, dr, err := l.open(ctx)
		if err == nil {
			l.opened(p, dr)
			return nil
		}
		if now := time.Now(); ctx.Err() != nil || now.Add(wait).After(until) {
			what := "failed"
			if errors.Is(err, syscall.ECONNREFUSED) {
				what = "refused"
			}
			return l.dialFailed(ctx, dev, now, fmt.Errorf("connect %s %d times in %v after the socket was closed on a reply in doubt (a converter serving one client at a time, still waiting for a slave?): %w",
				what, tries, now.Sub(until.Add(-l.timeout)).Round(time.Millisecond), err))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return &linkError{StatusCanceled, ctx.Err()}
		case <-t.C:
		}
		wait = min(2*wait, reopenRetryMax)
	}
}

// dialFailed records a failed connect at now (err) and returns its error:
// backoff before the next attempt, counted against dev, logged.
func (l *link) dialFailed(ctx context.Context, dev *devMetrics, now time.Time, err error) error {
	if ctx.Err() != nil {
		return &linkError{StatusCanceled, ctx.Err()}
	}
	l.failures++
	wait := backoff.Step(l.failures, l.backMin, l.backMax)
	l.nextDial = now.Add(wait)
	l.lastDialErr = err
	dev.connectFailed()
	l.announce = true
	if !l.downLog {
		l.log.Warn("modbus connection failed", "error", err, "retry_in", wait.Round(time.Millisecond))
		l.downLog = true
	} else {
		l.log.Debug("modbus connection retry failed", "error", err, "failures", l.failures, "retry_in", wait.Round(time.Millisecond))
	}
	return &linkError{StatusConnection, err}
}

// opened makes p (with its drainer dr) the link's connection.
func (l *link) opened(p port, dr *drainer) {
	l.p, l.drainer = p, dr
	// A random first transaction id per connection: a reply left over from
	// an earlier session (ours, restarted, or another client's) does not
	// carry the id of our first request.
	l.tid = uint16(0x1000 + rand.IntN(0xE000))
	// A converter keeps forwarding what its serial side receives across
	// reconnects, and a serial line may carry a reply from before the port
	// was opened: a request sent just before (by us before a reload, or by
	// another master) may still be answered. Treat the connect as such a
	// request timing out now: the line must be silent for timeout + silence.
	l.lastRx = time.Now().Add(l.timeout)
	l.quiet = l.framed()
	l.doubt = nil // nobody's exchange: the device that connects waits
	l.frameOf = nil
	l.heard = false
	l.connected.Store(true)
	l.m.connUp.WithLabelValues(l.key).Set(1)
	l.accepted = false
	if l.announce {
		l.log.Info("modbus connected")
		l.announce = false
	} else {
		// reopened after a reply in doubt (settle): a device with a
		// persistent reply error does this every poll; its cause is logged
		// by the device once per kind, the reconnects are counted
		l.count(&l.reopened, l.m.reopened, 1)
		l.log.Debug("modbus reconnected after a reply in doubt")
	}
}

func (l *link) dial(ctx context.Context) (port, error) {
	if l.transport.Serial() {
		f, err := openSerial(l.address, l.serial)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	d := net.Dialer{Timeout: l.timeout}
	c, err := d.DialContext(ctx, "tcp", l.address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", l.address, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("dial %s: not a TCP connection", l.address)
	}
	_ = tc.SetNoDelay(true)
	return tc, nil
}

// drop closes the connection; the next request reconnects.
func (l *link) drop() {
	if l.p != nil {
		_ = l.p.Close()
		l.p, l.drainer = nil, nil
		l.rxHead, l.rxTail = 0, 0 // gone with the socket
		l.nAnswered = 0
		l.connected.Store(false)
		l.m.connUp.WithLabelValues(l.key).Set(0)
	}
}

// close shuts the link for good. It waits for a request in flight.
func (l *link) close() error {
	_ = l.turns.acquire(context.Background(), nil)
	defer l.turns.release(nil)
	l.unwatch()
	var err error
	if l.p != nil {
		err = l.p.Close()
		l.p = nil
		l.connected.Store(false)
	}
	l.closed = true
	return err
}

// abort stops the wait of an exchange in flight when its context ends (by
// setting the port's deadline in the past), through one registration
// (context.AfterFunc) per context the link serves rather than one per
// request: a device reads with the same context for its whole run. A
// registration outlives the exchanges of its context, so it acts only on
// an exchange of that context in flight (begin .. end) and never on
// another's, an idle link's, or a port the link has dropped since; end
// tells whether it acted. roundTrip brackets its exchange with begin and
// end, and drops the connection when the abort ran (or ctx ended, when it
// could have), as the port's deadline is no longer the link's to trust.
type abort struct {
	mu    sync.Mutex
	done  <-chan struct{} // Done of the context whose exchange is in flight; nil between exchanges
	p     port            // that exchange's port
	fired bool            // the abort set p's deadline during the exchange
}

func (a *abort) begin(done <-chan struct{}, p port) {
	a.mu.Lock()
	a.done, a.p, a.fired = done, p, false
	a.mu.Unlock()
}

// end closes the exchange begin opened; true if the abort acted in it.
func (a *abort) end() bool {
	a.mu.Lock()
	fired := a.fired
	a.done, a.p, a.fired = nil, nil, false
	a.mu.Unlock()
	return fired
}

// fire is the registration's callback for the context whose Done is done.
func (a *abort) fire(done <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == done && a.p != nil {
		_ = a.p.SetDeadline(time.Unix(1, 0))
		a.fired = true
	}
}

// watch makes sure ctx's end fires the link's abort: registered once per
// context (by its Done channel: contexts that share it end together), the
// link's previous context's registration stopped. Caller holds the link.
func (l *link) watch(ctx context.Context, done <-chan struct{}) {
	if l.watched == done {
		return
	}
	l.unwatch()
	l.watched = done
	l.stopWatch = context.AfterFunc(ctx, func() { l.abort.fire(done) })
}

// unwatch stops the link's registration, if any: the context may outlive
// the link (close). Caller holds the link.
func (l *link) unwatch() {
	if l.stopWatch != nil {
		l.stopWatch()
	}
	l.watched, l.stopWatch = nil, nil
}

// settle updates the link after one exchange that ended with err. An
// answer (data or exception) resets the failure count. A lost connection is
// dropped. Anything else leaves the stream in doubt: a Modbus TCP socket is
// dropped and reopened (its transaction ids no longer tell us anything the
// new socket would not); an RTU or ASCII line is kept, because a serial line
// or converter keeps its queue across reconnects, and must fall silent
// before the next request.
func (l *link) settle(err error) {
	s := StatusOf(err)
	l.accepted = false
	if _, exc := s.Exception(); err == nil || exc {
		if exc && l.cur != nil && (s.TargetSilent() || !l.framed()) {
			// a gateway gave up on its slave, whose answer may still come
			// and be relayed as another request's (on Modbus TCP too: the
			// transaction id proves the gateway answered, not the slave),
			// on Modbus TCP whichever unit the next request asks. On
			// Modbus TCP any exception may be such a gateway's: a cheap
			// converter answers 4, 6 or 3 at once when its slave is slow
			// and relays the slave's real answer to the next request
			// (review mbconv F1); nothing in the exception tells it from
			// the slave's own. Its answer is owed as after a timeout: the
			// connection's answers of the request's shape are proven for
			// owedFor (a direct device pays that proof, not more: an
			// exception of the request sent again is the same request)
			l.cur.timedOut(l.sentAt)
			l.relayDoubt()
		}
		if !l.framed() {
			l.answeredTids[l.nAnswered%len(l.answeredTids)] = l.tid
			l.nAnswered++
		}
		l.failures = 0
		l.downLog = false
		l.accepted = true
		return
	}
	if s == StatusConnection {
		l.announce = true // a lost connection: say so when it is back
	}
	if s == StatusTimeout && !l.framed() && l.cur != nil {
		// a TCP-to-serial gateway may relay the slave's late answer to a
		// request on the new connection, whichever unit it asks
		l.cur.timedOut(l.sentAt)
		l.relayDoubt()
	}
	if s == StatusConnection || !l.framed() {
		l.drop()
		return
	}
	l.quiet = true
	l.lastRx = time.Now()
	l.doubt = l.cur
	l.afterTO = s == StatusTimeout
	if l.cur != nil && (s == StatusTimeout || unanswered(s)) {
		// its reply may still come, to be taken for another's or for its
		// next. So also after a reply that was no answer to the request (a
		// frame cut short, a bad CRC or LRC, another function or byte
		// count): a converter relays a cut frame at its own timeout and
		// the rest, or the real answer, later, and a unit so put one
		// behind answered every later read with the one before
		// (attack-mb2 HIGH-1: 99 % of its good readings wrong)
		l.cur.timedOut(l.sentAt)
		l.pending = l.cur
		if s != StatusTimeout {
			l.cur.outOfTurn = time.Now()
		}
	}
}

// unanswered reports whether a framed line's reply error s leaves the
// request without its answer: the frame was not the answer (malformed or
// cut short, checksum wrong, another function or byte count), so the
// answer may still come, late, to a later request.
func unanswered(s Status) bool {
	return s == StatusFraming || s == StatusChecksum || otherShape(s)
}

// otherShape reports whether reply error s is a well-formed frame of
// another request's shape (another byte count or function): perhaps the
// answer to another request, relayed or sent late.
func otherShape(s Status) bool { return s == StatusBadLength || s == StatusWrongFunction }

// isRead reports whether pdu reads (functions 1-4): a read is sent again
// after another unit's late frame; a write is not repeated.
func isRead(pdu []byte) bool { return len(pdu) > 0 && pdu[0] >= 1 && pdu[0] <= 4 }

// foreign returns the device of the link whose unit sent the well-formed
// frame err reports while s's unit was asked (a late reply of that unit;
// on Modbus TCP a gateway relaying it with the unit in its MBAP header),
// or nil: another error, or a unit no device reads.
func (l *link) foreign(s *share, err error) *share {
	if err == nil {
		return nil // before re, which escapes: no allocation per answer
	}
	var re *ReplyError
	if !errors.As(err, &re) || re.Status != StatusWrongUnit || re.Got < 0 || re.Got > 255 {
		return nil
	}
	x := l.turns.byUnit(byte(re.Got))
	if x == s {
		return nil
	}
	return x
}

// prove decides on the answer of s, a unit in doubt (its earlier request
// went unanswered, or a reply of its could not be tied to its request; on
// Modbus TCP also any unit after a timeout or an exception on the
// connection for a request of pdu's reply shape: inDoubt), to pdu.
//
// An exception reply carries no byte count: it cannot prove that the unit
// answers in turn, but it is the unit's answer about this request (the
// function and unit asked), so it is returned as it is (the device
// publishes its code and bisects on it) and the doubt stays (review 14 F1).
//
// On an RTU or ASCII line, when every unanswered request's late reply has
// been seen and discarded meanwhile, nothing of s's is on its way and the
// answer is s's: trusted. Otherwise the answer just received is never
// published as it is: the line must first stay silent after it (confirm,
// RTU/ASCII only). Then a read of another shape (tieRead: another
// function or byte count) is sent and must be answered with its own shape,
// and pdu is sent again: its answer is the one returned. A unit answering
// one request behind (a store-and-forward converter, a slave that answers
// the previous request when the next comes, a TCP-to-RTU gateway relaying
// a late answer to the next request) answers that read with another
// request's shape: untied, the unit stays in doubt. A read the unit
// answers with an exception proves nothing: the next candidate is tried.
// When no read of another shape could be answered with data, a read's
// answer is untied on Modbus TCP (review 14 F4: a gateway relays one unit's
// late one-register answer to another unit's one-register read; a write,
// whose reply echoes it, is trusted); on an RTU or ASCII line the silent
// window alone decides, which a unit answering one request behind
// passes (documented); the answer returned is then the held one, stamped
// with its arrival (arrived), not the end of the window. Then s is trusted.
func (l *link) prove(ctx context.Context, s *share, unit byte, pdu, reply []byte, err error) ([]byte, error) {
	if _, exc := StatusOf(err).Exception(); exc {
		return reply, err
	}
	// owed: on an RTU or ASCII line, s owes the answer to another read of
	// pdu's shape that it answered with an exception (owedBy; review
	// attack-mb L1): that answer may be this one, and no silence tells
	owed := l.framed() && l.owedBy(unit, pdu)
	// and a unit that lately answered a request with a frame that was not
	// its answer (settle, unanswered; a read of another length answered
	// with another's, below) answers, perhaps one request behind for
	// good (attack-mb2 HIGH-1/2): proven as an owed answer, not by the
	// silent window, which such a unit passes
	owed = owed || l.framed() && !s.outOfTurn.IsZero() && time.Since(s.outOfTurn) < l.owedFor()
	if l.framed() && len(s.unanswered) == 0 && !owed {
		// every unanswered request's late reply has been seen and
		// discarded: nothing of s's is left on its way (a unit that is
		// sometimes late within timeout + silence is not kept in doubt)
		s.trusted()
		l.pendingDone(s)
		return reply, err
	}
	// reply is in l.buf, which the window (lent to other units' exchanges)
	// and the reads below reuse: the window's decision returns a copy,
	// kept in s (a borrower in doubt proves its own answer meanwhile)
	s.held = append(s.held[:0], reply...)
	arrived := l.arrived
	if l.framed() && len(s.unanswered) > 0 {
		if cerr := l.confirm(ctx, s, hasProbe(pdu)); cerr != nil {
			return nil, cerr
		}
	}
	tried, tied := 0, false
	for i := 0; !tied; i++ {
		// an owed answer's unit answers (it is no late unit whose every
		// further request may time out): every read of another shape may
		// tie it, as on Modbus TCP
		l.probe = tieRead(l.probe[:0], pdu, s, i, !l.framed() || owed)
		if l.probe == nil {
			break
		}
		// on an RTU or ASCII line, a read of a shape the unit owes no
		// answer of (owedAnswers) answered with its own shape is the
		// unit's answer to it: nothing it owed was ahead of it
		n, known := l.owedAnswers(unit, shapeOf(l.probe))
		clean := l.framed() && n == 0 && known
		if l.framed() && owed && !clean {
			// an answer the unit owes may have the read's shape: the
			// read would tie nothing (review mb-proof MEDIUM-1)
			continue
		}
		tried++
		_, perr := l.askProof(ctx, s, unit, l.probe)
		st := StatusOf(perr)
		switch _, exc := st.Exception(); {
		case perr == nil:
			tied = true
			if clean && len(s.unanswered) == 0 {
				l.paid(unit)
			}
		case otherShape(st):
			// the answers of pdu and of this read may still come (a
			// gateway relaying each to the next request)
			s.outOfTurn = time.Now()
			l.owe(unit, pdu)
			if l.framed() {
				l.owe(unit, l.probe)
			}
			l.relayDoubt()
			l.untied(s, "its answer to a read of another length was not that read's ("+perr.Error()+")")
			return nil, linkErr(StatusUntied, "unit %d, in doubt, did not answer a read of another length with its own answer: one request behind, or answering an older request", s.unit)
		case exc && !st.TargetSilent():
			// the address may not exist: proves nothing, try the next (on
			// an RTU or ASCII line its real answer may follow: owed by
			// askProof)
		default:
			return nil, perr
		}
	}
	if !tied && !l.framed() && isRead(pdu) {
		return nil, linkErr(StatusUntied, "unit %d, in doubt after a timeout, answered a read that no read of another length (%d tried, none answered with data) could tie to its request", s.unit, tried)
	}
	if !tied && owed {
		// nothing of another shape answered with data: the read sent again
		// must be answered with the same bytes (agree)
		return l.agree(ctx, s, unit, pdu, arrived)
	}
	if tied {
		reply, err = l.askProof(ctx, s, unit, pdu)
		if !answeredErr(err) {
			return nil, err
		}
		if err == nil && (!l.framed() || owed) && l.inDoubt(s, unit, pdu) {
			if reply, err = l.closeProof(ctx, s, unit, pdu, reply); err != nil {
				return nil, err
			}
		}
	} else {
		reply, l.arrived = s.held, arrived
	}
	s.trusted()
	l.pendingDone(s)
	return reply, err
}

// closeProof decides on reply, the answer of unit to read pdu sent again
// after a read of another shape tied the connection (prove, Modbus TCP),
// while another request of pdu's shape is still owed its answer
// (inDoubt): that answer may have been relayed to pdu sent again (review
// 18 H-1: a converter relays the first frame on its bus to whatever
// request is outstanding). The read of another shape (l.probe) is sent
// again and must be answered with its own shape (an answer owed to pdu
// sent again, relayed to it, fails), then pdu once more, whose answer must
// be reply's, byte for byte (a converter that drops the frames behind the
// one it relays lost pdu's own answer: the next one differs, unless the
// owed answer carried the same bytes). Otherwise the answer is untied and
// pdu is owed its answer.
func (l *link) closeProof(ctx context.Context, s *share, unit byte, pdu, reply []byte) ([]byte, error) {
	s.held = append(s.held[:0], reply...)
	arrived := l.arrived
	_, perr := l.askProof(ctx, s, unit, l.probe)
	if l.framed() && otherShape(StatusOf(perr)) {
		l.owe(unit, l.probe) // its answer may follow, to a later request
	}
	if perr == nil {
		reply, perr = l.askProof(ctx, s, unit, pdu)
	}
	var failed *linkError
	switch {
	case perr == nil && string(reply) == string(s.held):
		l.arrived = arrived
		return s.held, nil
	case errors.As(perr, &failed):
		return nil, perr // a timeout, the connection lost, canceled
	default:
		l.owe(unit, pdu)
		l.relayDoubt()
		l.untied(s, "its answer after a read of another length was not the same twice while another request's answer was owed")
		return nil, linkErr(StatusUntied, "unit %d, in doubt, answered a read differently before and after a read of another length while another request of its shape was owed its answer: a relayed late answer", s.unit)
	}
}

// agree decides, on an RTU or ASCII line, on s.held, the answer of unit
// to read pdu while the unit owes answers of its shape (owedBy) and no
// read of another shape could tie it (none answered with data, or each
// of a shape the unit owes too: a one-register read next to unmapped
// registers). Each answer of the unit's to pdu may be one it owes: a unit
// with a queue of replies sends them in turn, one per request, and its
// own answers join the queue behind them. So pdu is sent again as many
// times as the unit may owe answers of its shape (owedAnswers, at least
// once), and every answer must carry s.held's bytes: of those owed+1
// answers at least one is an answer of pdu's (review mb-proof MEDIUM-1:
// two owed answers of the same register with the same bytes, sent to
// both sends of a read sent twice, were published as its value). When
// more than maxAgree answers may be owed, or how many is not known (a
// shape that left the list), nothing is sent and the read is untied
// (StatusUntied) until they are no longer owed. A unit relaying an owed
// answer to one send answers another with this read's own (or with
// nothing), so unless the registers hold the same value, they differ:
// the read is untied and owed its answer too. Not caught: a unit that
// sends an answer more than owedFor after it was owed.
func (l *link) agree(ctx context.Context, s *share, unit byte, pdu []byte, arrived time.Time) ([]byte, error) {
	owing, known := l.owedAnswers(unit, shapeOf(pdu))
	if !known || owing > maxAgree {
		l.untied(s, "it may owe more answers of the read's shape than a read sent again could outnumber")
		return nil, linkErr(StatusUntied, "unit %d may owe %d answers of the read's shape (more than %d, or not known): a read sent again cannot outnumber them (an exception's late answers)", s.unit, owing, maxAgree)
	}
	for range max(owing, 1) {
		reply, err := l.askProof(ctx, s, unit, pdu)
		switch {
		case err == nil && string(reply) == string(s.held):
			continue
		case err != nil && !answeredErr(err) && !otherShape(StatusOf(err)):
			return nil, err // a timeout, the connection lost, canceled, a broken frame
		case err != nil && answeredErr(err):
			return reply, err // an exception: the device's answer (owed: exchangeHeld)
		}
		l.owe(unit, pdu)
		l.untied(s, "its answer to a read sent twice differed while it owed the answer to another read of its shape")
		return nil, linkErr(StatusUntied, "unit %d answered a read differently when it was sent again while it owed the answer to another read of its shape (an exception's late answer)", s.unit)
	}
	s.trusted()
	l.pendingDone(s)
	l.arrived = arrived
	return s.held, nil
}

// maxAgree bounds the answers a unit may owe of a read's shape that agree
// outnumbers by sending the read again (as many times): beyond it the
// read is untied until fewer are owed.
const maxAgree = 3

// unframed reports whether err is a reply that is no frame: a checksum
// that does not hold, an unknown function code, a frame cut short (an
// RTU reply's length comes from its first bytes: noise ahead of it makes
// the reader take the wrong length). A well-formed frame that does not
// answer (another unit, function or byte count) is not: it is judged as
// such (foreign, untied).
func unframed(err error) bool {
	st := StatusOf(err)
	return st == StatusChecksum || st == StatusFraming || st == StatusTimeout
}

// resync looks, after an RTU reply that is no frame (unframed), for the
// asked unit's well-formed answer (unit, function or its exception, byte
// count, CRC) behind bytes that are no frame, reading what else arrives
// until the request's deadline (set by roundTrip) while it has not found
// it. It returns the number of bytes ahead of that answer, 0 when there is
// none: the reply stands as it was (the asked unit's broken reply). Every
// byte received is in l.buf[:l.got].
func (l *link) resync(want expect) int {
	for {
		if k := answerAt(l.buf[:l.got], want); k > 0 {
			return k
		}
		if l.got == len(l.buf) {
			return 0
		}
		n, err := l.p.Read(l.buf[l.got:])
		l.got += n
		if err != nil && n == 0 {
			return answerAt(l.buf[:l.got], want)
		}
	}
}

// answerAt returns the offset (> 0) of the first well-formed RTU frame in
// b that answers want (data or an exception), 0 when there is none.
func answerAt(b []byte, want expect) int {
	for k := 1; k+5 <= len(b); k++ {
		if b[k] != want.unit {
			continue
		}
		n, err := replyLen(b[k+1], b[k+2])
		if err != nil || k+n+2 > len(b) {
			continue
		}
		f := b[k : k+n+2]
		if binary.LittleEndian.Uint16(f[n:]) != checksum.CRC16(f[:n]) {
			continue
		}
		if _, err := checkReply(f[:n], want); answeredErr(err) {
			return k
		}
	}
	return 0
}

// noiseAhead handles bytes that are no frame found ahead of s's unit's
// well-formed answer (resync, review 18 M-2): on a converter they came off
// the line before that answer, so they trail the frame received before
// (frameOf when the request was sent: another unit's answer, or s's own
// earlier one), not the answer. They are evidence against that frame's
// answer as any bytes after an accepted reply are (untied: its read in
// progress discarded, it is in doubt; when it lent the line, lentSeen
// says so already), counted in smelter_modbus_noise_total against its
// device ("" when no frame preceded them) and discarded with the answer,
// which is not taken: the line must fall silent (the wait charged to that
// device) and the read is sent again. s is not blamed. It returns that
// device (nil when none).
func (l *link) noiseAhead(s *share) *share {
	by, sent, n := l.noiseOf, l.noiseSent, l.noisy
	l.noisy = 0
	l.discard(l.got)
	l.countBy(&l.noise, l.m.noise, by)
	if by != nil && by != l.lentFor {
		l.untiedAt(by, sent, fmt.Sprintf("%d bytes that are no frame after its accepted reply, ahead of unit %d's answer", n, s.unit))
	} else {
		l.log.Debug("modbus bytes that are no frame ahead of an answer: the request sent again", "unit", s.unit, "device", s.id, "bytes", n)
	}
	l.quiet, l.lastRx, l.doubt, l.afterTO = true, time.Now(), by, false
	return by
}

// paid forgets, on an RTU or ASCII line, the answers unit owed (owe)
// when a read of a shape it owed none of (owedAnswers: 0, known), sent
// with no timed-out request of the unit's whose late reply was not seen
// (share.unanswered), was answered with its own shape (prove's tieRead).
// A unit that sends the answers it owes in turn, one per request, sends
// the oldest first: had any been left, that read would have got it, of
// another shape (caught: untied). So the unit owed nothing when the read
// was sent; what it owes again is owed from then on. This is what ends
// an exception's doubt (oweException) early for a unit that answers in
// turn, so its owed answers do not pile up to more than agree can
// outnumber (review mb-proof MEDIUM-1). A shape that left the list
// (owedShapes: any unit) stays owed until owedFor after it.
func (l *link) paid(unit byte) {
	if !l.framed() {
		return
	}
	l.owedReqs = slices.DeleteFunc(l.owedReqs, func(o owedReq) bool { return o.key.unit == unit })
}

// pendingDone ends s's doubt on the line.
func (l *link) pendingDone(s *share) {
	if l.pending == s {
		l.pending = nil
	}
}

// readShape is the function and reply byte count of read pdu (count -1
// for another request).
func readShape(pdu []byte) (byte, int) {
	e := expectFor(0, pdu)
	return e.fc, e.count
}

// tieRead appends to dst the i-th read that can tie s's answer to read pdu
// (its reply has another function or byte count than pdu's), or returns
// nil when there are no more: first probePDU (inside pdu's range), then,
// when wide (Modbus TCP), the reads s answered with data lately
// (share.shapes), then pdu one register (8 bits) wider, at the same start
// and one register (8 bits) before it, which the device may not map (an
// exception: proves nothing). None for a request that is not a read.
//
// On an RTU or ASCII line only the probe is sent (not wide): a unit in
// doubt there is often a unit later than the timeout, and each further
// request of its that times out puts one more late frame on the line, to
// land in another unit's read (review 14 F4 is about TCP gateways; the
// silent window decides for the rest there, as documented).
func tieRead(dst, pdu []byte, s *share, i int, wide bool) []byte {
	if !isRead(pdu) || len(pdu) != 5 {
		return nil
	}
	if p := probePDU(dst, pdu); p != nil {
		if i == 0 {
			return p
		}
		i--
	}
	if !wide {
		return nil
	}
	fc, count := readShape(pdu)
	for k := range s.nShapes {
		sh := s.shapes[k][:]
		if f, c := readShape(sh); f == fc && c == count {
			continue
		}
		if i == 0 {
			return append(dst, sh...)
		}
		i--
	}
	start, q := int(binary.BigEndian.Uint16(pdu[1:])), int(binary.BigEndian.Uint16(pdu[3:]))
	step, limit := 1, 125
	if fc <= 2 {
		step, limit = 8, 2000
	}
	if q+step > limit {
		return nil
	}
	for _, st := range []int{start, start - step} {
		if st < 0 || st+q+step > 0x10000 {
			continue
		}
		if i == 0 {
			dst = append(dst, fc)
			dst = binary.BigEndian.AppendUint16(dst, uint16(st))
			return binary.BigEndian.AppendUint16(dst, uint16(q+step))
		}
		i--
	}
	return nil
}

// probePDU appends to dst the probe of read pdu for a unit in doubt: the
// same function and start, with a quantity inside the request's whose reply
// has another byte count (one register less; eight bits less), or returns
// nil when there is none (one register, at most eight bits, not a read).
func probePDU(dst, pdu []byte) []byte {
	if !isRead(pdu) || len(pdu) != 5 {
		return nil
	}
	q := binary.BigEndian.Uint16(pdu[3:])
	switch {
	case pdu[0] >= 3 && q > 1:
		q--
	case pdu[0] <= 2 && q > 8:
		q -= 8
	default:
		return nil
	}
	return binary.BigEndian.AppendUint16(append(dst, pdu[:3]...), q)
}

// confirm holds the answer of s, whose earlier request went unanswered,
// until the line has been silent for as long as separated that request
// from this one (at most timeout + quietLimit x silence) plus silence. A
// late reply to the earlier request, taken for this one's answer, is
// followed in that window by the real answer to this one: then both are
// discarded and the request fails as a timeout (s stays pending). A quiet
// window makes the answer certain: s's replies are trusted again. This
// costs s's turn one such wait after each timeout.
//
// When lend (the read has a probe, which decides after the window), the
// window is lent to the other units that wait for the link, or come to
// wait during it (lendTurns): their exchanges watch the line for s. A
// read without a probe (one register, at most eight bits) is decided by
// the silent window alone: never lent. A borrower in doubt keeps its own
// window to itself (one lender at a time).
func (l *link) confirm(ctx context.Context, s *share, lend bool) error {
	window := min(l.sentAt.Sub(s.oldest()), l.timeout+quietLimit*l.silence) + l.silence
	got := time.Now()
	end := got.Add(window)
	lend = lend && l.lentFor == nil
	if lend {
		sentAt, cur := l.sentAt, l.cur
		l.lentFor, l.lentSeen = s, ""
		defer func() { l.lentFor, l.lentSeen, l.sentAt, l.cur = nil, "", sentAt, cur }()
	}
	for {
		if lend {
			if err := l.lendTurns(ctx, s, end); err != nil {
				return err
			}
		}
		if !time.Now().Before(end) {
			return nil
		}
		if err := l.setDeadline(ctx, end); err != nil {
			return err
		}
		// watched after the deadline is set: a wake moves it, never the
		// other way round
		if lend && !l.turns.watch(s, l.wakeFn()) {
			continue // a unit came to wait meanwhile: lend to it
		}
		n, err := l.p.Read(l.junk[:])
		if lend {
			l.turns.unwatch() // a wake after this only moves a deadline the next wait sets again
		}
		if n > 0 {
			// the held answer was the late reply to the oldest unanswered request
			after := got.Sub(s.oldest())
			s.answeredLate()
			l.discard(n)
			l.lastRx = time.Now()
			l.lateReply(s, "second reply after an accepted one: the first was a late reply", after)
			return linkErr(StatusTimeout, "unit %d answered later than timeout + silence (%v): its replies discarded: %w", s.unit, l.timeout+l.silence, errHeardTwice)
		}
		if err != nil {
			if le := l.readFailure(ctx, err); le != nil {
				return le
			}
		}
		if !lend {
			return nil
		}
	}
}

// errHeardTwice is in the error of a held answer discarded because a
// second reply came in its window (confirm): the unit is not silent, so
// the rest of its read goes on (device.aborts), each answer proven as
// usual (review 18 L-1).
var errHeardTwice = errors.New("two replies to one request")

// wakeFn returns a function that ends the wait on the link's port in
// flight (its deadline set in the past): turns.watch calls it when a unit
// comes to wait for the link while a held answer's window runs.
func (l *link) wakeFn() func() {
	p := l.p
	return func() { _ = p.SetDeadline(time.Unix(1, 0)) }
}

// lendTurns lends the link, held by s whose answer is held (confirm,
// lentFor set), to the other units waiting for it, one turn after another
// (turns.lend), until end or until none waits. Their exchanges run as
// usual: a frame is accepted only as the answer of the unit asked, with
// the function and byte count asked and a valid checksum. Anything else
// heard meanwhile (a frame from s's unit or any other that is not the
// asked unit's answer; bytes discarded before a request, in a silence wait
// or in a read's closing listen: lentSeen) is evidence that s's held answer
// may have been a late reply: s's read is discarded (untied,
// StatusUntied) and s stays in doubt. What the borrowers left on the line
// is drained and judged the same way before s goes on. The link's state of
// s's exchange (its request's send time, its device) is restored; a
// connection the borrowers lost (or lost and reopened) fails s's request as
// a connection failure.
func (l *link) lendTurns(ctx context.Context, s *share, end time.Time) error {
	sentAt, cur, p := l.sentAt, l.cur, l.p
	lent := false
	for time.Now().Before(end) && l.turns.lend(s) {
		lent = true
	}
	if !lent {
		return nil
	}
	var err error
	if l.p == p {
		if err = l.setDeadline(ctx, time.Time{}); err == nil {
			var n int
			n, err = l.drain(ctx)
			l.heardBefore(n, false)
		}
	}
	l.sentAt, l.cur = sentAt, cur
	switch {
	case l.lentSeen != "":
		seen := l.lentSeen
		l.untied(s, "while its held answer's window was lent to another unit: "+seen)
		return linkErr(StatusUntied, "unit %d, in doubt, may have answered an earlier request: %s on the line while its answer was held", s.unit, seen)
	case err != nil:
		return err
	case l.p != p:
		// lost, maybe reopened by a borrower: what came on the old one is
		// unknown
		return linkErr(StatusConnection, "connection lost while lent to another unit")
	}
	return nil
}

// hasProbe reports whether read pdu has a probe (probePDU), without
// building it.
func hasProbe(pdu []byte) bool {
	if !isRead(pdu) || len(pdu) != 5 {
		return false
	}
	q := binary.BigEndian.Uint16(pdu[3:])
	return pdu[0] >= 3 && q > 1 || pdu[0] <= 2 && q > 8
}

// roundTrip writes one request and reads its reply. Caller holds the link
// and the connection is open.
func (l *link) roundTrip(ctx context.Context, unit byte, pdu []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, &linkError{StatusCanceled, err}
	}
	p := l.p
	if done := ctx.Done(); done != nil {
		l.watch(ctx, done)
		l.abort.begin(done, p)
		defer func() {
			if (l.abort.end() || ctx.Err() != nil) && l.p == p {
				// the abort ran, or ctx ended while it could: this port's
				// deadline is no longer ours
				l.drop()
			}
		}()
	}
	if err := l.prepare(ctx); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(l.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := l.setDeadline(ctx, deadline); err != nil {
		return nil, err
	}
	l.tid++
	l.req = appendRequest(l.req[:0], l.transport, l.tid, unit, pdu)
	want := expectFor(unit, pdu)
	want.tid = l.tid
	l.got = 0
	l.noisy, l.noiseOf, l.noiseSent = 0, l.frameOf, l.frameSent
	l.sentAt = time.Now()
	reply, err := l.exchangeFrames(ctx, p, want)
	if err != nil && l.got > 0 && (l.transport == RTU || l.transport == RTUOverTCP) && unframed(err) {
		if k := l.resync(want); k > 0 {
			l.noisy = k
			err = malformed(fmt.Sprintf("%d bytes that are no frame ahead of the answer", k))
		}
	}
	l.lastRx = time.Now()
	l.heard = l.heard || l.got > 0
	switch {
	case answeredErr(err):
		l.frameOf, l.frameSent = l.cur, l.sentAt
	case l.got > 0:
		l.frameOf = nil
	}
	if l.lentFor != nil && l.got > 0 && !answeredErr(err) && l.lentSeen == "" {
		l.lentSeen = err.Error() // not the asked unit's answer: evidence (lendWindow)
	}
	if answeredErr(err) {
		l.arrived = l.now()
	}
	if err != nil && l.got > 0 && errors.Is(err, StatusTimeout) {
		err = malformed(fmt.Sprintf("incomplete reply: %d bytes, then nothing for the rest of the %v timeout", l.got, l.timeout))
	}
	return reply, err
}

// exchangeFrames writes l.req on p and reads the reply by the link's
// encoding: Modbus TCP from the link's buffer (roundTripMBAP), RTU and
// ASCII straight from the port.
func (l *link) exchangeFrames(ctx context.Context, p port, want expect) ([]byte, error) {
	if l.transport == TCP {
		return l.roundTripMBAP(ctx, want)
	}
	if _, err := p.Write(l.req); err != nil {
		return nil, l.ioError(ctx, err, "write")
	}
	rd := func(b []byte) error {
		n, err := io.ReadFull(p, b)
		l.got += n
		if err != nil {
			return l.ioError(ctx, err, "read")
		}
		return nil
	}
	if l.transport == RTU || l.transport == RTUOverTCP {
		return readRTU(rd, l.buf[:], want)
	}
	return readASCII(rd, l.buf[:], want)
}

// roundTripMBAP writes l.req on a Modbus TCP socket and reads the reply.
// It reads what is available into rx and frames from there: the reply
// usually costs one read, made once the poller saw it arrive (writeRead).
// The bytes readMBAP sees are those the socket delivers, in order, exactly
// as when it read them from the socket itself: a reply to another
// transaction is skipped; bytes after the reply are left in rx, and
// prepare discards them with the socket's before the next request.
func (l *link) roundTripMBAP(ctx context.Context, want expect) ([]byte, error) {
	// prepare counted what rx held; nothing received before this request
	// may be framed as its reply
	l.rxHead, l.rxTail, l.rxErr = 0, 0, nil
	wrote, n, werr, rerr := l.drainer.writeRead(l.req, l.rx[:])
	if werr != nil {
		return nil, l.ioError(ctx, werr, "write")
	}
	if wrote < len(l.req) {
		// the send buffer was full: write the rest, waiting, then read
		if _, err := l.p.Write(l.req[wrote:]); err != nil {
			return nil, l.ioError(ctx, err, "write")
		}
		n, rerr = l.drainer.recv(l.rx[:])
	}
	l.rxTail, l.rxErr = n, rerr
	rd := func(b []byte) error {
		need := len(b)
		for len(b) > 0 {
			if l.rxHead == l.rxTail {
				if l.rxErr != nil {
					err := l.rxErr
					if errors.Is(err, io.EOF) && len(b) < need {
						err = io.ErrUnexpectedEOF // as io.ReadFull
					}
					return l.ioError(ctx, err, "read")
				}
				l.rxHead = 0
				l.rxTail, l.rxErr = l.drainer.recv(l.rx[:])
				continue
			}
			c := copy(b, l.rx[l.rxHead:l.rxTail])
			l.rxHead += c
			l.got += c
			b = b[c:]
		}
		return nil
	}
	return readMBAP(rd, l.buf[:], want, l.skipFn)
}

// prepare makes the line fit for a request: pending input is discarded
// (a reply that arrived while no request was outstanding answers nothing);
// on an RTU or ASCII line in doubt it waits for silence; serial RTU keeps
// its 3.5-character gap.
func (l *link) prepare(ctx context.Context) error {
	if err := l.setDeadline(ctx, time.Time{}); err != nil {
		return err
	}
	n, err := l.drain(ctx)
	left := l.rx[l.rxHead:l.rxTail] // received after the last reply, not yet read by anyone
	dup := false
	if !l.framed() {
		// what came first: the rest of the buffer, else the socket's
		head := left
		if len(head) == 0 {
			head = l.drainer.head[:l.drainer.nhead]
		}
		dup = l.answeredFrame(head)
	}
	n += len(left)
	l.rxHead, l.rxTail = 0, 0
	l.heardBefore(n, dup)
	l.accepted = false
	if err != nil {
		return err
	}
	if l.quiet {
		start := time.Now()
		err := l.waitQuiet(ctx)
		if l.doubt != nil {
			l.turns.charge(l.doubt, time.Since(start))
		} else {
			l.turns.forgive(time.Since(start)) // a fresh connection's wait: nobody's
		}
		if err != nil {
			return err
		}
		l.quiet, l.doubt, l.afterTO = false, nil, false
		l.frameOf = nil // silent since: bytes now trail no frame
	}
	if l.transport == RTU {
		if gap := t35(l.serial.Baud) - time.Since(l.lastRx); gap > 0 {
			t := time.NewTimer(gap)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return &linkError{StatusCanceled, ctx.Err()}
			}
		}
	}
	return nil
}

// heardBefore judges n bytes found on the line before a request (prepare's
// drain, or what borrowers left: lendWindow; dup: on Modbus TCP they
// repeat a transaction already answered): the late reply of the unit in
// doubt, else a second frame after the last accepted reply (evidence
// against its device), else suspect bytes; they are discarded and the line
// must fall silent before the next request.
func (l *link) heardBefore(n int, dup bool) {
	if n == 0 {
		return
	}
	switch {
	case l.framed() && l.pending != nil:
		l.lateReply(l.pending, "bytes on the line after its timeout", l.pending.answeredLate())
	case l.framed() && l.accepted && l.last != nil:
		// a second frame after the last exchange's accepted reply: that
		// reply may not have been its answer
		l.untied(l.last, "bytes after an accepted reply, before the next request")
	case l.accepted && !dup:
		l.suspectReply(n)
	}
	l.discard(n)
	l.lastRx = time.Now()
	l.quiet = l.framed()
	l.accepted = false
	if l.doubt == nil {
		l.doubt = l.last // most likely a late reply to the exchange before
		if l.pending != nil {
			l.doubt = l.pending
		}
	}
}

// waitQuiet returns once nothing has arrived on the line for l.silence,
// discarding (and counting) what does arrive meanwhile.
func (l *link) waitQuiet(ctx context.Context) error {
	// the wait may start in the future (a fresh connection); bound it from there
	limit := l.lastRx
	if now := time.Now(); now.After(limit) {
		limit = now
	}
	limit = limit.Add(quietLimit * l.silence)
	blamed := false
	heard := func(n int) {
		l.discard(n)
		l.lastRx = time.Now()
		if l.afterTO && l.pending != nil && !blamed {
			blamed = true // one late reply per wait
			l.lateReply(l.pending, "reply during the silence after its timeout", l.pending.answeredLate())
		}
	}
	for {
		until := l.lastRx.Add(l.silence)
		if !time.Now().Before(until) {
			if err := l.setDeadline(ctx, time.Time{}); err != nil {
				return err
			}
			n, err := l.drain(ctx)
			if n > 0 {
				heard(n)
			}
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			continue
		}
		if until.After(limit) {
			return malformed(fmt.Sprintf("line at %s never fell silent for %v", l.address, l.silence))
		}
		if err := l.setDeadline(ctx, until); err != nil {
			return err
		}
		n, err := l.p.Read(l.junk[:])
		if n > 0 {
			heard(n)
		}
		if err != nil {
			if le := l.readFailure(ctx, err); le != nil {
				return le
			}
		}
	}
}

// drain discards the input pending on the port (drainer.drain) and tells
// why it failed. A drain does not wait, so it fails on a deadline only when
// the port's deadline is already past when it starts: the context's abort
// (roundTrip) ran after setDeadline last looked at ctx, which is a
// cancellation (ctx.Err is set before an AfterFunc runs), or a deadline
// left by someone else, which is cleared and the drain tried once more.
// Neither is a connection failure; the peer's close and a read error are.
// Caller holds the link; the port's deadline is clear on return without error.
func (l *link) drain(ctx context.Context) (int, error) {
	n, err := l.drainer.drain()
	if err != nil && ctx.Err() != nil {
		return n, &linkError{StatusCanceled, ctx.Err()}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if err := l.setDeadline(ctx, time.Time{}); err != nil {
			return n, err
		}
		var m int
		m, err = l.drainer.drain()
		n += m
		if err != nil && ctx.Err() != nil {
			return n, &linkError{StatusCanceled, ctx.Err()}
		}
	}
	if err != nil {
		return n, &linkError{StatusConnection, fmt.Errorf("drain %s: %w", l.address, err)}
	}
	return n, nil
}

// setDeadline bounds the next reads and writes. A context that ended
// before (its abort may have run already and been overwritten) cancels.
//
// Every wait on the line is bounded this way, so each call marks the
// link's progress (turns.mark): the wait before it has ended.
func (l *link) setDeadline(ctx context.Context, t time.Time) error {
	l.turns.mark()
	if err := l.p.SetDeadline(t); err != nil {
		return &linkError{StatusConnection, err}
	}
	if err := ctx.Err(); err != nil {
		return &linkError{StatusCanceled, err}
	}
	return nil
}

// count adds v to the connection's child of vec, kept in *c once created.
// Caller holds the link.
func (l *link) count(c *prometheus.Counter, vec *prometheus.CounterVec, v float64) {
	if *c == nil {
		*c = vec.WithLabelValues(l.key)
	}
	(*c).Add(v)
}

// discard counts n bytes received that answer no request (a late reply,
// leftovers from before the port opened, noise).
func (l *link) discard(n int) {
	l.heard = true
	l.count(&l.discarded, l.m.discarded, float64(n))
	if l.lentFor != nil && l.lentSeen == "" {
		l.lentSeen = "bytes that answered no request" // evidence (lendWindow)
	}
	if time.Since(l.lastWarn) >= time.Minute {
		l.lastWarn = time.Now()
		l.log.Warn("modbus discarded bytes that answer no request (late reply, leftovers or noise)", "bytes", n)
	} else {
		l.log.Debug("modbus discarded bytes", "bytes", n)
	}
}

// suspectReply counts and reports (at most once a minute) n bytes found
// between an accepted reply and the next request.
//
// On an RTU or ASCII line these bytes are evidence against the device of
// the accepted reply (prepare calls untied); this is left for bytes no
// exchange preceded.
//
// On Modbus TCP the connection is reopened after a timeout, so bytes after
// an accepted reply on the socket mean the device sent more than
// one frame for one request: a duplicate, or a device answering out of turn
// (a frame for the next transaction id sent before it could have read that
// request, then its real answer). Either way the accepted reply may not
// have been the device's answer to that request; the operator is told so.
func (l *link) suspectReply(n int) {
	l.countSuspect(nil)
	if time.Since(l.lastSuspect) < time.Minute {
		return
	}
	l.lastSuspect = time.Now()
	if !l.framed() {
		l.log.Warn("modbus bytes arrived after an accepted reply: the device sent more than one reply for a request (a duplicate, or answering out of turn); its accepted replies may not be its answers",
			"bytes", n)
		return
	}
	l.log.Warn("modbus bytes arrived after an accepted reply: another master on the line, an echoing link or converter, or a unit answering an earlier request",
		"bytes", n)
}

// untied records evidence that a reply of s's unit accepted on this RTU or
// ASCII line was not the answer to its request (what: the evidence): a
// second frame after it, or a frame from the unit with another function or
// byte count than asked. The answers of s's read in progress are
// discarded (device.read compares s.untied), the frame is counted as s's
// suspect reply and warned about (once a minute per device), and s is in
// doubt as after a timeout: the line must fall silent before the next
// request and s's next answer is held (confirm).
func (l *link) untied(s *share, what string) { l.untiedAt(s, l.sentAt, what) }

// untiedAt is untied for evidence against the answer to s's request sent
// at sent.
func (l *link) untiedAt(s *share, sent time.Time, what string) {
	s.untied++
	s.untiedWhat = what
	s.timedOut(sent)
	if l.framed() {
		l.pending = s
		l.quiet, l.lastRx = true, time.Now()
		if l.doubt == nil {
			l.doubt = s
		}
	}
	l.countSuspect(s)
	if time.Since(s.lastUntied) < time.Minute {
		l.log.Debug("modbus reply could not be tied to its request", "unit", s.unit, "device", s.id, "found", what)
		return
	}
	s.lastUntied = time.Now()
	l.log.Warn("modbus reply could not be tied to its request: another master on the line, an echoing link or converter, or a unit answering an earlier request; the device's values of the read discarded",
		"unit", s.unit, "device", s.id, "found", what)
}

// quietAfter ends s's read on an RTU or ASCII line whose last exchange was
// s's accepted answer: it listens for a second frame for a short window
// (the read's slowest answer plus the 3.5-character gap, at most silence:
// the real answer to the read's last request, had a copy or a foreign frame
// been taken for it, comes within the slowest answer time after that
// request). A frame in it is evidence (untied) that an answer of the read
// was a copy (an echoing link), another master's reply, or an earlier
// request's answer. Caller holds the link.
func (l *link) quietAfter(ctx context.Context, s *share) {
	slowest := s.slowest
	s.slowest = 0
	if !l.framed() || l.p == nil || !l.accepted || l.last != s {
		return
	}
	window := min(slowest+t35(l.serial.Baud), l.silence)
	if err := l.setDeadline(ctx, time.Now().Add(window)); err != nil {
		return
	}
	if !l.transport.Serial() {
		if rc, err := l.p.SyscallConn(); err == nil {
			quickAck(rc)
		}
	}
	n, _ := l.p.Read(l.junk[:])
	if n == 0 {
		return
	}
	l.discard(n)
	l.accepted = false
	if x := l.lateFrame(s, l.junk[:n]); x != nil {
		// a unit in doubt answering late (it may have been lent the
		// line's window, confirm): its reply, as a frame from it while
		// s is asked (foreign), not evidence against s's answers
		l.lateReply(x, "frame from this unit after another unit's accepted reply", x.answeredLate())
		if x.dev != nil {
			x.dev.replyError(kindWrongUnit)
		}
		l.quiet, l.lastRx, l.doubt, l.afterTO = true, time.Now(), x, false
		return
	}
	l.untied(s, "a second frame after the read's last accepted reply")
}

// lateFrame returns the device of the link, other than s and of another
// unit, whose unit is in doubt (share.lateSent: its late replies may
// still come) and sent b, when b is exactly one well-formed frame of the
// link's encoding (checksum valid) from that unit; nil otherwise.
func (l *link) lateFrame(s *share, b []byte) *share {
	var unit byte
	switch {
	case len(b) < 4:
		return nil
	case l.transport == RTU || l.transport == RTUOverTCP:
		unit = b[0]
	default:
		var u [1]byte
		if b[0] != ':' || decodeHex(u[:], b[1:3]) != nil {
			return nil
		}
		unit = u[0]
	}
	if unit == s.unit {
		return nil
	}
	x := l.turns.byUnit(unit)
	if x == nil || x == s || x.lateSent.IsZero() {
		return nil
	}
	rest := b
	fill := func(p []byte) error {
		if len(p) > len(rest) {
			return io.ErrUnexpectedEOF
		}
		copy(p, rest)
		rest = rest[len(p):]
		return nil
	}
	var buf [maxADU]byte
	want := expect{unit: unit, count: -1}
	var err error
	if l.transport == RTU || l.transport == RTUOverTCP {
		if len(b) > 1 {
			want.fc = b[1] &^ 0x80
		}
		_, err = readRTU(fill, buf[:], want)
	} else {
		var h [2]byte
		if len(b) < 5 || decodeHex(h[:], b[1:5]) != nil {
			return nil
		}
		want.fc = h[1] &^ 0x80
		_, err = readASCII(fill, buf[:], want)
	}
	if len(rest) != 0 || !answeredErr(err) {
		return nil
	}
	return x
}

// countSuspect counts one suspect reply of s's device (nil: unknown).
// readFailure classifies a failed read on the line: a cancellation when
// ctx ended, a connection failure unless it is a timeout (nil: the read
// timed out, which the caller judges).
func (l *link) readFailure(ctx context.Context, err error) *linkError {
	if ctx.Err() != nil {
		return &linkError{StatusCanceled, ctx.Err()}
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return &linkError{StatusConnection, fmt.Errorf("%s: %w", l.address, err)}
	}
	return nil
}

func (l *link) countSuspect(s *share) { l.countBy(&l.suspect, l.m.suspect, s) }

// countBy counts one in the connection's child of vec for s's device
// (nil: ""), kept in *m once created.
func (l *link) countBy(m *map[string]prometheus.Counter, vec *prometheus.CounterVec, s *share) {
	id := ""
	if s != nil {
		id = s.id
	}
	c, ok := (*m)[id]
	if !ok {
		if *m == nil {
			*m = map[string]prometheus.Counter{}
		}
		c = vec.WithLabelValues(l.key, id)
		(*m)[id] = c
	}
	c.Inc()
}

// lateReply counts and reports (at most once a minute per device) a reply
// of s's unit that came after its request's timeout + silence bound and was
// discarded (what: how it was found; after: how long after the request it
// came, at least), with the silence that would have covered it.
func (l *link) lateReply(s *share, what string, after time.Duration) {
	l.countSuspect(s)
	if after > 0 && after <= l.timeout+l.silence || time.Since(s.lastWarn) < time.Minute {
		// within the bound the silence wait is made for (counted, and
		// warned about as discarded bytes), or warned about already
		l.log.Debug("modbus late reply discarded", "unit", s.unit, "device", s.id, "found", what, "reply_after", after)
		return
	}
	s.lastWarn = time.Now()
	args := []any{"unit", s.unit, "device", s.id, "found", what, "timeout", l.timeout, "silence", l.silence}
	if after > 0 {
		want := (after-l.timeout)*5/4 + 10*time.Millisecond
		want = max(want.Round(10*time.Millisecond), l.silence+10*time.Millisecond)
		args = append(args, "reply_after", after.Round(time.Millisecond), "suggested_silence", want)
	}
	l.log.Warn("modbus unit answered later than timeout + silence: its late reply was discarded, not taken for an answer; raise silence", args...)
}

// t35 returns the RTU inter-frame gap t3.5: 3.5 characters of 11 bits,
// fixed at 1.75 ms above 19200 baud (Modbus over Serial Line V1.02, 2.5.1.1).
func t35(baud int) time.Duration {
	if baud <= 0 || baud > 19200 {
		return 1750 * time.Microsecond
	}
	return time.Duration(3.5 * 11 * float64(time.Second) / float64(baud))
}

// ioError classifies a failed read or write of an exchange: the context's
// end is a cancellation, a deadline a timeout, anything else a connection
// failure.
func (l *link) ioError(ctx context.Context, err error, op string) error {
	if ctx.Err() != nil {
		return &linkError{StatusCanceled, ctx.Err()}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		// roundTrip bounds the exchange by ctx's deadline when it comes
		// before the timeout. The port's deadline and ctx's are two timers:
		// on a loaded machine the port's may fire first, while ctx.Err is
		// still nil. A read stopped at ctx's deadline is the caller's
		// cancellation, not the device's silence.
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			return &linkError{StatusCanceled, context.DeadlineExceeded}
		}
		if l.silentPeer() {
			return linkErr(StatusTimeout, "no reply within %v: the converter at %s accepted the TCP connection, but nothing has been received on it since (no unit answered): check its serial line (wiring, baud, parity) and the unit id",
				l.timeout, l.address)
		}
		return linkErr(StatusTimeout, "no reply within %v", l.timeout)
	}
	return &linkError{StatusConnection, fmt.Errorf("%s %s: %w", op, l.address, err)}
}

// silentPeer reports whether an RTU or ASCII over TCP connection has
// received nothing since it opened: the converter accepted the socket,
// but no unit behind it ever answered on it (review attack-mb LOW-3). On
// Modbus TCP the peer is the device (or a gateway that answers 10/11
// itself), on a serial line there is no converter.
func (l *link) silentPeer() bool {
	return (l.transport == RTUOverTCP || l.transport == ASCIIOverTCP) && l.p != nil && !l.heard
}

// answeredErr reports whether err is an answer of the device: nil (data)
// or an exception reply.
func answeredErr(err error) bool {
	_, exc := StatusOf(err).Exception()
	return err == nil || exc
}

package modbus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// turns decides which device uses a link next. One device holds the link at
// a time; among the devices waiting, the one that has used the link least
// goes first (time-fair queueing by device, not by request or by group).
//
// The policy (docs/configuration.md, "When Modbus devices are read"):
//   - A device's read holds the link for all its requests (turn), but
//     between two requests it gives the link up to any waiting device
//     that has used the link less (yield). A fast unit therefore waits for
//     at most one request of a slow unit in flight, then reads its whole
//     group at once; a slow unit that overruns and is read again at once
//     never goes before a device that has used less link time.
//   - Use is the time a device held the link, plus the silence the next
//     request had to wait for after this device's failed exchange (a
//     timeout, a broken reply on RTU/ASCII): the device that caused the
//     wait pays for it (charge).
//   - A device coming back from idle starts at the use of the device last
//     given the link (floor): idle time is not saved up to monopolise the
//     link later. So a device that needs less than an equal split of the
//     link gets all it needs; the rest is split equally among the devices
//     that want more (max-min fair).
//
// Requests are not preempted: a device waits at most one request of
// another device (timeout + silence at worst) before its turn.
type turns struct {
	mu      sync.Mutex
	holder  *share // nil: free
	since   time.Time
	waiting []*waiter
	seq     uint64
	floor   time.Duration
	shares  []*share  // every device on the link, for per-cycle accounting
	free    []*waiter // waiters to reuse: a contended turn allocates nothing
	// lender is the device that lent the link (lend) and waits to get it
	// back when the borrower's turn ends; back carries that one token
	lender *share
	back   chan struct{}
	// watcher is a holder watching its held answer's window alone
	// (link.confirm); wake ends that wait when a unit it may lend to
	// comes to wait (acquire)
	watcher *share
	wake    func()
	// moved is when the link last made progress (Unix ns): a turn began or
	// ended, or its holder began an exchange or a bounded wait on the line
	// (link.setDeadline). While the link works, two of these are never
	// more than link.stepBound apart (progress).
	moved atomic.Int64
}

// share is one device's account on its link, under turns.mu.
type share struct {
	id   string
	vuse time.Duration // fair-queueing key: use, raised to the floor on coming back from idle
	used time.Duration // link time used since the start, charged silences included

	// Set at join, then owned by the device holding the link (link.go).
	unit     byte
	dev      *devMetrics
	lateSent time.Time // framed lines: when its last unanswered (timed-out) request was sent; zero when its replies are trusted
	// outOfTurn: framed lines, when the unit last answered with a frame
	// that was no answer to the request (cut short, checksum, another
	// function or byte count): a unit that answers, perhaps one behind;
	// its doubt is proven as an owed answer's (prove)
	outOfTurn time.Time
	// the send times of its unanswered requests whose late replies have
	// not been seen yet, oldest first (the last few): a late reply found
	// answers the oldest
	unanswered []time.Time
	lastWarn   time.Time // last late-reply warning naming it (one a minute)
	// Evidence that one of its replies was not its request's answer
	// (link.untied): how many times seen, and what the last was; a read
	// compares the count before and after its requests.
	untied     uint32
	untiedWhat string
	lastUntied time.Time     // last "could not be tied" warning naming it (one a minute)
	slowest    time.Duration // the longest request-to-answer time of its current read (link.quietAfter)
	// the last maxShapes distinct read requests (PDUs) the unit answered
	// with data: reads of another shape that tie an answer in doubt whose
	// request has no probe inside it (link.prove, tieRead; review 14 F4)
	shapes  [maxShapes][5]byte
	nShapes int
	shapeAt int // next slot to overwrite once full
	// held is a copy of its answer held in doubt (link.prove) while the
	// window runs (lent to other units' exchanges) and reads tie it
	held []byte
}

// maxShapes bounds the read requests a share remembers for tieRead.
const maxShapes = 4

// answeredShape remembers read pdu as one the unit answers with data.
func (s *share) answeredShape(pdu []byte) {
	if !isRead(pdu) || len(pdu) != 5 {
		return
	}
	for k := range s.nShapes {
		if string(s.shapes[k][:]) == string(pdu) {
			return
		}
	}
	if s.nShapes < maxShapes {
		s.nShapes++
		copy(s.shapes[s.nShapes-1][:], pdu)
		return
	}
	copy(s.shapes[s.shapeAt][:], pdu)
	s.shapeAt = (s.shapeAt + 1) % maxShapes
}

type waiter struct {
	s     *share
	seq   uint64
	ready chan struct{} // one token when granted
}

// join adds a device to the link's accounts.
func (t *turns) join(id string) *share { return t.joinUnit(id, 0, nil) }

// joinUnit adds a device reading unit to the link's accounts, with its
// metrics (for errors its late replies cause while another unit is asked).
func (t *turns) joinUnit(id string, unit byte, dev *devMetrics) *share {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &share{id: id, unit: unit, dev: dev, unanswered: make([]time.Time, 0, maxUnanswered)}
	t.shares = append(t.shares, s)
	return s
}

// maxUnanswered bounds the unanswered requests a share remembers.
const maxUnanswered = 4

// timedOut records s's request sent at sent as unanswered.
func (s *share) timedOut(sent time.Time) {
	s.lateSent = sent
	if len(s.unanswered) == maxUnanswered {
		s.unanswered = append(s.unanswered[:0], s.unanswered[1:]...)
	}
	s.unanswered = append(s.unanswered, sent)
}

// oldest returns the send time of s's oldest unanswered request whose
// reply has not been seen (lateSent when none is remembered).
func (s *share) oldest() time.Time {
	if len(s.unanswered) > 0 {
		return s.unanswered[0]
	}
	return s.lateSent
}

// answeredLate takes s's oldest unanswered request as answered now by a
// late reply, and returns how long after its sending (0 when unknown).
func (s *share) answeredLate() time.Duration {
	t := s.oldest()
	if len(s.unanswered) > 0 {
		s.unanswered = append(s.unanswered[:0], s.unanswered[1:]...)
	}
	if t.IsZero() {
		return 0
	}
	return time.Since(t)
}

// trusted clears s's doubt: its last answer can only have been its own.
func (s *share) trusted() {
	s.lateSent = time.Time{}
	s.unanswered = s.unanswered[:0]
}

// byUnit returns the device on the link reading unit, preferring one whose
// request was left unanswered (its late reply is the likely sender); nil
// when no device on the link reads unit.
func (t *turns) byUnit(unit byte) *share {
	t.mu.Lock()
	defer t.mu.Unlock()
	var found *share
	for _, s := range t.shares {
		if s.unit != unit {
			continue
		}
		if found == nil || found.lateSent.IsZero() && !s.lateSent.IsZero() {
			found = s // lateSent is read by the holder of the link, its owner
		}
	}
	return found
}

// shared reports whether more than one device uses the link.
func (t *turns) shared() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.shares) > 1
}

// acquire waits for s's turn. s may be nil (closing the link: no account).
func (t *turns) acquire(ctx context.Context, s *share) error {
	t.mu.Lock()
	if s != nil && s.vuse < t.floor {
		s.vuse = t.floor // back from idle: level with the last device served
	}
	if t.holder == nil && len(t.waiting) == 0 {
		t.grant(s, time.Now())
		t.mu.Unlock()
		return nil
	}
	t.seq++
	var w *waiter
	if n := len(t.free); n > 0 {
		w, t.free = t.free[n-1], t.free[:n-1]
	} else {
		w = &waiter{ready: make(chan struct{}, 1)}
	}
	w.s, w.seq = s, t.seq
	t.waiting = append(t.waiting, w)
	if t.wake != nil && t.lendable(t.watcher, s) {
		t.wake()
		t.wake, t.watcher = nil, nil
	}
	t.mu.Unlock()
	select {
	case <-w.ready:
		t.reuse(w)
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	for i, o := range t.waiting {
		if o == w {
			t.waiting = append(t.waiting[:i], t.waiting[i+1:]...)
			t.free = append(t.free, w)
			t.mu.Unlock()
			return &linkError{StatusCanceled, ctx.Err()}
		}
	}
	t.mu.Unlock()
	// granted meanwhile: take the token and pass the turn on
	<-w.ready
	t.reuse(w)
	t.release(s)
	return &linkError{StatusCanceled, ctx.Err()}
}

// reuse keeps w, granted and its token taken, for another wait.
func (t *turns) reuse(w *waiter) {
	t.mu.Lock()
	w.s = nil
	t.free = append(t.free, w)
	t.mu.Unlock()
}

// grant gives the link to s. Caller holds mu.
func (t *turns) grant(s *share, now time.Time) {
	t.holder, t.since = s, now
	t.moved.Store(now.UnixNano())
	if s != nil && s.vuse > t.floor {
		t.floor = s.vuse
	}
}

// settle charges the holder for its time so far. Caller holds mu.
func (t *turns) settle(now time.Time) {
	if s := t.holder; s != nil {
		d := now.Sub(t.since)
		s.vuse += d
		s.used += d
	}
	t.since = now
}

// release ends s's turn and hands the link to the waiting device that has
// used it least (the earliest of equals); a borrowed link (lend) goes back
// to its lender first.
func (t *turns) release(s *share) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.settle(now)
	t.holder = nil
	t.moved.Store(now.UnixNano())
	if l := t.lender; l != nil && l != s {
		t.lender = nil
		t.grant(l, now)
		t.back <- struct{}{} // never blocks: one token per lend
		return
	}
	if len(t.waiting) == 0 {
		return
	}
	best := 0
	for i, w := range t.waiting[1:] {
		if t.less(w, t.waiting[best]) {
			best = i + 1
		}
	}
	w := t.waiting[best]
	t.waiting = append(t.waiting[:best], t.waiting[best+1:]...)
	t.grant(w.s, now)
	w.ready <- struct{}{} // never blocks: one token per wait
}

func (t *turns) less(a, b *waiter) bool {
	va, vb := vuse(a.s), vuse(b.s)
	return va < vb || va == vb && a.seq < b.seq
}

func vuse(s *share) time.Duration {
	if s == nil {
		return -1 // closing goes first
	}
	return s.vuse
}

// yield is called by the holder s between two requests of its turn: if a
// device that has used the link less is waiting, s waits for its next
// turn behind it. It fails only when ctx ends while s waits (then s does
// not hold the link).
func (t *turns) yield(ctx context.Context, s *share) error {
	t.mu.Lock()
	t.settle(time.Now())
	first := true
	for _, w := range t.waiting {
		if vuse(w.s) < vuse(s) {
			first = false
			break
		}
	}
	t.mu.Unlock()
	if first {
		return nil
	}
	t.release(s)
	return t.acquire(ctx, s)
}

// lend hands the link, which s holds, for one turn to the waiting device
// of another unit that has used the link least, and waits until that
// turn ends (the borrower releases or yields the link): s then holds the
// link again, before any other waiting device. It returns false at once,
// s keeping the link, when no device of another unit waits, or when the
// link is being closed (a closing waiter never borrows: the link would be
// gone when it comes back). The borrower's time is charged to it as in
// any turn; s is not charged for the time it waits.
//
// The lender waits without a context: the borrower's turn is bounded like
// any (each of its waits on the line has a deadline), and s must hold the
// link again when it returns (its read's turn goes on).
//
// Used by a unit in doubt while its held answer's window runs (link.confirm):
// the window only needs to watch the line, which other units' exchanges
// do as well (any frame not their answer is evidence, link.lentFor).
func (t *turns) lend(s *share) bool {
	t.mu.Lock()
	if s == nil || t.holder != s || t.lender != nil {
		t.mu.Unlock()
		return false
	}
	best := -1
	for i, w := range t.waiting {
		if w.s == nil {
			t.mu.Unlock()
			return false // closing
		}
		if !t.lendable(s, w.s) {
			continue // the unit in doubt itself (another group of its device)
		}
		if best < 0 || t.less(w, t.waiting[best]) {
			best = i
		}
	}
	if best < 0 {
		t.mu.Unlock()
		return false
	}
	now := time.Now()
	t.settle(now)
	w := t.waiting[best]
	t.waiting = append(t.waiting[:best], t.waiting[best+1:]...)
	if t.back == nil {
		t.back = make(chan struct{}, 1)
	}
	t.lender = s
	t.grant(w.s, now)
	w.ready <- struct{}{}
	back := t.back
	t.mu.Unlock()
	<-back
	return true
}

// lendable reports whether the link held by lender may be lent to a
// waiting device b: not the unit in doubt itself (another group of its
// device), not a closing link. Caller holds mu.
func (t *turns) lendable(lender, b *share) bool {
	return b != nil && b != lender && b.unit != lender.unit
}

// watch registers wake, to be called once when a device that s (the
// holder) may lend the link to comes to wait, and reports true; false,
// registering nothing, when one waits already (s lends instead).
func (t *turns) watch(s *share, wake func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.waiting {
		if t.lendable(s, w.s) {
			return false
		}
	}
	t.watcher, t.wake = s, wake
	return true
}

// unwatch ends watch's registration, if still there.
func (t *turns) unwatch() {
	t.mu.Lock()
	t.watcher, t.wake = nil, nil
	t.mu.Unlock()
}

// charge moves d of the holder's time to s, the device whose failed
// exchange made the holder wait d for a silent line.
func (t *turns) charge(s *share, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s == nil || s == t.holder {
		return
	}
	t.settle(time.Now())
	if h := t.holder; h != nil {
		h.vuse -= d
		h.used -= d
	}
	s.vuse += d
	s.used += d
}

// forgive takes d off the holder's use: a wait for a silent line that no
// device's exchange caused (after opening a connection, every device would
// have had to wait it).
func (t *turns) forgive(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.settle(time.Now())
	if h := t.holder; h != nil {
		h.vuse -= d
		h.used -= d
	}
}

// usage appends each device's link use so far (the holder's current turn
// included) to dst, in join order.
func (t *turns) usage(dst []time.Duration) []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.settle(time.Now())
	for _, s := range t.shares {
		dst = append(dst, s.used)
	}
	return dst
}

// busiest returns the device that used the link most since the usage
// snapshot before (self on a tie), and how long; "" when the link is not
// shared.
func (t *turns) busiest(before []time.Duration, self *share) (string, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.shares) < 2 {
		return "", 0
	}
	t.settle(time.Now())
	id, most := self.id, time.Duration(-1)
	for i, s := range t.shares {
		d := s.used
		if i < len(before) {
			d -= before[i]
		}
		if d > most || d == most && s == self {
			id, most = s.id, d
		}
	}
	return id, max(most, 0)
}

// mark notes that the link made progress now (moved).
func (t *turns) mark() { t.moved.Store(time.Now().UnixNano()) }

// progress returns when the link last made progress if s holds the link or
// waits for it (zero otherwise: s is between reads, or busy elsewhere). A
// device waiting behind others' timeouts, or in its own slow exchange,
// thus shows progress as long as the link does; a holder wedged without a
// deadline stops it for every device of the link.
func (t *turns) progress(s *share) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.holder == s || t.lender == s
	for _, w := range t.waiting {
		in = in || w.s == s
	}
	if !in {
		return time.Time{}
	}
	return time.Unix(0, t.moved.Load())
}

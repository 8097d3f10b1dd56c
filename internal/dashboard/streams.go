package dashboard

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Event stream bounds (docs/api.md, "Slow clients"; review4 F3): a
// stream's memory is its own small buffer plus, while it writes one, a
// reference to an event shared by every stream (sharedEvent), so what
// stalled clients can hold is bounded by the number of streams, which is
// capped in total and per client, and by how long a write may block.
const (
	// DefaultMaxStreams is Options.MaxStreams' default.
	DefaultMaxStreams = 256
	// DefaultMaxStreamsPerClient is Options.MaxStreamsPerClient's default:
	// a few dashboard tabs of one operator, behind one address.
	DefaultMaxStreamsPerClient = 16
	// DefaultStreamWriteTimeout is Options.StreamWriteTimeout's default.
	DefaultStreamWriteTimeout = 10 * time.Second
	// streamRetryAfter is the Retry-After (seconds) of a refused stream.
	streamRetryAfter = 5
)

// StreamStats counts the event streams (the collector exports them as
// smelter_collector_dashboard_streams_open and ..._streams_refused_total,
// ..._streams_timed_out_total). Safe for concurrent use.
type StreamStats struct {
	open, encodes       atomic.Int64
	changeEncodes       atomic.Int64 // assets events after the first (changeChain)
	deltaEncodes        atomic.Int64 // gateways.delta events (changeChain)
	refused, refusedOne atomic.Uint64
	timedOut            atomic.Uint64
}

// Open is the number of event streams open now.
func (s *StreamStats) Open() int64 { return s.open.Load() }

// Refused counts streams refused with 503: total is every refusal,
// perClient those refused because their client already had
// MaxStreamsPerClient open.
func (s *StreamStats) Refused() (total, perClient uint64) {
	return s.refused.Load(), s.refusedOne.Load()
}

// TimedOut counts streams closed because a write did not complete within
// StreamWriteTimeout (a client that stopped reading).
func (s *StreamStats) TimedOut() uint64 { return s.timedOut.Load() }

// Encodes counts the gateway list and snapshot events encoded for the
// streams: one per tick with changes, however many streams send it.
func (s *StreamStats) Encodes() int64 { return s.encodes.Load() }

// streamSlots admits event streams within the caps.
type streamSlots struct {
	mu        sync.Mutex
	perClient map[netip.Addr]int
}

// admit takes a stream slot for the request's client, or answers 503 with
// Retry-After (400 for an X-Forwarded-For entry that is not an address)
// and returns nil. The last quarter of MaxStreams (rounded down) is kept
// for clients that hold no stream: one host with many addresses (a /28,
// NAT egress addresses) filling every slot 16 at a time would otherwise
// refuse every other client's dashboard for as long as it reads (review6
// F7); with the reserve it takes at most three quarters, and each other
// client still gets its first stream until the reserve too is used up.
// The returned function gives the slot back.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) func() {
	c, err := clientKey(r, s.opts.RateLimit.TrustedProxies)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "X-Forwarded-For", err.Error())
		return nil
	}
	st := s.opts.Streams
	s.slots.mu.Lock()
	var why string
	switch {
	case st.open.Load() >= int64(s.opts.MaxStreams):
		why = fmt.Sprintf("%d event streams are open, the collector's limit (http.max_streams)", s.opts.MaxStreams)
	case s.slots.perClient[c] > 0 && st.open.Load() >= int64(s.opts.MaxStreams-s.opts.MaxStreams/4):
		why = fmt.Sprintf("%d event streams are open; the last quarter of the collector's limit (http.max_streams %d) is kept for clients that hold none", st.open.Load(), s.opts.MaxStreams)
	case s.slots.perClient[c] >= s.opts.MaxStreamsPerClient:
		why = fmt.Sprintf("this client has %d event streams open, the limit per client (http.max_streams_per_client)", s.opts.MaxStreamsPerClient)
		st.refusedOne.Add(1)
	}
	if why != "" {
		s.slots.mu.Unlock()
		st.refused.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(streamRetryAfter))
		writeErr(w, http.StatusServiceUnavailable, "", why+"; retry in "+strconv.Itoa(streamRetryAfter)+" s")
		return nil
	}
	s.slots.perClient[c]++
	st.open.Add(1)
	s.slots.mu.Unlock()
	return func() {
		s.slots.mu.Lock()
		if s.slots.perClient[c]--; s.slots.perClient[c] <= 0 {
			delete(s.slots.perClient, c)
		}
		st.open.Add(-1)
		s.slots.mu.Unlock()
	}
}

// sharedEvent is one encoded event (a whole gateway list, a gateway
// snapshot) that every stream sends as the same bytes: it is encoded at
// most once per tick, however many streams send it, and a stream that
// blocks writing it holds a reference, not a copy (review4 F3, F10).
type sharedEvent struct {
	mu   sync.Mutex
	ver  uint64    // the Live version the event reflects
	at   time.Time // when it was encoded (wall clock)
	data []byte    // the whole event, "event: ...\ndata: ...\n\n"; nil: none
}

// get returns the event if it reflects a version after since and was
// encoded less than tick ago; otherwise it builds a new one with build
// (called with the event's lock held, so concurrent streams wait for one
// encoding and share it). The bytes are never modified after.
func (e *sharedEvent) get(since uint64, tick time.Duration, st *StreamStats, build func() ([]byte, uint64)) ([]byte, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.at.IsZero() && e.ver > since && time.Since(e.at) < tick {
		return e.data, e.ver
	}
	data, ver := build()
	st.encodes.Add(1)
	e.data, e.ver, e.at = data, ver, time.Now()
	return data, ver
}

// changeChain shares the events of what changed since a stream's version:
// the assets events that follow a stream's first (the assets changed since
// its previous one), and the gateways.delta events, so that N streams
// cost one encoding per tick instead of N (before, each stream encoded its
// own: streams x changes a tick).
//
// An entry is an encoded event of every change in versions (from, to], as
// of when it was built. It serves any stream whose version v lies in
// [from, to): the stream needs the changes in (v, to], all in it; those in
// (from, v] it already has, and gets again at a newer or equal state (an
// assets event is each asset's current row, a delta each changed
// gateway's, applied by key; an id removed again is a no-op). The stream
// continues from to. The bytes do not depend on the stream: these events
// carry no id (alert and KPI ids stay the stream's own, written around the
// shared bytes in order), and the one stream parameter, gateways, selects
// whether a stream sends deltas, not what they hold.
//
// Streams tick at their own phases. The first stream to tick at the
// newest entry's end (the chain's head) builds the next entry from there;
// the others, still at its start, take it when their tick comes within a
// tick of its encoding. So in the steady state one entry a tick serves
// every stream; a new stream (whose first event, every asset, is at
// another version) joins the chain at its next event, built or taken
// from the head's end; an entry older than a tick is not taken, so what
// a stream sends is never more than a tick older than its tick (the
// stream rebuilds from its own version, and the chain continues from that
// entry). A stream behind the chain (its writes blocked for ticks) builds
// an event from its own version, shared only by streams at that same
// version (streams blocked together), and rejoins the chain at the next.
type changeChain struct {
	mu      sync.Mutex
	entries []changeEntry // the last 2 ticks', oldest first
}

type changeEntry struct {
	from, to uint64
	at       time.Time
	data     []byte // the whole event; nil: nothing changed
	chain    bool   // built from the head's end (or to start a chain), not for a stream behind
}

// maxChangeEntries bounds changeChain.entries: the chain's few of the
// last 2 ticks and the events of streams behind it.
const maxChangeEntries = 32

// get returns the event for a stream at version v and the version the
// stream continues from, building it with build(from) (under the chain's
// lock: concurrent streams wait for one encoding; counted in encodes) when
// no entry serves. The bytes are never modified after. ok is build's:
// false, the event cannot be built from there (nothing kept).
func (c *changeChain) get(v uint64, tick time.Duration, encodes *atomic.Int64, build func(from uint64) ([]byte, uint64, bool)) (data []byte, to uint64, ok bool) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	// entries older than 2 ticks serve nobody any more
	keep := c.entries[:0]
	for _, e := range c.entries {
		if now.Sub(e.at) < 2*tick {
			keep = append(keep, e)
		}
	}
	clear(c.entries[len(keep):])
	c.entries = keep
	var head *changeEntry
	for i := len(c.entries) - 1; i >= 0; i-- {
		e := &c.entries[i]
		if e.chain && head == nil {
			head = e
		}
		// the newest fresh entry that serves v; an entry built for a
		// stream behind the chain only serves streams at its own start
		if now.Sub(e.at) < tick && e.from <= v && v < e.to && (e.chain || e.from == v) {
			return e.data, e.to, true
		}
	}
	from, chain := v, true
	switch {
	case head == nil || v >= head.to:
		if head != nil {
			from = head.to // join the chain: streams at its end take this entry
		}
	case v < head.from:
		chain = false // behind the chain: its own backlog, not for every stream
	}
	data, to, ok = build(from)
	encodes.Add(1)
	if !ok && from != v { // the head's end is too old to build from (behind the removal log): the stream's own version
		from, chain = v, true
		data, to, ok = build(from)
		encodes.Add(1)
	}
	if !ok {
		return nil, to, false
	}
	if len(c.entries) >= maxChangeEntries { // the oldest behind the chain's, else the oldest
		i := slices.IndexFunc(c.entries, func(e changeEntry) bool { return !e.chain })
		c.entries = slices.Delete(c.entries, max(i, 0), max(i, 0)+1)
	}
	c.entries = append(c.entries, changeEntry{from: from, to: to, at: now, data: data, chain: chain})
	return data, to, true
}

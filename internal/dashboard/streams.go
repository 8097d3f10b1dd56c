package dashboard

import (
	"fmt"
	"net/http"
	"net/netip"
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
// and returns nil. The returned function gives the slot back.
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

package opcuafront

import (
	"strings"
	"sync"
	"time"
)

// settleTimeout bounds how long Stop waits for gopcua to settle the
// connections the proxy handed it before it closes the server.
const settleTimeout = 3 * time.Second

// settle accounts for the connections the proxy hands to gopcua's listener,
// so that Stop closes the server only once gopcua has finished with them.
//
// Why: gopcua v0.9.0's server registers an accepted connection in a
// goroutine (channelBroker.RegisterConn) that calls WaitGroup.Add(1) after
// the handshake, and Server.Close waits on that WaitGroup. A connection
// accepted while the server stops is an Add concurrent with the Wait: a data
// race (the race detector reports it; it is also how a channel can escape
// Close). gopcua offers no hook to wait for its accept loop, but it reports
// each step through its Logger, which the Front supplies: each connection
// the proxy dialed ends in exactly one of "Registered new channel" (before
// the Add), "error accepting connection", "socket closed" or "Error creating
// secure channel", and each registered channel ends in "Secure Channel N
// closed", "Secure Channel N error" or "Context done, closing Secure Channel
// N" (after the Add). The log messages are gopcua v0.9.0's
// (server/server.go, server/channel_broker.go): TestStopWaitsForGopcuaChannels
// fails if a new version renames them.
type settle struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	dialed  int           // connections the proxy made to gopcua's listener
	settled int           // of those, the ones gopcua accepted or refused
	open    int           // registered channels whose goroutine still runs
}

func newSettle() *settle { return &settle{changed: make(chan struct{})} }

// update applies f under the lock and wakes waiters.
func (s *settle) update(f func()) {
	s.mu.Lock()
	f()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// dial records a connection the proxy made to gopcua's listener.
func (s *settle) dial() { s.update(func() { s.dialed++ }) }

// logged reads one of gopcua's log messages (its format string).
func (s *settle) logged(format string) {
	switch {
	case strings.HasPrefix(format, "Registered new channel"):
		s.update(func() { s.settled++; s.open++ })
	case strings.HasPrefix(format, "error accepting connection"),
		strings.HasPrefix(format, "socket closed"),
		strings.HasPrefix(format, "Error creating secure channel"):
		s.update(func() { s.settled++ })
	case strings.HasPrefix(format, "Secure Channel %d closed"),
		strings.HasPrefix(format, "Secure Channel %d error"),
		strings.HasPrefix(format, "Context done, closing Secure Channel"):
		s.update(func() { s.open-- })
	}
}

// wait returns true once every dialed connection is settled and no channel
// is open, or false when timeout passes first (gopcua's accept loop ends for
// good on a *net.OpError and leaves queued connections unsettled).
func (s *settle) wait(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		done := s.settled >= s.dialed && s.open <= 0
		ch := s.changed
		s.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		}
	}
}

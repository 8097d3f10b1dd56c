package command

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Store remembers the latest Result of command ids in an append-only
// JSON-lines file synced on every Put,
// so that a retried command (same id) gets its earlier outcome and is never
// written twice, across gateway restarts too. An id is recorded as Accepted
// before its write starts: after a crash between the two, the id's outcome
// is unknown and a retry is not written again.
//
// An id is kept at least until its command's expires_at + grace has
// passed (a command that may still arrive is never forgotten, whatever
// max), but never beyond the time it was recorded + maxLifetime + 2 x
// grace: no command the gateway can accept expires later (expires_at -
// issued_at <= max_lifetime, issued_at <= now + max_skew), so a signer's
// far-future expires_at cannot pin an id, and fill the store, for years; beyond max ids the oldest expired ones are forgotten, and Full
// reports when max ids are all unexpired (the gateway then refuses new
// commands rather than forget one). The file is rewritten with only the
// remembered ids when it holds more than twice as many lines. A torn last line (a crash mid-append) is ignored.
//
// A result can be recorded as pending publication to the audit stream
// (PutPending: the gateway could not publish it): Pending lists them
// until a Put of the same id records it as published, and such an id is
// never forgotten while pending, so that the audit trail of a command
// never ends at "accepted" (docs/commands.md, "Audit stream").
// Safe for concurrent use.
type Store struct {
	path    string
	max     int
	maxLife time.Duration // commands.max_lifetime
	grace   time.Duration
	now     func() time.Time

	mu      sync.Mutex
	f       *os.File
	byID    map[string]Result
	pending map[string]bool // ids whose latest result is not in the audit stream yet
	order   []string        // ids, oldest first
	lines   int
	// lost counts unreadable lines found at open other than a torn last
	// line; lostBefore is the open time + grace when there were any
	// (LostBefore).
	lost       int
	lostBefore time.Time
}

// storeLine is one line of the file: a result, and whether it still
// waits for its audit record (absent in files of older gateways).
type storeLine struct {
	Result
	AuditPending bool `json:"audit_pending,omitempty"`
	// LostBefore, on a line without an id, carries a loss found at an
	// earlier open (LostBefore) across the rewrite that drops the
	// unreadable lines, until commands issued before it cannot be valid.
	LostBefore *time.Time `json:"lost_before,omitempty"`
}

// OpenStore opens (creating it and its directory) the store file at path
// remembering max ids (max >= 1) and every id until its expires_at +
// grace (commands.max_skew: a gateway clock behind the sender's), at most
// until it was recorded + maxLifetime (commands.max_lifetime) + 2 x grace.
func OpenStore(path string, max int, maxLifetime, grace time.Duration) (*Store, error) {
	if max < 1 {
		return nil, fmt.Errorf("command store: remember %d ids: want at least 1", max)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("command store: %w", err)
	}
	s := &Store{path: path, max: max, maxLife: maxLifetime, grace: grace, now: time.Now, byID: map[string]Result{}, pending: map[string]bool{}}
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("command store: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	// a last line without its newline is one whose append a crash cut
	tornAt := len(data)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		tornAt = bytes.LastIndexByte(data, '\n') + 1
	}
	for at := 0; sc.Scan(); at += len(sc.Bytes()) + 1 {
		var l storeLine
		if err := json.Unmarshal(sc.Bytes(), &l); err == nil && l.ID == "" && l.LostBefore != nil {
			if s.now().Before(l.LostBefore.Add(maxLifetime + 2*grace)) {
				s.lostBefore = *l.LostBefore // an earlier open's loss, still in force
			}
			continue
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.ID == "" {
			// A torn last line is a record whose append did not finish:
			// its sync never returned, so no write followed it. Any other
			// unreadable line is a record lost (a disk error, an edit):
			// its id is unknown, see LostBefore.
			if at != tornAt && len(bytes.TrimSpace(sc.Bytes())) > 0 {
				s.lost++
			}
			continue
		}
		s.remember(l.Result, l.AuditPending)
		s.lines++
	}
	if sc.Err() != nil {
		s.lost++ // a line beyond 1 MiB: the lines after it are not read
	}
	if s.lost > 0 {
		s.lostBefore = s.now().Add(grace)
	} else if !s.lostBefore.IsZero() {
		s.lost = 1 // the earlier open's loss, carried by its marker line
	}
	if err := s.rewrite(); err != nil {
		return nil, err
	}
	return s, nil
}

// LostBefore reports records the file had and could not read at open
// (n, other than a torn last line) and, when there were any, before: the
// open time + max_skew. A lost record's id is unknown, so any command
// issued before it may be one the gateway already accepted (and wrote): the
// caller refuses those until they cannot be valid any more (before +
// max_lifetime + 2 x max_skew), rather than write one twice (review16 L-6).
func (s *Store) LostBefore() (n int, before time.Time) { return s.lost, s.lostBefore }

// remember records r in memory (pending: its audit record is not
// published yet), then forgets expired ids beyond max.
func (s *Store) remember(r Result, pending bool) {
	if _, ok := s.byID[r.ID]; !ok {
		s.order = append(s.order, r.ID)
	}
	s.byID[r.ID] = r
	if pending {
		s.pending[r.ID] = true
	} else {
		delete(s.pending, r.ID)
	}
	s.evict(s.max)
}

// live reports whether r's command may still arrive (and so must be
// remembered): its expires_at + grace has not passed, nor the time it was
// recorded + max_lifetime + 2 x grace.
func (s *Store) live(r Result, now time.Time) bool {
	if r.ExpiresAt.IsZero() {
		return false
	}
	end := r.ExpiresAt.Add(s.grace)
	if lim := r.At.Add(s.maxLife + 2*s.grace); s.maxLife > 0 && !r.At.IsZero() && lim.Before(end) {
		end = lim
	}
	return now.Before(end)
}

// evict forgets the oldest expired ids until at most n remain (or none
// expired is left).
func (s *Store) evict(n int) {
	excess := len(s.order) - n
	if excess <= 0 {
		return
	}
	now := s.now()
	keep := s.order[:0]
	for _, id := range s.order {
		if excess > 0 && !s.pending[id] && !s.live(s.byID[id], now) {
			delete(s.byID, id)
			excess--
			continue
		}
		keep = append(keep, id)
	}
	clear(s.order[len(keep):])
	s.order = keep
}

// Full reports whether a new id cannot be remembered: max ids are
// remembered and none of them has expired yet.
func (s *Store) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evict(s.max - 1)
	return len(s.order) >= s.max
}

// rewrite replaces the file with the remembered results and reopens it
// for appending.
func (s *Store) rewrite() error {
	tmp := s.path + ".tmp"
	var buf bytes.Buffer
	if !s.lostBefore.IsZero() {
		line, err := json.Marshal(storeLine{LostBefore: &s.lostBefore})
		if err != nil {
			return fmt.Errorf("command store: %w", err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	for _, id := range s.order {
		line, err := json.Marshal(storeLine{Result: s.byID[id], AuditPending: s.pending[id]})
		if err != nil {
			return fmt.Errorf("command store: %w", err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := writeSync(tmp, buf.Bytes()); err != nil {
		return fmt.Errorf("command store: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("command store: %w", err)
	}
	if s.f != nil {
		_ = s.f.Close()
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("command store: %w", err)
	}
	s.f, s.lines = f, len(s.order)
	return nil
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// Get returns the latest result recorded for id.
func (s *Store) Get(id string) (Result, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID[id]
	return r, ok
}

// Put records r as its id's latest result, its audit record published
// (or not needed), and syncs it to disk before returning.
func (s *Store) Put(r Result) error { return s.put(r, false) }

// PutPending records r as its id's latest result whose audit record could
// not be published yet (Pending lists it), and syncs it to disk.
func (s *Store) PutPending(r Result) error { return s.put(r, true) }

// Pending returns the results whose audit record waits to be published,
// oldest first.
func (s *Store) Pending() []Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Result
	for _, id := range s.order {
		if s.pending[id] {
			out = append(out, s.byID[id])
		}
	}
	return out
}

// Interrupted returns the results still Accepted: when the store was just
// opened, commands whose gateway stopped between accepting them and their
// outcome.
func (s *Store) Interrupted() []Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Result
	for _, id := range s.order {
		if r := s.byID[id]; r.Verdict == Accepted {
			out = append(out, r)
		}
	}
	return out
}

// Published records that r, its id's latest result, is now in the audit
// stream (no longer pending). The line is not synced: lost in a crash, the
// record is published once more (the audit stream's duplicate window
// drops a copy it still remembers).
func (s *Store) Published(r Result) error { return s.write(r, false, false) }

func (s *Store) put(r Result, pending bool) error { return s.write(r, pending, true) }

func (s *Store) write(r Result, pending, sync bool) error {
	line, err := json.Marshal(storeLine{Result: r, AuditPending: pending})
	if err != nil {
		return fmt.Errorf("command store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return fmt.Errorf("command store: closed")
	}
	if _, err := s.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("command store: %w", err)
	}
	if sync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("command store: %w", err)
		}
	}
	s.remember(r, pending)
	s.lines++
	if s.lines > 2*max(s.max, len(s.order)) {
		return s.rewrite()
	}
	return nil
}

// Close closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

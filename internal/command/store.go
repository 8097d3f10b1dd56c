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
// Safe for concurrent use.
type Store struct {
	path    string
	max     int
	maxLife time.Duration // commands.max_lifetime
	grace   time.Duration
	now     func() time.Time

	mu    sync.Mutex
	f     *os.File
	byID  map[string]Result
	order []string // ids, oldest first
	lines int
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
	s := &Store{path: path, max: max, maxLife: maxLifetime, grace: grace, now: time.Now, byID: map[string]Result{}}
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("command store: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r Result
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ID == "" {
			continue // a torn line
		}
		s.remember(r)
		s.lines++
	}
	if err := s.rewrite(); err != nil {
		return nil, err
	}
	return s, nil
}

// remember records r in memory, then forgets expired ids beyond max.
func (s *Store) remember(r Result) {
	if _, ok := s.byID[r.ID]; !ok {
		s.order = append(s.order, r.ID)
	}
	s.byID[r.ID] = r
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
		if excess > 0 && !s.live(s.byID[id], now) {
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
	for _, id := range s.order {
		line, err := json.Marshal(s.byID[id])
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

// Put records r as its id's latest result and syncs it to disk before
// returning.
func (s *Store) Put(r Result) error {
	line, err := json.Marshal(r)
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
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("command store: %w", err)
	}
	s.remember(r)
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

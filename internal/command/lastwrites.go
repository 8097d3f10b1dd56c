package command

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// LastWrites keeps when each point was last written (the start of the
// latest write attempt), for write.min_interval, in a JSON file (an object
// of point key -> RFC 3339 time) replaced and synced on every change, so
// the interval holds across configuration reloads and restarts. A point's
// key is "<site>.<class>.<asset>/<signal>". Safe for concurrent use.
type LastWrites struct {
	path string
	mu   sync.Mutex
	at   map[string]time.Time
}

// OpenLastWrites reads the file at path (none yet: empty), creating its
// directory. A file that does not parse is an error: the gateway then
// refuses to start commands rather than forget the intervals.
func OpenLastWrites(path string) (*LastWrites, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("last writes: %w", err)
	}
	l := &LastWrites{path: path, at: map[string]time.Time{}}
	data, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("last writes: %w", err)
	}
	if err := json.Unmarshal(data, &l.at); err != nil {
		return nil, fmt.Errorf("last writes: %s: %w (remove the file to forget every point's last write)", path, err)
	}
	return l, nil
}

// Get returns when the point was last written.
func (l *LastWrites) Get(key string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[key]
	return t, ok
}

// Set records that the point is written at t and syncs the file before
// returning; on an error the time is not recorded.
func (l *LastWrites) Set(key string, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, had := l.at[key]
	l.at[key] = t
	data, err := json.Marshal(l.at)
	if err == nil {
		tmp := l.path + ".tmp"
		if err = writeSync(tmp, data); err == nil {
			err = os.Rename(tmp, l.path)
		}
	}
	if err != nil {
		if had {
			l.at[key] = prev
		} else {
			delete(l.at, key)
		}
		return fmt.Errorf("last writes: %w", err)
	}
	return nil
}

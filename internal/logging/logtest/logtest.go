// Package logtest gives tests a log destination they can read while the
// code under test writes to it from its own goroutines (or a child
// process's stderr is copied into it).
package logtest

import (
	"bytes"
	"log/slog"
	"sync"
)

// Buffer is an io.Writer safe for concurrent use that keeps what was
// written for String. Its zero value is ready. Max > 0 bounds it to about
// Max bytes: once it holds Max, later writes are dropped (reported as
// written), keeping the start, where startup errors are.
type Buffer struct {
	Max int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p (or drops it when the buffer is full); it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Max > 0 && b.b.Len() >= b.Max {
		return len(p), nil
	}
	return b.b.Write(p)
}

// String returns everything kept so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Logger returns a logger writing text lines (slog's TextHandler) at
// level and above to b.
func (b *Buffer) Logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level}))
}

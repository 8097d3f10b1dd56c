package logtest

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// TestBufferConcurrentWrites: lines written from many goroutines are all
// kept whole (run with -race: the buffer is the only synchronization).
func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	log := b.Logger(slog.LevelInfo)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				log.Info("line", "writer", i, "n", j)
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(l, "msg=line writer=") {
			t.Fatalf("torn line %q", l)
		}
	}
}

// TestBufferLevel: the logger drops lines below its level.
func TestBufferLevel(t *testing.T) {
	var b Buffer
	log := b.Logger(slog.LevelWarn)
	log.Info("quiet")
	log.Warn("loud")
	if s := b.String(); strings.Contains(s, "quiet") || !strings.Contains(s, "level=WARN msg=loud") {
		t.Fatalf("got %q", s)
	}
}

// TestBufferMaxKeepsTheStart: a bounded buffer keeps the first writes and
// reports the dropped ones as written.
func TestBufferMaxKeepsTheStart(t *testing.T) {
	b := Buffer{Max: 10}
	for i := range 5 {
		n, err := fmt.Fprintf(&b, "w%d-", i)
		if n != 3 || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if got := b.String(); got != "w0-w1-w2-w3-" {
		t.Fatalf("kept %q, want the writes up to the bound", got)
	}
}

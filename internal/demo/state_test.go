package demo

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/wait"
)

// TestSecondRunStartsFresh: a second run in the same data directory, its
// plant clock started again where the first run's began, shows every asset
// with its own data. The first run's plant raced 20 minutes ahead; kept
// checkpoints would hold assets newer than anything the second run sends,
// whose batches the collector would drop as late (assets shown stale until
// its plant clock caught up: `make demo` run twice in an afternoon).
func TestSecondRunStartsFresh(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// the plant clock behind the wall clock, as `make demo`'s 10:00 is
	// in the afternoon: the collector orders batches by their times
	// (bounded by its clock), so a kept asset 20 plant minutes ahead
	// would refuse the second run's batches as late
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	opts := Options{FleetPath: filepath.Join(root, "configs/sim-fleet.yaml"), DataDir: dir, Seed: -1,
		Start: start, Speed: 600, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	first := New(opts)
	stopFirst := runDemo(t, first)
	defer stopFirst()
	ahead := start.Add(20 * time.Minute).UnixMilli()
	n := len(first.Fleet().Devices())
	wait.For(t, 60*time.Second, "the first run's assets at the collector 20 plant minutes in", func() bool {
		assets := first.Collector().Assets()
		if len(assets) < n {
			return false
		}
		for _, a := range assets {
			if a.LastTS < ahead {
				return false
			}
		}
		return true
	})
	stopFirst()

	opts.Speed = 1
	second := New(opts)
	startRun(t, second)
	wait.For(t, 60*time.Second, "every asset with the second run's data only", func() bool {
		now := second.Fleet().Now().Add(5 * time.Second).UnixMilli()
		assets := second.Collector().Assets()
		if len(assets) < n {
			return false
		}
		for _, a := range assets {
			if a.LastTS < start.UnixMilli() || a.LastTS > now {
				return false
			}
		}
		return true
	})
}

// TestClearPreviousRun: the state directories of a data directory the demo
// generated go, other files stay; a directory without the demo's generated
// gateway config is refused and left as it is.
func TestClearPreviousRun(t *testing.T) {
	mk := func(t *testing.T, header string) string {
		dir := t.TempDir()
		for _, name := range runStateDirs {
			if err := os.MkdirAll(filepath.Join(dir, name, "sub"), 0o750); err != nil {
				t.Fatal(err)
			}
		}
		if header != "" {
			if err := os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(header+"\ngateway: {}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "mine.txt"), []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	dir := mk(t, generatedHeader+" from the simulator fleet")
	if err := clearPreviousRun(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range runStateDirs {
		if exists(filepath.Join(dir, name)) {
			t.Errorf("%s kept", name)
		}
	}
	if !exists(filepath.Join(dir, "mine.txt")) || !exists(filepath.Join(dir, "gateway.yaml")) {
		t.Error("files outside the state directories removed")
	}

	for _, header := range []string{"", "# my own gateway config"} {
		dir := mk(t, header)
		err := clearPreviousRun(dir)
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "nothing removed") {
			t.Errorf("header %q: err = %v, want a refusal naming %s", header, err, dir)
		}
		for _, name := range runStateDirs {
			if !exists(filepath.Join(dir, name, "sub")) {
				t.Errorf("header %q: %s removed from a directory the demo did not create", header, name)
			}
		}
	}

	if err := clearPreviousRun(t.TempDir()); err != nil {
		t.Errorf("empty directory: %v", err)
	}
}

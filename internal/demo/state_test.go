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

// TestClaimDataDir: the demo writes to and empties only a directory it
// created (its marker file, or what a release before the marker left) or
// an empty one; it removes the state directories there and keeps other
// files. Any other directory, also one holding a gateway.yaml of the
// user's own or a symbolic link named like the demo's files, is refused
// and left as it was.
func TestClaimDataDir(t *testing.T) {
	write := func(t *testing.T, path, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	withState := func(t *testing.T) string {
		dir := t.TempDir()
		for _, name := range runStateDirs {
			write(t, filepath.Join(dir, name, "sub", "f"), "state")
		}
		write(t, filepath.Join(dir, "mine.txt"), "keep")
		return dir
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	header := generatedHeader + " from the simulator fleet\ngateway: {}\n"

	owned := map[string]func(t *testing.T, dir string){
		"marker": func(t *testing.T, dir string) { write(t, filepath.Join(dir, markerFile), "x") },
		"earlier release": func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "gateway.yaml"), header)
			write(t, filepath.Join(dir, "commander.nk"), "seed")
			write(t, filepath.Join(dir, "operator.token"), "tok")
		},
	}
	for name, mk := range owned {
		dir := withState(t)
		mk(t, dir)
		if err := claimDataDir(dir); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, d := range runStateDirs {
			if exists(filepath.Join(dir, d)) {
				t.Errorf("%s: %s kept", name, d)
			}
		}
		if !exists(filepath.Join(dir, "mine.txt")) || !exists(filepath.Join(dir, markerFile)) {
			t.Errorf("%s: other files removed or no marker written", name)
		}
	}

	outside := filepath.Join(t.TempDir(), "real-config.yaml")
	write(t, outside, header)
	foreign := map[string]func(t *testing.T, dir string){
		"state only":       func(*testing.T, string) {},
		"own gateway.yaml": func(t *testing.T, dir string) { write(t, filepath.Join(dir, "gateway.yaml"), "gateway: {id: prod}\n") },
		"header only":      func(t *testing.T, dir string) { write(t, filepath.Join(dir, "gateway.yaml"), header) },
		"gateway.yaml symlink": func(t *testing.T, dir string) {
			if err := os.Symlink(outside, filepath.Join(dir, "gateway.yaml")); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, "commander.nk"), "seed")
			write(t, filepath.Join(dir, "operator.token"), "tok")
		},
		"marker symlink": func(t *testing.T, dir string) {
			if err := os.Symlink(outside, filepath.Join(dir, markerFile)); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, mk := range foreign {
		dir := withState(t)
		mk(t, dir)
		err := claimDataDir(dir)
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "nothing removed") {
			t.Errorf("%s: err = %v, want a refusal naming %s", name, err, dir)
		}
		for _, d := range runStateDirs {
			if !exists(filepath.Join(dir, d, "sub", "f")) {
				t.Errorf("%s: %s removed from a directory the demo did not create", name, d)
			}
		}
		if exists(filepath.Join(dir, markerFile)) && name != "marker symlink" {
			t.Errorf("%s: marker written into a directory the demo did not create", name)
		}
	}
	if data, _ := os.ReadFile(outside); string(data) != header {
		t.Error("the file a symlink points to was changed")
	}

	empty := t.TempDir()
	if err := claimDataDir(empty); err != nil || !exists(filepath.Join(empty, markerFile)) {
		t.Errorf("empty directory: %v", err)
	}
}

// TestWriteFreshReplacesLinks: a file the demo writes replaces a symbolic
// link of that name (writing through it would change a file outside the
// data directory) and an earlier file (keeping its mode), and is 0600.
func TestWriteFreshReplacesLinks(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "real.yaml")
	if err := os.WriteFile(outside, []byte("real"), 0o644); err != nil {
		t.Fatal(err)
	}
	link, old := filepath.Join(dir, "gateway.yaml"), filepath.Join(dir, "operator.token")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, old} {
		if err := writeFresh(p, []byte("new")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want a regular file of mode 0600", p, fi.Mode(), err)
		}
		if data, _ := os.ReadFile(p); string(data) != "new" {
			t.Errorf("%s holds %q", p, data)
		}
	}
	if data, _ := os.ReadFile(outside); string(data) != "real" {
		t.Errorf("the link's target was written: %q", data)
	}
}

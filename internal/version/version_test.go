package version

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/smelterio/smelter", Version: "v0.0.0-20261130010203-0123456789ab+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "GOARCH", Value: "arm"}, {Key: "GOARM", Value: "7"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-11-30T01:02:03Z"}, {Key: "vcs.modified", Value: "true"},
		}}
	host := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name                  string
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  Info
	}{
		{name: "no build info, no stamps", want: Info{GoVersion: runtime.Version(), Platform: host}},
		{name: "build info only", bi: bi, want: Info{Version: bi.Main.Version, Commit: rev, Dirty: true,
			CommitTime: "2026-11-30T01:02:03Z", GoVersion: "go1.26.8", Platform: host + "/v7"}},
		{name: "stamps win", version: "v0.4.0-3-g0123456", commit: "fedcba9876543210fedcba9876543210fedcba98", date: "2026-12-01T00:00:00Z", bi: bi,
			want: Info{Version: "v0.4.0-3-g0123456", Commit: "fedcba9876543210fedcba9876543210fedcba98", Built: "2026-12-01T00:00:00Z",
				CommitTime: "2026-11-30T01:02:03Z", GoVersion: "go1.26.8", Platform: host + "/v7"}},
		{name: "stamped commit equal to the build info's keeps its dirty flag", version: "v0.4.0-dirty", commit: rev, bi: bi,
			want: Info{Version: "v0.4.0-dirty", Commit: rev, Dirty: true, CommitTime: "2026-11-30T01:02:03Z", GoVersion: "go1.26.8", Platform: host + "/v7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.version, tc.commit, tc.date, tc.bi); got != tc.want {
				t.Errorf("resolve:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v0.4.0", Commit: "abc", Dirty: true, Built: "2026-12-01T00:00:00Z", CommitTime: "2026-11-30T00:00:00Z",
		GoVersion: "go1.26.8", Platform: "linux/arm64"}
	want := "smelter-gateway v0.4.0\ncommit: abc (modified)\nbuilt: 2026-12-01T00:00:00Z\ngo: go1.26.8 linux/arm64\n"
	if got := i.String("smelter-gateway"); got != want {
		t.Errorf("String:\n%s\nwant\n%s", got, want)
	}
	i = Info{CommitTime: "2026-11-30T00:00:00Z", GoVersion: "go1.26.8", Platform: "linux/amd64"}
	want = "smelter-gateway unknown\ncommitted: 2026-11-30T00:00:00Z\ngo: go1.26.8 linux/amd64\n"
	if got := i.String("smelter-gateway"); got != want {
		t.Errorf("String without stamps:\n%s\nwant\n%s", got, want)
	}
}

func TestCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		var b bytes.Buffer
		if !Command("smelter-sim", args, &b) {
			t.Fatalf("%v: not handled", args)
		}
		if !strings.HasPrefix(b.String(), "smelter-sim ") || !strings.Contains(b.String(), "go: "+runtime.Version()) {
			t.Errorf("%v: %q", args, b.String())
		}
	}
	for _, args := range [][]string{nil, {"run"}, {"-config", "version"}} {
		var b bytes.Buffer
		if Command("smelter-sim", args, &b) || b.Len() != 0 {
			t.Errorf("%v: handled, wrote %q", args, b.String())
		}
	}
}

// TestLinkerStamps builds a small program with the -X flags the Makefile
// passes and checks the binary reports them, so a renamed variable breaks
// here and not silently in a release.
func TestLinkerStamps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to build the stamped program")
	}
	bin := filepath.Join(t.TempDir(), "stamped")
	const pkg = "github.com/smelterio/smelter/internal/version"
	ldflags := "-X " + pkg + ".version=v9.8.7-1-gdeadbee -X " + pkg + ".commit=deadbeefdeadbeefdeadbeefdeadbeefdeadbeef -X " + pkg + ".date=2026-11-30T02:03:04Z"
	build := exec.Command(gobin, "build", "-ldflags", ldflags, "-o", bin, "./testdata/stamped")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("stamped version: %v", err)
	}
	for _, want := range []string{"stamped v9.8.7-1-gdeadbee\n", "commit: deadbeefdeadbeefdeadbeefdeadbeefdeadbeef", "built: 2026-11-30T02:03:04Z\n",
		"go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

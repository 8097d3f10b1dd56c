// Package version reports what a Smelter binary was built from: its release
// version, VCS commit, build time, Go toolchain and platform.
//
// Two sources, in this order: the link-time stamps `make build` and
// `make dist` set with
//
//	-ldflags "-X github.com/smelterio/smelter/internal/version.version=v0.4.0-3-gabc1234
//	          -X github.com/smelterio/smelter/internal/version.commit=<40 hex digits>
//	          -X github.com/smelterio/smelter/internal/version.date=2026-11-30T01:02:03Z"
//
// and, for whatever was not stamped (a plain `go build` or `go install`), the
// module build info the Go toolchain embeds in every binary
// (runtime/debug.ReadBuildInfo: the main module's version and the vcs.revision,
// vcs.time and vcs.modified settings).
package version

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Link-time stamps (see the package comment). They are written only by the
// linker, never at run time.
var (
	version string
	commit  string
	date    string
)

// Info describes one build. Empty fields are unknown.
type Info struct {
	// Version is the release version: the stamped `git describe` output
	// (v0.4.0, v0.4.0-3-gabc1234, v0.4.0-dirty), else the main module's
	// version from the build info ("(devel)" for a build from a work tree
	// without VCS data).
	Version string
	// Commit is the full VCS revision the binary was built from.
	Commit string
	// Dirty reports uncommitted changes in the work tree at build time
	// (the build info's vcs.modified).
	Dirty bool
	// Built is the stamped build time, RFC 3339 UTC.
	Built string
	// CommitTime is the commit's time from the build info (vcs.time), RFC
	// 3339 UTC: the closest thing to a build date an unstamped binary has.
	CommitTime string
	// GoVersion is the toolchain that built the binary ("go1.26.8").
	GoVersion string
	// Platform is GOOS/GOARCH, plus the variant for ARM ("linux/arm/v7").
	Platform string
}

// Get returns the running binary's build description.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return resolve(version, commit, date, bi)
}

// resolve merges the stamps with the build info bi (nil: none embedded).
// A stamp wins over the build info field it stands for.
func resolve(stampVersion, stampCommit, stampDate string, bi *debug.BuildInfo) Info {
	i := Info{Version: stampVersion, Commit: stampCommit, Built: stampDate,
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return i
	}
	if bi.GoVersion != "" {
		i.GoVersion = bi.GoVersion
	}
	if i.Version == "" {
		i.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if i.Commit == "" {
				i.Commit = s.Value
			}
		case "vcs.time":
			i.CommitTime = s.Value
		case "vcs.modified":
			// a stamped commit comes with its own dirty marker in the
			// stamped version; the build info's flag describes its own revision
			if stampCommit == "" || stampCommit == revision(bi) {
				i.Dirty = s.Value == "true"
			}
		case "GOARM":
			i.Platform += "/v" + s.Value
		case "GOAMD64", "GOARM64":
			// the baseline level is the default and not worth printing
		}
	}
	return i
}

func revision(bi *debug.BuildInfo) string {
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

// String formats i for humans and scripts, one "key: value" per line after
// a first line "NAME VERSION":
//
//	smelter-gateway v0.4.0-3-gabc1234
//	commit: 0123456789abcdef0123456789abcdef01234567
//	built: 2026-11-30T01:02:03Z
//	go: go1.26.8 linux/arm/v7
//
// Unknown fields are left out; "built" becomes "committed" when only the
// commit time is known, and "commit" ends in " (modified)" for a dirty tree.
func (i Info) String(name string) string {
	var b strings.Builder
	v := i.Version
	if v == "" {
		v = "unknown"
	}
	fmt.Fprintf(&b, "%s %s\n", name, v)
	if i.Commit != "" {
		fmt.Fprintf(&b, "commit: %s", i.Commit)
		if i.Dirty {
			b.WriteString(" (modified)")
		}
		b.WriteByte('\n')
	}
	switch {
	case i.Built != "":
		fmt.Fprintf(&b, "built: %s\n", i.Built)
	case i.CommitTime != "":
		fmt.Fprintf(&b, "committed: %s\n", i.CommitTime)
	}
	fmt.Fprintf(&b, "go: %s %s\n", i.GoVersion, i.Platform)
	return b.String()
}

// Command handles the `version` subcommand (also spelled -version and
// --version) of the binary called name: when args[0] asks for it, it writes
// Get().String(name) to w and returns true; otherwise it writes nothing and
// returns false.
func Command(name string, args []string, w io.Writer) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "version", "-version", "--version":
		_, _ = io.WriteString(w, Get().String(name))
		return true
	}
	return false
}

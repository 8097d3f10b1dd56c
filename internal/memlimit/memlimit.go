// Package memlimit parses and applies the gateway's garbage-collector
// settings: its soft memory limit (gateway.memory_limit), the Go runtime's
// memory limit (runtime/debug.SetMemoryLimit), written as the GOMEMLIMIT
// environment variable is: a whole number of bytes with an optional unit
// suffix B, KiB, MiB, GiB or TiB ("48MiB"), or "off"; and its collection
// target (gateway.gc_percent, GOGC's percentage, runtime/debug.SetGCPercent).
//
// The limit is soft: the garbage collector runs more often as the Go heap,
// stacks and runtime data approach it, so a steady load settles under it;
// it never makes an allocation fail. Memory the runtime does not manage
// (the binary's mapped text, C libraries) is outside it, so a process's RSS
// sits a few MB above the limit. See docs/configuration.md.
package memlimit

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Min is the smallest limit accepted: below it the runtime would collect
// garbage continuously (the gateway's own live heap is several MiB).
const Min = 16 << 20

// EnvVar is the Go runtime's own variable; it takes precedence over the
// configuration when set.
const EnvVar = "GOMEMLIMIT"

var units = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// Parse reads a limit in GOMEMLIMIT syntax and returns it in bytes; "off"
// (or "") is 0, meaning no limit. A limit below Min, a negative or
// fractional number, or an unknown suffix is an error naming the reason.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "off" {
		return 0, nil
	}
	num, shift := s, uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = n, u.shift
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%q: want a whole number of bytes with an optional suffix B, KiB, MiB, GiB or TiB (48MiB), or off", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	v := int64(n) << shift
	if v < Min {
		return 0, fmt.Errorf("%q is below the smallest useful limit, 16MiB", s)
	}
	return v, nil
}

// Format writes bytes as Parse reads them, in the largest whole unit.
func Format(v int64) string {
	if v <= 0 {
		return "off"
	}
	for _, u := range units {
		if v%(1<<u.shift) == 0 {
			return strconv.FormatInt(v>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10) + "B"
}

// Source says where the limit in force came from.
type Source string

// Sources of the limit in force.
const (
	FromEnv    Source = "env GOMEMLIMIT"
	FromConfig Source = "gateway.memory_limit"
	None       Source = "none"
)

// Apply sets the runtime's memory limit to limit bytes (from the
// configuration; 0: none) unless the GOMEMLIMIT environment variable is
// set, which the runtime applied at start and which wins. It returns the
// limit in force (0: none) and where it came from. A later Apply with 0
// removes a limit an earlier one set (a reload that dropped the setting).
func Apply(limit int64) (int64, Source) {
	if os.Getenv(EnvVar) != "" {
		cur := debug.SetMemoryLimit(-1)
		if cur == math.MaxInt64 {
			return 0, FromEnv
		}
		return cur, FromEnv
	}
	if limit <= 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return 0, None
	}
	debug.SetMemoryLimit(limit)
	return limit, FromConfig
}

// DefaultGCPercent is the gateway's collection target when neither
// gateway.gc_percent nor the GOGC environment variable sets one: the heap
// may grow to 1.5 x what is live before a collection (the Go default, 100,
// lets it double). Measured at 100,000 points/s with both uplinks on the
// 2-core reference machine (docs/benchmarks.md, "Gateway memory"): 100
// gives 44 MB steady RSS at 0.81-0.85 CPU-s per million points, 50 gives
// 38 MB at 0.89-1.04: issue 17's targets are 40 MB and 1.0.
const DefaultGCPercent = 50

// MinGCPercent and MaxGCPercent bound gateway.gc_percent: below 10 the
// collector runs almost without pause; above 1000 the heap is mostly
// garbage.
const (
	MinGCPercent = 10
	MaxGCPercent = 1000
)

// GCEnvVar is the Go runtime's own variable for the collection target; it
// takes precedence over the configuration when set.
const GCEnvVar = "GOGC"

// CheckGCPercent reports whether pct (gateway.gc_percent; 0 = the default)
// is usable, with the reason when not.
func CheckGCPercent(pct int) error {
	if pct != 0 && (pct < MinGCPercent || pct > MaxGCPercent) {
		return fmt.Errorf("%d out of range %d-%d (the percentage the heap may grow over what is live before a collection, as GOGC)", pct, MinGCPercent, MaxGCPercent)
	}
	return nil
}

// Sources of the collection target in force.
const (
	GCFromEnv     Source = "env GOGC"
	GCFromConfig  Source = "gateway.gc_percent"
	GCFromDefault Source = "default"
)

// ApplyGCPercent sets the collector's target to pct (gateway.gc_percent;
// 0: DefaultGCPercent) unless the GOGC environment variable is set, which
// the runtime applied at start and which wins. It returns the target in
// force (-1: collection off, GOGC=off) and where it came from. pct must
// have passed CheckGCPercent.
func ApplyGCPercent(pct int) (int, Source) {
	if os.Getenv(GCEnvVar) != "" {
		cur := debug.SetGCPercent(100)
		debug.SetGCPercent(cur)
		return cur, GCFromEnv
	}
	src := GCFromConfig
	if pct == 0 {
		pct, src = DefaultGCPercent, GCFromDefault
	}
	debug.SetGCPercent(pct)
	return pct, src
}

// LoadGCPercent is the collection target while a configuration is loaded
// and compiled (Loading): loading holds the file's whole YAML parse tree,
// ~2 KB per point written inline (a 20,000-point file: ~40 MB live for
// well under a second), and at the steady target the heap grew to 1.5 x
// that before a collection. That was the gateway's peak RSS: VmHWM 87-92 MB
// against a 41 MB steady median at 20 OPC UA devices x 1,000 nodes; at 10
// it is ~20 MB lower for ~0.2 CPU-s more at start (docs/benchmarks.md, "OPC
// UA set-up peak").
const LoadGCPercent = 10

// Loading sets the collector's target to LoadGCPercent for loading a
// configuration, unless the GOGC environment variable is set (it wins, as
// in ApplyGCPercent), and returns a function that puts back the target it
// replaced: for a loading that ends without ApplyGCPercent (a refused
// reload).
func Loading() (restore func()) {
	if os.Getenv(GCEnvVar) != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(LoadGCPercent)
	return func() { debug.SetGCPercent(prev) }
}

// ValidGOGC reports whether v is a GOGC value the Go runtime reads: a whole
// number or "off" (anything else, it silently takes as 100).
func ValidGOGC(v string) bool {
	if v == "off" {
		return true
	}
	_, err := strconv.Atoi(v)
	return err == nil
}

// HeapProfileRate is the Go runtime's own runtime.MemProfileRate: one
// allocation in every 512 KiB allocated is sampled, with its stack, for the
// heap profile (/debug/pprof/heap).
const HeapProfileRate = 512 * 1024

// GODEBUGVar is the Go runtime's variable of debugging settings; its
// memprofilerate=N sets runtime.MemProfileRate at start.
const GODEBUGVar = "GODEBUG"

// Sources of the heap profile's sampling rate in force.
const (
	ProfileFromEnv     Source = "env GODEBUG memprofilerate"
	ProfileFromConfig  Source = "http.pprof"
	ProfileFromDefault Source = "default"
)

// ProfileHeap turns the sampling of allocations for the heap profile on
// (HeapProfileRate) or off (0: no heap profile), unless GODEBUG sets
// memprofilerate, which the runtime applied at start and which wins. It
// returns the rate in force (bytes allocated per sample, 0: off) and where
// it came from (ProfileFromConfig when on).
//
// Off is what a process that cannot serve its profile should run with: the
// sampling keeps a record per sampled allocation and a stack bucket per
// allocation site, hashed into a 1.4 MB table of its own (runtime/mprof.go,
// buckhash) that the buckets touch page by page. At 20 OPC UA devices x
// 1,000 nodes the steady state's 144 buckets were ~0.5 MB of RSS, too
// little for the alternated runs to resolve (docs/benchmarks.md, "OPC UA
// memory, seventh pass"). Allocations made while it was off are not in a
// later profile. The runtime samples the first allocation of each P after
// the rate changes, whatever the new rate (malloc.go, profilealloc).
func ProfileHeap(on bool) (int, Source) {
	if v, ok := godebugValue(os.Getenv(GODEBUGVar), "memprofilerate"); ok {
		if _, err := strconv.Atoi(v); err == nil {
			return runtime.MemProfileRate, ProfileFromEnv
		}
	}
	if !on {
		runtime.MemProfileRate = 0
		return 0, ProfileFromDefault
	}
	runtime.MemProfileRate = HeapProfileRate
	return HeapProfileRate, ProfileFromConfig
}

// godebugValue returns the value of key in a GODEBUG list (k=v,k=v; the
// last setting of a key wins, as in the runtime).
func godebugValue(list, key string) (string, bool) {
	var val string
	found := false
	for kv := range strings.SplitSeq(list, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k == key {
			val, found = v, true
		}
	}
	return val, found
}

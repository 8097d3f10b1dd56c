package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"", 0, ""},
		{"off", 0, ""},
		{"48MiB", 48 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"16777216", 16 << 20, ""},
		{"16777216B", 16 << 20, ""},
		{"20000KiB", 20000 << 10, ""},
		{"2TiB", 2 << 40, ""},
		{"15MiB", 0, "below the smallest useful limit, 16MiB"},
		{"0", 0, "below the smallest useful limit"},
		{"-48MiB", 0, "want a whole number"},
		{"48MB", 0, "want a whole number"},
		{"48 MiB", 0, "want a whole number"},
		{"1.5GiB", 0, "want a whole number"},
		{"lots", 0, "want a whole number"},
		{"9999999999TiB", 0, "too large"},
	} {
		got, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if got > 0 {
			if back, err := Parse(Format(got)); err != nil || back != got {
				t.Errorf("Parse(Format(%d)=%q) = %d, %v", got, Format(got), back, err)
			}
		}
	}
}

func TestApplyConfigAndEnv(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv(EnvVar, "")
	if v, src := Apply(64 << 20); v != 64<<20 || src != FromConfig || debug.SetMemoryLimit(-1) != 64<<20 {
		t.Fatalf("Apply(64MiB) = %d %s, runtime %d", v, src, debug.SetMemoryLimit(-1))
	}
	if v, src := Apply(0); v != 0 || src != None || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("Apply(0) = %d %s, runtime %d", v, src, debug.SetMemoryLimit(-1))
	}
	// The environment variable wins: the runtime read it at start (here
	// simulated by setting the limit as the runtime would have).
	t.Setenv(EnvVar, "40MiB")
	debug.SetMemoryLimit(40 << 20)
	if v, src := Apply(64 << 20); v != 40<<20 || src != FromEnv || debug.SetMemoryLimit(-1) != 40<<20 {
		t.Fatalf("Apply with GOMEMLIMIT = %d %s, runtime %d", v, src, debug.SetMemoryLimit(-1))
	}
}

func TestApplyGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv(GCEnvVar, "")
	cur := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	if v, src := ApplyGCPercent(0); v != DefaultGCPercent || src != GCFromDefault || cur() != DefaultGCPercent {
		t.Fatalf("ApplyGCPercent(0) = %d %s, runtime %d", v, src, cur())
	}
	if v, src := ApplyGCPercent(200); v != 200 || src != GCFromConfig || cur() != 200 {
		t.Fatalf("ApplyGCPercent(200) = %d %s, runtime %d", v, src, cur())
	}
	// GOGC wins: the runtime read it at start (simulated here)
	t.Setenv(GCEnvVar, "80")
	debug.SetGCPercent(80)
	if v, src := ApplyGCPercent(200); v != 80 || src != GCFromEnv || cur() != 80 {
		t.Fatalf("ApplyGCPercent with GOGC=80 = %d %s, runtime %d", v, src, cur())
	}
	for _, bad := range []int{-1, 9, 1001} {
		if CheckGCPercent(bad) == nil {
			t.Errorf("CheckGCPercent(%d) = nil", bad)
		}
	}
	for _, ok := range []int{0, 10, 50, 1000} {
		if err := CheckGCPercent(ok); err != nil {
			t.Errorf("CheckGCPercent(%d) = %v", ok, err)
		}
	}
}

// TestLoading: loading a configuration runs at LoadGCPercent and restore
// puts back the target in force before (a refused reload keeps the running
// one); GOGC wins, as over gateway.gc_percent.
func TestLoading(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv(GCEnvVar, "")
	cur := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	debug.SetGCPercent(200) // a running configuration's gc_percent
	restore := Loading()
	if got := cur(); got != LoadGCPercent {
		t.Fatalf("GC percent %d while loading, want %d", got, LoadGCPercent)
	}
	restore()
	if got := cur(); got != 200 {
		t.Fatalf("GC percent %d after restore, want the 200 in force before", got)
	}
	t.Setenv(GCEnvVar, "80")
	debug.SetGCPercent(80) // what the runtime did at start
	restore = Loading()
	if got := cur(); got != 80 {
		t.Fatalf("GC percent %d while loading with GOGC=80: GOGC should win", got)
	}
	restore()
	if got := cur(); got != 80 {
		t.Fatalf("GC percent %d after restore with GOGC=80", got)
	}
}

// TestProfileHeap: off, allocations are not sampled for the heap profile;
// on, at HeapProfileRate they are; GODEBUG's memprofilerate wins over both.
func TestProfileHeap(t *testing.T) {
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
	// one P: the runtime samples the first allocation of each P after the
	// rate changes (malloc.go, profilealloc), whatever the new rate
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	t.Setenv(GODEBUGVar, "")
	if rate, src := ProfileHeap(false); rate != 0 || src != ProfileFromDefault || runtime.MemProfileRate != 0 {
		t.Fatalf("off: rate %d from %q, runtime %d", rate, src, runtime.MemProfileRate)
	}
	sink = append(sink, make([]byte, 64)) // that first allocation
	allocWhileOff()
	if sampled("allocWhileOff") {
		t.Fatal("allocations made with the profile off are in the heap profile")
	}
	if rate, src := ProfileHeap(true); rate != HeapProfileRate || src != ProfileFromConfig || runtime.MemProfileRate != HeapProfileRate {
		t.Fatalf("on: rate %d from %q, runtime %d", rate, src, runtime.MemProfileRate)
	}
	allocWhileOn()
	if !sampled("allocWhileOn") {
		t.Fatal("16 MiB allocated with the profile on and none of it sampled")
	}
	t.Setenv(GODEBUGVar, "madvdontneed=1,memprofilerate=4096")
	runtime.MemProfileRate = 4096 // what the runtime did at start
	if rate, src := ProfileHeap(false); rate != 4096 || src != ProfileFromEnv || runtime.MemProfileRate != 4096 {
		t.Fatalf("GODEBUG memprofilerate=4096, off asked: rate %d from %q, runtime %d", rate, src, runtime.MemProfileRate)
	}
}

func TestGodebugValue(t *testing.T) {
	for _, c := range []struct {
		list, want string
		found      bool
	}{
		{"", "", false},
		{"memprofilerate=1", "1", true},
		{"gctrace=1, memprofilerate=0", "0", true},
		{"memprofilerate=1,memprofilerate=0", "0", true}, // the last wins, as in the runtime
		{"xmemprofilerate=1", "", false},
	} {
		if v, ok := godebugValue(c.list, "memprofilerate"); v != c.want || ok != c.found {
			t.Errorf("%q: %q %v, want %q %v", c.list, v, ok, c.want, c.found)
		}
	}
}

var sink [][]byte

//go:noinline
func allocWhileOff() { allocMiB() }

//go:noinline
func allocWhileOn() { allocMiB() }

// allocMiB allocates 16 x 1 MiB: at HeapProfileRate (a sample every 512 KiB
// on average) one of them goes unsampled with a probability of e^-32.
func allocMiB() {
	for range 16 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
}

// sampled reports whether the heap profile, brought up to date by two
// collections, holds an allocation made under the named function.
func sampled(fn string) bool {
	runtime.GC()
	runtime.GC()
	n, _ := runtime.MemProfile(nil, true)
	recs := make([]runtime.MemProfileRecord, n+50)
	n, _ = runtime.MemProfile(recs, true)
	for _, r := range recs[:n] {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.HasSuffix(f.Function, "."+fn) {
				return true
			}
			if !more {
				break
			}
		}
	}
	return false
}

package memlimit

import (
	"math"
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

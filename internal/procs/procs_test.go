package procs

import (
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Setting
		err  string
	}{
		{"", Auto, ""}, {"auto", Auto, ""}, {" 1 ", Setting{N: 1}, ""}, {"4", Setting{N: 4}, ""}, {"1024", Setting{N: 1024}, ""},
		{"0", Auto, "0 out of range 1-1024 (or auto)"}, {"-1", Auto, "out of range"}, {"1025", Auto, "out of range"},
		{"two", Auto, `"two": want auto or a whole number of 1-1024`}, {"1.5", Auto, "want auto"},
	} {
		got, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := Parse(got.String()); err != nil || back != got {
			t.Errorf("Parse(%q.String()) = %v, %v", tc.in, back, err)
		}
	}
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name              string
		cur, def          int
		cores             float64
		low               int
		held              bool
		wantNext, wantLow int
	}{
		{"one P, busy: raised at once", 1, 4, 0.9, 0, false, 4, 0},
		{"one P, at the line: raised", 1, 2, RaiseAt, 0, true, 2, 0},
		{"one P, under the line: kept", 1, 2, 0.69, 0, true, 1, 0},
		{"one P, idle: kept, counted", 1, 2, 0.1, 3, true, 1, 4},
		{"two Ps, busy: kept", 2, 2, 1.5, 4, true, 2, 0},
		{"two Ps, between the lines: kept, count reset", 2, 2, 0.5, 4, true, 2, 0},
		{"two Ps, low for the 5th window: lowered", 2, 2, 0.2, LowerAfter - 1, true, 1, LowerAfter},
		{"two Ps, low 4 windows: kept", 2, 2, 0.2, LowerAfter - 2, true, 2, LowerAfter - 1},
		{"two Ps, low long but within Hold: kept", 2, 2, 0.2, 10, false, 2, 11},
		{"one CPU: nothing to do", 1, 1, 1.0, 0, true, 1, 0},
	} {
		next, low := decide(tc.cur, tc.def, tc.cores, tc.low, tc.held)
		if next != tc.wantNext || low != tc.wantLow {
			t.Errorf("%s: decide = %d, %d; want %d, %d", tc.name, next, low, tc.wantNext, tc.wantLow)
		}
	}
}

// fakeRuntime is a runtime of def CPUs whose process CPU the test sets.
type fakeRuntime struct {
	env       string
	def, cur  int
	cpu       time.Duration
	now       time.Time
	noCPU     bool
	setCalls  int
	defCalled int
}

func (f *fakeRuntime) ops() runtimeOps {
	return runtimeOps{
		env:        func() string { return f.env },
		get:        func() int { return f.cur },
		set:        func(n int) { f.cur = n; f.setCalls++ },
		setDefault: func() { f.cur = f.def; f.defCalled++ },
		cpu:        func() (time.Duration, bool) { return f.cpu, !f.noCPU },
		now:        func() time.Time { return f.now },
	}
}

// window advances the fake by one Window in which the process used cores
// and steps the controller as Run does.
func (f *fakeRuntime) window(c *Controller, cores float64) {
	f.now = f.now.Add(Window)
	f.cpu += time.Duration(cores * float64(Window))
	c.step(cores, f.now)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestAutoFollowsLoad(t *testing.T) {
	f := &fakeRuntime{def: 2, cur: 2, now: time.Unix(1e9, 0)}
	reg := prometheus.NewRegistry()
	c := newController(quiet(), reg, "smelter_test", f.ops())
	if n, from := c.Apply(Auto, "gateway.max_procs"); n != 1 || from != "gateway.max_procs auto" {
		t.Fatalf("Apply(auto) = %d, %q; want 1 from gateway.max_procs auto", n, from)
	}
	f.window(c, 0.5)
	if f.cur != 1 {
		t.Fatalf("0.5 core on one P: GOMAXPROCS %d, want 1", f.cur)
	}
	f.window(c, 0.95)
	if f.cur != 2 {
		t.Fatalf("0.95 core on one P: GOMAXPROCS %d, want the default 2", f.cur)
	}
	// idle at once: held for Hold, then lowered after LowerAfter low windows
	windows := 0
	for f.cur == 2 && windows < 100 {
		f.window(c, 0.05)
		windows++
	}
	if f.cur != 1 {
		t.Fatalf("idle: GOMAXPROCS %d after %d windows, want 1", f.cur, windows)
	}
	if minW := int(Hold / Window); windows < minW {
		t.Fatalf("lowered after %d windows, within Hold (%d windows)", windows, minW)
	}
	if got := testutil.ToFloat64(c.changes); got != 2 {
		t.Fatalf("changes counted %v, want 2", got)
	}
	// a fixed setting stops auto
	c.Apply(Setting{N: 2}, "gateway.max_procs")
	f.window(c, 0.0)
	for range LowerAfter + int(Hold/Window) {
		f.window(c, 0.0)
	}
	if f.cur != 2 {
		t.Fatalf("fixed 2: GOMAXPROCS %d, want 2", f.cur)
	}
}

// A reload from a fixed max_procs to auto is logged, as a fixed value is
// (only auto's start is not: it is the default).
func TestReloadToAutoLogged(t *testing.T) {
	f := &fakeRuntime{def: 2, cur: 2, now: time.Unix(1e9, 0)}
	var logs strings.Builder
	c := newController(slog.New(slog.NewTextHandler(&logs, nil)), nil, "smelter_test", f.ops())
	c.Apply(Auto, "gateway.max_procs")
	if logs.Len() != 0 {
		t.Fatalf("auto's start logged: %q", logs.String())
	}
	c.Apply(Setting{N: 2}, "gateway.max_procs")
	logs.Reset()
	if n, _ := c.Apply(Auto, "gateway.max_procs"); n != 1 {
		t.Fatalf("auto after fixed 2: GOMAXPROCS %d, want 1", n)
	}
	if got := logs.String(); !strings.Contains(got, "max procs") || !strings.Contains(got, `from="gateway.max_procs auto"`) || !strings.Contains(got, "procs=1") {
		t.Fatalf("fixed -> auto not logged: %q", got)
	}
}

func TestEnvWins(t *testing.T) {
	f := &fakeRuntime{env: "3", def: 4, cur: 3, now: time.Unix(1e9, 0)}
	c := newController(quiet(), nil, "smelter_test", f.ops())
	for _, s := range []Setting{Auto, {N: 1}} {
		if n, from := c.Apply(s, "gateway.max_procs"); n != 3 || from != "env GOMAXPROCS" {
			t.Fatalf("Apply(%v) with GOMAXPROCS set = %d, %q", s, n, from)
		}
	}
	c.Apply(Auto, "gateway.max_procs")
	f.window(c, 0.0)
	for range 50 {
		f.window(c, 2.0)
	}
	if f.cur != 3 || f.setCalls != 0 || f.defCalled != 0 {
		t.Fatalf("GOMAXPROCS in the environment: changed to %d (%d sets, %d defaults)", f.cur, f.setCalls, f.defCalled)
	}
}

// An invalid GOMAXPROCS (the runtime ignores it) does not win: max_procs
// applies and a warning names the value (blackbox19: the log named the
// env as the source of a value it never set).
func TestInvalidEnvIgnored(t *testing.T) {
	for _, v := range []string{"two", "0", "-1", "1.5"} {
		f := &fakeRuntime{env: v, def: 2, cur: 2, now: time.Unix(1e9, 0)}
		var logs strings.Builder
		c := newController(slog.New(slog.NewTextHandler(&logs, nil)), nil, "smelter_test", f.ops())
		if n, from := c.Apply(Setting{N: 1}, "max_procs"); n != 1 || from != "max_procs" || f.cur != 1 {
			t.Errorf("GOMAXPROCS=%s: Apply gave %d from %q (runtime %d), want 1 from max_procs", v, n, from, f.cur)
		}
		if !strings.Contains(logs.String(), "GOMAXPROCS in the environment is not a whole number above 0") || !strings.Contains(logs.String(), "GOMAXPROCS="+v) {
			t.Errorf("GOMAXPROCS=%s: no warning in %q", v, logs.String())
		}
	}
}

func TestAutoWithoutCPUReadingKeepsDefault(t *testing.T) {
	f := &fakeRuntime{def: 2, cur: 2, noCPU: true, now: time.Unix(1e9, 0)}
	c := newController(quiet(), nil, "smelter_test", f.ops())
	if n, _ := c.Apply(Auto, "collector.max_procs"); n != 2 {
		t.Fatalf("auto without a CPU reading: GOMAXPROCS %d, want the default 2", n)
	}
}

// TestRealRuntime applies a fixed setting and auto to this process's
// runtime (restored after).
func TestRealRuntime(t *testing.T) {
	if !envInForce(realRuntime().env()) {
		t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	} else {
		t.Skip("GOMAXPROCS is set in the environment")
	}
	c := New(quiet(), prometheus.NewRegistry(), "smelter_test")
	if n, _ := c.Apply(Setting{N: 1}, "gateway.max_procs"); n != 1 || runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("fixed 1: Apply %d, runtime %d", n, runtime.GOMAXPROCS(0))
	}
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	c.Apply(Auto, "gateway.max_procs")
	if got := runtime.GOMAXPROCS(0); (def > 1 && got != 1) || (def == 1 && got != 1) {
		t.Fatalf("auto with a default of %d: runtime %d, want 1", def, got)
	}
	c.step(RaiseAt+0.1, time.Now())
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("auto busy: runtime %d, want the default %d", got, def)
	}
	if used, ok := processCPU(); runtime.GOOS == "linux" && (!ok || used <= 0) {
		t.Fatalf("processCPU on linux = %v, %v", used, ok)
	}
}

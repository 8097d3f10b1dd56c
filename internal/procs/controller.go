package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Controller applies a process's max_procs: a fixed GOMAXPROCS at once,
// auto by watching the process's CPU every Window (Run). It is built once
// per process; Apply takes each configuration's setting (a reload's too).
// The GOMAXPROCS in force is the Go collector's go_sched_gomaxprocs_threads.
type Controller struct {
	log     *slog.Logger
	changes prometheus.Counter
	rt      runtimeOps

	mu      sync.Mutex
	setting Setting
	fromEnv bool
	env     string    // GOMAXPROCS as set ("" unset); set and not fromEnv: the runtime ignores it, warned at Apply
	def     int       // the runtime's default GOMAXPROCS, read when it was last in force
	changed time.Time // when auto last changed GOMAXPROCS
	low     int       // windows in a row under LowerAt
}

// runtimeOps is what the Controller reads and sets (the runtime, or a
// test's fake).
type runtimeOps struct {
	env        func() string                // GOMAXPROCS in the environment ("" unset)
	get        func() int                   // GOMAXPROCS in force
	set        func(int)                    // runtime.GOMAXPROCS(n)
	setDefault func()                       // runtime.SetDefaultGOMAXPROCS
	cpu        func() (time.Duration, bool) // the process's user+system CPU so far; false: unknown here
	now        func() time.Time
}

func realRuntime() runtimeOps {
	return runtimeOps{
		env:        func() string { return os.Getenv(EnvVar) },
		get:        func() int { return runtime.GOMAXPROCS(0) },
		set:        func(n int) { runtime.GOMAXPROCS(n) },
		setDefault: runtime.SetDefaultGOMAXPROCS,
		cpu:        processCPU,
		now:        time.Now,
	}
}

// New returns the process's Controller. prefix names its metric
// (<prefix>_max_procs_changes_total: the changes auto made); reg may be
// nil. It changes nothing before Apply.
func New(log *slog.Logger, reg prometheus.Registerer, prefix string) *Controller {
	return newController(log, reg, prefix, realRuntime())
}

func newController(log *slog.Logger, reg prometheus.Registerer, prefix string, rt runtimeOps) *Controller {
	env := rt.env()
	c := &Controller{log: log, rt: rt, fromEnv: envInForce(env), env: env, def: rt.get(),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "_max_procs_changes_total",
			Help: "Changes of GOMAXPROCS that max_procs: auto made (go_sched_gomaxprocs_threads is the value in force)."})}
	if reg != nil {
		reg.MustRegister(c.changes)
	}
	return c
}

// SetLogger makes log the Controller's logger from now on (the gateway
// builds one per configuration).
func (c *Controller) SetLogger(log *slog.Logger) {
	c.mu.Lock()
	c.log = log
	c.mu.Unlock()
}

// Apply puts s in force and logs it when it is not auto's start: a fixed
// N at once; auto from one P (Run raises it when the process is busy),
// logged when it replaces a fixed N (a reload). With GOMAXPROCS in the
// environment nothing changes (logged once per call). It returns the
// GOMAXPROCS in force and where it came from: "env GOMAXPROCS", field (a
// fixed value) or field+" auto".
func (c *Controller) Apply(s Setting, field string) (n int, from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wasFixed := c.setting.N > 0
	c.setting = s
	if s.N == 0 && wasFixed && !c.fromEnv {
		defer func() { c.log.Info("max procs", "procs", n, "from", from, "was", "fixed") }()
	}
	if c.env != "" && !c.fromEnv {
		c.log.Warn("GOMAXPROCS in the environment is not a whole number above 0: the Go runtime ignores it, "+field+" applies", "GOMAXPROCS", c.env)
	}
	switch {
	case c.fromEnv:
		n := c.rt.get()
		c.log.Info("max procs", "procs", n, "from", "env "+EnvVar)
		return n, "env " + EnvVar
	case s.N > 0:
		c.rt.set(s.N)
		c.log.Info("max procs", "procs", s.N, "from", field)
		return s.N, field
	}
	if _, ok := c.rt.cpu(); !ok {
		// no CPU reading here: auto keeps the runtime's default
		c.rt.setDefault()
		c.def = c.rt.get()
		return c.def, field + " auto"
	}
	if cur := c.rt.get(); cur > 1 {
		c.def = cur
	}
	if c.def > 1 && c.rt.get() != 1 {
		c.rt.set(1)
		c.changed, c.low = c.rt.now(), 0
	}
	return c.rt.get(), field + " auto"
}

// Run watches the process's CPU every Window and applies auto's rule
// while the setting in force is auto, until ctx ends (it returns nil).
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(Window)
	defer t.Stop()
	last, _ := c.rt.cpu()
	lastAt := c.rt.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		used, ok := c.rt.cpu()
		now := c.rt.now()
		if ok && now.After(lastAt) {
			c.step(float64(used-last)/float64(now.Sub(lastAt)), now)
		}
		last, lastAt = used, now
	}
}

// step applies auto's rule for one window in which the process used
// cores of CPU.
func (c *Controller) step(cores float64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fromEnv || c.setting.N > 0 {
		c.low = 0
		return
	}
	cur := c.rt.get()
	next, low := decide(cur, c.def, cores, c.low, now.Sub(c.changed) >= Hold)
	c.low = low
	if next == cur {
		return
	}
	if next > 1 {
		c.rt.setDefault() // the runtime's own default, kept up to date with cgroup limits
		c.def = c.rt.get()
		next = c.def
	} else {
		c.rt.set(next)
	}
	c.changed = now
	c.changes.Inc()
	c.log.Info("max procs changed (auto)", "procs", next, "was", cur, "cores_used", roundCores(cores))
}

func roundCores(v float64) float64 { return float64(int(v*100+0.5)) / 100 }

// envInForce reports whether the GOMAXPROCS environment value v is one the
// Go runtime takes (a whole number above 0, runtime/proc.go's schedinit);
// any other value it ignores, and so does the Controller.
func envInForce(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n > 0
}

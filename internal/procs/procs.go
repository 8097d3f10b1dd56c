// Package procs sets how many goroutines a Smelter process runs at once on
// OS threads: the Go runtime's GOMAXPROCS, from the max_procs setting of
// the gateway (gateway.max_procs) or the collector.
//
// The setting is a whole number (a fixed GOMAXPROCS, 1-1024) or auto (the
// default). Auto runs the process on one P while it uses little CPU and on
// the runtime's default (every CPU the process may use, cgroup limits
// included) once it needs more than one core's worth: a process of many
// goroutines that each wake briefly (a device's poll, a reply, a publish)
// spends a good part of its CPU on the other P's wake-ups when it has
// two or more Ps and little to do (futex wake-ups and spinning threads
// looking for work). Measured on a 2-vCPU guest (docs/benchmarks.md,
// "GOMAXPROCS: max_procs"): smelter-gateway at 100,000 points/s, one P
// 0.87-0.97 CPU-s per million points against 0.99-1.22 with two; the
// collector's ingest benchmark 2.40 against 2.88 steady-state CPU-s per
// million readings.
//
// The GOMAXPROCS environment variable, when set, wins: the runtime applied
// it at start and auto does nothing.
package procs

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// EnvVar is the Go runtime's own variable; set, it wins over max_procs.
const EnvVar = "GOMAXPROCS"

// Max bounds a fixed max_procs (the Go runtime accepts up to 256 on some
// platforms and more on others; no Smelter process needs more).
const Max = 1024

// Setting is a max_procs value: Auto, or N fixed Ps.
type Setting struct {
	// N is the fixed GOMAXPROCS; 0 means auto.
	N int
}

// Auto is the default setting.
var Auto = Setting{}

// Parse reads a max_procs value: "", "auto" (Auto) or a whole number
// 1-Max. Anything else is an error naming the reason.
func Parse(s string) (Setting, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "auto" {
		return Auto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return Auto, fmt.Errorf("%q: want auto or a whole number of 1-%d", s, Max)
	}
	if n < 1 || n > Max {
		return Auto, fmt.Errorf("%d out of range 1-%d (or auto)", n, Max)
	}
	return Setting{N: n}, nil
}

// String writes s as Parse reads it.
func (s Setting) String() string {
	if s.N == 0 {
		return "auto"
	}
	return strconv.Itoa(s.N)
}

// Auto's thresholds, in cores used over one Window (user and system CPU
// of the whole process divided by the wall time). The gap between them is
// the hysteresis: at one P a process is raised when it keeps one core
// busy past RaiseAt (it would soon queue work behind itself); on more Ps
// it is lowered only after LowerAfter windows in a row under LowerAt
// (the same work costs 10-20 % more CPU on two Ps, so a load just under
// RaiseAt on one P reads under it on two as well and does not come back
// down at once), and not within Hold of its last change: a load that
// comes and goes changes the setting at most twice in Hold. A raise is
// never held back (a busy process gets its Ps within a Window).
const (
	RaiseAt    = 0.70
	LowerAt    = 0.35
	Window     = 2 * time.Second
	LowerAfter = 5
	Hold       = 30 * time.Second
)

// decide is auto's rule: from the GOMAXPROCS in force (cur), the runtime's
// default (def), the cores used over the last window, how many windows in
// a row were under LowerAt before it (low) and whether the last change is
// older than Hold (held; lowering waits for it), it returns the GOMAXPROCS
// for the next window and the new count of low windows.
func decide(cur, def int, cores float64, low int, held bool) (next, lowAfter int) {
	if cores < LowerAt {
		low++
	} else {
		low = 0
	}
	switch {
	case def <= 1:
		return cur, low
	case cur <= 1 && cores >= RaiseAt:
		return def, 0
	case cur > 1 && low >= LowerAfter && held:
		return 1, low
	}
	return cur, low
}

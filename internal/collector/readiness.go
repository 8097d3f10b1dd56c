package collector

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pullGrace is how long the pulls of a partition this replica should own
// may fail before /readyz answers 503 (docs/operations.md, "Health and
// readiness"): three times the longest pause between two dials of a pull
// connection (pullRetryMax), so a broker restart of a few seconds, after
// which the main connection reconnects within its 1 s reconnect wait and
// the pull dials again within 5 s, does not flap readiness.
const pullGrace = 15 * time.Second

// pullHealth tracks, per partition this replica should own, since when its
// pulls have failed: a pull or dial that failed (the pull connection
// refused: maximum connections, credentials, TLS; a pull refused by the
// server's permissions; the main connection down), or the partition's
// worker stopped by an error. A pull the server answered clears it, and so
// does the partition being handed to another replica. Safe for concurrent
// use; the zero value tracks nothing.
type pullHealth struct {
	mu      sync.Mutex
	failing map[int]pullFailure
}

// pullFailure is a partition's failing episode: its start and newest error.
type pullFailure struct {
	since time.Time
	err   string
}

// failed records a failed pull of partition p (the episode starts at the
// first).
func (h *pullHealth) failed(p int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing == nil {
		h.failing = map[int]pullFailure{}
	}
	f, ok := h.failing[p]
	if !ok {
		f.since = time.Now()
	}
	f.err = errCut(err)
	h.failing[p] = f
}

// ok records a pull of partition p the server answered.
func (h *pullHealth) ok(p int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failing, p)
}

// keep forgets every partition but those in want (this replica's now).
func (h *pullHealth) keep(want map[int]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.failing {
		if !want[p] {
			delete(h.failing, p)
		}
	}
}

// stalled returns the partitions whose pulls have failed for longer than
// grace, in order, and a reason naming the first ("" when none).
func (h *pullHealth) stalled(grace time.Duration) (ps []int, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, f := range h.failing {
		if time.Since(f.since) > grace {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil, ""
	}
	sort.Ints(ps)
	f := h.failing[ps[0]]
	return ps, fmt.Sprintf("partition %d: no working pull for %s (%d partition(s) in all): %s",
		ps[0], time.Since(f.since).Round(time.Second), len(ps), f.err)
}

// readiness reports whether the collector is ready, and why not: Run has
// connected and consumes, and no partition this replica should own has
// had its pulls fail for longer than pullGrace.
func (c *Collector) readiness() (bool, string) {
	if !c.ready.Load() {
		return false, "not connected to NATS, or not consuming yet"
	}
	if _, why := c.pulls.stalled(c.pullGraceOr()); why != "" {
		return false, why
	}
	return true, ""
}

// pullGraceOr is pullGrace, or the tests' shorter one.
func (c *Collector) pullGraceOr() time.Duration {
	if c.pullGrace > 0 {
		return c.pullGrace
	}
	return pullGrace
}

// stalledGauge is smelter_collector_partitions_stalled.
func (c *Collector) stalledGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_partitions_stalled",
		Help: "Partitions this replica should own whose pulls have failed for longer than 15 s (pull connection refused, pulls refused by permissions, worker failing): nothing of them is evaluated, and /readyz answers 503 meanwhile."},
		func() float64 {
			ps, _ := c.pulls.stalled(c.pullGraceOr())
			return float64(len(ps))
		})
}

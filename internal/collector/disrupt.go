package collector

import (
	"sync"
	"time"
)

// disruptions records when the collector's view of the stream was last
// disrupted: the NATS connection lost or re-established (all partitions),
// or a partition's fetch or consumer info failing, or its worker failing
// until the next one starts (that partition). While the broker is down or
// electing a leader the stream takes no batch from any gateway, so an
// asset's silence is counted from the end of the newest disruption when
// that is later than its last batch (rules.Engine.Tick's from): a
// failover longer than k x an asset's interval raises no silence alert by
// itself, while an asset still silent k x its interval after the
// collector sees the stream again gets one. Partition records survive the
// partition's worker restarts (the next worker reads its state again from
// the bucket, dated by the last checkpoint).
type disruptions struct {
	mu    sync.Mutex
	conn  int64 // Unix ms
	parts map[int]*partDisruption
}

type partDisruption struct {
	at         int64 // Unix ms
	restarting bool  // a worker failed; the next one's start ends the disruption
}

// connection marks a disruption of the connection, now.
func (d *disruptions) connection() {
	d.mu.Lock()
	d.conn = max(d.conn, time.Now().UnixMilli())
	d.mu.Unlock()
}

// part returns partition p's record; d.mu is held.
func (d *disruptions) part(p int) *partDisruption {
	if d.parts == nil {
		d.parts = map[int]*partDisruption{}
	}
	pd := d.parts[p]
	if pd == nil {
		pd = &partDisruption{}
		d.parts[p] = pd
	}
	return pd
}

// partition marks a disruption of partition p's evidence, now.
func (d *disruptions) partition(p int) { d.mark(p, false) }

// failed marks partition p's worker failed, now; the disruption lasts
// until the next worker of p starts.
func (d *disruptions) failed(p int) { d.mark(p, true) }

// mark records a disruption of partition p now; restarting: its worker
// failed.
func (d *disruptions) mark(p int, restarting bool) {
	now := time.Now().UnixMilli()
	d.mu.Lock()
	pd := d.part(p)
	pd.at = max(pd.at, now)
	pd.restarting = pd.restarting || restarting
	d.mu.Unlock()
}

// started marks the start of a worker of partition p: the end of the
// disruption when the previous one failed.
func (d *disruptions) started(p int) {
	now := time.Now().UnixMilli()
	d.mu.Lock()
	if pd := d.parts[p]; pd != nil && pd.restarting {
		pd.at, pd.restarting = max(pd.at, now), false
	}
	d.mu.Unlock()
}

// disruptionGrace is how long after a disruption's end the gateways are
// given to be back before their assets' silence counts: their own
// reconnect (500 ms plus up to 1 s of jitter), their stream check (retried
// every 5 s at most) and a cluster's leader election (seconds): a gateway
// was quiet 10.7 s after a cluster node's loss (verify12, with the 30 s
// stream-check backoff of then).
const disruptionGrace = 10 * time.Second

// since returns the time from which partition p's assets' silence counts
// at the earliest (Unix ms; 0: no disruption yet): the end of its newest
// disruption plus disruptionGrace.
func (d *disruptions) since(p int) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	at := d.conn
	if pd := d.parts[p]; pd != nil {
		at = max(at, pd.at)
	}
	if at == 0 {
		return 0
	}
	return at + disruptionGrace.Milliseconds()
}

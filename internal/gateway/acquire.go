package gateway

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// acquisition is the one loop every driver feeds: it turns a device's
// cycles into normalized batches in the spool, metrics, the device's state
// and its death and birth notices. Its methods run on the source's emit
// calls, which never overlap.
type acquisition struct {
	d     *device
	sp    *spool.Spool
	dm    *deviceMetrics
	batch telemetry.Batch // Readings: borrowed from the gateway for one cycle
	// when the overrun advice naming each culprit (the link's busiest
	// device, "" alone on its link) was last logged
	overrunLogged map[string]time.Time
}

// overrunLogEvery bounds the overrun advice to one line per device and
// culprit in this period (the counters count every overrun). The culprits
// of one device are the devices on its link: the map stays small.
const overrunLogEvery = 10 * time.Minute

// run acquires from the device's source until ctx ends, restarting the
// source when it stalls (stallWatch).
func (d *device) run(ctx context.Context, sp *spool.Spool) error {
	a := &acquisition{d: d, sp: sp, dm: d.metrics(), batch: telemetry.Batch{Gateway: d.g.cfg.ID, Asset: d.cfg.Asset}}
	return newStallWatch(d).run(ctx, func(c *sample.Cycle) {
		a.batch.Readings = d.g.borrowReadings(len(c.Samples))
		a.cycle(ctx, c)
		d.g.returnReadings(a.batch.Readings)
		a.batch.Readings = nil
	})
}

// borrowReadings returns an empty readings buffer, with room for n when it
// is new.
func (g *Gateway) borrowReadings(n int) []telemetry.Reading {
	if p, ok := g.readings.Get().(*[]telemetry.Reading); ok {
		return (*p)[:0]
	}
	return make([]telemetry.Reading, 0, n)
}

// returnReadings gives a buffer back to the pool (its readings are
// overwritten before they are read again).
func (g *Gateway) returnReadings(rs []telemetry.Reading) {
	if cap(rs) > 0 {
		g.readings.Put(&rs)
	}
}

// encode is the spool's encoder of the cycle's batch. The spool calls it
// once; the readings go back to the pool once encoded, not after the
// spool's write: the devices of a poll tick wait for that together, and
// would each hold a cycle's readings meanwhile.
func (a *acquisition) encode(seq uint64, dst []byte) []byte {
	a.batch.Seq = seq
	dst = a.batch.AppendJSON(dst)
	a.d.g.returnReadings(a.batch.Readings)
	a.batch.Readings = nil
	return dst
}

// cycle handles one cycle of the source.
func (a *acquisition) cycle(ctx context.Context, c *sample.Cycle) {
	d := a.d
	if ctx.Err() != nil {
		return
	}
	at := c.Start
	if at.IsZero() {
		at = time.Now()
	}
	// The cycle's end: when its replies came or its requests timed out
	// (a read queued on a shared link, or waiting for its timeouts, ends
	// long after it started). Silence and staleness are judged there.
	end := at
	if c.Duration > 0 {
		end = at.Add(c.Duration)
	}
	d.normMu.Lock()
	a.batch.Readings = d.norm.Apply(a.batch.Readings[:0], c.Samples, end.UnixMilli(), d.g.now().UnixMilli())
	d.normMu.Unlock()
	good := 0
	for i := range c.Samples {
		if c.Samples[i].Quality.HasValue() {
			good++
		}
	}
	if c.Duration > 0 {
		a.dm.pollDur.Observe(c.Duration.Seconds())
		if c.Interval > 0 && c.Duration > c.Interval {
			a.overrun(c)
		}
	}
	a.dm.poll(good, len(c.Samples))
	if d.track(ctx, a.sp, at, end, c, good > 0) {
		a.dm.up.Set(1)
	} else {
		a.dm.up.Set(0)
	}
	if d.unitsChanged.Swap(false) {
		// the device reported a unit the catalog does not give: announce it
		d.a.birthDue.Store(true)
	}
	m := d.g.m
	if !d.a.spoolBirth(ctx, a.sp) {
		// The spool failed (disk full): the birth stays due and this
		// batch is not appended (consumers get no data before its birth);
		// the attempt cost one seq, as the batch would have.
		if len(a.batch.Readings) > 0 && ctx.Err() == nil {
			m.spoolErrors.Inc()
		}
		return
	}
	if len(a.batch.Readings) == 0 {
		return
	}
	a.batch.TSGW = d.g.now().UnixMilli()
	a.dm.count(a.batch.Readings)
	if _, err := a.sp.Append(ctx, d.subj, a.encode); err != nil {
		if ctx.Err() == nil {
			m.spoolErrors.Inc()
			d.g.spoolFailed(ctx, d.log, "spooling batch", err)
		}
		return
	}
	m.batches.Inc()
	d.g.retryStatus(ctx, a.sp)
}

// overrun counts and explains a cycle that took longer than its interval,
// naming the device that consumed the time. Alone on its link, or having
// used a shared link most during the cycle, the device itself is too slow
// for its interval (smelter_gateway_poll_overruns_total). Otherwise another
// device on the shared link (c.LinkBusiest) held it for most of the cycle:
// the cycle is counted as delayed by that device, and the advice names it.
func (a *acquisition) overrun(c *sample.Cycle) {
	by := c.LinkBusiest
	if by == "" {
		by = a.d.cfg.ID
	}
	own := by == a.d.cfg.ID
	if own {
		a.dm.overrun()
	} else {
		a.dm.delayedBy(by)
	}
	now := time.Now()
	key := c.LinkBusiest // "": alone on its link
	if last, ok := a.overrunLogged[key]; ok && now.Sub(last) < overrunLogEvery {
		return
	}
	if a.overrunLogged == nil {
		a.overrunLogged = map[string]time.Time{}
	}
	a.overrunLogged[key] = now
	args := []any{"interval", c.Interval, "took", c.Duration.Round(time.Millisecond)}
	switch {
	case own && c.LinkBusiest == "":
		a.d.log.Warn("poll overran its interval: the device's reads take longer than the interval; raise its poll interval or read fewer, larger blocks (max_registers, max_gap)", args...)
	case own:
		a.d.log.Warn("poll overran its interval: the device used its shared link for most of the cycle; raise its poll interval or read fewer, larger blocks (max_registers, max_gap)",
			append(args, "link_time", c.LinkBusiestTime.Round(time.Millisecond))...)
	default:
		a.d.log.Warn("poll overran its interval waiting for its shared link: link saturated by device "+by+"; that device (not this one) needs a longer poll interval or fewer requests",
			append(args, "by", by, "by_link_time", c.LinkBusiestTime.Round(time.Millisecond))...)
	}
}

// track keeps the device's state and tells its asset of its death and
// rebirth (the asset dies when every source is dead).
//
// Liveness (docs/architecture.md): a device that answers is alive, even
// when every answer is an exception or a Bad status; only silence is
// death. Any cycle with Replied, from any of the device's groups, is life,
// so a device with an exception-only group and a good group never flaps.
// A device is dead once it has been silent for k x the cycle's interval
// (counted from the end of its last cycle that got a reply, or from the
// first attempt when it never answered), judged at the end of each cycle
// (end: when its requests timed out, so a cycle whose timeouts take longer
// than k x interval kills at its end), or at once when its source reports
// the link Lost. The death reason states that silence; it and last_error
// carry the text of the cycle's Err: the real cause. It returns whether
// the device is alive.
func (d *device) track(ctx context.Context, sp *spool.Spool, at, end time.Time, c *sample.Cycle, anyGood bool) bool {
	iv := c.Interval
	if iv <= 0 {
		iv = d.cfg.Interval
	}
	d.mu.Lock()
	st := &d.st
	st.LastPoll = at
	st.Polls++
	if !anyGood {
		st.FailedPolls++
	} else {
		st.LastGood = at
	}
	if c.Err != nil {
		st.LastError = c.Err.Error()
		st.LastErrorAt = at
	}
	st.logs.poll(d.log, at, c)
	var announceDeath, announceBirth bool
	var reason string
	if c.Replied && !c.Lost {
		st.LastReply = end
		st.silentSince = time.Time{}
		if st.Dead {
			st.Dead = false
			announceBirth = true
		}
	} else {
		if st.silentSince.IsZero() {
			st.silentSince = at
			if !st.LastReply.IsZero() {
				st.silentSince = st.LastReply
			}
		}
		silent := end.Sub(st.silentSince)
		if !st.Dead && (c.Lost || silent >= staleMultiple*iv) {
			// The real silence, not the threshold: a slow cycle (an RTU
			// line, a long timeout) sees it well past k x interval.
			st.Dead = true
			announceDeath = true
			cause := st.LastError
			if c.Err != nil {
				cause = c.Err.Error()
			}
			if c.Lost {
				reason = "link lost"
			} else {
				reason = "no reply for " + silent.Round(time.Millisecond).String()
			}
			if cause != "" {
				reason += ": " + cause
			}
		}
	}
	alive := !st.Dead
	d.mu.Unlock()
	if announceDeath {
		d.a.sourceDead(ctx, sp, d, reason)
	}
	if announceBirth {
		d.a.sourceAlive(d)
	}
	return alive
}

// health is a device's state as the log tells it.
type health uint8

const (
	healthGood   health = iota // every point good (or nothing known yet)
	healthErrors               // the device answers, some points bad
	healthSilent               // the device does not answer
)

// healthLogEvery is the least time between two lines about one device's
// failures: the summary of a lasting failure, or a failure coming back
// (a flapping device).
const healthLogEvery = time.Minute

// healthLog logs a device's health changes (docs/operations.md, "Logs"):
// not answering, answering with errors, reading good again. A lasting
// failure is summarised at most once a minute (the polls that failed and
// the last cause), never logged per poll: a device in timeout backoff fails
// every tick without I/O. A failure that comes back within a minute of the
// last one logged (a flapping device) is not logged by itself, nor its end;
// it is counted in the next line (repeated). Under the device's mutex.
type healthLog struct {
	state    health    // the state of the last poll
	failAt   time.Time // when a failure was last logged
	failed   health    // which
	repeated int       // failed polls since then, not logged
	quiet    bool      // the current failure was not logged: neither is its end
}

func (h *healthLog) poll(log *slog.Logger, at time.Time, c *sample.Cycle) {
	state := healthGood
	if c.Err != nil {
		state = healthSilent
		if c.Replied {
			state = healthErrors
		}
	}
	prev := h.state
	h.state = state
	if state == healthGood {
		if prev != healthGood && !h.quiet {
			log.Info("device reads good again")
		}
		h.quiet = false
		return
	}
	msg := "device not answering"
	if state == healthErrors {
		msg = "device answers with errors"
	}
	due := at.Sub(h.failAt) >= healthLogEvery
	switch {
	case state != prev && (state != h.failed || due):
		args := []any{"err", c.Err.Error()}
		if h.repeated > 0 {
			args = append(args, "repeated", h.repeated)
		}
		log.Warn(msg, args...)
	case due:
		log.Warn(strings.Replace(msg, "device ", "device still ", 1), "err", c.Err.Error(), "failed_polls", h.repeated+1,
			"in_last", at.Sub(h.failAt).Round(time.Second))
	default:
		h.repeated++
		if state != prev {
			h.quiet = true
		}
		return
	}
	h.failAt, h.failed, h.repeated, h.quiet = at, state, 0, false
}

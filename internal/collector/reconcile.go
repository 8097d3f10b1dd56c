package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// reconcileMargin is how far before the newest record of a partition the
// restore reads the partition's alert events back: more than the clock
// difference between the nodes that lead the state bucket and the stream
// (a record's put time and an event's stored time are their clocks).
const reconcileMargin = 10 * time.Second

// reconcileNoRecord is how far back the alert events of a partition with
// no record at all are read (a partition that never checkpointed, or a new
// group on an old stream).
const reconcileNoRecord = time.Hour

// reconcileFetch is the number of alert events one fetch of the read asks
// for.
const reconcileFetch = 512

// alertFilters are the subjects of the partition's alert events in the
// stream: with partitions, ".<p>" after the published subject (the
// stream's transform); a single replica reads both forms (a partitioned
// stream or not), one on a server older than 2.10 (one filter per
// consumer; no transform there).
func (c *Collector) alertFilters(io *natsIO, p int) []string {
	base := telemetry.SubjectPrefix + ".*.*.*." + string(telemetry.KindAlert)
	if c.cfg.Cluster.Partitions > 0 {
		return []string{base + "." + strconv.Itoa(p)}
	}
	if versionAtLeast(io.nc.ConnectedServerVersion(), "2.10.0") {
		return []string{base, base + ".*"}
	}
	return []string{base}
}

// reconcile makes the restored shard agree with the alert events its group
// published for the partition's assets: every event is published before
// the record of its asset is checkpointed, so a crash (or a lost
// partition) between the two leaves an event the restored record lacks. A
// silence raised live (Tick) is the case no replay repairs: the restarted
// collector raised a second occurrence from the gap in the data, and the
// first stayed raised for ever. The last event of each alert key stored
// since the partition's newest record (newest, its put time; zero: no
// record) less reconcileMargin is applied when the state differs: a raise
// or update is adopted as active with its id, raised_at and severity (it
// clears with them; no second occurrence is raised), a clear of the
// occurrence the state has active clears it without an event. Adopted
// assets are checkpointed with the next cycle. sh.mu must not be held. It
// returns the number of events adopted.
func (c *Collector) reconcile(ctx context.Context, io *natsIO, sh *shard, newest time.Time) (int, error) {
	began := time.Now()
	since := newest.Add(-reconcileMargin)
	if newest.IsZero() {
		since = time.Now().Add(-reconcileNoRecord)
	}
	// an ephemeral consumer of its own, deleted once read (an ordered
	// consumer of the client would stay on the server for minutes)
	cc := jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
		MemoryStorage: true, InactiveThreshold: 30 * time.Second}
	if f := c.alertFilters(io, sh.p); len(f) == 1 {
		cc.FilterSubject = f[0] // a server older than 2.10 knows no FilterSubjects
	} else {
		cc.FilterSubjects = f
	}
	cons, err := io.js.CreateConsumer(ctx, c.cfg.NATS.Stream, cc)
	if err != nil {
		return 0, fmt.Errorf("collector: reading the partition's alert events back: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = io.js.DeleteConsumer(dctx, c.cfg.NATS.Stream, cons.CachedInfo().Name)
		cancel()
	}()
	last := map[string]alert.Alert{} // by key
	var order []string
	read := 0
	// the events stored when the consumer was made (NumPending), fetched
	// in full batches so that no fetch waits out its expiry; a fetch ends
	// early on the last of them (NumPending 0) or on an expired pull
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, reconcileFetch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, fmt.Errorf("collector: reading the partition's alert events back: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				pending = 0
			}
			var a alert.Alert
			if json.Unmarshal(m.Data(), &a) != nil || a.Group != c.cfg.Group || a.Kind == "kpi" || a.Key == "" {
				continue // another group's, a KPI alert (its latch follows its messages, replayed), or unreadable
			}
			if _, ok := last[a.Key]; !ok {
				order = append(order, a.Key)
			}
			last[a.Key] = a
		}
		read += n
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return 0, fmt.Errorf("collector: reading the partition's alert events back: %w", err)
		}
		if n == 0 || pending == 0 {
			break
		}
		pending -= min(pending, uint64(n))
	}
	adopted := 0
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, key := range order {
		a := last[key]
		if parts := c.cfg.Cluster.Partitions; parts > 0 && partitionOf(a.Site, a.Asset, parts) != sh.p {
			continue
		}
		cur, ok := sh.active[key]
		switch {
		case a.Active() && ok && cur.ID == a.ID && cur.Severity == a.Severity:
			continue // the record has it
		case !a.Active() && (!ok || cur.ID != a.ID):
			continue // cleared in the record too, or another occurrence
		}
		before := sh.engine.Len()
		if !sh.engine.Has(a.Site, a.Asset) && c.tracked.Load() >= int64(c.cfg.MaxAssets) {
			c.m.rejected.Inc()
			continue
		}
		if !sh.engine.Adopt(a) {
			c.count(sh, before)
			continue
		}
		c.count(sh, before)
		sh.setAlert(a)
		sh.dirty[[2]string{a.Site, a.Asset}] = struct{}{}
		adopted++
		c.log.Warn("alert event published after its asset's newest checkpoint adopted (a crash or a lost partition between the two)",
			"partition", sh.p, "id", a.ID, "state", a.State, "key", a.Key)
	}
	c.log.Debug("alert events read back", "partition", sh.p, "since", since, "read", read, "adopted", adopted, "took", time.Since(began))
	return adopted, nil
}

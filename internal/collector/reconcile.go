package collector

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
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
// no record at all are read when its consumer cannot be asked (MQTT
// ingest, or no consumer yet); with a consumer the read starts after its
// ack floor (reconcileStart).
const reconcileNoRecord = time.Hour

// reconcileFetch is the number of alert events one fetch of the read asks
// for.
const reconcileFetch = 512

// alertFilter is the subject of the partition's alert events in the
// stream: with partitions, ".<p>" after the published subject (the
// stream's transform); a single replica's on a partitioned stream, ".*"
// after it. One filter: with two (both forms) nats-server 2.15 intersects
// the filters with every subject of a block per message, and a read-back of
// 5,000 events of 1,000 assets took 0.5-1.1 s instead of milliseconds
// (BenchmarkReadBack; the same as the partition consumers' filter, see
// Collector.work).
func (c *Collector) alertFilter(ctx context.Context, io *natsIO, p int) (string, error) {
	base := telemetry.SubjectPrefix + ".*.*.*." + string(telemetry.KindAlert)
	if c.cfg.Cluster.Partitions > 0 {
		return base + "." + strconv.Itoa(p), nil
	}
	s, err := io.js.Stream(ctx, c.cfg.NATS.Stream)
	if err != nil {
		return "", err
	}
	if s.CachedInfo().Config.SubjectTransform != nil {
		return base + ".*", nil
	}
	return base, nil
}

// reconcile makes the restored shard agree with the alert events its group
// published for the partition's assets: every event is published before
// the record of its asset is checkpointed, so a crash (or a lost
// partition) between the two leaves an event the restored record lacks. A
// silence raised live (Tick) is the case no replay repairs: the restarted
// collector raised a second occurrence from the gap in the data, and the
// first stayed raised for ever. The last event of each alert key stored
// since the partition's newest record (newest, its put time; zero: no
// record) less reconcileMargin that the state lacks is kept for adoption,
// in stream order among the partition's messages (adoptBefore): a raise or
// update becomes the active occurrence with its id, raised_at and severity
// (it clears with them; no second occurrence is raised), a clear of the
// occurrence the state has active clears it without an event. sh.mu must
// not be held. It returns the number of events kept for adoption.
func (c *Collector) reconcile(ctx context.Context, io *natsIO, sh *shard, newest time.Time) (int, error) {
	began := time.Now()
	// an ephemeral consumer of its own, removed by the server 5 s after
	// its last pull (the collector's NATS user may not delete consumers of
	// the stream: deploy/nats/smelter-accounts.conf; an ordered consumer of
	// the client would stay for minutes)
	cc := jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: 5 * time.Second}
	since := c.reconcileStart(ctx, io, sh.p, newest, &cc)
	filter, err := c.alertFilter(ctx, io, sh.p)
	if err != nil {
		return 0, fmt.Errorf("collector: reading the partition's alert events back: %w", err)
	}
	cc.FilterSubject = filter
	cons, err := io.js.CreateConsumer(ctx, c.cfg.NATS.Stream, cc)
	if err != nil {
		return 0, fmt.Errorf("collector: reading the partition's alert events back: %w", err)
	}
	last := map[string]adoption{} // by key
	stored := map[string]struct{}{}
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
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.NumPending == 0 {
				pending = 0
			}
			var a alert.Alert
			if json.Unmarshal(m.Data(), &a) != nil || a.Group != c.cfg.Group {
				continue // another group's, or unreadable
			}
			if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
				stored[id] = struct{}{}
			}
			if a.Kind == "kpi" || a.Key == "" {
				continue // a KPI alert: its latch follows its messages, replayed
			}
			if _, ok := last[a.Key]; !ok {
				order = append(order, a.Key)
			}
			last[a.Key] = adoption{seq: md.Sequence.Stream, a: a}
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
	sh.mu.Lock()
	sh.stored = stored
	sh.adopt = sh.adopt[:0]
	for _, key := range order {
		if ad := last[key]; differs(sh, ad.a) {
			sh.adopt = append(sh.adopt, ad)
		}
	}
	slices.SortFunc(sh.adopt, func(x, y adoption) int { return cmp.Compare(x.seq, y.seq) }) // stream order
	adopted := len(sh.adopt)
	sh.adopting.Store(adopted > 0)
	sh.mu.Unlock()
	c.log.Debug("alert events read back", "partition", sh.p, "since", since, "read", read, "to_adopt", adopted, "took", time.Since(began))
	return adopted, nil
}

// reconcileStart sets where the read-back of partition p starts in cc and
// returns it as text for the log. With records (newest: the put time of
// the newest), reconcileMargin before it: an event the records lack was
// published after the last checkpoint. With none, after the ack floor of
// the partition's consumer: such an event was published after the
// evaluation of a message not acknowledged yet (acknowledgements follow the
// checkpoint), so it is stored after every acknowledged one; reading a
// fixed hour of history instead cost every restore of a partition with no
// asset a scan of that hour of the stream. Without the consumer's word,
// reconcileNoRecord back.
func (c *Collector) reconcileStart(ctx context.Context, io *natsIO, p int, newest time.Time, cc *jetstream.ConsumerConfig) string {
	if !newest.IsZero() {
		since := newest.Add(-reconcileMargin)
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
		return since.UTC().Format(time.RFC3339Nano)
	}
	name := c.cfg.consumerName(-1)
	if c.cfg.Cluster.Partitions > 0 {
		name = c.cfg.consumerName(p)
	}
	if cons, err := io.js.Consumer(ctx, c.cfg.NATS.Stream, name); err == nil {
		seq := cons.CachedInfo().AckFloor.Stream + 1
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		return "stream sequence " + strconv.FormatUint(seq, 10)
	}
	since := time.Now().Add(-reconcileNoRecord)
	cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	return since.UTC().Format(time.RFC3339Nano)
}

// adoption is an alert event the restored state lacks, with its stream
// sequence: it is applied in stream order (adoptBefore).
type adoption struct {
	seq uint64
	a   alert.Alert
}

// differs reports whether the restored state lacks alert event a: a raise
// or update whose occurrence and severity are not the active ones, or a
// clear of the occurrence that is active; sh.mu is held.
func differs(sh *shard, a alert.Alert) bool {
	cur, ok := sh.active[a.Key]
	if a.Active() {
		return !ok || cur.ID != a.ID || cur.Severity != a.Severity
	}
	return ok && cur.ID == a.ID
}

// adoptBefore applies the shard's adoptions of events stored before stream
// sequence seq (math.MaxUint64: all), in the order the stream stored them
// among the partition's messages: a message stored before an event was
// evaluated before it was published, and is evaluated again (redelivered)
// before it is adopted, so the replay does not end an adopted occurrence
// with a message that preceded it (a live silence's asset's last batches,
// held unacknowledged when the silence was raised). Applied where the state
// still differs (the replay may have made the same transition); the asset
// is checkpointed with the next cycle.
func (c *Collector) adoptBefore(sh *shard, seq uint64) {
	if !sh.adopting.Load() {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	for _, ad := range sh.adopt {
		if ad.seq >= seq {
			break
		}
		n++
		a := ad.a
		if parts := c.cfg.Cluster.Partitions; parts > 0 && partitionOf(a.Site, a.Asset, parts) != sh.p || !differs(sh, a) {
			continue
		}
		before := sh.engine.Len()
		if !sh.engine.Has(a.Site, a.Asset) && c.tracked.Load() >= int64(c.cfg.MaxAssets) {
			c.m.rejected.Inc()
			continue
		}
		ok := sh.engine.Adopt(a)
		c.count(sh, before)
		if !ok {
			continue
		}
		sh.setAlert(a)
		sh.dirtyKey(a.Site, a.Asset)
		c.log.Warn("alert event published after its asset's newest checkpoint adopted (a crash or a lost partition between the two)",
			"partition", sh.p, "id", a.ID, "state", a.State, "key", a.Key)
	}
	sh.adopt = slices.Delete(sh.adopt, 0, n)
	sh.adopting.Store(len(sh.adopt) > 0)
}

// streamSeq is the stream sequence of a JetStream message (math.MaxUint64
// when it has none: no stream order to keep).
func streamSeq(m *jsMsg) uint64 {
	if !m.ack.ok {
		return math.MaxUint64
	}
	return m.ack.sseq
}

package collector

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// killAtLiveRaise starts a collector of g that is killed (-9) the moment
// its live silence raise of ac-1 is published (PubAck received), before
// its record is checkpointed: its connection is closed in the commit's
// hook, so nothing more reaches the server, and it is stopped once the
// raise is on the stream. It returns the raise.
func killAtLiveRaise(t *testing.T, g *gapRig) alert.Alert {
	t.Helper()
	var hit atomic.Bool
	r := startWith(t, g.cfg, func(c *Collector) {
		c.published = func(_ int, events []alert.Alert) {
			for _, a := range events {
				if a.Key == silenceKey && a.State == alert.Raised && hit.CompareAndSwap(false, true) {
					c.js.Load().nc.Close() // kill -9: the checkpoint after it never reaches the server
				}
			}
		}
	})
	t0 := time.Now().UnixMilli() - 10*gapIV
	g.publish(t, t0, 10)
	raised := g.first(t, alert.Raised, "the silence raised live")
	wait.For(t, 10*time.Second, "the collector killed after the raise's PubAck", hit.Load)
	if raised.RaisedAt <= t0+9*gapIV+3*gapIV {
		t.Fatalf("raised at %d, not by Tick after %d", raised.RaisedAt, t0+9*gapIV+3*gapIV)
	}
	r.kill()
	p := 0
	if n := g.cfg.Cluster.Partitions; n > 0 {
		p = partitionOf("site1", "ac-1", n)
	}
	e, err := g.kv(t).Get(t.Context(), "p"+strconv.Itoa(p)+".site1.ac-1")
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound): // never checkpointed (its batches held)
	case err != nil:
		t.Fatal(err)
	default:
		if rec, err := decodeRecord(e.Value()); err != nil || len(rec.Alerts) != 0 {
			t.Fatalf("the record (%v) holds %+v: the kill was not inside the window", err, rec.Alerts)
		}
	}
	return raised
}

// The window: a silence raised live (Tick) is published, and the collector
// is killed (-9) before the asset's record is checkpointed, so the
// restored record lacks it. The asset reports again while the collector is
// down. The restarted collector reads the partition's alert events back
// (reconcile), adopts the raise and clears that occurrence with its
// raised_at: one raise and one clear across the kill. Before, the
// restored record had no active silence, the gap in the data raised and
// cleared a second occurrence, and the first stayed raised for ever.
func TestLiveSilenceKilledBeforeCheckpointClearedOnce(t *testing.T) {
	t.Run("single replica", func(t *testing.T) { liveSilenceKilledClearedOnce(t, newGapRig(t)) })
	// the partition's alert subjects carry its token: read back with it
	t.Run("partitions", func(t *testing.T) {
		liveSilenceKilledClearedOnce(t, newGapRigWith(t, func(cfg *Config) {
			cfg.Cluster.Partitions, cfg.Cluster.PinnedTTL, cfg.Cluster.MemberTimeout = 2, Duration(2*time.Second), Duration(2*time.Second)
		}))
	})
}

func liveSilenceKilledClearedOnce(t *testing.T, g *gapRig) {
	raised := killAtLiveRaise(t, g)
	cleared, _ := g.backAfterKill(t, raised)
	if cleared.ID != raised.ID || cleared.RaisedAt != raised.RaisedAt {
		t.Fatalf("cleared %s raised at %d, want %s raised at %d", cleared.ID, cleared.RaisedAt, raised.ID, raised.RaisedAt)
	}
}

// The same window, the asset still silent when the collector restarts:
// the restarted collector judges the asset silent (it sent nothing since
// its record) and keeps the adopted occurrence (shown active with its
// raised_at), raising no second one; once the asset reports again the
// occurrence is cleared once. Before, it raised a second occurrence and the
// first was never cleared.
func TestLiveSilenceKilledBeforeCheckpointStaysOneOccurrence(t *testing.T) {
	t.Run("checkpointed batches", func(t *testing.T) { liveSilenceKilledStaysOne(t, newGapRig(t)) })
	// the asset's batches held unacknowledged when the silence is raised
	// (checkpoint_interval 5 s): redelivered after the restart, they are
	// evaluated before the raise is adopted (they were before it in the
	// stream) and do not end it. Adopted at once, the raise was cleared by
	// the first of them and live judgment raised a second occurrence.
	t.Run("held batches", func(t *testing.T) {
		liveSilenceKilledStaysOne(t, newGapRigWith(t, func(cfg *Config) {
			cfg.Cluster.AckWait, cfg.Cluster.CheckpointInterval = Duration(10*time.Second), Duration(5*time.Second)
		}))
	})
}

func liveSilenceKilledStaysOne(t *testing.T, g *gapRig) {
	raised := killAtLiveRaise(t, g)
	restart := time.Now().UnixMilli()
	var judged atomic.Int64 // the newest judgment's time
	r2 := startWith(t, g.cfg, func(c *Collector) {
		c.onJudge = func(_ int, at, _ int64) { judged.Store(at) }
	})
	// well past k x interval + a tick after the restart: a second
	// occurrence would be raised by now
	wait.For(t, 30*time.Second, "the restarted collector judged the asset's silence", func() bool {
		return judged.Load() > restart+3*gapIV+2000 && time.Now().UnixMilli() > restart+int64(time.Duration(g.cfg.Cluster.AckWait)/time.Millisecond)
	})
	if ids, events := g.occurrences(t, time.Now().UnixMilli()); len(ids) != 1 || len(events[ids[0]]) != 1 {
		t.Fatalf("want only the live occurrence %s raised, got %+v", raised.ID, events)
	}
	act := r2.c.Alerts(true)
	if len(act) != 1 || act[0].ID != raised.ID || act[0].RaisedAt != raised.RaisedAt {
		t.Fatalf("active after restart: %+v, want %s", act, raised.ID)
	}
	after := time.Now().UnixMilli() - 5*gapIV
	g.publish(t, after, 5)
	cleared := g.first(t, alert.Cleared, "the silence cleared")
	ids, events := g.occurrences(t, cleared.ClearedAt)
	if len(ids) != 1 || ids[0] != raised.ID || len(events[ids[0]]) != 2 || cleared.RaisedAt != raised.RaisedAt {
		t.Fatalf("want the live occurrence %s raised and cleared and no other, got %+v", raised.ID, events)
	}
}

// A partition with no record reads its alert events back from just after
// its consumer's ack floor (an event the records lack is stored after every
// acknowledged message), not a fixed hour of the stream; with a record,
// from the record's put time less reconcileMargin; with no consumer to ask,
// reconcileNoRecord back.
func TestReadBackStartsAfterAckFloor(t *testing.T) {
	g := newGapRig(t)
	r := startCfg(t, g.cfg)
	t0 := time.Now().UnixMilli() - 10*gapIV
	g.publish(t, t0, 5)
	js := g.js
	var cons jetstream.Consumer
	wait.For(t, 10*time.Second, "the collector's consumer", func() bool {
		var err error
		cons, err = js.Consumer(t.Context(), g.cfg.NATS.Stream, g.cfg.consumerName(-1))
		return err == nil
	})
	var floor uint64
	wait.For(t, 10*time.Second, "the five batches acknowledged", func() bool {
		info, err := cons.Info(t.Context())
		floor = info.AckFloor.Stream
		return err == nil && floor >= 5
	})
	r.stop()
	io := &natsIO{js: js}
	var cc jetstream.ConsumerConfig
	got := r.c.reconcileStart(t.Context(), io, 0, time.Time{}, &cc)
	if cc.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || cc.OptStartSeq < floor+1 {
		t.Fatalf("no record: read back from %s (%+v), want after the ack floor %d", got, cc, floor)
	}
	put := time.Now().Add(-time.Minute)
	cc = jetstream.ConsumerConfig{}
	r.c.reconcileStart(t.Context(), io, 0, put, &cc)
	if cc.DeliverPolicy != jetstream.DeliverByStartTimePolicy || !cc.OptStartTime.Equal(put.Add(-reconcileMargin)) {
		t.Fatalf("with a record put at %v: %+v", put, cc)
	}
	if err := js.DeleteConsumer(t.Context(), g.cfg.NATS.Stream, g.cfg.consumerName(-1)); err != nil {
		t.Fatal(err)
	}
	cc = jetstream.ConsumerConfig{}
	r.c.reconcileStart(t.Context(), io, 0, time.Time{}, &cc)
	if cc.DeliverPolicy != jetstream.DeliverByStartTimePolicy || time.Since(*cc.OptStartTime) < reconcileNoRecord-time.Minute {
		t.Fatalf("no consumer: %+v", cc)
	}
}

// attack-col2 F1, F4: a threshold raise published, the collector killed
// (-9) before its checkpoint, and restarted after the stream's duplicate
// window: the redelivered batches give the same raise again (same
// Nats-Msg-Id), which the stream stored a second time and every core NATS
// subscriber received twice. Now the restore reads it back and the replay
// does not publish it again: one raise on the stream and on the wire.
func TestRaiseKilledBeforeCheckpointNotSentAgain(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.AckWait = Duration(2 * time.Second)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	log := &alertLog{}
	log.subscribe(t, nc)
	const hot = "site1.ac-1.discharge_temp_high.discharge_temp"
	var hit atomic.Bool
	r := startWith(t, cfg, func(c *Collector) {
		c.published = func(_ int, events []alert.Alert) {
			for _, a := range events {
				if a.Key == hot && a.State == alert.Raised && hit.CompareAndSwap(false, true) {
					c.js.Load().nc.Close() // kill -9: the checkpoint after it never reaches the server
				}
			}
		}
	})
	// the stream forgets message ids after 1 s, as if the restart came
	// more than 2 min later
	s, err := js.Stream(t.Context(), cfg.NATS.Stream)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.Duplicates = time.Second
	if _, err := js.UpdateStream(t.Context(), sc); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UnixMilli() - 600_000
	for i := 1; i < 40; i++ {
		ts := t0 + int64(i)*1000
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i), TSGW: ts, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
		if _, err := js.Publish(t.Context(), subj, b.AppendJSON(nil), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, "the raise published and the collector killed", hit.Load)
	r.stop()
	// past the duplicate window: a message id published again is stored
	wait.For(t, 20*time.Second, "the stream's duplicate window passed", func() bool {
		ack, err := js.Publish(t.Context(), "smelter.v1.site1.air_compressor.probe.status", []byte("{}"), jetstream.WithMsgID("window-probe"))
		return err == nil && !ack.Duplicate && ack.Sequence > 0 && func() bool {
			ack2, err := js.Publish(t.Context(), "smelter.v1.site1.air_compressor.probe.status", []byte("{}"), jetstream.WithMsgID("window-probe-"+strconv.FormatUint(ack.Sequence, 10)))
			return err == nil && !ack2.Duplicate
		}()
	})
	raises := func() int {
		n := 0
		for _, a := range log.byKey(hot) {
			if a.State == alert.Raised {
				n++
			}
		}
		return n
	}
	wait.For(t, 10*time.Second, "the raise seen once before the restart", func() bool { return raises() == 1 })
	r2 := startCfg(t, cfg)
	wait.For(t, 20*time.Second, "restarted collector evaluated and acknowledged every batch", func() bool {
		av, ok := r2.c.Asset("site1", "ac-1")
		return ok && av.LastTS >= t0+39*1000 && allAcked(t, js, cfg.NATS.Stream, cfg.consumerName(-1))
	})
	if err := nc.Flush(); err != nil { // what the server sent the alert log is in
		t.Fatal(err)
	}
	if n := raises(); n != 1 {
		t.Fatalf("the raise received %d times by a subscriber across the kill, want 1", n)
	}
	if n := counter(r2.c.m.restored); n < 1 {
		t.Fatalf("no event counted as already stored (%v)", n)
	}
	sub, err := js.OrderedConsumer(t.Context(), cfg.NATS.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"smelter.v1.*.*.*.alert"}})
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	batch, err := sub.FetchNoWait(100)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		var a alert.Alert
		if json.Unmarshal(m.Data(), &a) == nil && a.Key == hot && a.State == alert.Raised {
			stored++
		}
	}
	if stored != 1 {
		t.Fatalf("the raise stored %d times on the stream, want 1", stored)
	}
}

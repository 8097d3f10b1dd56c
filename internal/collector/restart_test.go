package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// kill stops a collector the way kill -9 does: its connection drops at
// once, nothing is flushed, acknowledged, unpinned or announced.
func (r *running) kill() {
	if io := r.c.js.Load(); io != nil {
		io.nc.Close()
	}
	r.stop()
}

// alertLog records alert messages from the stream (what consumers see).
type alertLog struct {
	mu  sync.Mutex
	all []alert.Alert
}

func (l *alertLog) subscribe(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.Subscribe("smelter.v1.*.*.*.alert", func(m *nats.Msg) {
		var a alert.Alert
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Errorf("alert json: %v", err)
		}
		l.mu.Lock()
		l.all = append(l.all, a)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func (l *alertLog) byKey(key string) []alert.Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []alert.Alert
	for _, a := range l.all {
		if a.Key == key {
			out = append(out, a)
		}
	}
	return out
}

// The reproduction: a collector killed (-9) while an alert whose
// condition still holds is active. The restarted collector must keep it
// as one occurrence: no clear, no second raise, the same raised_at. Here
// two alerts: the discharge_temp alarm (threshold) and stale on dew_point
// (bad every batch), whose restore needs the signal's arrival times.
// It runs with binary records, and as an upgrade: the killed collector
// wrote JSON records (as every collector before the binary form), the
// restarted one reads them and writes binary.
func TestKill9RestartKeepsActiveAlerts(t *testing.T) {
	t.Run("binary", func(t *testing.T) { kill9Restart(t, "binary", "binary") })
	t.Run("json then binary", func(t *testing.T) { kill9Restart(t, "json", "binary") })
}

// restartRig is a NATS server, a client subscribed to the alerts, and a
// start function for one replica (the same data dir every time: a replica
// restarting) writing records of format, with the HTTP API at listen ("":
// none).
type restartRig struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *alertLog
}

func newRestartRig(t *testing.T, listen string) (rig restartRig, start func(format string) *running) {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	dir := t.TempDir()
	start = func(format string) *running {
		cfg := Defaults()
		cfg.Cluster.RecordFormat = format
		cfg.NATS.URL = ns.URL()
		cfg.HTTP.Listen = listen
		cfg.DataDir = dir // the same replica restarting
		cfg.Cluster.AckWait = Duration(2 * time.Second)
		return startCfg(t, cfg)
	}
	if rig.nc, err = nats.Connect(ns.URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.nc.Close)
	rig.log = &alertLog{}
	rig.log.subscribe(t, rig.nc)
	rig.js, _ = jetstream.New(rig.nc)
	return rig, start
}

// allAcked reports whether the durable consumer name of stream has no
// message pending or unacknowledged: every cycle evaluated was published
// and checkpointed. An asset's view shows a cycle's readings before the
// cycle publishes its alerts, so a test that checks what was published
// waits for this, not for the view.
func allAcked(t *testing.T, js jetstream.JetStream, stream, name string) bool {
	t.Helper()
	cons, err := js.Consumer(t.Context(), stream, name)
	if err != nil {
		return false
	}
	info, err := cons.Info(t.Context())
	return err == nil && info.NumAckPending == 0 && info.NumPending == 0
}

func kill9Restart(t *testing.T, before, after string) {
	rig, startKill := newRestartRig(t, "")
	js, log := rig.js, rig.log
	ctx := context.Background()
	t0 := time.Now().UnixMilli() - 600_000
	batch := func(seq int) []byte {
		ts := t0 + int64(seq)*1000
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(seq), TSGW: ts, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115 + float64(seq%3)*0.1, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
				{Signal: "discharge_pressure", Value: 0.7 + float64(seq%7)*0.001, Unit: "MPa", TS: ts}, {Signal: "dew_point", Quality: telemetry.QualityBad, Status: 2, TS: ts}}}
		if seq < 3 {
			b.Readings[3] = telemetry.Reading{Signal: "dew_point", Value: 3, Unit: "Cel", TS: ts}
		}
		return b.AppendJSON(nil)
	}
	pub := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := js.Publish(ctx, subj, batch(i), jetstream.WithMsgID("gw-1-"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := startKill(before)
	pub(1, 40)
	const hot, stale = "site1.ac-1.discharge_temp_high.discharge_temp", "site1.ac-1.stale.dew_point"
	wait.For(t, 10*time.Second, "both alerts raised and checkpointed", func() bool {
		return len(log.byKey(hot)) == 1 && len(log.byKey(stale)) == 1 && len(r.c.Alerts(true)) == 2
	})
	pub(40, 60)
	kv, err := js.KeyValue(ctx, "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	// alerts are shown once published; the record follows at the next
	// checkpoint (cluster.checkpoint_interval)
	var e jetstream.KeyValueEntry
	wait.For(t, 10*time.Second, "the asset's record checkpointed", func() bool {
		e, err = kv.Get(ctx, "p0.site1.ac-1")
		return err == nil
	})
	if isJSON := e.Value()[0] == '{'; isJSON != (before == "json") {
		t.Fatalf("record_format %s wrote a record starting %q", before, e.Value()[0])
	}
	r.kill()
	r2 := startKill(after)
	pub(60, 90)
	wait.For(t, 15*time.Second, "restarted collector evaluated and acknowledged everything", func() bool {
		av, ok := r2.c.Asset("site1", "ac-1")
		return ok && av.LastTS >= t0+89*1000 && allAcked(t, js, r2.c.cfg.NATS.Stream, r2.c.cfg.consumerName(-1))
	})
	if err := rig.nc.Flush(); err != nil { // what the server sent the alert log is in
		t.Fatal(err)
	}
	for _, key := range []string{hot, stale} {
		got := log.byKey(key)
		if len(got) != 1 || got[0].State != alert.Raised {
			t.Fatalf("%s: want one raise and nothing else across the kill, got %+v", key, got)
		}
	}
	act := r2.c.Alerts(true)
	if len(act) != 2 {
		t.Fatalf("active after restart: %+v", act)
	}
	for _, a := range act {
		if want := log.byKey(a.Key)[0].RaisedAt; a.RaisedAt != want {
			t.Fatalf("%s raised_at %d after restart, %d before", a.Key, a.RaisedAt, want)
		}
	}
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func counterVec(c *prometheus.CounterVec, label string) float64 {
	return counter(c.WithLabelValues(label))
}

// A second collector with copied defaults on the same NATS does not
// silently share the first one's consumer: single replica mode refuses a
// group with another live member; its own group runs independently.
func TestSecondCollectorNeedsItsOwnGroup(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	start(t, ns.URL())
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := newCollector(t, cfg).Run(ctx); err == nil || !strings.Contains(err.Error(), `group "smelter-collector" already has a live collector`) {
		t.Fatalf("second collector in the same group: %v", err)
	}
	cfg.Group = "quickstart"
	r := startCfg(t, cfg)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	wait.For(t, 10*time.Second, "its own consumer and bucket", func() bool {
		_, err := js.Consumer(ctx, "SMELTER", "quickstart")
		_, kerr := js.KeyValue(ctx, "quickstart_state")
		return err == nil && kerr == nil && r.c.Ready()
	})
}

// attack-col2 F2: two collectors of one group starting at once both found
// no other live member and both ran, splitting the stream. Here the
// second starts and is running between the first one's check and its
// first heartbeat: the first looks again after its heartbeat, finds it,
// deletes its record and refuses; the second runs alone.
func TestSimultaneousStartOneCollectorRuns(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfgB := cfg
	cfgB.DataDir = t.TempDir() // another replica id
	oneOfTwoRuns(t, ns.URL(), cfg, cfgB, `group "smelter-collector" already has a live collector`)
}

// oneOfTwoRuns starts a replica of cfg whose members check is followed at
// once by the start of a replica of cfgB (running before the first one's
// heartbeat): the first must refuse with an error containing want and
// delete its member record, the second run.
func oneOfTwoRuns(t *testing.T, url string, cfg, cfgB Config, want string) {
	t.Helper()
	var other *running
	first := startWithNoWait(t, cfg, func(c *Collector) {
		c.memberChecked = func() { other = startCfg(t, cfgB) }
	})
	select {
	case err := <-first.done:
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("the first collector, started at once with another: %v, want %q", err, want)
		}
		first.cancel = nil
	case <-time.After(30 * time.Second):
		t.Fatal("both collectors of one group run")
	}
	if !other.c.Ready() {
		t.Fatal("the other collector is not running")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), "smelter-collector_members")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(t.Context(), first.c.replicaID()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the refused collector's member record: %v, want deleted", err)
	}
}

// bbtest F1: a replica started with another cluster.partitions than the
// live replicas of its group set the stream's transform to its own number
// under them (5 of 12 assets' batches went to a partition no replica
// pulled, one was refused as published with a foreign token, and the live
// replica stayed ready). Now it refuses before it touches the stream, and
// so does a replica of N partitions next to a live single replica.
func TestReplicaOfOtherPartitionsRefused(t *testing.T) {
	transform := func(t *testing.T, js jetstream.JetStream) string {
		t.Helper()
		s, err := js.Stream(t.Context(), "SMELTER")
		if err != nil {
			t.Fatal(err)
		}
		if tr := s.CachedInfo().Config.SubjectTransform; tr != nil {
			return tr.Destination
		}
		return ""
	}
	refused := func(t *testing.T, cfg Config, want string) {
		t.Helper()
		cfg.DataDir = t.TempDir() // another replica
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := newCollector(t, cfg).Run(ctx); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("partitions %d next to a live replica: %v, want %q", cfg.Cluster.Partitions, err, want)
		}
	}
	for _, tc := range []struct {
		name      string
		live      int
		others    []int
		wantOther func(n int) string
	}{
		{"partitioned", 2, []int{3, 1, 0}, func(n int) string {
			if n == 0 { // the number the live replica runs named (bbretest F5)
				return `group "smelter-collector" already has a live collector (replica %s, with cluster.partitions 2)`
			}
			return fmt.Sprintf(`group "smelter-collector" has a live replica %%s with cluster.partitions 2, this one has %d`, n)
		}},
		{"single", 0, []int{2}, func(n int) string {
			return fmt.Sprintf("with cluster.partitions 0, this one has %d", n)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, cfg := embeddedConfig(t)
			cfg.Cluster.Partitions, cfg.Cluster.PinnedTTL, cfg.Cluster.MemberTimeout = tc.live, Duration(2*time.Second), Duration(2*time.Second)
			r := startCfg(t, cfg)
			nc, err := nats.Connect(ns.URL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			js, _ := jetstream.New(nc)
			before := transform(t, js)
			if (tc.live > 0) != strings.Contains(before, fmt.Sprintf("partition(%d,", tc.live)) {
				t.Fatalf("stream transform %q for %d partitions", before, tc.live)
			}
			for _, n := range tc.others {
				other := cfg
				other.Cluster.Partitions = n
				want := tc.wantOther(n)
				if strings.Contains(want, "%s") {
					want = fmt.Sprintf(want, r.c.replicaID())
				}
				refused(t, other, want)
				if got := transform(t, js); got != before {
					t.Fatalf("a refused replica of %d partitions changed the stream's transform %q to %q", n, before, got)
				}
			}
			if !r.c.Ready() {
				t.Fatal("the live replica is no longer ready")
			}
		})
	}
}

// Two replicas of one group with different cluster.partitions starting at
// once: the second starts and runs between the first one's check and its
// first heartbeat; the first looks again after its heartbeat, finds it,
// deletes its record and refuses: never both run.
func TestSimultaneousStartOtherPartitionsOneRuns(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.Partitions, cfg.Cluster.PinnedTTL, cfg.Cluster.MemberTimeout = 2, Duration(2*time.Second), Duration(2*time.Second)
	cfgB := cfg
	cfgB.DataDir, cfgB.Cluster.Partitions = t.TempDir(), 3
	oneOfTwoRuns(t, ns.URL(), cfg, cfgB, "with cluster.partitions 3, this one has 2")
}

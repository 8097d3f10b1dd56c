package collector

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/wait"
)

// A broker outage longer than k x an asset's interval is no silence of the
// asset: while the server is down the stream takes no batch from anyone.
// The asset (1 s interval, k 3) is heard, the server is down for 4.5 s,
// and once the collector reconnected its gateway's next batches come only
// after the partition's worker judged silence again. Silence counts from
// the end of the disruption (the reconnection, or the start of the worker
// that replaced a failed one), so no asset-silence alert is raised; before,
// that judgment counted 4.5 s of silence against 3 s and raised one for a
// healthy asset. The asset's alarm on the batches after the outage is the
// sync point: every event before it is checked.
func TestBrokerOutageIsNotSilence(t *testing.T) {
	if testing.Short() {
		t.Skip("broker outage of seconds")
	}
	ns := natsServer(t)
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = ""
	cfg.DataDir = t.TempDir()
	cfg.Cluster.CheckpointInterval = Duration(200 * time.Millisecond)
	type judgment struct{ at, from int64 }
	var mu sync.Mutex
	var judged []judgment
	r := startWith(t, cfg, func(c *Collector) {
		c.onJudge = func(_ int, at, from int64) {
			mu.Lock()
			judged = append(judged, judgment{at, from})
			mu.Unlock()
		}
	})
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	f := &restartFleet{js: js, n: 1, t0: time.Now().UnixMilli() - 3600_000, seq: map[string]uint64{}}
	for range 5 {
		f.publish(t, 80)
	}
	wait.For(t, 30*time.Second, "batches before the outage checkpointed", func() bool { return f.checkpointed(kv, 0) })
	heard := time.Now() // the asset's last batch was evaluated before this

	ns.Shutdown()
	// the outage itself lasts 4.5 s from the asset's last batch: longer
	// than k x its interval (3 s)
	time.Sleep(time.Until(heard.Add(4500 * time.Millisecond)))
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the collector reconnected", func() bool { return r.c.reconnects.Load() >= 1 })
	back := time.Now().UnixMilli()
	var j judgment
	wait.For(t, 30*time.Second, "silence judged after the reconnection", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range judged {
			if x.at >= back {
				j = x
				return true
			}
		}
		return false
	})
	if j.from < back-1000+disruptionGrace.Milliseconds() {
		t.Errorf("silence judged as of %d counted from %d: want from the reconnection (about %d) plus %v on", j.at, j.from, back, disruptionGrace)
	}
	r.mustRun(t, "collector")
	for range 20 { // discharge_temp_high trips after its 15 s on delay
		f.publish(t, 115)
	}
	cons, err := js.OrderedConsumer(context.Background(), "SMELTER", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"smelter.v1.*.*.*.alert"}})
	if err != nil {
		t.Fatal(err)
	}
	var events []alert.Alert
	wait.For(t, 30*time.Second, "the asset's alarm on the batches after the outage", func() bool {
		got, _ := fetchAlerts(t, cons)
		events = append(events, got...)
		for _, a := range events {
			if a.State == alert.Raised && a.Rule == "discharge_temp_high" {
				return true
			}
		}
		return false
	})
	for _, a := range events {
		if a.Kind == "stale" && a.Signal == "" {
			t.Fatalf("asset-silence event %s %s raised_at %d after a broker outage (the asset's last batch before it at %d)",
				a.Key, a.State, a.RaisedAt, heard.UnixMilli())
		}
	}
}

package collector

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

type running struct {
	c      *Collector
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, url string) *running {
	t.Helper()
	cfg := Defaults()
	cfg.NATS.URL = url
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	return startCfg(t, cfg)
}

func startCfg(t *testing.T, cfg Config) *running {
	t.Helper()
	return startWith(t, cfg, nil)
}

// startWith is startCfg with setup (when not nil) applied to the collector
// before it runs (test hooks).
func startWith(t *testing.T, cfg Config, setup func(*Collector)) *running {
	t.Helper()
	r := startWithNoWait(t, cfg, setup)
	wait.For(t, 10*time.Second, "collector ready", r.c.Ready)
	return r
}

// startWithNoWait is startWith without waiting for the collector to be
// ready: r.done gives Run's error.
func startWithNoWait(t *testing.T, cfg Config, setup func(*Collector)) *running {
	t.Helper()
	c := newCollector(t, cfg)
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

// httpBody GETs path of c's HTTP server and returns the body.
func httpBody(t *testing.T, c *Collector, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + c.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func batchJSON(seq uint64, ts int64, temp float64) []byte {
	b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: temp + float64(seq%5)*0.1, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
			{Signal: "discharge_pressure", Value: 0.7 + float64(seq%7)*0.001, Unit: "MPa", TS: ts}}}
	return b.AppendJSON(nil)
}

const subj = "smelter.v1.site1.air_compressor.ac-1.data"

func TestIngestAlertsDedupMalformedAndRestart(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	r := start(t, ns.URL())

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var alerts []alert.Alert
	sub, err := nc.Subscribe("smelter.v1.*.*.*.alert", func(m *nats.Msg) {
		var a alert.Alert
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Errorf("alert json: %v", err)
		}
		mu.Lock()
		alerts = append(alerts, a)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	pub := func(s string, data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, s, data); err != nil {
			t.Fatal(err)
		}
	}
	// a malformed message and one of a future schema are counted and skipped
	pub(subj, []byte(`{"schema":"smelter.telemetry/1","gateway":`))
	pub(subj, []byte(`{"schema":"smelter.telemetry/9","gateway":"gw-1","seq":1}`))
	// 30 s of 1 s batches at 125 Cel: discharge_temp trips after the 15 s on delay
	t0 := time.Now().UnixMilli() - 60000
	for i := range 30 {
		pub(subj, batchJSON(uint64(i+1), t0+int64(i)*1000, 115))
	}
	// the same batches again (a gateway retry beyond the JetStream window): duplicates
	for i := range 30 {
		pub(subj, batchJSON(uint64(i+1), t0+int64(i)*1000, 80))
	}
	wait.For(t, 10*time.Second, "alarm published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(alerts) > 0
	})
	mu.Lock()
	a := alerts[0]
	mu.Unlock()
	if a.Rule != "discharge_temp_high" || a.State != alert.Raised || a.Severity != alert.Alarm || a.Site != "site1" || !strings.Contains(a.Message, "above alarm limit 110 Cel") {
		t.Fatalf("alert %+v", a)
	}
	body := func(path string) string { return httpBody(t, r.c, path) }
	wait.For(t, 10*time.Second, "duplicates counted", func() bool {
		return strings.Contains(body("/metrics"), "smelter_collector_duplicates_total 30")
	})
	m := body("/metrics")
	for _, want := range []string{`smelter_collector_malformed_total{reason="invalid"} 1`, `smelter_collector_malformed_total{reason="schema"} 1`,
		`smelter_collector_ingested_total{kind="data"} 30`, "smelter_collector_alerts_raised_total 1", "smelter_collector_alerts_active 1",
		"smelter_collector_dashboard_streams_open 0", `smelter_collector_dashboard_streams_refused_total{limit="max_streams"} 0`,
		`smelter_collector_dashboard_streams_refused_total{limit="max_streams_per_client"} 0`, "smelter_collector_dashboard_streams_timed_out_total 0"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if body("/readyz") != "ready\n" || body("/healthz") != "ok\n" {
		t.Error("health endpoints")
	}
	if av, ok := r.c.Asset("site1", "ac-1"); !ok || len(av.Signals) != 3 || !av.Running {
		t.Fatalf("asset view %+v", av)
	}
	// the active alert is in the asset's record in the group's state bucket
	kv, err := js.KeyValue(ctx, "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	stateAlerts := func() []alert.Alert {
		e, err := kv.Get(ctx, "p0.site1.ac-1")
		if err != nil {
			return nil
		}
		rec, err := decodeRecord(e.Value())
		if err != nil {
			t.Fatal(err)
		}
		return rec.Alerts
	}
	wait.For(t, 5*time.Second, "alert checkpointed", func() bool {
		got := stateAlerts()
		return len(got) == 1 && got[0].Key == a.Key
	})

	// restart: the new instance restores the alert, does not raise it again, and clears it
	r.stop()
	r2 := start(t, ns.URL())
	wait.For(t, 5*time.Second, "alert restored", func() bool {
		got := r2.c.Alerts(true)
		return len(got) == 1 && got[0].Key == a.Key
	})
	mu.Lock()
	alerts = nil
	mu.Unlock()
	for i := 30; i < 100; i++ {
		pub(subj, batchJSON(uint64(i+1), t0+int64(i)*1000, 80))
	}
	wait.For(t, 10*time.Second, "clear published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(alerts) > 0
	})
	mu.Lock()
	if alerts[0].State != alert.Cleared || alerts[0].ID != a.ID {
		t.Fatalf("after restart %+v (raised %s)", alerts[0], a.ID)
	}
	mu.Unlock()
	wait.For(t, 5*time.Second, "cleared alert gone from the checkpoint", func() bool { return len(stateAlerts()) == 0 })
}

func TestEmbeddedBrokerDefault(t *testing.T) {
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = ""
	c := newCollector(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	wait.For(t, 10*time.Second, "ready", c.Ready)
	nc, err := nats.Connect(c.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, subj, batchJSON(1, time.Now().UnixMilli(), 80)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "asset seen", func() bool { return len(c.Assets()) == 1 })
	nc.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConfigFiles(t *testing.T) {
	c, err := LoadConfig("../../configs/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LoadRules(catalog.Default()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct{ doc, want string }{
		{"nats: {stream: 'a b'}\n", `nats.stream: "a b" must be`},
		{"dedup_window: 5\n", "dedup_window: 5 out of range"},
		{"kpi: {windows: {toaster: 1h}}\n", "kpi.windows.toaster: no KPIs"},
		{"log: {level: loud}\n", `log.level: "loud"`},
		{"nats: {urll: x}\n", "c.yaml:1: nats.urll: unknown field (did you mean url?)"},
		{"data_dir: x\nkpi:\n  window: soon\n", `c.yaml:3: kpi.window: want a duration such as 500ms, 30s or 15m, got "soon"`},
		{"", "c.yaml: file is empty"},
		// distributed engine (issue 10)
		{"group: 'a.b'\n", `group: "a.b" must be 1-48`},
		{"max_assets: 0\n", "max_assets: 0 out of range"},
		{"max_signals_per_asset: 0\n", "c.yaml:1: max_signals_per_asset: 0 out of range 1-1024: there is no unbounded setting"},
		{"max_signals_per_asset: 1025\n", "c.yaml:1: max_signals_per_asset: 1025 out of range 1-1024"},
		{"max_signals_per_asset: lots\n", "c.yaml:1: max_signals_per_asset: want a whole number"},
		{"cluster: {partitions: -1}\n", "cluster.partitions: -1 out of range"},
		{"cluster: {replicas: 2}\n", "cluster.replicas: 2 (want 1, 3 or 5)"},
		{"cluster: {pinned_ttl: 100ms}\n", "cluster.pinned_ttl: 100ms shorter than 1s"},
		{"cluster: {checkpoint_interval: 3s}\n", "cluster.checkpoint_interval: 3s out of range 0 to ack_wait/2 (2.5s)"},
		{"cluster: {checkpoint_interval: -1s}\n", "cluster.checkpoint_interval: -1s out of range"},
		{"cluster: {record_format: xml}\n", `cluster.record_format: "xml" (want binary or json)`},
		{"cluster: {partitions: 4}\nmqtt: {enabled: true}\n", "mqtt.enabled: the MQTT source has no per-asset affinity"},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(tc.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %s", tc.doc, err, tc.want)
		}
	}
	bad := Defaults()
	bad.Rules.Files = []string{"../../configs/rules/typo.bad.yaml"}
	if _, err := bad.LoadRules(catalog.Default()); err == nil || !strings.Contains(err.Error(), "typo.bad.yaml:6:") {
		t.Fatalf("bad rule file: %v", err)
	}
}

// embeddedConfig starts an embedded nats-server (JetStream in a temporary
// directory, shut down with the test) and returns it with the default
// configuration pointing at it, the HTTP API off and a temporary data
// directory.
func embeddedConfig(t *testing.T) (*brokers.NATS, Config) {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = ""
	cfg.DataDir = t.TempDir()
	return ns, cfg
}

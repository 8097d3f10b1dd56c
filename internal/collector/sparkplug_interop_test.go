package collector

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/tahutest"
	"github.com/smelterio/smelter/internal/wait"
)

// TestInteropSparkplugTahuEdgeToAlerts: an edge node built on Eclipse
// Tahu's sparkplug-client (deploy/sparkplug-interop/edge.js) publishes its
// births and data on the machine's Mosquitto; the collector's Sparkplug
// source maps them (degF to Cel, bar to MPa) and the default rules raise
// discharge_temp_high on the Tahu node's compressor.
func TestInteropSparkplugTahuEdgeToAlerts(t *testing.T) {
	tahutest.Need(t)
	group := fmt.Sprintf("smelter-interop-%d", os.Getpid())
	node := "tahu-edge-1"
	dir := t.TempDir()
	mapping := filepath.Join(dir, "sparkplug-map.yaml")
	if err := os.WriteFile(mapping, []byte(`nodes:
  - group: `+group+`
    edge_node: `+node+`
    path: [acme, site1, utilities, compressors, _]
    devices:
      - device: compressor-9
        asset: ac-9
        class: air_compressor
        metrics:
          - {name: Outputs/Pressure, signal: discharge_pressure, unit: bar}
          - {name: Outputs/Temperature, signal: discharge_temp}
          - {name: Outputs/Loaded, signal: load_state, states: {0: unloaded, 1: loaded}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Sparkplug = &ingest.SparkplugConfig{URL: "tcp://127.0.0.1:1883", ClientID: group + "-collector", Groups: []string{group},
		Mapping: mapping, HostID: group + "-host", RebirthInterval: time.Second}
	c := newCollector(t, cfg)
	// runs after the collector stopped (cleanups run last first): the
	// host's retained STATE must not stay on the shared broker
	t.Cleanup(func() { clearRetained(t, "tcp://127.0.0.1:1883", sparkplug.StateTopic(cfg.Sparkplug.HostID)) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.For(t, 10*time.Second, "collector ready", c.Ready)

	edge := tahutest.Start(t, "edge.js", "--url", "mqtt://127.0.0.1:1883", "--group", group, "--node", node, "--client-id", group+"-edge")
	if l := edge.Next(t, 30*time.Second); l != `{"event":"birth"}` {
		t.Fatalf("edge.js: %s", l)
	}
	wait.For(t, 15*time.Second, "the Tahu device as a Smelter asset", func() bool {
		_, ok := c.Asset("site1", "ac-9")
		return ok
	})
	// 30 s of 1 s data at 260 degF (126.7 Cel): over the 110 Cel alarm
	// limit for longer than the rule's 15 s on-delay
	t0 := time.Now().UnixMilli() - 60000
	for i := range 30 {
		edge.Send(t, map[string]any{"pressure": 7.1, "temperature": 260, "loaded": true, "ts": t0 + int64(i)*1000})
	}
	wait.For(t, 20*time.Second, "discharge_temp_high raised on the Tahu node's compressor", func() bool {
		for _, a := range c.Alerts(true) {
			if a.Asset == "ac-9" && a.Rule == "discharge_temp_high" && a.State == alert.Raised {
				return true
			}
		}
		return false
	})
	v, _ := c.Asset("site1", "ac-9")
	t.Logf("asset view: %+v", v)
}

// clearRetained removes the retained message of topic from the broker at
// url (an empty retained publish, MQTT 3.1.1 section 3.3.1.3).
func clearRetained(t *testing.T, url, topic string) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("smelter-interop-%d-cleanup", os.Getpid())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Errorf("clear retained %s: connect: %v", topic, tok.Error())
		return
	}
	defer c.Disconnect(250)
	if tok := c.Publish(topic, 1, true, []byte{}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Errorf("clear retained %s: %v", topic, tok.Error())
	}
}

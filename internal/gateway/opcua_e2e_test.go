package gateway

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// fixedSource is a value source with fixed values for the OPC UA front.
type fixedSource struct {
	class   string
	signals []string
	values  []float64
}

func (s *fixedSource) Class() string     { return s.class }
func (s *fixedSource) Signals() []string { return s.signals }
func (s *fixedSource) Values() []float64 { return s.values }

// startFrontAndNATS starts the simulators' OPC UA front serving one asset
// from src (values stamped now) and an embedded NATS server, both stopped
// when the test ends, and returns them with the test's directory.
func startFrontAndNATS(t *testing.T, ctx context.Context, asset string, src *fixedSource) (*opcuafront.Front, *brokers.NATS, string) {
	t.Helper()
	front, err := opcuafront.New(opcuafront.Config{}, []opcuafront.Asset{{ID: asset, Source: src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = front.Stop() })
	front.Refresh(time.Now())
	dir := t.TempDir()
	nb, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nb.Shutdown)
	return front, nb, dir
}

// loadConfigText writes text as dir/gateway.yaml and loads it.
func loadConfigText(t *testing.T, dir, text string) *gwconfig.Config {
	t.Helper()
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// lastReading returns the newest reading of signal in the collected batches.
func lastReading(c *collector, signal string) (telemetry.Reading, bool) {
	batches, _, _ := c.snapshot()
	for i := len(batches) - 1; i >= 0; i-- {
		for _, r := range batches[i].Readings {
			if r.Signal == signal {
				return r, true
			}
		}
	}
	return telemetry.Reading{}, false
}

// TestEndToEndOPCUA subscribes to a real OPC UA server (the simulators'
// front, gopcua), and checks exact values with units taken from the nodes'
// EngineeringUnits, a polled point beside subscribed ones, a Bad node amid
// good ones, and stale marking while the server restarts, with data resuming
// without any action.
func TestEndToEndOPCUA(t *testing.T) {
	src := &fixedSource{class: "boiler", signals: []string{"steam_pressure", "flue_gas_temp", "flue_o2", "steam_flow"},
		values: []float64{1.25, 142.5, 3.1, 18}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	front, nb, dir := startFrontAndNATS(t, ctx, "boiler-ua", src)
	cfgText := fmt.Sprintf(`gateway: {id: gw-ua, site: plant1, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
devices:
  - id: boiler-ua
    class: boiler
    poll_interval: 200ms
    heartbeat: 300ms
    opcua: {endpoint: %q, publish_interval: 100ms, keep_alive: 200ms, backoff_min: 100ms, backoff_max: 1s}
    points:
      - {signal: steam_pressure, node_id: %q}
      - {signal: flue_gas_temp, node_id: %q, unit: Cel}
      - {signal: flue_o2, node_id: %q, mode: poll, interval: 200ms}
      - {signal: steam_flow, node_id: %q, sampling_interval: 100ms}
`, nb.URL(), front.Endpoint(), front.NodeID("boiler-ua", "steam_pressure"), front.NodeID("boiler-ua", "flue_gas_temp"),
		front.NodeID("boiler-ua", "flue_o2"), front.NodeID("boiler-ua", "steam_flow"))
	runGateway(t, loadConfigText(t, dir, cfgText))
	nc := subscribeNATS(t, nb.URL())

	want := map[string]struct {
		v    float64
		unit string
	}{"steam_pressure": {1.25, "MPa"}, "flue_gas_temp": {142.5, "Cel"}, "flue_o2": {3.1, "%"}, "steam_flow": {18, "t/h"}}
	wait.For(t, 20*time.Second, "every OPC UA signal good on NATS", func() bool {
		for sig := range want {
			if r, ok := lastReading(nc, sig); !ok || r.Quality != telemetry.QualityGood {
				return false
			}
		}
		return true
	})
	for sig, w := range want {
		r, _ := lastReading(nc, sig)
		if math.Abs(r.Value-w.v) > 1e-6 || r.Unit != w.unit || r.Src != "opcua:"+front.NodeID("boiler-ua", sig) || r.TS <= 0 {
			t.Errorf("%s = %+v, want %v %s", sig, r, w.v, w.unit)
		}
	}
	_, births, _ := nc.snapshot()
	if len(births) == 0 || births[0].Protocol != "opcua" {
		t.Errorf("births = %+v", births)
	}
	for _, si := range births[0].Signals {
		if si.Signal == "steam_flow" && si.IntervalMS != 300 {
			t.Errorf("subscribed signal's birth interval = %d ms, want the 300 ms heartbeat", si.IntervalMS)
		}
	}
	// an unchanged subscribed value is re-reported every heartbeat while
	// the server confirms it unchanged (a keep-alive after its last report:
	// keep_alive 200ms, under the 300 ms heartbeat)
	wait.For(t, 10*time.Second, "steam_flow re-reported while unchanged", func() bool {
		batches, _, _ := nc.snapshot()
		n := 0
		for _, b := range batches {
			for _, r := range b.Readings {
				if r.Signal == "steam_flow" && r.Value == 18 {
					n++
				}
			}
		}
		return n >= 3
	})

	// a Bad node amid good ones
	if err := front.SetStatus("boiler-ua", "flue_gas_temp", opcuafront.StatusBadSensorFailure); err != nil {
		t.Fatal(err)
	}
	src.values[0] = 1.3
	front.Refresh(time.Now())
	wait.For(t, 10*time.Second, "flue_gas_temp bad while steam_pressure moves on", func() bool {
		bad, ok1 := lastReading(nc, "flue_gas_temp")
		good, ok2 := lastReading(nc, "steam_pressure")
		return ok1 && ok2 && bad.Quality == telemetry.QualityBad && bad.Status == opcuafront.StatusBadSensorFailure &&
			!bad.HasValue() && good.Quality == telemetry.QualityGood && math.Abs(good.Value-1.3) < 1e-9
	})

	// server restart: stale while away, data resumes with no action
	if err := front.Stop(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "stale readings while the server is down", func() bool {
		r, ok := lastReading(nc, "steam_flow")
		return ok && r.Quality == telemetry.QualityStale
	})
	// losing the session is the asset stopping to answer: one death notice
	wait.For(t, 10*time.Second, "a death notice for the asset", func() bool { return nc.deathCount() == 1 })
	src.values[3] = 21
	if err := front.Start(ctx); err != nil {
		t.Fatal(err)
	}
	front.Refresh(time.Now())
	wait.For(t, 30*time.Second, "data to resume after the restart", func() bool {
		r, ok := lastReading(nc, "steam_flow")
		return ok && r.Quality == telemetry.QualityGood && r.Value == 21
	})
	// and a birth again once it answers
	wait.For(t, 10*time.Second, "a rebirth after the restart", func() bool {
		_, births, _ := nc.snapshot()
		return len(births) >= 2
	})
}

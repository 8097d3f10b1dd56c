package demo

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/fleet"
)

// startDemo runs the demo wiring headless with the repository's fleet and
// the given scenario until the test ends.
func startDemo(t *testing.T, scenario string, poll time.Duration) *Demo {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// a relative data directory, as `make demo` uses (.demo)
	t.Chdir(t.TempDir())
	d := New(Options{FleetPath: filepath.Join(root, "configs/sim-fleet.yaml"), ScenarioPath: scenario,
		DataDir: ".demo", Seed: -1, PollInterval: poll, Log: log})
	startRun(t, d)
	return d
}

// startRun runs d until the test ends and waits until it is ready.
func startRun(t *testing.T, d *Demo) {
	t.Helper()
	t.Cleanup(runDemo(t, d))
}

// runDemo runs d, waits until it is ready and returns what stops it (and
// reports Run's error); the test fails when d stops before it is ready.
func runDemo(t *testing.T, d *Demo) (stop func()) {
	t.Helper()
	if d.opts.Log == nil || testing.Verbose() {
		d.opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("demo.Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("demo did not stop within 30 s")
			}
		})
	}
	select {
	case <-d.Ready():
		return stop
	case err := <-done:
		cancel()
		t.Fatalf("demo stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		stop()
		t.Fatal("demo not ready after 60 s")
	}
	return stop
}

// TestDemoEndToEnd runs the same wiring as `make demo`: every equipment class
// reaches the collector with good live values through the gateway and the
// brokers, and the demo scenario's first scripted fault (a stuck
// compressor pressure sensor) raises an alert.
func TestDemoEndToEnd(t *testing.T) {
	root, _ := filepath.Abs("../..")
	d := startDemo(t, filepath.Join(root, "configs/scenarios/demo.yaml"), 250*time.Millisecond)
	col := d.Collector()
	var classes []string
	for _, c := range catalog.Default().ClassNames() {
		if c != "generic" {
			classes = append(classes, c)
		}
	}
	wait.For(t, 60*time.Second, "every class with good values at the collector", func() bool {
		seen := map[string]bool{}
		for _, a := range col.Assets() {
			for _, s := range a.Signals {
				if s.Quality == "good" {
					seen[a.Class] = true
				}
			}
		}
		for _, c := range classes {
			if !seen[c] {
				return false
			}
		}
		return true
	})
	var stuck alert.Alert
	wait.For(t, 90*time.Second, "the scripted stuck-sensor fault to raise an alert on ac-1", func() bool {
		for _, a := range col.Alerts(true) {
			if a.Asset == "ac-1" && a.Kind == "stuck" && a.Signal == "discharge_pressure" {
				stuck = a
				return true
			}
		}
		return false
	})
	if stuck.Site != "demo" || stuck.Class != "air_compressor" || stuck.Message == "" {
		t.Errorf("alert = %+v", stuck)
	}
	st := d.Gateway().Status()
	assets := map[string][]string{}
	for _, ds := range st.Devices {
		assets[ds.Asset] = append(assets[ds.Asset], ds.Protocol)
	}
	if len(assets) != len(d.Fleet().Devices()) {
		t.Errorf("gateway polls %d assets, fleet has %d", len(assets), len(d.Fleet().Devices()))
	}
	if got := strings.Join(assets["ship-1"], ","); got != "modbus/tcp,nmea/tcp" {
		t.Errorf("ship-1 is read over %s, want the engine over Modbus and navigation over NMEA", got)
	}
	for _, u := range st.Uplinks {
		if !u.Connected {
			t.Errorf("uplink %s not connected", u.Name)
		}
	}
	if !slices.ContainsFunc(st.Devices, func(ds gateway.DeviceStatus) bool { return ds.Protocol == "modbus/rtu_over_tcp" }) {
		t.Errorf("no RTU-over-TCP device in the demo: %+v", st.Devices)
	}
}

// TestSetupFailureStopsEverything: when the setup fails half way (here the
// collector's rule file is missing, after the simulators, their HTTP API
// and the brokers started), Run returns the error and every goroutine and
// listener it started is gone.
func TestSetupFailureStopsEverything(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	before := runtime.NumGoroutine()
	d := New(Options{FleetPath: filepath.Join(root, "configs/sim-fleet.yaml"), DataDir: ".demo", Seed: -1,
		Collector: func(c *collector.Config) { c.Rules.Files = []string{"no-such-rules.yaml"} }})
	err = d.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no-such-rules.yaml") {
		t.Fatalf("Run = %v, want the missing rule file's error", err)
	}
	devs := d.Fleet().Devices()
	if len(devs) == 0 {
		t.Fatal("the fleet did not start: the setup failed too early to test anything")
	}
	for _, dev := range devs {
		if dev.Addr == "" {
			continue
		}
		if c, err := net.DialTimeout("tcp", dev.Addr, time.Second); err == nil {
			_ = c.Close()
			t.Errorf("simulator %s still listening on %s after Run returned", dev.ID, dev.Addr)
		}
	}
	wait.For(t, 10*time.Second, "the goroutines started by Run to end", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// TestGatewayConfigIsTheGatewaysOwnStructs: the generated configuration
// marshals from gwconfig.File and loads back with every device.
func TestGatewayConfigIsTheGatewaysOwnStructs(t *testing.T) {
	devs := []fleet.DeviceInfo{
		{ID: "ac-1", Class: "air_compressor", Transport: "tcp", Addr: "127.0.0.1:1502", UnitID: 1,
			Template: "../../configs/templates/air_compressor-sim-a.yaml", Nameplate: map[string]float64{"rated_power": 75}},
		{ID: "m-2", Class: "motor", Transport: "rtu_over_tcp", Addr: "127.0.0.1:1503", UnitID: 5, Template: "../../configs/templates/motor-sim.yaml"},
		{ID: "cnc-1", Class: "cnc_machine", OPCUA: "opc.tcp://127.0.0.1:4840"},
	}
	ua := map[string]UADevice{"cnc-1": {Endpoint: "opc.tcp://127.0.0.1:4840", User: "op", PasswordFile: "/tmp/pw",
		Signals: []string{"spindle_speed", "feed_rate"}, NodePrefix: "ns=1;s=cnc-1."}}
	f, err := GatewayConfig(devs, "nats://127.0.0.1:4222", "mqtt://127.0.0.1:1883", 250*time.Millisecond, ua)
	if err != nil {
		t.Fatal(err)
	}
	data, err := MarshalGatewayConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, gateway.Drivers()...)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if len(cfg.Devices) != 3 || cfg.Devices[1].Protocol != "modbus" || cfg.Devices[2].Protocol != "opcua" {
		t.Fatalf("devices = %+v\n%s", cfg.Devices, data)
	}
	if tr, addr := cfg.Devices[1].Driver.Endpoint(); tr != "modbus/rtu_over_tcp" || addr != "127.0.0.1:1503" {
		t.Errorf("m-2 endpoint = %s %s", tr, addr)
	}
	ud := cfg.Devices[2].Driver.(*opcua.DeviceConfig)
	if ud.Config.Auth.Username != "op" || len(ud.Points) != 2 || ud.Points[0].SamplingInterval != 250*time.Millisecond {
		t.Errorf("cnc-1 = %+v\n%s", ud, data)
	}
}

// TestGatewayConfigShipSources: the demo's ship is one asset with two
// sources, the engine over Modbus (the ship's register map without its
// navigation registers) and navigation over NMEA 0183; every signal of the
// register map is read, by one source.
func TestGatewayConfigShipSources(t *testing.T) {
	tpl, _ := filepath.Abs("../../configs/templates/ship-sim.yaml")
	devs, err := engineTemplates([]fleet.DeviceInfo{{ID: "ship-1", Class: "ship", Transport: "tcp", Addr: "127.0.0.1:1502", UnitID: 1,
		Template: tpl, Nameplate: map[string]float64{"rated_power": 8600}, NMEA: "127.0.0.1:10110", NMEATransport: "tcp"}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := GatewayConfig(devs, "nats://127.0.0.1:4222", "mqtt://127.0.0.1:1883", 250*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := MarshalGatewayConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.LoadBytes(filepath.Join(t.TempDir(), "gateway.yaml"), data, gateway.Drivers()...)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if len(cfg.Devices) != 2 {
		t.Fatalf("%d devices, want the ship's two sources\n%s", len(cfg.Devices), data)
	}
	eng, nav := cfg.Devices[0], cfg.Devices[1]
	if eng.ID != "ship-1/engine" || eng.Protocol != "modbus" || nav.ID != "ship-1/nav" || nav.Protocol != "nmea" ||
		eng.Asset.ID != "ship-1" || nav.Asset.ID != "ship-1" || nav.Interval != 2*time.Second {
		t.Fatalf("sources %s %s, %s %s %v", eng.ID, eng.Protocol, nav.ID, nav.Protocol, nav.Interval)
	}
	whole, err := gwconfig.LoadBytes(filepath.Join(t.TempDir(), "whole.yaml"), []byte(`gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - {id: ship-1, class: ship, template: `+tpl+`, modbus: {address: "127.0.0.1:1502"}}
`), gateway.Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	read := map[string]string{}
	for _, d := range cfg.Devices {
		for _, s := range d.Signals() {
			read[s.Signal] = d.Protocol
		}
	}
	for _, s := range whole.Devices[0].Signals() {
		want := "modbus"
		if _, ok := navPoints[s.Signal]; ok {
			want = "nmea"
		}
		if read[s.Signal] != want {
			t.Errorf("%s read over %q, want %s", s.Signal, read[s.Signal], want)
		}
	}
}

// TestBadSpeedRefused: -speed NaN, negative or infinite is refused with a
// clear error before anything starts, not run at the fleet file's speed.
func TestBadSpeedRefused(t *testing.T) {
	for _, v := range []float64{math.NaN(), -5, math.Inf(1)} {
		err := New(Options{Speed: v, DataDir: t.TempDir()}).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "speed: ") || !strings.Contains(err.Error(), "not a number from 0 to 1e6") {
			t.Errorf("speed %v: %v", v, err)
		}
	}
	if err := CheckSpeed(10); err != nil {
		t.Error(err)
	}
}

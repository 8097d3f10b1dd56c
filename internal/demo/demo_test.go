package demo

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/wait"
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
	if d.opts.Log == nil || testing.Verbose() {
		d.opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
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
	select {
	case <-d.Ready():
	case err := <-done:
		t.Fatalf("demo stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("demo not ready after 60 s")
	}
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
	if len(st.Devices) != len(d.Fleet().Devices()) {
		t.Errorf("gateway polls %d devices, fleet has %d", len(st.Devices), len(d.Fleet().Devices()))
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

package demo

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestDemoSparkplug runs `smelter-demo -sparkplug`: the gateway publishes
// Sparkplug B on the demo's MQTT broker and the collector's Sparkplug
// source brings the plant in a second time, as site "sparkplug", with good
// live values.
func TestDemoSparkplug(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	d := New(Options{FleetPath: filepath.Join(root, "configs/sim-fleet.yaml"), DataDir: ".demo", Seed: -1,
		PollInterval: 250 * time.Millisecond, Sparkplug: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	startRun(t, d)
	wait.For(t, 60*time.Second, "ac-1 over Sparkplug with a good discharge pressure", func() bool {
		v, ok := d.Collector().Asset(SparkplugSite, "ac-1")
		if !ok {
			return false
		}
		for _, s := range v.Signals {
			if s.Signal == "discharge_pressure" && s.Valid && s.Quality == telemetry.QualityGood.String() && s.Unit == "MPa" {
				return true
			}
		}
		return false
	})
}

package gateway

import (
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
)

// TestEndToEndNMEA: a ship's navigation talker (the simulators' NMEA
// front over TCP) through the gateway's nmea driver to JetStream: speeds in
// knots, position and heading in degrees, good; when the talker goes quiet
// the points turn bad, never a held value.
func TestEndToEndNMEA(t *testing.T) {
	dir := t.TempDir()
	nats, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	front := nmeaTalker(t, "bridge")
	cfgText := fmt.Sprintf(`gateway: {id: gw-nmea, enterprise: acme, site: fleet, data_dir: ./data}
http: {listen: "off"}
uplinks:
  nats: {url: %q}
devices:
  - id: mv-1-nav
    class: ship
    poll_interval: 200ms
    nmea: {transport: tcp, address: %q, reconnect_min: 50ms, reconnect_max: 200ms}
    points:
      - {signal: sog, sentence: RMC.sog}
      - {signal: latitude, sentence: RMC.latitude}
      - {signal: longitude, sentence: RMC.longitude}
      - {signal: heading, sentence: HDT.heading}
      - {signal: stw, sentence: VHW.stw}
      - {signal: water_depth, sentence: DPT.depth_below_keel}
`, nats.URL(), front.Addr())
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	runGateway(t, cfg)
	nc := subscribeNATS(t, nats.URL())
	want := map[string]float64{"sog": 13.4, "latitude": 36.25, "longitude": 121.5, "heading": 88.5, "stw": 13.1, "water_depth": 61}
	good := func(b *telemetry.Batch) bool {
		n := 0
		for _, r := range b.Readings {
			if w, ok := want[r.Signal]; ok && r.Quality == telemetry.QualityGood && math.Abs(r.Value-w) < 0.06 {
				n++
			}
		}
		return n == len(want)
	}
	wait.For(t, 15*time.Second, "a batch with every navigation point good", func() bool {
		batches, _, _ := nc.snapshot()
		for _, b := range batches {
			if good(b) {
				return b.Asset.Class == "ship" && b.Asset.ID == "mv-1-nav"
			}
		}
		return false
	})
	front.SetSilent(true)
	wait.For(t, 15*time.Second, "sog bad or stale once the talker is quiet", func() bool {
		batches, _, _ := nc.snapshot()
		if len(batches) == 0 {
			return false
		}
		for _, r := range batches[len(batches)-1].Readings {
			if r.Signal == "sog" {
				return r.Quality == telemetry.QualityBad || r.Quality == telemetry.QualityStale
			}
		}
		return false
	})
}

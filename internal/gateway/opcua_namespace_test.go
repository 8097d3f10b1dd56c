package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// TestOPCUADeviceOfAbsentNamespaceIsNotStalled (attack F4): an OPC UA
// device whose points are all in a namespace the server lacks is a
// connected device whose points are bad 0x80340000 (BadNodeIdUnknown) in
// every batch: never stale, never a death notice, no driver restart, over
// many stall limits (the floor lowered to 1 s here). Before, the driver
// published such points once per session: the stall watch declared it
// stalled, published the points stale with a death notice and restarted
// it, about every 80 s at the defaults.
func TestOPCUADeviceOfAbsentNamespaceIsNotStalled(t *testing.T) {
	src := &fixedSource{class: "boiler", signals: []string{"steam_pressure", "flue_o2"}, values: []float64{1.25, 3.1}}
	var logs logtest.Buffer
	g, nc, _ := startBoilerStallRig(t, src, &logs, func(front *opcuafront.Front) string {
		return fmt.Sprintf(`    opcua: {endpoint: %q, isolation: none, publish_interval: 50ms, keep_alive: 100ms, backoff_min: 50ms, backoff_max: 200ms}
    points:
      - {signal: steam_pressure, node_id: "nsu=urn:not-on-the-server;s=steam_pressure", sampling_interval: 50ms}
      - {signal: flue_o2, node_id: "nsu=urn:not-on-the-server;s=flue_o2", mode: poll, interval: 100ms}
`, front.Endpoint())
	})
	// bad readings of both points in batches spanning more than five stall
	// limits (3 x (100 ms + 50 ms) < 1 s floor: 5 s)
	var first time.Time
	wait.For(t, 30*time.Second, "bad readings over five stall limits", func() bool {
		batches, _, _ := nc.snapshot()
		n := 0
		for _, b := range batches {
			for _, r := range b.Readings {
				if r.Quality != telemetry.QualityBad || r.Status != opcua.StatusNodeIDUnknown {
					t.Fatalf("reading %+v: want bad 0x80340000", r)
				}
				if first.IsZero() {
					first = time.UnixMilli(b.TSGW)
				}
				if time.UnixMilli(b.TSGW).Sub(first) > 5*time.Second {
					n++
				}
			}
		}
		return n >= 2
	})
	if n := testutil.ToFloat64(g.m.stalls.WithLabelValues("boiler-ua")); n != 0 {
		t.Fatalf("smelter_gateway_device_stalls_total = %v, want 0", n)
	}
	if n := nc.deathCount(); n != 0 {
		t.Fatalf("%d death notices, want 0", n)
	}
	if st := g.devices[0].state(); st.Dead {
		t.Fatalf("device state %+v: want alive", st)
	}
	if text := logs.String(); strings.Contains(text, "device's driver stalled") {
		t.Fatalf("stall logged:\n%s", text)
	}
}

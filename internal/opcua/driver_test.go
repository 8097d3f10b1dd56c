package opcua

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
)

// TestUnitCheckIntervalConfig: the opcua block's unit_check_interval
// defaults to DefaultUnitCheckInterval when left out, an explicit 0s turns
// the check off, and a value out of range names the field.
func TestUnitCheckIntervalConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string // the key's line in the opcua block ("" leaves it out)
		every      time.Duration
		off        bool
		err        string
	}{
		{"default", "", DefaultUnitCheckInterval, false, ""},
		{"set", "unit_check_interval: 5s", 5 * time.Second, false, ""},
		{"off", "unit_check_interval: 0s", 0, true, ""},
		{"negative", "unit_check_interval: -1s", 0, false, "gw.yaml:5: devices[0].opcua.unit_check_interval: -1s out of range 10ms..24h (0s disables the check)"},
		{"too often", "unit_check_interval: 1ms", 0, false, "devices[0].opcua.unit_check_interval: 1ms out of range 10ms..24h"},
		{"not a duration", "unit_check_interval: often", 0, false, "devices[0].opcua.unit_check_interval:"},
		{"0 without unit", "unit_check_interval: 0", 0, false,
			`gw.yaml:5: devices[0].opcua.unit_check_interval: want a duration such as 500ms, 30s or 15m, got "0" (a number needs a unit: 0s)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := `{endpoint: "opc.tcp://127.0.0.1:4840"}`
			if tc.yaml != "" {
				block = fmt.Sprintf(`{endpoint: "opc.tcp://127.0.0.1:4840", %s}`, tc.yaml)
			}
			doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - id: bf-2\n    opcua: " + block +
				"\n    class: blast_furnace\n    points: [{signal: top_pressure, node_id: \"ns=2;s=P\", mode: poll, interval: 10s}]\n"
			cfg, err := gwconfig.LoadBytes("gw.yaml", []byte(doc), Driver{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Devices[0].Driver.(*DeviceConfig).Config
			if c.unitCheck() != tc.every || c.UnitCheckOff != tc.off {
				t.Fatalf("unit check every %v (off %v), want %v (off %v)", c.unitCheck(), c.UnitCheckOff, tc.every, tc.off)
			}
			// New (the worker's copy too) keeps it as compiled
			cl, err := New("bf-2", c, cfg.Devices[0].Driver.(*DeviceConfig).Points, nil, nil)
			if err != nil || cl.cfg.unitCheck() != tc.every {
				t.Fatalf("New: %v, every %v", err, cl.cfg.unitCheck())
			}
		})
	}
}

package opcua

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
)

// TestUnitCheckIntervalConfig: the opcua block's unit_check_interval
// defaults to every read when left out, takes every_read, never or an
// interval, and refuses anything else naming file, line, field and what it
// takes (a bare 0 and 0s included: neither says whether it means "every
// read" or "never").
func TestUnitCheckIntervalConfig(t *testing.T) {
	const want = "want every_read, never or a duration from 10ms to 24h such as 30s"
	for _, tc := range []struct {
		name, yaml string // the key's line in the opcua block ("" leaves it out)
		check      UnitCheck
		err        string
	}{
		{"default", "", UnitCheckEveryRead, ""},
		{"every_read", "unit_check_interval: every_read", UnitCheckEveryRead, ""},
		{"never", "unit_check_interval: never", UnitCheckNever, ""},
		{"interval", "unit_check_interval: 5s", UnitCheck(5 * time.Second), ""},
		{"0s", "unit_check_interval: 0s", 0, `gw.yaml:5: devices[0].opcua.unit_check_interval: ` + want + `, got "0s"`},
		{"0 without unit", "unit_check_interval: 0", 0, `gw.yaml:5: devices[0].opcua.unit_check_interval: ` + want + `, got "0"`},
		{"negative", "unit_check_interval: -1s", 0, `gw.yaml:5: devices[0].opcua.unit_check_interval: ` + want + `, got "-1s"`},
		{"not a duration", "unit_check_interval: often", 0, `gw.yaml:5: devices[0].opcua.unit_check_interval: ` + want + `, got "often"`},
		{"too often", "unit_check_interval: 1ms", 0, "gw.yaml:5: devices[0].opcua.unit_check_interval: 1ms out of range: " + want},
		{"too rare", "unit_check_interval: 25h", 0, "gw.yaml:5: devices[0].opcua.unit_check_interval: 25h0m0s out of range: " + want},
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
			if c.UnitCheckInterval != tc.check {
				t.Fatalf("unit check %v, want %v", c.UnitCheckInterval, tc.check)
			}
			// New (the worker's copy too) keeps it as compiled
			cl, err := New("bf-2", c, cfg.Devices[0].Driver.(*DeviceConfig).Points, nil, nil)
			if err != nil || cl.cfg.UnitCheckInterval != tc.check {
				t.Fatalf("New: %v, check %v", err, cl.cfg.UnitCheckInterval)
			}
		})
	}
}

package gwconfig_test

import (
	"slices"
	"testing"
	"time"
)

// TestWriteBlockCompiles: a point's write block lands index-aligned in
// Device.Writes, limits as written (canonical units), states with the
// signal's labels; points without one are nil (not writable).
func TestWriteBlockCompiles(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: ac
    class: air_compressor
    modbus: {address: "127.0.0.1:1"}
    points:
      - {signal: discharge_temp, table: input, address: 0, type: float32}
      - {signal: discharge_pressure, table: holding, address: 2, type: uint16, unit: bar, scale: 0.01,
         write: {min: 0.6, max: 0.8, max_step: 0.05, min_interval: 30s}}
      - {signal: load_state, table: coil, address: 0, write: {allowed: [off, loaded]}}
`
	cfg, err := loadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if len(d.Writes) != d.Norm.Len() || len(d.Writes) != 3 {
		t.Fatalf("%d writes for %d points", len(d.Writes), d.Norm.Len())
	}
	if d.Writes[0] != nil {
		t.Errorf("discharge_temp writable: %+v", d.Writes[0])
	}
	w := d.Writes[1]
	if w == nil || w.Min != 0.6 || w.Max != 0.8 || w.MaxStep != 0.05 || w.MinInterval != 30*time.Second || d.Norm.Point(1).Signal != "discharge_pressure" {
		t.Errorf("discharge_pressure write = %+v", w)
	}
	s := d.Writes[2]
	if s == nil || !slices.Equal(s.Allowed, []string{"off", "loaded"}) || !slices.Equal(s.States, []string{"off", "unloaded", "loaded"}) {
		t.Errorf("load_state write = %+v", s)
	}
	// the birth carries the limits (canonical units), read-only signals none
	if d.Signals()[0].Write != nil {
		t.Errorf("discharge_temp birth write = %+v", d.Signals()[0].Write)
	}
	bw := d.Signals()[1].Write
	if bw == nil || *bw.Min != 0.6 || *bw.Max != 0.8 || bw.MaxStep != 0.05 || bw.MinIntervalMS != 30000 || bw.Allowed != nil {
		t.Errorf("discharge_pressure birth write = %+v", bw)
	}
	sw := d.Signals()[2].Write
	if sw == nil || sw.Min != nil || sw.Max != nil || !slices.Equal(sw.Allowed, []string{"off", "loaded"}) {
		t.Errorf("load_state birth write = %+v", sw)
	}
}

package gwconfig_test

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

// TestSignalNamesShared: the devices of a configuration that read the
// same signals keep one copy of each name (issue 17: 20 OPC UA devices of
// the same 1,000 nodes kept 20,000 YAML scalars, ~28 bytes a point), and
// the names are the ones written.
func TestSignalNamesShared(t *testing.T) {
	var b strings.Builder
	b.WriteString("gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n")
	for d := range 3 {
		fmt.Fprintf(&b, "  - {id: ua-%d, class: generic, opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}, points: [", d)
		for i := range 4 {
			fmt.Fprintf(&b, "{signal: s%05d, node_id: \"ns=1;s=ua-%d.s%d\", unit: kW}, ", i, d, i)
		}
		b.WriteString("]}\n")
	}
	cfg, err := loadBytes("gw.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	first := cfg.Devices[0].Norm
	for _, d := range cfg.Devices {
		for i := range d.Norm.Len() {
			got := d.Norm.Signal(i)
			if want := fmt.Sprintf("s%05d", i); got != want {
				t.Fatalf("%s point %d: signal %q, want %q", d.ID, i, got, want)
			}
			if unsafe.StringData(got) != unsafe.StringData(first.Signal(i)) {
				t.Errorf("%s point %d: its own copy of %q", d.ID, i, got)
			}
		}
	}
}

// TestUniformTablesKeptOnce: a device none of whose points is writable
// keeps no write blocks, and one whose points all announce the same birth
// interval keeps it once (16 bytes a point otherwise, issue 17); the birth
// entries are the same as with the full tables.
func TestUniformTablesKeptOnce(t *testing.T) {
	doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n" +
		"  - {id: u, class: generic, opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}, points: [{signal: a, node_id: \"i=1\", unit: kW}, {signal: b, node_id: \"i=2\", unit: kW}]}\n" +
		"  - {id: m, class: generic, opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}, points: [{signal: a, node_id: \"i=1\", unit: kW}, " +
		"{signal: b, node_id: \"i=2\", unit: kW, mode: poll, interval: 2s, write: {min: 0, max: 1}}]}\n"
	cfg, err := loadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u, m := cfg.Devices[0], cfg.Devices[1]
	if u.Writes != nil || len(u.BirthIntervalMS) != 1 {
		t.Errorf("uniform device: writes %v, birth intervals %v; want nil and one", u.Writes, u.BirthIntervalMS)
	}
	if len(m.Writes) != 2 || len(m.BirthIntervalMS) != 2 {
		t.Errorf("mixed device: writes %v, birth intervals %v; want two each", m.Writes, m.BirthIntervalMS)
	}
	for _, d := range cfg.Devices {
		for i := range d.Norm.Len() {
			s := d.Signal(i)
			if s.IntervalMS != d.BirthInterval(i) || (s.Write != nil) != (d.Write(i) != nil) {
				t.Errorf("%s point %d: birth entry %+v", d.ID, i, s)
			}
		}
	}
	if u.Signal(1).IntervalMS != 600000 || m.Signal(1).IntervalMS != 2000 || m.Signal(0).IntervalMS != 600000 || m.Write(1) == nil || m.Write(0) != nil || u.Write(1) != nil {
		t.Errorf("birth entries: %+v %+v %+v", u.Signals(), m.Signals(), m.Writes)
	}
}

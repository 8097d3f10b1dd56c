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

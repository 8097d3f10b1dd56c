package fleet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// TestGatewayAcceptsFleetTemplates writes a gateway config for the running
// demo fleet (real addresses, the simulator's templates, the same
// nameplates) and loads it with the gateway's own loader: every register map
// the simulator serves is one the gateway polls without edits.
func TestGatewayAcceptsFleetTemplates(t *testing.T) {
	f := startFleet(t, nil)
	var b strings.Builder
	b.WriteString("gateway: {id: gw-sim-test, enterprise: acme, site: sim, data_dir: " + t.TempDir() + "}\n")
	b.WriteString("http: {listen: \"off\"}\nuplinks:\n  nats: {url: \"nats://127.0.0.1:4222\"}\ndevices:\n")
	for _, d := range f.Devices() {
		tpl, err := filepath.Abs(d.Template)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  - id: %s\n    class: %s\n    template: %s\n    nameplate: {", d.ID, d.Class, tpl)
		sep := ""
		for k, v := range d.Nameplate {
			fmt.Fprintf(&b, "%s%s: %v", sep, k, v)
			sep = ", "
		}
		fmt.Fprintf(&b, "}\n    modbus: {transport: %s, address: %q, unit_id: %d}\n", d.Transport, d.Addr, d.UnitID)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, gateway.Drivers()...)
	if err != nil {
		t.Fatalf("gateway rejects the simulator's config:\n%v\n%s", err, b.String())
	}
	if len(cfg.Devices) != len(f.Devices()) {
		t.Fatalf("gateway loaded %d devices, fleet has %d", len(cfg.Devices), len(f.Devices()))
	}
	for _, gd := range cfg.Devices {
		n := gd.Norm.Len()
		d := devInfo(t, f, gd.ID)
		if want := len(template(t, d).Points); n != want {
			t.Errorf("%s: gateway compiled %d points, template has %d", gd.ID, n, want)
		}
	}
}

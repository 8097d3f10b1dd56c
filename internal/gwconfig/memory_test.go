package gwconfig_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"
	"weak"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/opcua"
)

// TestSignalNamesShared: the devices of a configuration that read the
// same signals keep one copy of each name (issue 17: 20 OPC UA devices of
// the same 1,000 nodes kept 20,000 YAML scalars, ~28 bytes a point), and
// the names are the ones written.
func TestSignalNamesShared(t *testing.T) {
	cfg, err := loadBytes("gw.yaml", []byte(opcuaDevices(3, 4, false)))
	if err != nil {
		t.Fatal(err)
	}
	first := cfg.Devices[0].Norm
	for _, d := range cfg.Devices {
		for i := range d.Norm.Len() {
			got := d.Norm.Signal(i)
			if want := fmt.Sprintf("s%d", i); got != want {
				t.Fatalf("%s point %d: signal %q, want %q", d.ID, i, got, want)
			}
			if unsafe.StringData(got) != unsafe.StringData(first.Signal(i)) {
				t.Errorf("%s point %d: its own copy of %q", d.ID, i, got)
			}
		}
	}
}

// opcuaDevices is a configuration of n OPC UA devices ua-<d> of points
// points each, signal s<i> read from node ns=1;s=ua-<d>.s<i>: each device on
// one line (flow style), or each point on its line (block).
func opcuaDevices(n, points int, block bool) string {
	var b strings.Builder
	b.WriteString("gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n")
	for d := range n {
		if block {
			fmt.Fprintf(&b, "  - id: ua-%d\n    class: generic\n    opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}\n    points:\n", d)
		} else {
			fmt.Fprintf(&b, "  - {id: ua-%d, class: generic, opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}, points: [", d)
		}
		for i := range points {
			p := fmt.Sprintf("{signal: s%d, node_id: \"ns=1;s=ua-%d.s%d\", unit: kW}", i, d, i)
			if block {
				fmt.Fprintf(&b, "      - %s\n", p)
			} else {
				fmt.Fprintf(&b, "%s, ", p)
			}
		}
		if !block {
			b.WriteString("]}\n")
		}
	}
	return b.String()
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

// watchDriver is the OPC UA driver keeping a weak pointer to a node of
// each device's first point as written; compiling the device named last,
// it collects and records which earlier ones are still reachable.
type watchDriver struct {
	opcua.Driver
	last  string
	nodes map[string]weak.Pointer[yaml.Node]
	kept  *[]string
}

func (w watchDriver) Compile(b *gwconfig.Block) gwconfig.DriverConfig {
	if pts := b.Device().Points; len(pts) > 0 && len(pts[0].Content) > 1 {
		w.nodes[b.Field()] = weak.Make(pts[0].Content[1])
	}
	if b.Field() == w.last {
		runtime.GC()
		for f, p := range w.nodes {
			if f != w.last && p.Value() != nil {
				*w.kept = append(*w.kept, f)
			}
		}
	}
	return w.Driver.Compile(b)
}

// TestLoadingLetsCompiledPointsGo: once a device is compiled, its points
// as written (the file's YAML nodes: ~2 KB a point written inline, most
// of loading's peak; issue 17) are garbage while the next devices
// compile; the devices compile as before, an anchored list shared by two
// devices included, and an error in a later device's point keeps its line.
func TestLoadingLetsCompiledPointsGo(t *testing.T) {
	var kept []string
	w := watchDriver{last: "devices[2]", nodes: map[string]weak.Pointer[yaml.Node]{}, kept: &kept}
	cfg, err := gwconfig.LoadBytes("gw.yaml", []byte(opcuaDevices(3, 4, true)), w)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.nodes) != 3 {
		t.Fatalf("watched %d devices, want 3", len(w.nodes))
	}
	if len(kept) > 0 {
		t.Errorf("points as written still reachable while a later device compiles: %v", kept)
	}
	if len(cfg.Devices) != 3 {
		t.Fatalf("%d devices compiled", len(cfg.Devices))
	}
	for d, dev := range cfg.Devices {
		for i := range 4 {
			if got, want := dev.Norm.Signal(i), fmt.Sprintf("s%d", i); got != want {
				t.Errorf("%s point %d: %q, want %q", dev.ID, i, got, want)
			}
		}
		if p := dev.Driver.(*opcua.DeviceConfig).Points; len(p) != 4 || p[3].NodeID != fmt.Sprintf("ns=1;s=ua-%d.s3", d) {
			t.Errorf("%s: points %+v", dev.ID, p)
		}
	}

	shared := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n" +
		"  - id: a\n    class: generic\n    opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}\n    points: &p\n      - {signal: x, node_id: \"i=1\", unit: kW}\n      - {signal: y, node_id: \"i=2\", unit: kW}\n" +
		"  - id: b\n    class: generic\n    opcua: {endpoint: \"opc.tcp://127.0.0.1:2\"}\n    points: *p\n"
	cfg, err = loadBytes("gw.yaml", []byte(shared))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Devices) != 2 || cfg.Devices[0].Norm.Len() != 2 || cfg.Devices[1].Norm.Len() != 2 || cfg.Devices[1].Norm.Signal(1) != "y" {
		t.Fatalf("anchored points: %d devices", len(cfg.Devices))
	}
	bad := shared + "  - id: c\n    class: generic\n    opcua: {endpoint: \"opc.tcp://127.0.0.1:3\"}\n    points:\n      - {signal: z, node_id: \"i=3\", unit: kW, mode: push}\n"
	if _, err := loadBytes("gw.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "gw.yaml:18: devices[2].points[0].mode:") {
		t.Fatalf("error in a later device's point: %v", err)
	}
}

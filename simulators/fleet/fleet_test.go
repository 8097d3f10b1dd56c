package fleet

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/model"
)

func TestDemoFleetAndScenariosLoad(t *testing.T) {
	cfg, err := Load(demoFleet)
	if err != nil {
		t.Fatal(err)
	}
	classes := map[string]bool{}
	for _, d := range cfg.Devices {
		classes[d.Class] = true
	}
	for _, c := range model.Classes() {
		if !classes[c] {
			t.Errorf("demo fleet has no %s", c)
		}
	}
	files, _ := filepath.Glob("../../configs/scenarios/*.yaml")
	if len(files) == 0 {
		t.Fatal("no scenario files")
	}
	for _, path := range files {
		sc, err := faults.LoadScenario(path)
		if err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Scenario = sc
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		// every fault of the scenario is accepted by a running fleet
		f := startFleet(t, func(c *Config) { c.Scenario = sc })
		if got := len(f.Faults()); got != len(sc.Faults) {
			t.Errorf("%s: %d faults scheduled, want %d", path, got, len(sc.Faults))
		}
	}
}

func TestEveryTemplateCompilesAgainstItsModel(t *testing.T) {
	files, _ := filepath.Glob("../../configs/templates/*-sim*.yaml")
	if len(files) < 9 {
		t.Fatalf("only %d simulator templates", len(files))
	}
	cfg, _ := Load(demoFleet)
	used := map[string]bool{}
	for _, d := range cfg.Devices {
		used[filepath.Base(d.Template)] = true
	}
	for _, path := range files {
		if !used[filepath.Base(path)] {
			t.Errorf("%s is not used by the demo fleet", path)
		}
	}
}

func TestBadFleetConfigs(t *testing.T) {
	dir := t.TempDir()
	tpl, _ := os.ReadFile("../../configs/templates/motor-sim.yaml")
	os.WriteFile(filepath.Join(dir, "motor.yaml"), tpl, 0o644)
	os.WriteFile(filepath.Join(dir, "bad-unit.yaml"), []byte("template: x\nclass: motor\npoints:\n  - {signal: power, table: holding, address: 0, type: uint16, unit: degF}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "overlap.yaml"), []byte("template: x\nclass: motor\npoints:\n  - {signal: power, table: holding, address: 0, type: float32}\n  - {signal: frequency, table: holding, address: 1, type: uint16}\n"), 0o644)
	dev := func(extra string) string {
		return "devices:\n  - {id: m1, class: motor, template: motor.yaml, modbus: {unit_id: 1}" + extra + "}\n"
	}
	for _, tc := range []struct{ doc, want string }{
		{"speed: -1\n" + dev(""), "speed: -1 outside"},
		{"devices: []\n", "at least one device"},
		{"devices:\n  - {class: motor, template: motor.yaml}\n", "devices[0].id: required"},
		{"devices:\n  - {id: m1, class: furnace, template: motor.yaml}\n", `no model for class "furnace"`},
		{"devices:\n  - {id: m1, class: motor, template: nope.yaml}\n", "nope.yaml: open: no such file"},
		{"devices:\n  - {id: m1, class: boiler, template: motor.yaml}\n", "is for class motor, device is boiler"},
		{"devices:\n  - {id: m1, class: motor, template: bad-unit.yaml}\n", `bad-unit.yaml:4: points[0].unit: cannot convert`},
		{"devices:\n  - {id: m1, class: motor, template: overlap.yaml}\n", "points[1].address: holding 1 overlaps the point at line 4"},
		{dev(", nameplate: {rated_kw: 3}"), "nameplate.rated_kw: unknown rating"},
		{"devices:\n  - {id: m1, class: motor, template: motor.yaml, modbus: {listener: x}}\n", `modbus.listener: "x" not defined`},
		{"devices:\n  - {id: m1, class: motor, template: motor.yaml, modbus: {address: 127.0.0.1:0, transport: udp}}\n", `transport: "udp" not one of`},
		{"listeners: {a: {address: '127.0.0.1:0'}}\ndevices:\n  - {id: m1, class: motor, template: motor.yaml, modbus: {listener: a, unit_id: 1}}\n  - {id: m2, class: motor, template: motor.yaml, modbus: {listener: a, unit_id: 1}}\n", "unit_id: 1 already used by m1"},
		{"devices:\n  - {id: m1, class: motor, template: motor.yaml, modbus: {unit_id: 300}}\n", "unit_id: 300 outside 0..247"},
		{"bogus: 1\n" + dev(""), "fleet.yaml:1: bogus: unknown field"},
		{"seed: 1\ndevices:\n  - {id: m1, class: motor, template: motor.yaml, modbus: {unit_id: one}}\n", `fleet.yaml:3: devices[0].modbus.unit_id: want a whole number, got "one"`},
		{"", "fleet.yaml: file is empty"},
	} {
		cfg, err := Parse("fleet.yaml", []byte(tc.doc))
		if err == nil {
			cfg.Dir = dir
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.doc, err, tc.want)
		}
	}
	// a template's errors stay inspectable through the fleet's context
	cfg, err := Parse("fleet.yaml", []byte("devices:\n  - {id: m1, class: motor, template: bad-unit.yaml}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dir
	es := confload.AsErrors(cfg.Validate())
	if len(es) != 1 || es[0].File != filepath.Join(dir, "bad-unit.yaml") || es[0].Line != 4 || es[0].Field != "points[0].unit" {
		t.Errorf("template error through the fleet: %v", es)
	}
}

// TestFrontServesModelValues reads every point of every device of the demo
// fleet through its Modbus front (TCP, several unit ids per port, and RTU over
// TCP), decodes it as a gateway would from the template, and compares with the
// model's values: the templates and the devices line up exactly.
func TestFrontServesModelValues(t *testing.T) {
	f := startFleet(t, nil)
	if err := f.Advance(10 * time.Hour); err != nil { // 16:00: everything is running
		t.Fatal(err)
	}
	rtu := 0
	for _, d := range f.Devices() {
		if strings.HasSuffix(d.Addr, ":0") {
			t.Fatalf("%s has no real address: %s", d.ID, d.Addr)
		}
		if d.Transport == TransportRTUOverTCP {
			rtu++
		}
		c := dial(t, d, time.Second)
		want, _, err := f.Values(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range template(t, d).Points {
			got, err := readPoint(c, d.Class, p)
			if err != nil {
				t.Fatalf("%s %s: %v", d.ID, p.Signal, err)
			}
			if tol := tolerance(d.Class, p, want[p.Signal]); math.Abs(got-want[p.Signal]) > tol {
				t.Errorf("%s %s: decoded %v, model %v (tolerance %v)", d.ID, p.Signal, got, want[p.Signal], tol)
			}
		}
	}
	if rtu == 0 {
		t.Error("no RTU-over-TCP device in the demo fleet")
	}
	// nameplates match the fleet file
	if np := devInfo(t, f, "ac-2").Nameplate; np["rated_fad"] != 19.5 || np["rated_power"] != 110 {
		t.Errorf("ac-2 nameplate %v", np)
	}
}

func TestValuesWithinCatalogRangesThroughFront(t *testing.T) {
	f := startFleet(t, nil)
	cat := catalog.Default()
	for range 6 {
		if err := f.Advance(4 * time.Hour); err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Devices() {
			c := dial(t, d, time.Second)
			for _, p := range template(t, d).Points {
				v, err := readPoint(c, d.Class, p)
				if err != nil {
					t.Fatal(err)
				}
				s, _ := cat.Lookup(d.Class, p.Signal)
				tol := tolerance(d.Class, p, v)
				if (s.Min != nil && v < *s.Min-tol) || (s.Max != nil && v > *s.Max+tol) {
					t.Errorf("%s %s = %v outside catalog range at %v", d.ID, p.Signal, v, f.Now())
				}
			}
			c.close()
		}
	}
}

func TestDeterministicThroughFront(t *testing.T) {
	read := func(seed uint64) []byte {
		f := startFleet(t, func(c *Config) { c.Seed = seed })
		if err := f.Advance(3 * time.Hour); err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, d := range f.Devices() {
			c := dial(t, d, time.Second)
			for _, p := range template(t, d).Points {
				v, err := readPoint(c, d.Class, p)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, []byte(d.ID+p.Signal)...)
				all = append(all, byte(int64(v*1000)), byte(int64(v*1000)>>8))
			}
		}
		return all
	}
	a, b, c := read(1), read(1), read(2)
	if !bytes.Equal(a, b) {
		t.Error("same seed, different register values")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds, identical register values")
	}
}

func TestRealTimeFleetAdvancesWithSpeed(t *testing.T) {
	f := startFleet(t, func(c *Config) { c.Speed = 600 })
	start := f.Now()
	waitFor(t, 5*time.Second, "simulated time to pass 2 minutes", func() bool { return f.Now().Sub(start) >= 2*time.Minute })
	if err := f.Advance(time.Minute); err == nil {
		t.Error("Advance on a running fleet accepted")
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	f1 := startFleet(t, nil)
	addr := devInfo(t, f1, "ac-1").Addr
	cfg, _ := Load(demoFleet)
	cfg.Devices[0].Modbus.Address = addr
	f2 := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := f2.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "listener ac-1") {
		t.Fatalf("start on busy port: %v", err)
	}
}

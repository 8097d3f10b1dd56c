package gateway

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// scriptDriver is a protocol defined only in this test, as a new driver
// package would be: its block names the value every cycle reports.
type scriptDriver struct{ built *[]driver.Device }

type scriptConfig struct{ Value float64 }

func (*scriptConfig) Endpoint() (string, string) { return "script", "-" }

func (scriptDriver) Name() string { return "script" }

func (scriptDriver) Check(*gwconfig.Checks, []*gwconfig.Device) {}

func (scriptDriver) Compile(b *gwconfig.Block) gwconfig.DriverConfig {
	var c struct {
		Value float64 `yaml:"value"`
	}
	b.Decode(&c)
	for i := range b.Points() {
		var p gwconfig.PointFile
		if b.DecodePoint(i, &p) {
			b.Point(gwconfig.PointSpec{Doc: b.Doc(), Field: b.PointField(i), Point: &p, Src: "script",
				Interval: b.Device().PollInterval, BirthInterval: b.Device().PollInterval})
		}
	}
	if !b.OK() {
		return nil
	}
	return &scriptConfig{Value: c.Value}
}

func (d scriptDriver) Sources(driver.Env) driver.Sources { return scriptSources(d) }

type scriptSources scriptDriver

func (s scriptSources) Source(dev driver.Device) (driver.Source, error) {
	*s.built = append(*s.built, dev)
	v := dev.Config.Driver.(*scriptConfig).Value
	return scripted{{Start: t0, Interval: dev.Config.Interval, Replied: true,
		Samples: []sample.Sample{{Index: 0, Num: v, Quality: telemetry.QualityGood}}}}, nil
}

func (scriptSources) Close() error { return nil }

// TestDriverBuildsTheSource: a driver added to the list (config and
// Options.Drivers) builds its devices' sources, handed the compiled device,
// a scoped logger and the units callback, and the one acquisition loop
// turns its cycles into batches: no other change in the gateway.
func TestDriverBuildsTheSource(t *testing.T) {
	var built []driver.Device
	drivers := append(Drivers(), scriptDriver{&built})
	dir := t.TempDir()
	doc := "gateway: {id: gw, site: s, data_dir: " + filepath.Join(dir, "data") + "}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\n" +
		"devices:\n  - {id: s-1, class: generic, script: {value: 2.5}, points: [{signal: level, unit: m, scale: 2}]}\n"
	cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gw.yaml"), []byte(doc), drivers...)
	if err != nil {
		t.Fatal(err)
	}
	r := newGatewayRig(t, cfg, Options{Drivers: drivers})
	if len(built) != 1 || built[0].Config.ID != "s-1" || built[0].Log == nil || built[0].Units == nil {
		t.Fatalf("sources built for %+v", built)
	}
	if err := r.d.run(context.Background(), r.sp); err != nil {
		t.Fatal(err)
	}
	got := r.spooled(t)
	if len(got.batches) != 1 || len(got.batches[0].Readings) != 1 {
		t.Fatalf("spooled %+v", got)
	}
	rd0 := got.batches[0].Readings[0]
	if rd0.Signal != "level" || rd0.Value != 5 || rd0.Unit != "m" || rd0.Src != "script" {
		t.Errorf("reading = %+v", rd0)
	}
	if tr, _ := r.d.cfg.Driver.Endpoint(); tr != "script" {
		t.Errorf("endpoint %s", tr)
	}
}

// TestNewRefusesADeviceWithoutItsDriver: a configuration compiled with a
// driver the gateway is not given fails in New, naming device and
// protocol, before anything runs.
func TestNewRefusesADeviceWithoutItsDriver(t *testing.T) {
	dir := t.TempDir()
	doc := "gateway: {id: gw, site: s, data_dir: " + filepath.Join(dir, "data") + "}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\n" +
		"devices:\n  - {id: c-1, class: cnc_machine, opcua: {endpoint: \"opc.tcp://127.0.0.1:1\"}, points: [{signal: spindle_speed, node_id: \"ns=2;s=S\"}]}\n"
	cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gw.yaml"), []byte(doc), Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, Options{Drivers: []driver.Driver{modbus.Driver{}}})
	if err == nil || !strings.Contains(err.Error(), "device c-1: no driver for protocol opcua") {
		t.Fatalf("err = %v", err)
	}
}

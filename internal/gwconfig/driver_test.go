package gwconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/opcua"
)

// talker is a third protocol defined only here, as a new driver package
// would be: a block with a port, points with a sentence field. It proves a
// driver needs no change in gwconfig.
type talker struct{ checked *[][]string }

type talkerBlock struct {
	Port string `yaml:"port"`
}

func (b *talkerBlock) Validate() error {
	if !strings.HasPrefix(b.Port, "/dev/") {
		return confload.Problemf("port", "%q is not a device path", b.Port)
	}
	return nil
}

type talkerPoint struct {
	gwconfig.PointFile `yaml:",inline"`
	Sentence           string `yaml:"sentence"`
}

type talkerConfig struct {
	Port      string
	Sentences []string
}

func (c *talkerConfig) Endpoint() (string, string) { return "talker/serial", c.Port }

func (talker) Name() string { return "talker" }

func (talker) Compile(b *gwconfig.Block) gwconfig.DriverConfig {
	var blk talkerBlock
	b.Decode(&blk)
	if err := blk.Validate(); err != nil {
		b.Report(b.Doc(), b.BlockField(), err)
	}
	out := &talkerConfig{Port: blk.Port}
	for i := range b.Points() {
		var p talkerPoint
		if !b.DecodePoint(i, &p) {
			continue
		}
		if p.Sentence == "" {
			b.Errorf(b.Doc(), b.PointField(i)+".sentence", "missing")
			continue
		}
		idx, _, ok := b.Point(gwconfig.PointSpec{Doc: b.Doc(), Field: b.PointField(i), Point: &p.PointFile,
			Src: "talker:" + p.Sentence, Interval: b.Device().PollInterval, BirthInterval: b.Device().PollInterval})
		if ok && idx != len(out.Sentences) {
			b.Errorf(b.Doc(), b.PointField(i), "index %d, want %d", idx, len(out.Sentences))
		}
		out.Sentences = append(out.Sentences, p.Sentence)
	}
	if !b.OK() {
		return nil
	}
	return out
}

func (t talker) Check(c *gwconfig.Checks, devs []*gwconfig.Device) {
	var ids []string
	for _, d := range devs {
		ids = append(ids, d.ID+"@"+d.Field)
	}
	*t.checked = append(*t.checked, ids)
	if len(devs) > 1 {
		c.Errorf(devs[1].Field+".talker.port", "shares %s with %s", devs[1].Driver.(*talkerConfig).Port, devs[0].ID)
	}
}

func writeConfig(t *testing.T, devices string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gw.yaml")
	doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n" + devices
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestThirdDriverNeedsNoGwconfigChange: a driver handed to Load compiles
// its devices beside the built-in ones, its errors name file:line: field,
// its Check sees its valid devices only, and the missing-block message
// lists it.
func TestThirdDriverNeedsNoGwconfigChange(t *testing.T) {
	var checked [][]string
	drivers := []gwconfig.Driver{modbus.Driver{}, opcua.Driver{}, talker{&checked}}

	path := writeConfig(t, `  - id: gen-1
    class: generic
    talker: {port: /dev/ttyUSB0}
    points:
      - {signal: level, unit: m, sentence: DBT}
      - {signal: speed, unit: "m/s", sentence: VHW}
  - id: m-1
    class: motor
    modbus: {address: "127.0.0.1:1502"}
    points: [{signal: power, table: holding, address: 0, type: uint16, unit: kW}]
`)
	cfg, err := gwconfig.Load(path, drivers...)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	tc, ok := d.Driver.(*talkerConfig)
	if d.Protocol != "talker" || !ok || tc.Port != "/dev/ttyUSB0" || len(tc.Sentences) != 2 {
		t.Fatalf("device = %+v, driver %+v", d, d.Driver)
	}
	if d.Norm.Len() != 2 || d.Norm.Point(1).Src != "talker:VHW" || d.Norm.Point(1).Unit != "m/s" || d.Signals()[0].Signal != "level" {
		t.Errorf("norm = %+v signals = %+v", d.Norm, d.Signals())
	}
	if cfg.Devices[1].Protocol != "modbus" {
		t.Errorf("modbus device = %+v", cfg.Devices[1])
	}
	if len(checked) != 1 || strings.Join(checked[0], ",") != "gen-1@devices[0]" {
		t.Errorf("Check saw %v", checked)
	}

	checked = nil
	path = writeConfig(t, `  - id: gen-1
    class: generic
    talker: {port: COM3, baud: 4800}
    points:
      - {signal: level, unit: m}
  - id: gen-2
    class: generic
    talker: {port: /dev/ttyUSB0}
    points: [{signal: level, unit: m, sentence: DBT}]
  - id: gen-3
    class: generic
    talker: {port: /dev/ttyUSB0}
    points: [{signal: level, unit: m, sentence: DBT}]
  - id: gen-4
    class: generic
    nmea: {port: /dev/ttyUSB1}
  - id: gen-5
    class: generic
`)
	_, err = gwconfig.Load(path, drivers...)
	if err == nil {
		t.Fatal("Load accepted the config")
	}
	got := err.Error()
	for _, want := range []string{
		path + `:6: devices[0].talker.port: "COM3" is not a device path`,
		path + `:6: devices[0].talker.baud: unknown field`,
		path + `:8: devices[0].points[0].sentence: missing`,
		path + `:15: devices[2].talker.port: shares /dev/ttyUSB0 with gen-2`,
		path + `:19: devices[3].nmea: unknown field`,
		path + `:20: devices[4].modbus: missing: every device needs a protocol block (modbus, opcua or talker)`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if len(checked) != 1 || strings.Join(checked[0], ",") != "gen-2@devices[1],gen-3@devices[2]" {
		t.Errorf("Check saw %v, want the two valid talker devices", checked)
	}
}

// TestLoadWithoutADriver: a device whose protocol's driver is not in the
// list is an unknown block, not a crash.
func TestLoadWithoutADriver(t *testing.T) {
	path := writeConfig(t, `  - id: c-1
    class: cnc_machine
    opcua: {endpoint: "opc.tcp://127.0.0.1:4840"}
    points: [{signal: spindle_speed, node_id: "ns=2;s=S"}]
`)
	_, err := gwconfig.Load(path, modbus.Driver{})
	if err == nil || !strings.Contains(err.Error(), ":6: devices[0].opcua: unknown field") {
		t.Fatalf("err = %v", err)
	}
}

package gwconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus"
)

func TestLoadGood(t *testing.T) {
	cfg, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "gw-test-01" || cfg.Site != "plant1" || len(cfg.Devices) != 1 {
		t.Fatalf("cfg = %+v", cfg)
	}
	if cfg.Raw.HTTP.Listen != "" {
		t.Errorf("http.listen off -> %q", cfg.Raw.HTTP.Listen)
	}
	if want := filepath.Join("testdata", "data", "spool"); cfg.Raw.Spool.Dir != want {
		t.Errorf("spool dir = %q, want %q", cfg.Raw.Spool.Dir, want)
	}
	d := cfg.Devices[0]
	if got := strings.Join(d.Asset.Path, "/"); got != "acme/plant1/utilities/_/_" {
		t.Errorf("asset path = %s", got)
	}
	if len(d.Groups) != 2 || d.Groups[0].Interval != 500*time.Millisecond || d.Groups[1].Interval != 5*time.Second {
		t.Fatalf("groups = %+v", d.Groups)
	}
	fast := d.Groups[0]
	if len(fast.Points) != 5 {
		t.Fatalf("fast group has %d points", len(fast.Points))
	}
	byName := map[string]int{}
	for i, p := range fast.Norm {
		byName[p.Signal] = i
	}
	dp := fast.Norm[byName["discharge_pressure"]]
	if dp.Unit != "MPa" || dp.Conv.Apply(7) < 0.6999 || dp.Conv.Apply(7) > 0.7001 || dp.Src != "modbus:1:hr:0" {
		t.Errorf("discharge_pressure = %+v", dp)
	}
	dt := fast.Norm[byName["discharge_temp"]]
	if dt.Scale != 0.1 || dt.Unit != "Cel" {
		t.Errorf("discharge_temp = %+v", dt)
	}
	ls := fast.Norm[byName["load_state"]]
	if len(ls.States) != 3 || ls.Unit != "" {
		t.Errorf("load_state = %+v", ls)
	}
	ip := fast.Points[byName["input_power"]]
	if ip.Table != modbus.InputRegisters || ip.Type != modbus.Uint32 {
		t.Errorf("input_power point = %+v", ip)
	}
	slow := d.Groups[1]
	if slow.Norm[0].Signal != "dew_point" || slow.Norm[0].Deadband != 0.5 {
		t.Errorf("slow group = %+v", slow.Norm)
	}
	var dpInfo, dewInfo bool
	for _, s := range d.Signals {
		if s.Signal == "discharge_pressure" && s.IntervalMS == 500 && s.Unit == "MPa" {
			dpInfo = true
		}
		if s.Signal == "dew_point" && s.IntervalMS == DefaultHeartbeat.Milliseconds() {
			dewInfo = true
		}
	}
	if !dpInfo || !dewInfo {
		t.Errorf("birth signals = %+v", d.Signals)
	}
}

// TestLoadBad is the table of (config, expected error): each case patches
// the good config and must fail naming file, line, field and reason.
func TestLoadBad(t *testing.T) {
	good, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"unknown class", "class: air_compressor", "class: air_compresor",
			`bad.yaml:13: devices[0].class: unknown equipment class "air_compresor"`},
		{"unknown signal", "signal: dew_point", "signal: dewpoint",
			`bad.yaml:20: devices[0].points[0].signal: class air_compressor has no signal "dewpoint"`},
		{"unconvertible unit", "scale: 0.1, interval", "unit: bar, scale: 0.1, interval",
			`bad.yaml:20: devices[0].points[0].unit: cannot convert "bar" (pressure) to "Cel" (temperature)`},
		{"unknown unit", "scale: 0.1, interval", "unit: furlong, scale: 0.1, interval",
			`devices[0].points[0].unit: unknown unit "furlong"`},
		{"bad gateway id", "id: gw-test-01", "id: gw test",
			`bad.yaml:2: gateway.id: "gw test" must be 1-64 letters`},
		{"unknown field", "poll_interval: 500ms", "poll_intervall: 500ms",
			`bad.yaml:16: field poll_intervall not found`},
		{"negative heartbeat", "poll_interval: 500ms", "poll_interval: 500ms\n    heartbeat: -1s",
			`bad.yaml:17: devices[0].heartbeat: -1s is negative`},
		{"bad duration", "poll_interval: 500ms", "poll_interval: fast",
			`bad.yaml:16: cannot unmarshal !!str `},
		{"no uplink", "uplinks:\n  nats:\n    url: nats://127.0.0.1:4222\n", "",
			`uplinks: no uplink configured`},
		{"bad table", "table: holding, address: 20", "table: register, address: 20",
			`devices[0].points[0].table:`},
		{"bad type", "type: int16, scale: 0.1, interval", "type: int24, scale: 0.1, interval",
			`devices[0].points[0].type:`},
		{"address range", "address: 20", "address: 70000",
			`devices[0].points[0].address: 70000 out of range 0..65535`},
		{"duplicate signal", "signal: dew_point", "signal: discharge_temp",
			`devices[0].points[0].signal: discharge_temp already read by`},
		{"missing template", "templates/compressor.yaml", "templates/nope.yaml",
			`devices[0].template: cannot read template`},
		{"modbus unit id", "unit_id: 1", "unit_id: 300",
			`bad.yaml:18: cannot unmarshal !!int `},
		{"bad nameplate", "rated_fad: 12.5", "rated_fadd: 12.5",
			`devices[0].nameplate.rated_fadd: unknown nameplate rating for class air_compressor`},
		{"missing modbus", "    modbus: {transport: tcp, address: \"127.0.0.1:5020\", unit_id: 1}\n", "",
			`devices[0].modbus: missing`},
		{"bad transport", "transport: tcp", "transport: udp",
			`bad.yaml:18: devices[0].modbus.transport: "udp" is not tcp`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(good), tc.old) {
				t.Fatalf("test case does not apply: %q not in good.yaml", tc.old)
			}
			doc := strings.Replace(string(good), tc.old, tc.new, 1)
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS("testdata")); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "bad.yaml")
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load accepted the config; want error %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), dir) {
				t.Errorf("error does not start with the file name: %v", err)
			}
		})
	}
}

func TestLoadBadTemplateReportsTemplateFileAndLine(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata")); err != nil {
		t.Fatal(err)
	}
	tpl := filepath.Join(dir, "templates", "compressor.yaml")
	data, _ := os.ReadFile(tpl)
	data = []byte(strings.Replace(string(data), "type: uint32, order: CDAB", "type: uint32, order: XYZW", 1))
	if err := os.WriteFile(tpl, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(filepath.Join(dir, "good.yaml"))
	if err == nil || !strings.Contains(err.Error(), tpl+":6: points[2].order:") {
		t.Fatalf("got %v", err)
	}
}

func TestUplinkErrorsPointAtTheKey(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks:
  mqtt:
    url: ftp://x
devices:
  - id: a
    class: motor
    modbus: {address: "127.0.0.1:1"}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
`
	_, err := LoadBytes("gw.yaml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:4: uplinks.mqtt.url: ") {
		t.Fatalf("got %v", err)
	}
}

func TestSharedConnectionMismatch(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: a
    class: motor
    modbus: {transport: rtu_over_tcp, address: "127.0.0.1:1", unit_id: 1}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
  - id: b
    class: motor
    modbus: {transport: rtu_over_tcp, address: "127.0.0.1:1", unit_id: 1}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
  - id: c
    class: motor
    modbus: {transport: rtu_over_tcp, address: "127.0.0.1:1", unit_id: 3, timeout: 5s}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
`
	_, err := LoadBytes("gw.yaml", []byte(doc))
	for _, want := range []string{"gw.yaml:10: devices[1].modbus.unit_id: b and devices[0] both read unit 1",
		"gw.yaml:14: devices[2].modbus.timeout: c shares connection 127.0.0.1:1 with devices[0] but sets timeout 5s, not 1s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v\nwant %s", err, want)
		}
	}
}

func TestExplicitZeroMaxGapSurvivesDefaults(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: a
    class: motor
    modbus: {address: "127.0.0.1:1", max_gap: 0}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
  - id: b
    class: motor
    modbus: {address: "127.0.0.1:2"}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
`
	cfg, err := LoadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Devices[0].Modbus.MaxGap != 0 || cfg.Devices[1].Modbus.MaxGap != modbus.DefaultMaxGap {
		t.Errorf("max_gap = %d, %d", cfg.Devices[0].Modbus.MaxGap, cfg.Devices[1].Modbus.MaxGap)
	}
}

func TestOPCUADevice(t *testing.T) {
	doc := `gateway: {id: gw, site: s, data_dir: /var/lib/smelter}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: cnc-7
    class: cnc_machine
    opcua: {endpoint: "opc.tcp://10.0.0.7:4840", security_policy: Basic256Sha256, auth: {mode: username, username: op, password_env: UA_PW}}
    points:
      - {signal: spindle_speed, node_id: "ns=2;s=Spindle.Speed"}
      - {signal: spindle_load, node_id: "ns=2;s=Spindle.Load", unit: "%", mode: poll, interval: 5s}
      - {signal: feed_rate, node_id: "ns=2;i=1001", deadband_type: absolute, deadband: 5}
`
	cfg, err := LoadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if d.Protocol != ProtocolOPCUA || d.OPCUA.SecurityMode != "SignAndEncrypt" || d.OPCUA.DataDir != "/var/lib/smelter/opcua" {
		t.Errorf("device = %+v", d.OPCUA)
	}
	if len(d.UAPoints) != 3 || d.UAPoints[1].Mode != "poll" || d.UAPoints[1].PollInterval != 5*time.Second ||
		d.UAPoints[2].Deadband != 5 || d.UANorm[2].Deadband != 0 {
		t.Errorf("points = %+v norm = %+v", d.UAPoints, d.UANorm)
	}
	if d.UAUnitSet[0] || !d.UAUnitSet[1] || d.UANorm[0].Src != "opcua:ns=2;s=Spindle.Speed" {
		t.Errorf("unit set = %v, norm = %+v", d.UAUnitSet, d.UANorm[0])
	}
}

func TestOPCUADeviceErrors(t *testing.T) {
	for _, tc := range []struct{ points, opcua, want string }{
		{`[{signal: spindle_speed, node_id: "ns=2;x=1"}]`, `{endpoint: "opc.tcp://h:4840"}`, "gw.yaml:6: devices[0].points[0].node_id:"},
		{`[{signal: spindle_speed, node_id: "i=1", table: holding}]`, `{endpoint: "opc.tcp://h:4840"}`, "an OPC UA point has node_id"},
		{`[{signal: spindle_speed, node_id: "i=1"}]`, `{endpoint: "http://h"}`, "gw.yaml:5: devices[0].opcua.endpoint:"},
		{`[{signal: spindle_speed, node_id: "i=1", unit: bar}]`, `{endpoint: "opc.tcp://h:4840"}`, `cannot convert "bar"`},
		{`[{signal: spindle_speed, node_id: "i=1", mode: push}]`, `{endpoint: "opc.tcp://h:4840"}`, "devices[0].points[0].mode:"},
	} {
		doc := fmt.Sprintf("gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - id: cnc-7\n    opcua: %s\n    points: %s\n    class: cnc_machine\n", tc.opcua, tc.points)
		_, err := LoadBytes("gw.yaml", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.points, err, tc.want)
		}
	}
}

func TestReadyMaxLag(t *testing.T) {
	base := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - {id: a, class: motor, modbus: {address: \"127.0.0.1:1\"}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	cfg, err := LoadBytes("gw.yaml", []byte(base))
	if err != nil || cfg.Raw.HTTP.ReadyMaxLag != DefaultReadyMaxLag {
		t.Fatalf("default: %v %v", cfg.Raw.HTTP.ReadyMaxLag, err)
	}
	cfg, err = LoadBytes("gw.yaml", []byte("http: {ready_max_lag: 2m}\n"+base))
	if err != nil || cfg.Raw.HTTP.ReadyMaxLag != 2*time.Minute {
		t.Fatalf("2m: %v %v", cfg.Raw.HTTP.ReadyMaxLag, err)
	}
	_, err = LoadBytes("gw.yaml", []byte("http: {ready_max_lag: -1s}\n"+base))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:1: http.ready_max_lag: -1s is negative") {
		t.Fatalf("negative: %v", err)
	}
}

package gwconfig_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/procs"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
)

func TestLoadGood(t *testing.T) {
	cfg, err := load("testdata/good.yaml")
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
	md := d.Driver.(*modbus.DeviceConfig)
	if len(md.Groups) != 2 || md.Groups[0].Interval != 500*time.Millisecond || md.Groups[1].Interval != 5*time.Second {
		t.Fatalf("groups = %+v", md.Groups)
	}
	fast := md.Groups[0]
	if len(fast.Points) != 5 || len(fast.Index) != 5 || d.Norm.Len() != 6 || len(d.Signals()) != 6 {
		t.Fatalf("fast group has %d points, device %d", len(fast.Points), d.Norm.Len())
	}
	byName := map[string]int{} // signal -> index in the fast group
	for j, i := range fast.Index {
		byName[d.Norm.Point(i).Signal] = j
		if d.Signals()[i].Signal != d.Norm.Point(i).Signal {
			t.Errorf("signals and norm not aligned at %d", i)
		}
	}
	norm := func(sig string) normalize.Point { return d.Norm.Point(fast.Index[byName[sig]]) }
	dp := norm("discharge_pressure")
	if dp.Unit != "MPa" || dp.Conv.Apply(7) < 0.6999 || dp.Conv.Apply(7) > 0.7001 || dp.Src != "modbus:1:hr:0" {
		t.Errorf("discharge_pressure = %+v", dp)
	}
	if dp.IntervalMS != 500 {
		t.Errorf("discharge_pressure interval = %d ms", dp.IntervalMS)
	}
	dt := norm("discharge_temp")
	if dt.Scale != 0.1 || dt.Unit != "Cel" {
		t.Errorf("discharge_temp = %+v", dt)
	}
	ls := norm("load_state")
	if len(ls.States()) != 3 || ls.Unit != "" {
		t.Errorf("load_state = %+v", ls)
	}
	if dp.Labels != nil || dt.Labels != nil {
		t.Errorf("numeric points carry labels: %+v, %+v", dp.Labels, dt.Labels)
	}
	ip := fast.Points[byName["input_power"]]
	if ip.Table != modbus.InputRegisters || ip.Type != modbus.Uint32 {
		t.Errorf("input_power point = %+v", ip)
	}
	slow := md.Groups[1]
	if dew := d.Norm.Point(slow.Index[0]); dew.Signal != "dew_point" || dew.Deadband != 0.5 || dew.IntervalMS != 5000 {
		t.Errorf("slow group = %+v", dew)
	}
	var dpInfo, dewInfo bool
	for _, s := range d.Signals() {
		if s.Signal == "discharge_pressure" && s.IntervalMS == 500 && s.Unit == "MPa" {
			dpInfo = true
		}
		if s.Signal == "dew_point" && s.IntervalMS == gwconfig.DefaultHeartbeat.Milliseconds() {
			dewInfo = true
		}
	}
	if !dpInfo || !dewInfo {
		t.Errorf("birth signals = %+v", d.Signals())
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
			`bad.yaml:16: devices[0].poll_intervall: unknown field (did you mean poll_interval?)`},
		{"unknown point field", "interval: 5s, deadband", "intervall: 5s, deadband",
			`bad.yaml:20: devices[0].points[0].intervall: unknown field (did you mean interval?)`},
		{"unknown modbus field", "unit_id: 1", "unit: 1",
			`bad.yaml:18: devices[0].modbus.unit: unknown field (did you mean unit_id?)`},
		{"min above max", "deadband: 0.5}", "deadband: 0.5, min: 10, max: 5}",
			`bad.yaml:20: devices[0].points[0].min: 10 above max 5`},
		{"negative heartbeat", "poll_interval: 500ms", "poll_interval: 500ms\n    heartbeat: -1s",
			`bad.yaml:17: devices[0].heartbeat: -1s is negative`},
		{"bad duration", "poll_interval: 500ms", "poll_interval: fast",
			`bad.yaml:16: devices[0].poll_interval: want a duration such as 500ms, 30s or 15m, got "fast"`},
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
			`bad.yaml:18: devices[0].modbus.unit_id: want a whole number in 0..255, got "300"`},
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
			_, err := load(path)
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
	_, err := load(filepath.Join(dir, "good.yaml"))
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
	_, err := loadBytes("gw.yaml", []byte(doc))
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
	_, err := loadBytes("gw.yaml", []byte(doc))
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
	cfg, err := loadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Devices[0].Driver.(*modbus.DeviceConfig), cfg.Devices[1].Driver.(*modbus.DeviceConfig)
	if a.Config.MaxGap != 0 || b.Config.MaxGap != modbus.DefaultMaxGap {
		t.Errorf("max_gap = %d, %d", a.Config.MaxGap, b.Config.MaxGap)
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
	cfg, err := loadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	ud := d.Driver.(*opcua.DeviceConfig)
	if d.Protocol != "opcua" || ud.Config.SecurityMode != "SignAndEncrypt" || ud.Config.DataDir != "/var/lib/smelter/opcua" {
		t.Errorf("device = %+v", ud.Config)
	}
	if len(ud.Points) != 3 || ud.Points[1].Mode != opcua.ModePoll || ud.Points[1].PollInterval != 5*time.Second ||
		ud.Points[2].Deadband != 5 || d.Norm.Point(2).Deadband != 0 {
		t.Errorf("points = %+v norm = %+v", ud.Points, d.Norm)
	}
	if !ud.Points[0].UnitFromNode || ud.Points[1].UnitFromNode || d.Norm.Point(0).Src != "opcua:ns=2;s=Spindle.Speed" {
		t.Errorf("unit from node = %v %v, norm = %+v", ud.Points[0].UnitFromNode, ud.Points[1].UnitFromNode, d.Norm.Point(0))
	}
	// review F3: one warning per device for node ids by namespace index
	if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0].Error(), "gw.yaml:8: devices[0].points[0].node_id: 3 node ids of the device name their namespace by index") ||
		!strings.Contains(cfg.Warnings[0].Error(), "nsu=<namespace URI>") {
		t.Errorf("warnings = %v", cfg.Warnings)
	}
	// nsu= ids (and ns=0, the OPC UA namespace, fixed at 0) are not warned about
	cfg, err = loadBytes("gw.yaml", []byte(strings.NewReplacer(`"ns=2;s=Spindle.Load"`, `"nsu=urn:cnc;s=Spindle.Load"`,
		`"ns=2;s=Spindle.Speed"`, `"nsu=urn:cnc;s=Spindle.Speed"`, `"ns=2;i=1001"`, `"ns=0;i=2258"`).Replace(doc)))
	if err != nil || len(cfg.Warnings) != 0 {
		t.Errorf("nsu= device: %v, warnings %v", err, cfg.Warnings)
	}
}

func TestOPCUADeviceErrors(t *testing.T) {
	for _, tc := range []struct{ points, opcua, want string }{
		{`[{signal: spindle_speed, node_id: "ns=2;x=1"}]`, `{endpoint: "opc.tcp://h:4840"}`, "gw.yaml:6: devices[0].points[0].node_id:"},
		{`[{signal: spindle_speed, node_id: "i=1", table: holding}]`, `{endpoint: "opc.tcp://h:4840"}`, "gw.yaml:6: devices[0].points[0].table: unknown field"},
		{`[{signal: spindle_speed, node_id: "i=1"}]`, `{endpoint: "http://h"}`, "gw.yaml:5: devices[0].opcua.endpoint:"},
		{`[{signal: spindle_speed, node_id: "i=1", unit: bar}]`, `{endpoint: "opc.tcp://h:4840"}`, `cannot convert "bar"`},
		{`[{signal: spindle_speed, node_id: "i=1", mode: push}]`, `{endpoint: "opc.tcp://h:4840"}`, "devices[0].points[0].mode:"},
	} {
		doc := fmt.Sprintf("gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - id: cnc-7\n    opcua: %s\n    points: %s\n    class: cnc_machine\n", tc.opcua, tc.points)
		_, err := loadBytes("gw.yaml", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.points, err, tc.want)
		}
	}
}

func TestReadyMaxLag(t *testing.T) {
	base := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - {id: a, class: motor, modbus: {address: \"127.0.0.1:1\"}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	cfg, err := loadBytes("gw.yaml", []byte(base))
	if err != nil || cfg.Raw.HTTP.ReadyMaxLag != gwconfig.DefaultReadyMaxLag {
		t.Fatalf("default: %v %v", cfg.Raw.HTTP.ReadyMaxLag, err)
	}
	cfg, err = loadBytes("gw.yaml", []byte("http: {ready_max_lag: 2m}\n"+base))
	if err != nil || cfg.Raw.HTTP.ReadyMaxLag != 2*time.Minute {
		t.Fatalf("2m: %v %v", cfg.Raw.HTTP.ReadyMaxLag, err)
	}
	_, err = loadBytes("gw.yaml", []byte("http: {ready_max_lag: -1s}\n"+base))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:1: http.ready_max_lag: -1s is negative") {
		t.Fatalf("negative: %v", err)
	}
}

// TestDecodeErrorsDoNotHideTheOthers: a value that does not decode is
// reported with every validation error of the rest of the file, and no
// Go type is named.
func TestDecodeErrorsDoNotHideTheOthers(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: a
    class: motor
    poll_interval: fast
    modbus: {address: "127.0.0.1:1", unit_id: 300}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
  - id: b
    class: motr
    modbus: {address: "127.0.0.1:2"}
    points: [{signal: power, table: holding, address: x, type: float32, unit: kW}]
`
	_, err := loadBytes("gw.yaml", []byte(doc))
	want := []string{
		`gw.yaml:6: devices[0].poll_interval: want a duration such as 500ms, 30s or 15m, got "fast"`,
		`gw.yaml:7: devices[0].modbus.unit_id: want a whole number in 0..255, got "300"`,
		`gw.yaml:10: devices[1].class: unknown equipment class "motr"`,
		`gw.yaml:12: devices[1].points[0].address: want a whole number, got "x"`,
	}
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != len(want) {
		t.Errorf("%d errors, want %d (no follow-on errors about broken fields):\n%v", n, len(want), err)
	}
	for _, gotype := range []string{"uint8", "time.Duration", "gwconfig.", "modbus.Config", "not found in type", "cannot unmarshal"} {
		if strings.Contains(err.Error(), gotype) {
			t.Errorf("error names a Go type (%s): %v", gotype, err)
		}
	}
}

// TestUnitsAreNeverMissing: a numeric point of a class without catalog unit
// needs a unit in the configuration, unless the device gives it (OPC UA
// EngineeringUnits: then a warning says so and the point is NoUnit until it
// does).
func TestUnitsAreNeverMissing(t *testing.T) {
	base := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n"
	_, err := loadBytes("gw.yaml", []byte(base+`  - {id: g, class: generic, modbus: {address: "127.0.0.1:1"}, points: [{signal: level, table: holding, address: 0, type: uint16}]}`+"\n"))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:4: devices[0].points[0].unit: missing: class generic has no catalog unit for level") {
		t.Errorf("modbus without unit: %v", err)
	}
	cfg, err := loadBytes("gw.yaml", []byte(base+`  - {id: g, class: generic, opcua: {endpoint: "opc.tcp://h:4840"}, points: [{signal: level, node_id: "i=1"}, {signal: flow, node_id: "i=2", unit: "m3/h"}]}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if !d.Norm.Point(0).NoUnit || !d.Driver.(*opcua.DeviceConfig).Points[0].UnitFromNode || d.Norm.Point(1).NoUnit || d.Norm.Point(1).Unit == "" {
		t.Errorf("norm = %+v", d.Norm)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), "gw.yaml:4: devices[0].points[0].unit: not given and class generic has no catalog unit for level") ||
		!strings.Contains(cfg.Warnings[0].Error(), "0x80890000") {
		t.Errorf("warnings = %v", cfg.Warnings)
	}
}

func TestOverlappingModbusPointsWarn(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: m
    class: motor
    modbus: {address: "127.0.0.1:1"}
    points:
      - {signal: power, table: holding, address: 0, type: float32, unit: kW}
      - {signal: current_a, table: holding, address: 1, type: uint16, unit: A}
      - {signal: current_b, table: input, address: 1, type: uint16, unit: A}
      - {signal: current_c, table: holding, address: 2, type: uint16, unit: A}
`
	cfg, err := loadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Error() != "gw.yaml:9: devices[0].points[1].address: holding 1..1 overlaps devices[0].points[0] (holding 0..1)" {
		t.Errorf("warnings = %v", cfg.Warnings)
	}
}

// TestGeneratedFileRoundTrips: a File built from the config structs (as the
// demo does) marshals to YAML that loads back to the same devices.
func TestGeneratedFileRoundTrips(t *testing.T) {
	var f gwconfig.File
	f.Gateway.ID, f.Gateway.Site = "gw", "s"
	f.Uplinks.NATS = &natsjs.Config{URL: "nats://127.0.0.1:4222"}
	d := gwconfig.DeviceFile{ID: "m", Class: "motor", PollInterval: 250 * time.Millisecond}
	addr := 4
	if err := d.SetBlock("modbus", modbus.Config{Transport: modbus.TCP, Address: "127.0.0.1:1502", UnitID: 3}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddPoint(modbus.PointFile{PointFile: gwconfig.PointFile{Signal: "power", Unit: "W"}, Table: "holding", Address: &addr, Type: "float32"}); err != nil {
		t.Fatal(err)
	}
	u := gwconfig.DeviceFile{ID: "c", Class: "cnc_machine"}
	if err := u.SetBlock("opcua", opcua.Config{Endpoint: "opc.tcp://127.0.0.1:4840"}); err != nil {
		t.Fatal(err)
	}
	if err := u.AddPoint(opcua.PointFile{PointFile: gwconfig.PointFile{Signal: "spindle_speed"}, NodeID: "ns=2;s=S", SamplingInterval: time.Second}); err != nil {
		t.Fatal(err)
	}
	f.Devices = []gwconfig.DeviceFile{d, u}
	data, err := gwconfig.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadBytes("gen.yaml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	md := cfg.Devices[0].Driver.(*modbus.DeviceConfig)
	if md.Config.UnitID != 3 || md.Config.MaxGap != modbus.DefaultMaxGap || md.Groups[0].Interval != 250*time.Millisecond ||
		md.Groups[0].Points[0].Address != 4 || cfg.Devices[0].Norm.Point(0).Unit != "kW" {
		t.Errorf("modbus device = %+v %+v\n%s", md, cfg.Devices[0].Norm, data)
	}
	ud := cfg.Devices[1].Driver.(*opcua.DeviceConfig)
	if ud.Points[0].NodeID != "ns=2;s=S" || ud.Config.Endpoint != "opc.tcp://127.0.0.1:4840" {
		t.Errorf("opcua device = %+v\n%s", ud, data)
	}
	if strings.Contains(string(data), ": 0") || strings.Contains(string(data), `""`) || strings.Contains(string(data), "null") {
		t.Errorf("zero values written:\n%s", data)
	}
}

func TestEmptyFileIsOneError(t *testing.T) {
	_, err := loadBytes("gw.yaml", []byte("# nothing yet\n"))
	if err == nil || err.Error() != "gw.yaml: file is empty" {
		t.Errorf("got %v", err)
	}
}

// drivers are the protocol drivers gwconfig is tested with: the real ones.
func drivers() []gwconfig.Driver { return []gwconfig.Driver{modbus.Driver{}, opcua.Driver{}} }

func load(path string) (*gwconfig.Config, error) { return gwconfig.Load(path, drivers()...) }

func loadBytes(name string, data []byte) (*gwconfig.Config, error) {
	return gwconfig.LoadBytes(name, data, drivers()...)
}

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int64
		err   string
	}{
		{"", 0, ""},
		{"off", 0, ""},
		{"48MiB", 48 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"10MiB", 0, `gw.yaml:1: gateway.memory_limit: "10MiB" is below the smallest useful limit, 16MiB`},
		{"48MB", 0, `gw.yaml:1: gateway.memory_limit: "48MB": want a whole number of bytes`},
		{"-1", 0, `gw.yaml:1: gateway.memory_limit: "-1": want a whole number of bytes`},
	} {
		cfg, err := loadGatewayField("memory_limit", tc.value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want %q", tc.value, err, tc.err)
			}
			continue
		}
		if err != nil || cfg.MemoryLimit != tc.want {
			t.Errorf("%q: got %v, %v; want %d", tc.value, cfg.MemoryLimit, err, tc.want)
		}
	}
}

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int
		err   string
	}{
		{"", 0, ""},
		{"50", 50, ""},
		{"200", 200, ""},
		{"5", 0, `gw.yaml:1: gateway.gc_percent: 5 out of range 10-1000`},
		{"5000", 0, `gw.yaml:1: gateway.gc_percent: 5000 out of range 10-1000`},
		{"half", 0, `gateway.gc_percent`},
	} {
		cfg, err := loadGatewayField("gc_percent", tc.value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want %q", tc.value, err, tc.err)
			}
			continue
		}
		if err != nil || cfg.GCPercent != tc.want {
			t.Errorf("%q: got %v, %v; want %d", tc.value, cfg.GCPercent, err, tc.want)
		}
	}
}

func TestMaxProcs(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  procs.Setting
		err   string
	}{
		{"", procs.Auto, ""},
		{"auto", procs.Auto, ""},
		{"1", procs.Setting{N: 1}, ""},
		{"8", procs.Setting{N: 8}, ""},
		{"0", procs.Auto, `gw.yaml:1: gateway.max_procs: 0 out of range 1-1024 (or auto)`},
		{"two", procs.Auto, `gw.yaml:1: gateway.max_procs: "two": want auto or a whole number of 1-1024`},
	} {
		cfg, err := loadGatewayField("max_procs", tc.value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want %q", tc.value, err, tc.err)
			}
			continue
		}
		if err != nil || cfg.MaxProcs != tc.want {
			t.Errorf("%q: got %v, %v; want %v", tc.value, cfg.MaxProcs, err, tc.want)
		}
	}
}

// loadGatewayField loads gw.yaml: a one-device gateway whose gateway block
// has field: value (nothing when value is empty).
func loadGatewayField(field, value string) (*gwconfig.Config, error) {
	doc := "gateway: {id: gw, site: s"
	if value != "" {
		doc += ", " + field + ": " + value
	}
	doc += "}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - {id: a, class: motor, modbus: {address: \"127.0.0.1:1\"}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	return loadBytes("gw.yaml", []byte(doc))
}

// TestSlowModbusDeathWarns (review 1, F5, F7): a connection whose timeout
// makes a silent device's death judgement long (death is judged when its
// requests time out; a read waits one request of each other device on
// the connection) is warned about once, naming the worst case and what it
// costs the devices that still answer on the connection (each of their
// reads waits for one timed-out request of each silent unit: modbus
// TestTurnsHealthyBehindSilentUnits); a default timeout is not.
func TestSlowModbusDeathWarns(t *testing.T) {
	head := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n"
	dev := func(id, interval, modbus string) string {
		return "  - {id: " + id + ", class: motor, poll_interval: " + interval + ", modbus: {" + modbus + "}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	}
	var line strings.Builder // 25 units on one RTU line, silence 500ms: 1.5s a silent request
	for u := 1; u <= 25; u++ {
		line.WriteString(dev(fmt.Sprintf("u%d", u), "2s", fmt.Sprintf("transport: rtu, address: /dev/ttyS0, unit_id: %d, timeout: 1s, silence: 500ms", u)))
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"two units behind a gateway", head +
			dev("a", "1s", `address: "127.0.0.1:1", unit_id: 1, timeout: 25s`) +
			dev("b", "1s", `address: "127.0.0.1:1", unit_id: 2, timeout: 25s`) +
			dev("c", "1s", `address: "127.0.0.1:2", unit_id: 1`),
			"devices[0].modbus.timeout: a silent device on connection 127.0.0.1:1 is known dead (its points stale) only once its requests time out: " +
				"up to 50s after its last answer (2 device(s) x 25s, one request timing out; up to one poll interval more after it falls silent), not 3 x its poll interval (3s); " +
				"meanwhile, with 1 silent unit(s), healthy devices on this connection can go ~51s between two reads (instead of 1s): " +
				"a read may wait for one timed-out request of each silent unit (1 x 25s, + up to one of its own), at every poll at first, " +
				"then in bursts as their backoff grows (up to backoff_max 30s); their births announce this as their interval; lower timeout (or silence), or put fewer devices on the connection"},
		{"a busy RTU line", head + line.String(),
			"devices[0].modbus.timeout: a silent device on connection /dev/ttyS0 is known dead (its points stale) only once its requests time out: " +
				"up to 37.5s after its last answer (25 device(s) x 1.5s, one request timing out; up to one poll interval more after it falls silent), not 3 x its poll interval (6s); " +
				"meanwhile, with 24 silent unit(s), healthy devices on this connection can go ~39.5s between two reads (instead of 2s): " +
				"a read may wait for one timed-out request of each silent unit (24 x 1.5s, + up to one of its own), at every poll at first, " +
				"then for as long as they are silent (their backoff_max 30s is shorter); their births announce this as their interval; lower timeout (or silence), or put fewer devices on the connection"},
		// review 4 F2: durations rounded (the default silence at 19200 baud
		// made it 34.39999998s, 1.146666666s, 33.253333314s)
		{"rounded durations", head + func() string {
			var b strings.Builder // the reviewer's line: 30 units, timeout 500ms, default silence
			for u := 1; u <= 30; u++ {
				b.WriteString(dev(fmt.Sprintf("m%d", u), "1s", fmt.Sprintf("transport: rtu_over_tcp, address: \"127.0.0.1:15020\", unit_id: %d, timeout: 500ms", u)))
			}
			return b.String()
		}(),
			"devices[0].modbus.timeout: a silent device on connection 127.0.0.1:15020 is known dead (its points stale) only once its requests time out: " +
				"up to 34.4s after its last answer (30 device(s) x 1.147s, one request timing out; up to one poll interval more after it falls silent), not 3 x its poll interval (3s); " +
				"meanwhile, with 29 silent unit(s), healthy devices on this connection can go ~35.4s between two reads (instead of 1s): " +
				"a read may wait for one timed-out request of each silent unit (29 x 1.147s, + up to one of its own), at every poll at first, " +
				"then for as long as they are silent (their backoff_max 30s is shorter); their births announce this as their interval; lower timeout (or silence), or put fewer devices on the connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadBytes("gw.yaml", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Warnings) != 1 || !strings.HasSuffix(cfg.Warnings[0].Error(), tc.want) {
				t.Errorf("warnings = %v\nwant one ending %s", cfg.Warnings, tc.want)
			}
		})
	}
}

// TestSharedConnectionBirthInterval (review 4, F9): a device on a Modbus
// connection shared with others announces in its birth the longest time
// between two of its reports while it answers: its interval (or heartbeat)
// + one request of each other device timing out and one of its own
// (timeout, + silence on RTU/ASCII), rounded up to the millisecond; a device alone on its
// connection announces its interval.
func TestSharedConnectionBirthInterval(t *testing.T) {
	doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n" +
		// three units on one RTU-over-TCP line, timeout 500ms, default silence at 19200 baud:
		// 0.5 + 0.5 + 256 x 11 / 19200 = 1.146666... s a request
		"  - {id: m1, class: motor, poll_interval: 1s, heartbeat: 1m, modbus: {transport: rtu_over_tcp, address: \"127.0.0.1:15020\", unit_id: 1, timeout: 500ms}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}, {signal: current_a, table: holding, address: 2, type: float32, unit: A, deadband: 0.5}]}\n" +
		"  - {id: m2, class: motor, poll_interval: 2s, modbus: {transport: rtu_over_tcp, address: \"127.0.0.1:15020\", unit_id: 2, timeout: 500ms}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n" +
		"  - {id: m3, class: motor, poll_interval: 1s, modbus: {transport: rtu_over_tcp, address: \"127.0.0.1:15020\", unit_id: 3, timeout: 500ms}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n" +
		// two units behind one TCP gateway, timeout 1s: no silence
		"  - {id: g1, class: motor, poll_interval: 1s, modbus: {address: \"127.0.0.1:1\", unit_id: 1, timeout: 1s}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n" +
		"  - {id: g2, class: motor, poll_interval: 1s, modbus: {address: \"127.0.0.1:1\", unit_id: 2, timeout: 1s}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n" +
		// alone on its connection
		"  - {id: a, class: motor, poll_interval: 1s, modbus: {address: \"127.0.0.1:2\", timeout: 1s}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	cfg, err := loadBytes("gw.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	const wait2 = 3440 // (2 others + its own) x 1146.666... ms, rounded up
	want := map[string][]int64{
		"m1": {1000 + wait2, 60_000 + wait2}, // the deadband point: its heartbeat + the wait
		"m2": {2000 + wait2},
		"m3": {1000 + wait2},
		"g1": {3000}, // (1 other + its own) x 1s
		"g2": {3000},
		"a":  {1000},
	}
	for _, d := range cfg.Devices {
		var got []int64
		for i := range d.Norm.Len() {
			got = append(got, d.Signal(i).IntervalMS)
		}
		if !slices.Equal(got, want[d.ID]) {
			t.Errorf("%s: birth interval_ms %v, want %v", d.ID, got, want[d.ID])
		}
	}
}

// TestSerialOnModbusTCPIsAnError (review 14, F5): a serial block on a
// device with transport tcp (which has no serial line) is a config error
// naming the file, the line, the field and the reason, not settings
// ignored in silence; on rtu_over_tcp it is allowed (serial.baud sizes the
// default silence).
func TestSerialOnModbusTCPIsAnError(t *testing.T) {
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: a
    class: motor
    modbus: {address: "127.0.0.1:1", serial: {baud: 9600}}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
  - id: b
    class: motor
    modbus: {transport: rtu_over_tcp, unit_id: 1, address: "127.0.0.1:2", serial: {baud: 9600}}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
`
	_, err := loadBytes("gw.yaml", []byte(doc))
	if err == nil {
		t.Fatal("serial on a tcp device accepted")
	}
	got := err.Error()
	if want := "gw.yaml:6: devices[0].modbus.serial: transport tcp has no serial line"; !strings.Contains(got, want) {
		t.Errorf("error %q lacks %q", got, want)
	}
	if strings.Contains(got, "devices[1]") {
		t.Errorf("serial on rtu_over_tcp refused: %s", got)
	}
}

// TestModbusFramingMixAndTCPSilenceRefused (attack run LOW-2): two
// devices reading one host:port with different transports (the framing
// differs on one socket) are refused naming both, also when one names the
// endpoint by its IP address and the other by a host name resolving to
// it; devices on other ports, or sharing one transport, are not. silence
// on a tcp device is refused naming the transports that use it.
func TestModbusFramingMixAndTCPSilenceRefused(t *testing.T) {
	dev := func(id, modbus string) string {
		return "  - {id: " + id + ", class: motor, modbus: " + modbus + ", points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	}
	head := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n"
	doc := head +
		dev("a", `{address: "127.0.0.1:15031", unit_id: 1}`) +
		dev("b", `{transport: rtu_over_tcp, address: "127.0.0.1:15031", unit_id: 2}`) +
		dev("c", `{transport: rtu_over_tcp, address: "127.0.0.1:15032", unit_id: 1}`) +
		dev("d", `{transport: ascii_over_tcp, address: "127.0.0.1:15032", unit_id: 2}`) +
		dev("e", `{transport: rtu_over_tcp, address: "127.0.0.1:15033", unit_id: 1, silence: 200ms}`) +
		dev("f", `{transport: rtu_over_tcp, address: "127.0.0.1:15033", unit_id: 2}`) +
		dev("g", `{address: "127.0.0.1:15034", unit_id: 1, silence: 200ms}`) +
		dev("h", `{transport: rtu_over_tcp, address: "127.0.0.1:15033", unit_id: 3, silence: 1s}`) +
		dev("i", `{address: "127.0.0.1:15035", unit_id: 1, silence: 0s}`)
	_, err := loadBytes("gw.yaml", []byte(doc))
	if err == nil {
		t.Fatal("mixed transports on one endpoint and silence on tcp accepted")
	}
	got := err.Error()
	for _, want := range []string{
		"gw.yaml:5: devices[1].modbus.transport: b reads 127.0.0.1:15031 with transport rtu_over_tcp, but a (devices[0]) reads 127.0.0.1:15031 with transport tcp: one connection carries one framing",
		"gw.yaml:7: devices[3].modbus.transport: d reads 127.0.0.1:15032 with transport ascii_over_tcp, but c (devices[2])",
		"gw.yaml:10: devices[6].modbus.silence: transport tcp has no inter-frame silence (its transaction ids tie replies to requests): silence is for rtu, ascii, rtu_over_tcp and ascii_over_tcp",
		// two silences set on one connection: the second was dropped in silence (blackbox19)
		"gw.yaml:11: devices[7].modbus.silence: h shares connection 127.0.0.1:15033 with devices[4] but sets silence 1s, not 200ms: one connection keeps one silence",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	for _, ok := range []string{"devices[0].", "devices[2].", "devices[4].", "devices[5].", "devices[8]."} { // [8]: silence 0s (the default) on tcp
		if strings.Contains(got, ok) {
			t.Errorf("%s refused: %s", ok, got)
		}
	}
	if a, err := net.DefaultResolver.LookupNetIP(t.Context(), "ip", "localhost"); err != nil ||
		!slices.ContainsFunc(a, func(a netip.Addr) bool { return a.Unmap() == netip.MustParseAddr("127.0.0.1") }) {
		t.Skipf("localhost resolves to %v (%v), not 127.0.0.1", a, err)
	}
	doc = head + dev("a", `{address: "127.0.0.1:15035", unit_id: 1}`) +
		dev("b", `{transport: rtu_over_tcp, address: "localhost:15035", unit_id: 2}`)
	if _, err := loadBytes("gw.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "devices[1].modbus.transport: b reads localhost:15035 with transport rtu_over_tcp, but a (devices[0]) reads 127.0.0.1:15035 with transport tcp") {
		t.Errorf("one endpoint under two names and two transports: %v", err)
	}
}

// TestOneEndpointTwoNamesWarns (review mbconv F2): two devices naming one
// Modbus converter differently (its IP address, and a host name that
// resolves to it) share one connection in the gateway: warned, so the
// operator names it one way, and checked as one connection (both births
// announce the shared connection's gap; the same unit under both names is
// an error, as under one name).
func TestOneEndpointTwoNamesWarns(t *testing.T) {
	if a, err := net.DefaultResolver.LookupNetIP(t.Context(), "ip", "localhost"); err != nil ||
		!slices.ContainsFunc(a, func(a netip.Addr) bool { return a.Unmap() == netip.MustParseAddr("127.0.0.1") }) {
		t.Skipf("localhost resolves to %v (%v), not 127.0.0.1", a, err)
	}
	doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n" +
		"  - {id: g1, class: motor, poll_interval: 1s, modbus: {address: \"127.0.0.1:15021\", unit_id: 1, timeout: 1s}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n" +
		"  - {id: g2, class: motor, poll_interval: 1s, modbus: {address: \"localhost:15021\", unit_id: %d, timeout: 1s}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	cfg, err := loadBytes("gw.yaml", fmt.Appendf(nil, doc, 2))
	if err != nil {
		t.Fatal(err)
	}
	const want = "gw.yaml:5: devices[1].modbus.address: g2 names localhost:15021, which devices[0] names 127.0.0.1:15021: the same endpoint, one shared connection"
	if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0].Error(), want) {
		t.Errorf("warnings = %v\nwant one starting %s", cfg.Warnings, want)
	}
	for _, d := range cfg.Devices {
		if got := d.Signal(0).IntervalMS; got != 3000 { // (1 other + its own) x 1s
			t.Errorf("%s: birth interval_ms %d, want 3000 (a shared connection)", d.ID, got)
		}
	}
	_, err = loadBytes("gw.yaml", fmt.Appendf(nil, doc, 1))
	if err == nil || !strings.Contains(err.Error(), "g2 and devices[0] both read unit 1 at localhost:15021") {
		t.Errorf("the same unit under two names: %v", err)
	}
}

// TestLoopbackBothFamiliesWarns (review attack-mb M2): 127.0.0.1:p and
// [::1]:p may be one dual-stack converter: two connections, two masters to
// it, which the protection of replies (per connection) cannot see: warned.
// Another port, or one family under two spellings (joined), is not.
func TestLoopbackBothFamiliesWarns(t *testing.T) {
	dev := "  - {id: g%d, class: motor, poll_interval: 1s, modbus: {address: %q, unit_id: %d, timeout: 1s}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n"
	doc := func(addrs ...string) []byte {
		out := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n"
		for i, a := range addrs {
			out += fmt.Sprintf(dev, i+1, a, i+1)
		}
		return []byte(out)
	}
	cfg, err := loadBytes("gw.yaml", doc("127.0.0.1:15022", "[::1]:15022", "127.0.0.1:15022"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "gw.yaml:5: devices[1].modbus.address: g2 names [::1]:15022, devices[0] names 127.0.0.1:15022: IPv4 and IPv6 loopback at one port, two connections"
	if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0].Error(), want) {
		t.Errorf("warnings = %v\nwant one starting %s", cfg.Warnings, want)
	}
	for _, addrs := range [][]string{{"127.0.0.1:15022", "[::1]:15023"}, {"[::1]:15022", "[0:0::1]:15022"}} {
		cfg, err := loadBytes("gw.yaml", doc(addrs...))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range cfg.Warnings {
			if strings.Contains(w.Error(), "IPv4 and IPv6 loopback") {
				t.Errorf("%v: %v", addrs, w)
			}
		}
	}
}

package gwconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestListenAndHeartbeatChecks: http.listen is checked as net.Listen takes
// it (without binding); an explicit heartbeat: 0s is an error while an
// omitted one is the default (review finding 4).
func TestListenAndHeartbeatChecks(t *testing.T) {
	dev := `devices:
  - id: a
    class: motor
    %s
    modbus: {address: "127.0.0.1:502", unit_id: 1}
    points:
      - {signal: voltage_a, table: holding, address: 0, type: uint16, unit: V}
`
	for _, c := range []struct {
		listen, device, want string
	}{
		{"127.0.0.1:99999", "", `gw.yaml:2: http.listen: "127.0.0.1:99999" port 99999 is outside 0..65535`},
		{"localhost", "", `gw.yaml:2: http.listen: "localhost" is not host:port`},
		{":http", "", `gw.yaml:2: http.listen: ":http" port "http" is not a number`},
		{"127.0.0.1:9100", "heartbeat: 0s", "gw.yaml:7: devices[0].heartbeat: 0s is not allowed"},
		{"[::1]:0", "", ""},
		{"off", "heartbeat: 30s", ""},
	} {
		doc := "gateway: {id: gw, site: s}\nhttp: {listen: \"" + c.listen + "\"}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\n" +
			strings.Replace(dev, "%s", c.device, 1)
		cfg, err := loadBytes("gw.yaml", []byte(doc))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s %s: %v", c.listen, c.device, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s %s: got %v, want %q", c.listen, c.device, err, c.want)
		case c.want == "" && c.device == "" && cfg.Devices[0].Heartbeat != 10*time.Minute:
			t.Errorf("omitted heartbeat = %v", cfg.Devices[0].Heartbeat)
		}
	}
}

// TestCheckLocalPlacesErrors: Config.CheckLocal reports a missing password
// file at the line of its field, and nothing for a readable one.
func TestCheckLocalPlacesErrors(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	write := func(pwFile string) string {
		path := filepath.Join(dir, "gw.yaml")
		doc := "gateway: {id: gw, site: s}\nuplinks:\n  nats:\n    url: \"nats://127.0.0.1:4222\"\n    username: gw\n    password_file: " + pwFile + "\n" +
			"devices:\n  - {id: a, class: motor, modbus: {address: \"127.0.0.1:502\", unit_id: 1}, points: [{signal: voltage_a, table: holding, address: 0, type: uint16, unit: V}]}\n"
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cfg, err := load(write(pw))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckLocal(); err == nil || !strings.Contains(err.Error(), "gw.yaml:6: uplinks.nats.password_file: read "+pw+": no such file or directory") {
		t.Fatalf("CheckLocal = %v", err)
	}
	// Compact (what a running gateway keeps) drops the parse tree and the
	// raw device blocks: the error keeps its file and field, without a line.
	cfg.Compact()
	if cfg.Raw.Devices[0].Points != nil || cfg.Raw.Devices[0].Blocks != nil || cfg.Devices[0].Norm.Len() != 1 {
		t.Fatalf("after Compact: raw %+v, compiled %d points", cfg.Raw.Devices[0], cfg.Devices[0].Norm.Len())
	}
	if err := cfg.CheckLocal(); err == nil || !strings.Contains(err.Error(), "gw.yaml: uplinks.nats.password_file: read "+pw+": no such file or directory") {
		t.Fatalf("CheckLocal after Compact = %v", err)
	}
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckLocal(); err != nil {
		t.Fatalf("readable password file: %v", err)
	}
}

// A generic signal's name, its state labels and the device's nameplate
// keys are held to the schema's bounds (docs/schema.md, "Bounds"): a
// collector refuses readings and births that break them, so the gateway
// refuses the configuration first.
func TestSignalNameBounds(t *testing.T) {
	for _, c := range []struct{ point, nameplate, want string }{
		{`{signal: pt-101_temp, table: holding, address: 0, type: uint16, unit: Cel}`, "", ""},
		{`{signal: "` + strings.Repeat("s", 64) + `", table: holding, address: 0, type: uint16, unit: Cel}`, "", ""},
		{`{signal: "` + strings.Repeat("s", 65) + `", table: holding, address: 0, type: uint16, unit: Cel}`, "",
			`gw.yaml:7: devices[0].points[0].signal: "` + strings.Repeat("s", 65) + `" must be 1-64 letters, digits, '_' or '-'`},
		{`{signal: "temp 1", table: holding, address: 0, type: uint16, unit: Cel}`, "", `devices[0].points[0].signal: "temp 1" must be 1-64`},
		{`{signal: mode, table: holding, address: 0, type: uint16, enum: {0: "` + strings.Repeat("l", 65) + `"}}`, "", `devices[0].points[0].enum.0: "lll`},
		{`{signal: t, table: holding, address: 0, type: uint16, unit: Cel}`, `nameplate: {"rated power": 1}`, `devices[0].nameplate.rated power: a rating's name must be 1-64`},
	} {
		doc := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n  - id: a\n    class: generic\n    modbus: {address: \"127.0.0.1:502\", unit_id: 1}\n    points: [" + c.point + "]\n    " + c.nameplate + "\n"
		_, err := loadBytes("gw.yaml", []byte(doc))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.point, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s %s: got %v, want %q", c.point, c.nameplate, err, c.want)
		}
	}
}

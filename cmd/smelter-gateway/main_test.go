package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/memlimit"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/procs"
	"github.com/smelterio/smelter/internal/procs/procstest"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestConfigsValidate loads every gateway configuration in configs/: the
// example must pass, every *.bad.yaml must fail with exactly the errors in
// its .err file.
func TestConfigsValidate(t *testing.T) {
	// the example names secrets and TLS files of its production machine
	code, out, errs := runCmd("validate", "-offline", "../../configs/gateway.example.yaml")
	if code != 0 || !strings.Contains(out, "ok (gateway gw-jinan-01, 4 devices") {
		t.Fatalf("example: code %d\n%s%s", code, out, errs)
	}
	// one device with two sources: singular and plural counted right
	one := filepath.Join(t.TempDir(), "one.yaml")
	if err := os.WriteFile(one, []byte(`gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: ship-1
    class: ship
    sources:
      - modbus: {address: "127.0.0.1:5020"}
        points: [{signal: me_speed, table: holding, address: 0, type: int16}]
      - nmea: {address: "127.0.0.1:10110"}
        points: [{signal: sog, sentence: RMC.sog}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCmd("validate", "-offline", one); code != 0 || !strings.Contains(out, "1 device (2 sources), 2 points, 0 warnings)") {
		t.Errorf("one device: code %d\n%s%s", code, out, errs)
	}
	bads, _ := filepath.Glob("../../configs/gateway*.bad.yaml")
	if len(bads) == 0 {
		t.Fatal("no bad configs found")
	}
	for _, bad := range bads {
		want, err := os.ReadFile(strings.TrimSuffix(bad, ".yaml") + ".err")
		if err != nil {
			t.Fatal(err)
		}
		code, _, errs := runCmd("validate", bad)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", bad, code)
		}
		lines := strings.Split(strings.TrimSpace(string(want)), "\n")
		for _, line := range lines {
			if !strings.Contains(errs, line) {
				t.Errorf("%s: missing error %q in:\n%s", bad, line, errs)
			}
		}
		if count := fmt.Sprintf("\n%d error(s)\n", len(lines)); !strings.Contains(errs, count) {
			t.Errorf("%s: want exactly the %d errors of its .err file, got:\n%s", bad, len(lines), errs)
		}
	}
}

// TestValidatePrintsWarnings: overlapping Modbus points and a unit left to
// an OPC UA node do not stop the gateway, but validate names them.
func TestValidatePrintsWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.yaml")
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: m-1
    class: motor
    modbus: {address: "127.0.0.1:1502"}
    points:
      - {signal: power, table: holding, address: 0, type: float32, unit: kW}
      - {signal: frequency, table: holding, address: 1, type: uint16, unit: Hz}
  - id: g-1
    class: generic
    opcua: {endpoint: "opc.tcp://127.0.0.1:4840"}
    points: [{signal: level, node_id: "nsu=urn:plant;s=Level"}]
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("validate", path)
	if code != 0 || !strings.Contains(out, "2 warnings)") {
		t.Fatalf("code %d\n%s%s", code, out, errs)
	}
	for _, w := range []string{"warning: " + path + ":9: devices[0].points[1].address: holding 1..1 overlaps devices[0].points[0] (holding 0..1)",
		"warning: " + path + ":13: devices[1].points[0].unit: not given and class generic has no catalog unit for level"} {
		if !strings.Contains(errs, w) {
			t.Errorf("missing %q in:\n%s", w, errs)
		}
	}
}

// TestValidatePrintsWarningsWithErrors (review 14, F5): a file with errors
// still gets its warnings printed (here an overlap beside a serial block on
// a Modbus TCP device), with exit 1.
func TestValidatePrintsWarningsWithErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.yaml")
	doc := `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: m-1
    class: motor
    modbus: {address: "127.0.0.1:1502"}
    points:
      - {signal: power, table: holding, address: 0, type: float32, unit: kW}
      - {signal: frequency, table: holding, address: 1, type: uint16, unit: Hz}
  - id: m-2
    class: motor
    modbus: {address: "127.0.0.1:1503", serial: {baud: 9600}}
    points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("validate", path)
	if code != 1 {
		t.Fatalf("code %d, want 1\n%s%s", code, out, errs)
	}
	for _, w := range []string{path + ":12: devices[1].modbus.serial: transport tcp has no serial line",
		"warning: " + path + ":9: devices[0].points[1].address: holding 1..1 overlaps"} {
		if !strings.Contains(errs, w) {
			t.Errorf("missing %q in:\n%s", w, errs)
		}
	}
}

func TestRunRefusesInvalidConfig(t *testing.T) {
	code, _, errs := runCmd("run", "-config", "../../configs/gateway.bad.yaml")
	if code != 1 || !strings.Contains(errs, "not starting: the configuration is invalid") {
		t.Fatalf("code %d: %s", code, errs)
	}
}

func TestUsage(t *testing.T) {
	if code, _, errs := runCmd(); code != 2 || !strings.Contains(errs, "Commands:") {
		t.Errorf("no args: %d %s", code, errs)
	}
	if code, out, _ := runCmd("help"); code != 0 || !strings.Contains(out, "scan modbus ADDRESS") {
		t.Errorf("help: %d %s", code, out)
	}
	if code, _, errs := runCmd("frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown: %d %s", code, errs)
	}
	for _, sub := range [][]string{{"scan"}, {"browse"}, {"endpoints"}, {"validate"}} {
		if code, _, errs := runCmd(sub...); code != 2 || !strings.Contains(errs, "usage: smelter-gateway") {
			t.Errorf("%v without args: %d %s", sub, code, errs)
		}
	}
}

func TestScanModbus(t *testing.T) {
	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 7, 8, 9)
	srv := modbustest.StartServer(t, bank)
	code, out, errs := runCmd("scan", "modbus", srv.Addr, "-units", "1", "-count", "16", "-tables", "holding")
	if code != 0 || !strings.Contains(out, "unit 1 answers") || !strings.Contains(out, "holding") ||
		!strings.Contains(out, "[7 8 9") {
		t.Fatalf("code %d\nout:\n%s\nerr:\n%s", code, out, errs)
	}
	if code, _, errs := runCmd("scan", "modbus", srv.Addr, "-units", "9-3"); code != 2 || !strings.Contains(errs, "-units") {
		t.Errorf("bad units: %d %s", code, errs)
	}
}

// TestScanModbusRTU scans units 1-4 of an RTU bus behind a converter (and on
// a serial line) where only unit 3 answers.
func TestScanModbusRTU(t *testing.T) {
	for _, tr := range []string{"rtu_over_tcp", "rtu"} {
		t.Run(tr, func(t *testing.T) {
			bank := modbustest.NewBank()
			bank.SetRegisters(modbustest.HoldingRegisters, 0, 7, 8, 9)
			var h *modbustest.Hostile
			if tr == "rtu" {
				h = modbustest.StartHostileSerial(t, bank, 3, modbustest.RTU, nil)
			} else {
				h = modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
			}
			code, out, errs := runCmd("scan", "modbus", h.Addr, "-transport", tr, "-baud", "115200", "-units", "1-4",
				"-count", "8", "-tables", "holding", "-timeout", "100ms", "-silence", "50ms")
			if code != 0 || !strings.Contains(out, "unit 3 answers") || strings.Count(out, "answers") != 1 ||
				!strings.Contains(out, "[7 8 9") {
				t.Fatalf("code %d\nout:\n%s\nerr:\n%s", code, out, errs)
			}
		})
	}
}

// TestScanModbusAbsentUnits: a TCP gateway answering exception 11 for units
// that are not on its bus; they are absent.
func TestScanModbusAbsentUnits(t *testing.T) {
	bank := modbustest.NewBank()
	h := modbustest.StartHostileTCP(t, bank, 2, nil)
	h.SetAbsentReply(11)
	code, out, errs := runCmd("scan", "modbus", h.Addr, "-units", "1-3", "-count", "4", "-tables", "holding")
	if code != 0 || !strings.Contains(out, "unit 2 answers") || strings.Count(out, "answers") != 1 {
		t.Fatalf("code %d\nout:\n%s\nerr:\n%s", code, out, errs)
	}
}

func TestScanModbusHelpAndRefused(t *testing.T) {
	for _, args := range [][]string{{"scan", "-h"}, {"scan", "modbus", "-h"}, {"scan", "modbus", "127.0.0.1:502", "--help"}} {
		if code, out, errs := runCmd(args...); code != 0 || !strings.Contains(out, "usage: smelter-gateway scan modbus") ||
			!strings.Contains(out, "-transport") {
			t.Errorf("%v: code %d\nout:\n%s\nerr:\n%s", args, code, out, errs)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	code, out, errs := runCmd("scan", "modbus", addr, "-units", "1-3")
	if code != 1 || !strings.Contains(errs, "connection refused") || strings.Contains(out, "answers") {
		t.Fatalf("refused: code %d\nout:\n%s\nerr:\n%s", code, out, errs)
	}
}

// TestScanFlags: -count 0 is an error, not the default; -parity takes
// lower case; serial settings on a socket transport are refused rather than
// ignored; bad serial settings are named by their flag (review finding 11).
func TestScanFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"127.0.0.1:502", "-count", "0"}, 2, "-count: 0 out of range 1..65536"},
		{[]string{"127.0.0.1:502", "-start", "65000", "-count", "1000"}, 2, "-count: 1000 out of range 1..536"},
		{[]string{"127.0.0.1:502", "-baud", "9600"}, 2, "-baud: serial line settings apply to -transport rtu and ascii only"},
		{[]string{"127.0.0.1:502", "-silence", "50ms"}, 2, "-silence: transport tcp has no inter-frame silence"},
		{[]string{"127.0.0.1:502", "-transport", "rtu_over_tcp", "-parity", "N"}, 2, "-parity: serial line settings apply"},
		{[]string{"/nonexistent/tty", "-transport", "rtu", "-baud", "-5", "-parity", "X"}, 2, "-baud: -5 is not a standard rate"},
		{[]string{"/nonexistent/tty", "-transport", "rtu", "-baud", "-5", "-parity", "X"}, 2, `-parity: "X" must be N, E or O`},
		// lower case parity passes the checks; the scan then fails on the missing port
		{[]string{"/nonexistent/tty", "-transport", "rtu", "-parity", "n", "-units", "1"}, 1, "/nonexistent/tty"},
		// flags before the address (review 14 F5): taken as flags, not "-transport" as the address
		{[]string{"-transport", "rtu", "-units", "1", "/nonexistent/tty"}, 1, "/nonexistent/tty"},
		{[]string{"-count", "0", "127.0.0.1:502"}, 2, "-count: 0 out of range 1..65536"},
		{[]string{"127.0.0.1:502", "-units", "1", "127.0.0.1:503"}, 2, "scan modbus takes one ADDRESS, got 2"},
		{[]string{"-units", "1"}, 2, "scan modbus takes one ADDRESS, got 0"},
	} {
		code, _, errs := runCmd(append([]string{"scan", "modbus"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code %d, want %d with %q:\n%s", c.args, code, c.code, c.want, errs)
		}
	}
}

type oneValue struct{}

func (oneValue) Class() string     { return "motor" }
func (oneValue) Signals() []string { return []string{"winding_temp", "power"} }
func (oneValue) Values() []float64 { return []float64{81.5, 42} }

func TestBrowseAndEndpoints(t *testing.T) {
	front, err := opcuafront.New(opcuafront.Config{}, []opcuafront.Asset{{ID: "m-1", Source: oneValue{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := front.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = front.Stop() })
	front.Refresh(time.Now())

	code, out, errs := runCmd("endpoints", front.Endpoint())
	if code != 0 || !strings.Contains(out, "None") {
		t.Fatalf("endpoints: %d\n%s\n%s", code, out, errs)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "m1.yaml")
	code, out, errs = runCmd("browse", front.Endpoint(), "-data", dir, "-write-config", cfgPath)
	if code != 0 || !strings.Contains(out, front.NodeID("m-1", "winding_temp")) || !strings.Contains(out, "81.5") {
		t.Fatalf("browse: %d\n%s\n%s", code, out, errs)
	}
	written, err := os.ReadFile(cfgPath)
	// node ids by namespace URI (review F3), the form validate does not warn about
	if err != nil || !strings.Contains(string(written), `node_id: "nsu=`+front.NamespaceURI()+`;s=m-1.`) || !strings.Contains(string(written), "opcua:") {
		t.Fatalf("written config: %v\n%s", err, written)
	}
}

// TestRunReloadsOnSIGHUP: SIGHUP with a valid new file restarts the gateway
// with it (the spool carries over); with an invalid file it is refused and
// the running configuration stays; SIGTERM stops cleanly.
func TestRunReloadsOnSIGHUP(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "") // the configuration's target applies
	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 100)
	srv := modbustest.StartServer(t, bank)
	dir := t.TempDir()
	nb, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nb.Shutdown)
	httpAddr := freeAddr(t)
	device := func(id string, unit int) string {
		return fmt.Sprintf("  - {id: %s, class: motor, poll_interval: 100ms, modbus: {address: %q, unit_id: %d}, points: [{signal: power, table: holding, address: 0, type: uint16, unit: kW}]}\n", id, srv.Addr, unit)
	}
	header := fmt.Sprintf("gateway: {id: gw-hup, site: s, data_dir: ./data}\nhttp: {listen: %q}\nlog: {format: text}\nuplinks: {nats: {url: %q}}\ndevices:\n", httpAddr, nb.URL())
	path := filepath.Join(dir, "gateway.yaml")
	write := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(header + device("m-1", 1))

	var stderr logtest.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", stderr.String())
		}
	})
	done := make(chan int, 1)
	go func() { done <- run([]string{"run", "-config", path}, io.Discard, &stderr) }()
	devices := func() int {
		resp, err := http.Get("http://" + httpAddr + "/status")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var st struct {
			Devices []struct{ ID string } `json:"devices"`
			Ready   bool                  `json:"ready"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || !st.Ready {
			return -1
		}
		return len(st.Devices)
	}
	wait.For(t, 20*time.Second, "the gateway running with one device", func() bool { return devices() == 1 })
	batches := func() float64 { return scrapeMetric(t, httpAddr, "smelter_gateway_batches_total") }
	wait.For(t, 20*time.Second, "thirty batches", func() bool { return batches() >= 30 })
	before := batches()

	write(header + device("m-1", 1) + device("m-2", 2))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the reloaded gateway with two devices", func() bool { return devices() == 2 })
	if after := batches(); after < before {
		t.Errorf("smelter_gateway_batches_total %v after the reload, %v before: the counters restarted", after, before)
	}

	// Refused, the running gateway untouched: a file that does not load;
	// one that loads but cannot run (a missing password file, a missing
	// TLS CA file, an http.listen address taken).
	var lc net.ListenConfig
	taken, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	two := device("m-1", 1) + device("m-2", 2)
	bad := []string{
		header + "  - {id: m-1, class: motr}\n",
		strings.Replace(header, "uplinks: {nats: {url: "+fmt.Sprintf("%q", nb.URL())+"}}",
			fmt.Sprintf("uplinks: {nats: {url: %q, username: smelter, password_file: %q}}", nb.URL(), filepath.Join(dir, "missing.pw")), 1) + two,
		strings.Replace(header, "uplinks: {nats: {url: "+fmt.Sprintf("%q", nb.URL())+"}}",
			fmt.Sprintf("uplinks: {nats: {url: %q, tls: {ca_file: %q}}}", strings.Replace(nb.URL(), "nats://", "tls://", 1), filepath.Join(dir, "missing-ca.pem")), 1) + two,
		strings.Replace(header, fmt.Sprintf("listen: %q", httpAddr), fmt.Sprintf("listen: %q", taken.Addr().String()), 1) + two,
	}
	for i, text := range bad {
		if text == header+two {
			t.Fatalf("bad config %d is not changed", i)
		}
		write(text)
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 10*time.Second, fmt.Sprintf("reload %d refused", i), func() bool {
			return strings.Count(stderr.String(), "reload refused") == i+1
		})
		if n := devices(); n != 2 {
			t.Fatalf("after refused reload %d the gateway runs %d devices, want the 2 it had\n%s", i, n, stderr.String())
		}
		// loading ran at memlimit.LoadGCPercent; the refusal put the
		// running configuration's target back
		if got := gcPercent(); got != memlimit.DefaultGCPercent {
			t.Fatalf("GC percent %d after refused reload %d, want the running %d", got, i, memlimit.DefaultGCPercent)
		}
	}
	for _, want := range []string{"missing.pw", "missing-ca.pem", "address already in use"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("no refusal naming %q:\n%s", want, stderr.String())
		}
	}

	// A reload that removes m-1: none of its series is left on /metrics
	// (the gateway's own counters outlive reloads), m-2's failure counts
	// are there at 0.
	write(header + device("m-2", 2))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the reloaded gateway with m-2 only", func() bool { return devices() == 1 })
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if strings.Contains(l, `"m-1"`) {
			t.Errorf("%s: a series of the device the reload removed", l)
		}
	}
	if !strings.Contains(string(body), `smelter_gateway_device_stalls_total{device="m-2"} 0`) {
		t.Errorf("no smelter_gateway_device_stalls_total{device=\"m-2\"} 0 after the reload")
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
}

// scrapeMetric returns the sum of a metric's samples on /metrics (-1 when
// the page cannot be read).
func scrapeMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// TestSecondInstanceFailsBeforeConnecting: a copy started with the same
// gateway id and http.listen (another data_dir) fails on the taken address
// before it connects any uplink, so the running gateway keeps its MQTT
// session (same client id); a copy on the same data_dir fails on its lock,
// also before connecting.
func TestSecondInstanceFailsBeforeConnecting(t *testing.T) {
	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 100)
	srv := modbustest.StartServer(t, bank)
	dir := t.TempDir()
	mb, err := brokers.StartMQTT(brokers.MQTTOptions{KeepSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mb.Close() })
	httpAddr := freeAddr(t)
	conf := func(name, dataDir, listen string) string {
		text := fmt.Sprintf("gateway: {id: gw-twin, site: s, data_dir: %q}\nhttp: {listen: %q}\nlog: {format: text, level: debug}\nuplinks: {mqtt: {url: %q}}\ndevices:\n"+
			"  - {id: m-1, class: motor, poll_interval: 100ms, modbus: {address: %q, unit_id: 1}, points: [{signal: power, table: holding, address: 0, type: uint16, unit: kW}]}\n",
			dataDir, listen, mb.URL(), srv.Addr)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var first logtest.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first gateway's log:\n%s", first.String())
		}
	})
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"run", "-config", conf("a.yaml", filepath.Join(dir, "a"), httpAddr)}, io.Discard, &first)
	}()
	wait.For(t, 20*time.Second, "the first gateway ready", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	for _, c := range []struct{ name, path, want string }{
		{"same http.listen", conf("b.yaml", filepath.Join(dir, "b"), httpAddr), "address already in use"},
		{"same data_dir", conf("c.yaml", filepath.Join(dir, "a"), "127.0.0.1:0"), "lock"},
	} {
		code, _, errs := runCmd("run", "-config", c.path)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%s: exit %d, want 1 naming %q:\n%s", c.name, code, c.want, errs)
		}
		if strings.Contains(errs, "mqtt") {
			t.Errorf("%s: the copy touched MQTT before failing:\n%s", c.name, errs)
		}
	}
	if strings.Contains(first.String(), "connection lost") {
		t.Errorf("the first gateway lost its MQTT session to the copy:\n%s", first.String())
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("first gateway exit code %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
}

// freeAddr returns a loopback address nothing listens on (bound and
// released).
func freeAddr(t *testing.T) string {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestMain serves the OPC UA session workers the gateway starts by
// re-executing this test binary (isolation process): through run and its
// hidden opcua-worker command, the path smelter-gateway takes.
func TestMain(m *testing.M) {
	if os.Getenv(opcua.WorkerEnv) == "1" {
		os.Exit(run([]string{opcua.WorkerCommand}, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestOPCUAWorkerCommandIsHidden: the worker's command is not in the help,
// and started by hand (no configuration on stdin) it says what it is and
// exits 2.
func TestOPCUAWorkerCommandIsHidden(t *testing.T) {
	if _, out, _ := runCmd("help"); strings.Contains(out, opcua.WorkerCommand) {
		t.Errorf("help lists %s:\n%s", opcua.WorkerCommand, out)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), opcua.WorkerEnv+"=1")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "started by the gateway") {
		t.Fatalf("worker without configuration: %v\n%s", err, out)
	}
}

// TestRunOPCUADeviceThroughWorker runs the gateway with an OPC UA device
// (isolation process by default): its session runs in a worker started
// through the hidden command, whose logs come back through the gateway's
// log with the device and the worker's pid, and whose values reach
// /status.
func TestRunOPCUADeviceThroughWorker(t *testing.T) {
	front, err := opcuafront.New(opcuafront.Config{}, []opcuafront.Asset{{ID: "m-1", Source: oneValue{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = front.Stop() })
	dir := t.TempDir()
	nb, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nb.Shutdown)
	path := filepath.Join(dir, "gateway.yaml")
	conf := fmt.Sprintf("gateway: {id: gw-ua, site: s, data_dir: ./data}\nhttp: {listen: \"127.0.0.1:0\"}\nlog: {format: text, level: info}\nuplinks: {nats: {url: %q}}\ndevices:\n"+
		"  - {id: ua-1, class: motor, opcua: {endpoint: %q}, points: [{signal: power, node_id: %q, unit: kW}]}\n",
		nb.URL(), front.Endpoint(), front.NodeID("m-1", oneValue{}.Signals()[0]))
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"run", "-config", path}, io.Discard, &stderr) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", stderr.String())
		}
	})
	wait.For(t, 30*time.Second, "the worker's session up, logged through the gateway", func() bool {
		s := stderr.String()
		return strings.Contains(s, "opc ua session up") && strings.Contains(s, "worker_pid=") && strings.Contains(s, "device=ua-1")
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
	if strings.Contains(stderr.String(), "session worker died") {
		t.Fatalf("a worker died:\n%s", stderr.String())
	}
}

// TestBuildAppliesMemoryLimit: building a generation sets the runtime's
// memory limit from gateway.memory_limit and logs it; a configuration
// without one removes it; the GOMEMLIMIT variable wins over the file.
func TestBuildAppliesMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOMEMLIMIT", "")
	dir := t.TempDir()
	load := func(limit string) *gwconfig.Config { return memoryConfig(t, dir, "gw-mem", ", memory_limit: "+limit) }
	mx := gateway.NewMetrics(prometheus.NewRegistry())
	var logs bytes.Buffer
	if _, err := build(context.Background(), load("48MiB"), &logs, mx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 48<<20 {
		t.Fatalf("limit %d after a 48MiB configuration", got)
	}
	if !strings.Contains(logs.String(), `"msg":"memory limit","gateway":"gw-mem","limit":"48MiB","from":"gateway.memory_limit"`) {
		t.Fatalf("log: %s", logs.String())
	}
	if _, err := build(context.Background(), load("off"), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit %d after a configuration without one", got)
	}
	t.Setenv("GOMEMLIMIT", "40MiB")
	debug.SetMemoryLimit(40 << 20) // what the runtime did at start
	if _, err := build(context.Background(), load("48MiB"), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 40<<20 {
		t.Fatalf("limit %d: GOMEMLIMIT should win", got)
	}
}

// TestBuildAppliesGCPercent: building a generation sets the collector's
// target from gateway.gc_percent (logged), the default 50 without one, and
// the GOGC variable wins over the file.
func TestBuildAppliesGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	cur := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	dir := t.TempDir()
	load := func(extra string) *gwconfig.Config { return memoryConfig(t, dir, "gw-gc", extra) }
	var logs bytes.Buffer
	if _, err := build(context.Background(), load(", gc_percent: 200"), &logs, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := cur(); got != 200 {
		t.Fatalf("GC percent %d after gc_percent: 200", got)
	}
	if !strings.Contains(logs.String(), `"msg":"gc percent","gateway":"gw-gc","percent":200,"from":"gateway.gc_percent"`) {
		t.Fatalf("log: %s", logs.String())
	}
	// a configuration that cannot run (its http.listen is taken) changes
	// nothing: a refused reload leaves the running settings
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	refused := load(", gc_percent: 300")
	refused.Raw.HTTP.Listen = taken.Addr().String()
	if _, err := build(context.Background(), refused, io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err == nil {
		t.Fatal("a build whose http.listen is taken succeeded")
	}
	if got := cur(); got != 200 {
		t.Fatalf("GC percent %d after a refused build, want the running 200", got)
	}
	if _, err := build(context.Background(), load(""), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := cur(); got != 50 {
		t.Fatalf("GC percent %d without gc_percent, want the default 50", got)
	}
	t.Setenv("GOGC", "80")
	debug.SetGCPercent(80) // what the runtime did at start
	if _, err := build(context.Background(), load(", gc_percent: 200"), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := cur(); got != 80 {
		t.Fatalf("GC percent %d: GOGC should win", got)
	}
}

// TestBuildSamplesHeapOnlyWithPProf: a generation samples allocations for
// the heap profile only when http.pprof can serve it; GODEBUG's
// memprofilerate wins.
func TestBuildSamplesHeapOnlyWithPProf(t *testing.T) {
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
	t.Setenv("GODEBUG", "")
	dir := t.TempDir()
	if _, err := build(context.Background(), memoryConfig(t, dir, "gw-prof", ""), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if runtime.MemProfileRate != 0 {
		t.Fatalf("MemProfileRate %d without http.pprof, want 0", runtime.MemProfileRate)
	}
	withPProf := memoryConfig(t, dir, "gw-prof", "")
	withPProf.Raw.HTTP.Listen, withPProf.Raw.HTTP.PProf = "127.0.0.1:0", true
	gen, err := build(context.Background(), withPProf, io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = gen.front.stop() }()
	if runtime.MemProfileRate != memlimit.HeapProfileRate {
		t.Fatalf("MemProfileRate %d with http.pprof, want %d", runtime.MemProfileRate, memlimit.HeapProfileRate)
	}
	t.Setenv("GODEBUG", "memprofilerate=4096")
	runtime.MemProfileRate = 4096 // what the runtime did at start
	var logs bytes.Buffer
	if _, err := build(context.Background(), memoryConfig(t, dir, "gw-prof", ""), &logs, gateway.NewMetrics(prometheus.NewRegistry()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if runtime.MemProfileRate != 4096 {
		t.Fatalf("MemProfileRate %d: GODEBUG memprofilerate=4096 should win", runtime.MemProfileRate)
	}
	if !strings.Contains(logs.String(), `"msg":"heap profile rate","gateway":"gw-prof","bytes":4096,"from":"env GODEBUG memprofilerate"`) {
		t.Fatalf("log: %s", logs.String())
	}
}

// TestBuildAppliesMaxProcs: build puts gateway.max_procs in force (a fixed
// value logged), auto starts on one P, a refused build changes nothing,
// and GOMAXPROCS in the environment wins.
func TestBuildAppliesMaxProcs(t *testing.T) {
	def := procstest.Default(t)
	dir := t.TempDir()
	load := func(extra string) *gwconfig.Config { return memoryConfig(t, dir, "gw-procs", extra) }
	rt := &runtimeSettings{procs: procs.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), "smelter_gateway")}
	var logs bytes.Buffer
	if _, err := build(context.Background(), load(", max_procs: 3"), &logs, gateway.NewMetrics(prometheus.NewRegistry()), nil, rt); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("GOMAXPROCS %d after max_procs: 3", got)
	}
	if !strings.Contains(logs.String(), `"msg":"max procs","gateway":"gw-procs","procs":3,"from":"gateway.max_procs"`) {
		t.Fatalf("log: %s", logs.String())
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	refused := load(", max_procs: 5")
	refused.Raw.HTTP.Listen = taken.Addr().String()
	if _, err := build(context.Background(), refused, io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, rt); err == nil {
		t.Fatal("a build whose http.listen is taken succeeded")
	}
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("GOMAXPROCS %d after a refused build, want the running 3", got)
	}
	if _, err := build(context.Background(), load(""), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, rt); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS %d with max_procs auto (default %d), want 1 at the start", got, def)
	}
	t.Setenv("GOMAXPROCS", "2")
	runtime.GOMAXPROCS(2) // what the runtime did at start
	rt = &runtimeSettings{procs: procs.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), "smelter_gateway")}
	if _, err := build(context.Background(), load(", max_procs: 1"), io.Discard, gateway.NewMetrics(prometheus.NewRegistry()), nil, rt); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("GOMAXPROCS %d: the environment's 2 should win", got)
	}
}

// memoryConfig loads a one-device gateway configuration with id and the
// gateway block's extra fields (", memory_limit: 48MiB"), written in dir.
func memoryConfig(t *testing.T, dir, id, extra string) *gwconfig.Config {
	t.Helper()
	text := fmt.Sprintf("gateway: {id: %s, site: s, data_dir: %q%s}\nhttp: {listen: \"off\"}\nlog: {format: json}\nuplinks: {mqtt: {url: \"tcp://127.0.0.1:1\"}}\ndevices:\n"+
		"  - {id: m-1, class: motor, modbus: {address: \"127.0.0.1:1\", unit_id: 1}, points: [{signal: power, table: holding, address: 0, type: uint16, unit: kW}]}\n",
		id, dir, extra)
	path := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, gateway.Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// gcPercent is the collector's target in force, read without setting it
// (the gateway under test runs beside).
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

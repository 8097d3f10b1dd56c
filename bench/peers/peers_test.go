package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/telemetry"
)

func TestSmelterPointsCountsEveryReading(t *testing.T) {
	b := &telemetry.Batch{Gateway: "gw-peers", Seq: 7, TSGW: 1763812345123,
		Asset: telemetry.Asset{ID: "dev-001", Class: "generic", Path: []string{"e", "bench", "_", "_", "_"}}}
	for i := range 37 {
		r := telemetry.Reading{Signal: signalName(i), Unit: "kW", Quality: telemetry.QualityGood, Value: float64(i), TS: 1, Src: "modbus:1:hr:0"}
		if i%5 == 0 {
			r = telemetry.Reading{Signal: signalName(i), Quality: telemetry.QualityBad, Status: 2, TS: 1, Src: `opcua:ns=1;s="signal":x`}
		}
		b.Readings = append(b.Readings, r)
	}
	data := b.AppendJSON(nil)
	back, err := telemetry.DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := smelterPoints(data); got != len(back.Readings) || got != 37 {
		t.Fatalf("smelterPoints = %d, decoded %d readings, want 37\n%s", got, len(back.Readings), data)
	}
}

func TestTelegrafPointsCountsFieldsNotQuality(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want int
	}{
		{`{"fields":{"s00000":100.1,"s00001":100.2,"s00002":0},"name":"dev-000","tags":{"slave_id":"1"},"timestamp":1}`, 3},
		{`{"fields":{"s00017":3,"Quality":"OK (0x0)"},"name":"ua-00","tags":{"id":"ns=1;s=v00017"},"timestamp":1}`, 1},
		{`{"fields":{"a":"x,\"}y","b":[1,2,{"c":3}],"c":{}},"name":"n","tags":{"fields":"x"},"timestamp":1}`, 3},
		{`{"metrics":[{"fields":{"a":1,"b":2},"name":"n","tags":{},"timestamp":1},{"fields":{"a":1,"Quality":"OK"},"name":"n","tags":{},"timestamp":1}]}`, 3},
		{`{"fields":{},"name":"n","tags":{},"timestamp":1}`, 0},
		{`not json`, 0},
	} {
		if got := telegrafPoints([]byte(tc.msg)); got != tc.want {
			t.Errorf("telegrafPoints(%s) = %d, want %d", tc.msg, got, tc.want)
		}
	}
	// against encoding/json on a modbus metric of 100 fields
	fields := map[string]float64{}
	for i := range 100 {
		fields[signalName(i)] = float64(i) / 10
	}
	msg, _ := json.Marshal(map[string]any{"fields": fields, "name": "dev-007", "tags": map[string]string{"type": "holding_register"}, "timestamp": 1})
	if got := telegrafPoints(msg); got != 100 {
		t.Fatalf("telegrafPoints = %d, want 100", got)
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (tele graf) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 12 0 1 1 1 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 17 || st.cpu != 3500*time.Millisecond {
		t.Fatalf("parseStat = %+v, want ppid 17, cpu 3.5s (250+50+30+20 ticks)", st)
	}
	if _, err := parseStat([]byte("4242 (short) S 1 2")); err == nil {
		t.Fatal("a short line parsed")
	}
	rss, hwm := statusKB([]byte("Name:\tx\nVmHWM:\t  51234 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n"))
	if rss != 40960 || hwm != 51234 {
		t.Fatalf("statusKB = %d, %d", rss, hwm)
	}
}

// The tree holds a child and its CPU shows up; a process that is gone is an error.
func TestSampleTreeCountsChildren(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() } // sh and its sleep
	defer kill()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := sampleTree(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if s.procs == 2 && s.rss > 0 && s.hwm >= s.rss {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tree of sh: %+v, want 2 processes with memory", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	kill()
	if _, err := sampleTree(cmd.Process.Pid); err == nil {
		t.Fatal("a reaped process sampled")
	}
}

// The generated gateway configurations load as smelter-gateway loads them:
// every device and point the workload says.
func TestSmelterConfigsLoad(t *testing.T) {
	dir := t.TempDir()
	devs := []modbusDevice{{"127.0.0.1:1502", 1}, {"127.0.0.1:1502", 2}, {"127.0.0.1:1503", 1}}
	path, err := writeSmelterModbus(dir, "nats://127.0.0.1:4999", devs, 100, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	checkLoads(t, path, 3, 100)

	dir = t.TempDir()
	path, err = writeSmelterOPCUA(dir, "nats://127.0.0.1:4999", []opcuaDevice{{"opc.tcp://127.0.0.1:4841", 0, 250}, {"opc.tcp://127.0.0.1:4841", 250, 250}}, 100*time.Millisecond, "process")
	if err != nil {
		t.Fatal(err)
	}
	checkLoads(t, path, 2, 250)
}

func checkLoads(t *testing.T, path string, devices, points int) {
	t.Helper()
	cfg, err := gwconfig.Load(path, gateway.Drivers()...)
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("%v\n%s", err, b)
	}
	if len(cfg.Devices) != devices {
		t.Fatalf("%d devices, want %d", len(cfg.Devices), devices)
	}
	for _, d := range cfg.Devices {
		if len(d.Signals()) != points {
			t.Fatalf("device %s: %d points, want %d", d.ID, len(d.Signals()), points)
		}
	}
}

// The Telegraf configurations name every device and field once; with the
// pinned binary built (make bench-peers), Telegraf itself accepts them.
func TestTelegrafConfigs(t *testing.T) {
	dir := t.TempDir()
	devs := []modbusDevice{{"127.0.0.1:1502", 1}, {"127.0.0.1:1503", 2}}
	mb, err := writeTelegrafModbus(dir, "nats://127.0.0.1:4999", telegrafSubject, devs, 100, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(mb)
	if n := strings.Count(string(b), "[[inputs.modbus]]"); n != 2 {
		t.Fatalf("%d inputs.modbus, want 2", n)
	}
	if n := strings.Count(string(b), `type="UINT16", scale=0.1}`); n != 200 {
		t.Fatalf("%d fields, want 200", n)
	}
	udir := filepath.Join(dir, "ua")
	if err := os.Mkdir(udir, 0o755); err != nil {
		t.Fatal(err)
	}
	ua, err := writeTelegrafOPCUA(udir, "nats://127.0.0.1:4999", telegrafSubject, []opcuaDevice{{"opc.tcp://127.0.0.1:4841", 0, 30}, {"opc.tcp://127.0.0.1:4841", 30, 30}}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(ua)
	if n := strings.Count(string(b), "identifier="); n != 60 || !strings.Contains(string(b), `identifier="v00059"`) {
		t.Fatalf("%d nodes, want 60, v00000..v00059", n)
	}
	bins, _ := filepath.Glob(".bin/telegraf-*")
	if len(bins) == 0 {
		t.Log("no Telegraf build in bench/peers/.bin (make bench-peers): its own parse of the configurations not checked")
		return
	}
	for _, cfg := range []string{mb, ua} {
		// "config check" parses the file and exits without connecting.
		out, err := exec.Command(bins[0], "config", "check", "--config", cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("%s config check %s: %v\n%s", bins[0], cfg, err, out)
		}
	}
}

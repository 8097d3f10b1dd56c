package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestWriteCountersOutside: the write counter of a device is visible from
// outside, on /metrics (smelter_sim_modbus_writes_total{device}) and in
// GET /devices (modbus_writes), before and after one Modbus FC6 write
// request sent over a real socket.
func TestWriteCountersOutside(t *testing.T) {
	cfg, err := Load(demoFleet)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Speed = 0
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	f := New(cfg, nil, WithRegisterer(reg))
	if err := f.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = f.Wait() })
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", f.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	counted := func(n int) (bool, bool) {
		var devs []deviceView
		if err := json.Unmarshal([]byte(get("/devices/ac-1")), new(deviceView)); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal([]byte(get("/devices")), &devs)
		inDevices := false
		for _, d := range devs {
			if d.ID == "ac-1" {
				inDevices = d.ModbusWrites == int64(n)
			}
		}
		return strings.Contains(get("/metrics"), fmt.Sprintf(`smelter_sim_modbus_writes_total{device="ac-1"} %d`, n)), inDevices
	}
	if m, d := counted(0); !m || !d {
		t.Fatalf("before any write: metrics %v, devices %v", m, d)
	}
	d := devInfo(t, f, "ac-1")
	conn, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// MBAP (transaction 1, protocol 0, length 6, unit) + FC6 address 0 value 1
	if _, err := conn.Write([]byte{0, 1, 0, 0, 0, 6, d.UnitID, 6, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 9)); err != nil { // an echo or an exception: answered
		t.Fatal(err)
	}
	if m, d := counted(1); !m || !d {
		t.Errorf("after one write request: metrics %v, devices %v\n%s", m, d, get("/devices/ac-1"))
	}
}

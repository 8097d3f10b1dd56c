package modbus

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/wait"
)

// TestOneConverterTwoNamesOneConnection (review mbconv F2): one Modbus TCP
// converter, named 127.0.0.1:port by unit 1's device and localhost:port by
// unit 2's. Every 5th request of unit 1 gets exception 11 and its answer
// is relayed to a later request, whichever connection it came on. With
// one connection per address string, unit 2's connection never knew unit
// 1's answer was owed and published it as its own (the recorders fail the
// test on any value good that is not its register's); devices naming one
// endpoint share one connection, labelled with the first one's address.
func TestOneConverterTwoNamesOneConnection(t *testing.T) {
	if a := lookupHost(t.Context(), "localhost"); !slices.ContainsFunc(a, func(a netip.Addr) bool { return a.Unmap() == netip.MustParseAddr("127.0.0.1") }) {
		t.Skipf("localhost resolves to %v, not 127.0.0.1", a)
	}
	c := startRelayConverter(t, true, 5, 1, 11)
	_, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	recs := gatewayUnitsIn(t, pool, c.Addr, func(cfg *Config) {
		cfg.Timeout = 200 * time.Millisecond
		cfg.MaxGap = 0 // two one-register requests per read
		if cfg.UnitID == 2 {
			cfg.Address = net.JoinHostPort("localhost", port)
		}
	}, map[byte][]uint16{1: {10, 20}, 2: {10, 20}})
	wait.For(t, 20*time.Second, "20 late answers relayed to other requests", func() bool {
		return c.foreign.Load() >= 20
	})
	n2 := len(recs[2].snapshot())
	wait.For(t, 20*time.Second, "unit 2 good again", func() bool { return goodSince(recs[2], n2) >= 5 })
	if _, n := metricSeries(t, reg, "smelter_modbus_connection_up", func(map[string]string) bool { return true }); n != 1 {
		t.Errorf("%d connections to one converter, want 1", n)
	}
}

// TestEndpointKeys: the keys that make two addresses one endpoint.
func TestEndpointKeys(t *testing.T) {
	look := func(_ context.Context, host string) []netip.Addr {
		if host == "conv.example" {
			return []netip.Addr{netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("::ffff:10.0.0.8")}
		}
		return nil
	}
	for _, c := range []struct {
		tr   Transport
		addr string
		want []string
	}{
		{TCP, "10.0.0.7:502", []string{"tcp|10.0.0.7:502"}},
		{TCP, "conv.example:502", []string{"tcp|conv.example:502", "tcp|10.0.0.7:502", "tcp|10.0.0.8:502"}},
		{RTUOverTCP, "[::1]:4001", []string{"rtu_over_tcp|[::1]:4001"}},
		{RTUOverTCP, "[0:0::1]:4001", []string{"rtu_over_tcp|[0:0::1]:4001", "rtu_over_tcp|[::1]:4001"}},
		{TCP, "nowhere.example:502", []string{"tcp|nowhere.example:502"}},
		{TCP, "no port", []string{"tcp|no port"}},
		{RTU, "/nonexistent/tty", []string{"rtu|/nonexistent/tty"}},
	} {
		got := endpointKeys(t.Context(), look, Config{Transport: c.tr, Address: c.addr})
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %s: %q, want %q", c.tr, c.addr, got, c.want)
		}
	}
	// a serial device and a symbolic link to it (/dev/serial/by-id/...)
	dir := t.TempDir()
	tty, link := filepath.Join(dir, "ttyUSB0"), filepath.Join(dir, "by-id")
	if err := os.WriteFile(tty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(tty, link); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(tty) // the temporary directory may be a link itself
	if err != nil {
		t.Fatal(err)
	}
	if got := endpointKeys(t.Context(), look, Config{Transport: RTU, Address: link}); !slices.Contains(got, "rtu|"+real) {
		t.Errorf("serial link %s: %q, want rtu|%s among them", link, got, real)
	}
	conns := connections{}
	a := conns.join("tcp|conv.example:502", []string{"tcp|conv.example:502", "tcp|10.0.0.7:502"})
	b := conns.join("tcp|10.0.0.7:502", []string{"tcp|10.0.0.7:502"})
	other := conns.join("rtu_over_tcp|10.0.0.7:502", []string{"rtu_over_tcp|10.0.0.7:502"})
	if a != "tcp|conv.example:502" || b != a || other == a {
		t.Errorf("joined %q, %q, %q", a, b, other)
	}
}

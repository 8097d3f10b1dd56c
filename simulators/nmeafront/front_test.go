package nmeafront

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/nmea"
)

var shipVals = map[string]float64{"latitude": 36.5, "longitude": -122.25, "sog": 13.4, "cog": 88.2, "heading": 87.5,
	"stw": 13.1, "water_depth": 58.3, "draught": 12.8}

var at = time.Date(2026, 11, 30, 8, 15, 30, 0, time.UTC)

// decode parses every line with the gateway's parser and collects values.
func decode(t *testing.T, lines []string) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	for _, l := range lines {
		s, err := nmea.Parse(l)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if err := nmea.Values(&s, func(q string, v float64) { got[q] = v }); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	return got
}

func TestSentencesRoundTrip(t *testing.T) {
	var lines []string
	for _, b := range Sentences(nil, shipVals, at) {
		lines = append(lines, string(b))
	}
	if len(lines) != 5 {
		t.Fatalf("%d sentences: %q", len(lines), lines)
	}
	got := decode(t, lines)
	for q, want := range map[string]float64{"RMC.latitude": 36.5, "RMC.longitude": -122.25, "RMC.sog": 13.4, "RMC.cog": 88.2,
		"VTG.sog": 13.4, "HDT.heading": 87.5, "VHW.stw": 13.1, "DPT.depth_below_keel": 58.3} {
		if math.Abs(got[q]-want) > 1e-4 {
			t.Errorf("%s = %v, want %v", q, got[q], want)
		}
	}
	s, _ := nmea.Parse(lines[0])
	r, _ := nmea.DecodeRMC(&s)
	if !r.Time.Equal(at) {
		t.Errorf("RMC time %v, want %v", r.Time, at)
	}
	// 59.99999 minutes rounds into the next degree, not to "60.0000"
	if got := dm(10.9999999, 2); got != "1100.0000" {
		t.Errorf("dm = %q", got)
	}
}

// startFront starts a front until the test ends.
func startFront(t *testing.T, cfg Config) *Front {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func TestTCPClientReceives(t *testing.T) {
	f := startFront(t, Config{Name: "bridge", Transport: TCP, Address: "127.0.0.1:0", Interval: 20 * time.Millisecond})
	f.Update(shipVals, at)
	c, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	sc := bufio.NewScanner(c)
	var lines []string
	for len(lines) < 10 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	got := decode(t, lines)
	if got["RMC.sog"] != 13.4 || got["HDT.heading"] != 87.5 {
		t.Fatalf("%v", got)
	}
}

func TestUDPCorrupt(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	f := startFront(t, Config{Name: "bridge", Transport: UDP, Address: pc.LocalAddr().String(), Interval: 10 * time.Millisecond, Corrupt: 0.5, Seed: 1})
	f.Update(shipVals, at)
	buf := make([]byte, 512)
	good, bad := 0, 0
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for good+bad < 60 {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		_, err = nmea.Parse(string(buf[:n]))
		switch {
		case err == nil:
			good++
		case errors.Is(err, nmea.ErrChecksum):
			bad++
		default:
			t.Fatalf("%q: %v", buf[:n], err)
		}
	}
	if good < 10 || bad < 10 {
		t.Errorf("good %d, bad checksums %d at corrupt 0.5", good, bad)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := New(Config{Name: "x", Transport: "serial", Address: "nowhere", Corrupt: 2}, nil)
	for _, want := range []string{`transport: "serial" not one of tcp, udp`, "address:", "corrupt: 2 outside 0..1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

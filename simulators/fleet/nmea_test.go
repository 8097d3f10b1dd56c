package fleet

import (
	"bufio"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/nmea"
)

// TestShipNMEA: the demo fleet's ship talks NMEA 0183 over TCP; the
// sentences a client receives carry the values the fleet publishes (the
// ones Modbus and OPC UA serve).
func TestShipNMEA(t *testing.T) {
	f := startFleet(t, nil)
	if err := f.Advance(10 * time.Minute); err != nil {
		t.Fatal(err)
	}
	d, ok := f.Device("ship-1")
	if !ok || d.NMEA == "" || d.NMEATransport != "tcp" || strings.HasSuffix(d.NMEA, ":0") {
		t.Fatalf("ship-1 info %+v", d)
	}
	c, err := net.Dial("tcp", d.NMEA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	vals, _, err := f.Values("ship-1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	types := map[string]bool{}
	sc := bufio.NewScanner(c)
	for len(types) < 5 && sc.Scan() {
		s, err := nmea.Parse(sc.Text())
		if err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		types[s.Talker+s.Type] = true
		if err := nmea.Values(&s, func(q string, v float64) { got[q] = v }); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"GPRMC", "GPVTG", "HEHDT", "VWVHW", "SDDPT"} {
		if !types[want] {
			t.Errorf("no %s sentence (got %v)", want, types)
		}
	}
	for q, sig := range map[string]string{"RMC.latitude": "latitude", "RMC.longitude": "longitude", "RMC.sog": "sog",
		"HDT.heading": "heading", "VHW.stw": "stw", "DPT.depth_below_keel": "water_depth"} {
		// sentences carry 0.1 kn / 0.1 deg / 0.0001 min resolution
		if math.Abs(got[q]-vals[sig]) > 0.06 {
			t.Errorf("%s = %v, fleet %s = %v", q, got[q], sig, vals[sig])
		}
	}
}

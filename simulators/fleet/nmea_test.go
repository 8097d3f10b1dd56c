package fleet

import (
	"bufio"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/nmea"
	"github.com/smelterio/smelter/simulators/faults"
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

// TestShipNMEAFaults: a drop fault closes the NMEA clients' connections;
// a silent fault stops the sentences.
func TestShipNMEAFaults(t *testing.T) {
	f := startFleet(t, nil)
	d, _ := f.Device("ship-1")
	c, err := net.Dial("tcp", d.NMEA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("first sentence: %v", err)
	}
	if _, err := f.InjectFault(faults.Spec{Device: "ship-1", Kind: faults.Drop}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := r.ReadString('\n'); err != nil {
			break // closed by the drop (EOF or reset), not the deadline
		}
	}
	if _, err := f.InjectFault(faults.Spec{Device: "ship-1", Kind: faults.Silent}); err != nil {
		t.Fatal(err)
	}
	c2, err := net.Dial("tcp", d.NMEA)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// three intervals (1 s) with no sentence
	_ = c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c2.Read(make([]byte, 128))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent talker sent %d bytes, err %v", n, err)
	}
}

// TestNMEAOnlyFaults: a silent or drop fault with front: nmea stops only
// the ship's NMEA talker; its Modbus front answers on.
func TestNMEAOnlyFaults(t *testing.T) {
	f := startFleet(t, nil)
	d := devInfo(t, f, "ship-1")
	mb := dial(t, d, 2*time.Second)
	readSignal(t, mb, d, "me_speed")
	if _, err := f.InjectFault(faults.Spec{Device: "ship-1", Kind: faults.Silent, Front: faults.FrontNMEA}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", d.NMEA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(make([]byte, 128))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent talker sent %d bytes, err %v", n, err)
	}
	readSignal(t, mb, d, "me_speed") // fails the test if Modbus fell silent too
	if _, err := f.InjectFault(faults.Spec{Device: "ship-1", Kind: faults.Drop, Front: faults.FrontNMEA}); err != nil {
		t.Fatal(err)
	}
	readSignal(t, mb, d, "me_speed") // the Modbus connection survives the NMEA drop
	for _, bad := range []faults.Spec{
		{Device: "ship-1", Kind: faults.Slow, Delay: faults.Duration(time.Second), Front: faults.FrontNMEA},
		{Device: "ac-1", Kind: faults.Silent, Front: faults.FrontNMEA},
		{Device: "ship-1", Kind: faults.Silent, Front: "serial"},
	} {
		if _, err := f.InjectFault(bad); err == nil || !strings.Contains(err.Error(), "front") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

package fleet

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/simulators/faults"
)

func ptr[T any](v T) *T { return &v }

func inject(t *testing.T, f *Fleet, s faults.Spec) FaultStatus {
	t.Helper()
	st, err := f.InjectFault(s)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// twins starts two identical manual fleets: one gets faults, the other is the
// healthy reference.
func twins(t *testing.T) (faulty, healthy *Fleet) {
	return startFleet(t, nil), startFleet(t, nil)
}

func advance(t *testing.T, d time.Duration, fs ...*Fleet) {
	t.Helper()
	for _, f := range fs {
		if err := f.Advance(d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSensorFaultsThroughModbus(t *testing.T) {
	f, ref := twins(t)
	advance(t, 4*time.Hour, f, ref)
	read := func(fl *Fleet, id, sig string) float64 {
		d := devInfo(t, fl, id)
		c := dial(t, d, time.Second)
		defer c.close()
		return readSignal(t, c, d, sig)
	}

	t.Run("stuck", func(t *testing.T) {
		before := read(f, "boiler-1", "flue_o2")
		st := inject(t, f, faults.Spec{Device: "boiler-1", Kind: faults.Stuck, Signal: "flue_o2"})
		advance(t, 10*time.Minute, f, ref)
		if got := read(f, "boiler-1", "flue_o2"); got != before {
			t.Errorf("stuck flue_o2 moved: %v -> %v", before, got)
		}
		if got := read(ref, "boiler-1", "flue_o2"); got == before {
			t.Errorf("healthy flue_o2 did not move either (%v)", got)
		}
		if err := f.ClearFault(st.ID); err != nil {
			t.Fatal(err)
		}
		if got, want := read(f, "boiler-1", "flue_o2"), read(ref, "boiler-1", "flue_o2"); got != want {
			t.Errorf("after clear %v, healthy twin %v", got, want)
		}
	})
	t.Run("stuck at value", func(t *testing.T) {
		st := inject(t, f, faults.Spec{Device: "ac-1", Kind: faults.Stuck, Signal: "discharge_temp", Value: ptr(42.0)})
		defer f.ClearFault(st.ID)
		if got := read(f, "ac-1", "discharge_temp"); math.Abs(got-42) > 1e-5 {
			t.Errorf("stuck at 42 reads %v", got)
		}
	})
	t.Run("drift", func(t *testing.T) {
		st := inject(t, f, faults.Spec{Device: "motor-1", Kind: faults.Drift, Signal: "bearing_temp", Rate: 6})
		defer f.ClearFault(st.ID)
		advance(t, time.Hour, f, ref)
		diff := read(f, "motor-1", "bearing_temp") - read(ref, "motor-1", "bearing_temp")
		if math.Abs(diff-6) > 0.11 {
			t.Errorf("drift after 1 h: %+.2f K, want +6", diff)
		}
	})
	t.Run("spike", func(t *testing.T) {
		st := inject(t, f, faults.Spec{Device: "dg-1", Kind: faults.Spike, Signal: "exhaust_temp_cyl_2", Magnitude: 150,
			Every: faults.Duration(10 * time.Minute), Width: faults.Duration(5 * time.Second)})
		defer f.ClearFault(st.ID)
		if diff := read(f, "dg-1", "exhaust_temp_cyl_2") - read(ref, "dg-1", "exhaust_temp_cyl_2"); math.Abs(diff-150) > 0.11 {
			t.Errorf("spike at onset %+.1f, want +150", diff)
		}
		advance(t, time.Minute, f, ref)
		if diff := read(f, "dg-1", "exhaust_temp_cyl_2") - read(ref, "dg-1", "exhaust_temp_cyl_2"); math.Abs(diff) > 0.11 {
			t.Errorf("between spikes %+.1f, want 0", diff)
		}
		advance(t, 9*time.Minute, f, ref)
		if diff := read(f, "dg-1", "exhaust_temp_cyl_2") - read(ref, "dg-1", "exhaust_temp_cyl_2"); math.Abs(diff-150) > 0.11 {
			t.Errorf("second spike %+.1f, want +150", diff)
		}
	})
	t.Run("noise", func(t *testing.T) {
		st := inject(t, f, faults.Spec{Device: "wt-1", Kind: faults.Noise, Signal: "wind_speed", Sigma: 2})
		defer f.ClearFault(st.ID)
		var sum, sum2 float64
		const n = 60
		for range n {
			advance(t, time.Second, f, ref)
			d := read(f, "wt-1", "wind_speed") - read(ref, "wt-1", "wind_speed")
			sum += d
			sum2 += d * d
		}
		sd := math.Sqrt(sum2/n - (sum/n)*(sum/n))
		if sd < 1.4 || sd > 2.7 {
			t.Errorf("noise deviation %.2f, want ~2", sd)
		}
	})
}

func TestDegradationsThroughModbus(t *testing.T) {
	f, ref := twins(t)
	advance(t, 3*time.Hour, f, ref) // 09:00
	inject(t, f, faults.Spec{Device: "ac-2", Kind: "leak", Level: 0.3})
	inject(t, f, faults.Spec{Device: "boiler-1", Kind: "fouling", Level: 1})
	inject(t, f, faults.Spec{Device: "pv-3", Kind: "soiling", Level: 0.25})
	inject(t, f, faults.Spec{Device: "motor-1", Kind: "bearing_wear", Level: 1})
	inject(t, f, faults.Spec{Device: "motor-2", Kind: "unbalance", Level: 0.15})
	type acc struct{ power, fad float64 }
	var ac, acRef acc
	for range 60 { // one hour, sampled every minute through the front
		advance(t, time.Minute, f, ref)
		for _, x := range []struct {
			fl *Fleet
			a  *acc
		}{{f, &ac}, {ref, &acRef}} {
			d := devInfo(t, x.fl, "ac-2")
			c := dial(t, d, time.Second)
			if readSignal(t, c, d, "load_state") == 2 {
				x.a.power += readSignal(t, c, d, "input_power")
				x.a.fad += readSignal(t, c, d, "free_air_delivery")
			}
			c.close()
		}
	}
	sp, spRef := ac.power/ac.fad, acRef.power/acRef.fad
	t.Logf("ac-2 loaded specific power %.2f (healthy %.2f) kW/(m3/min)", sp, spRef)
	if sp < spRef*1.2 {
		t.Errorf("leak: specific power %.2f vs healthy %.2f", sp, spRef)
	}
	get := func(fl *Fleet, id, sig string) float64 {
		d := devInfo(t, fl, id)
		c := dial(t, d, time.Second)
		defer c.close()
		return readSignal(t, c, d, sig)
	}
	if a, b := get(f, "boiler-1", "flue_gas_temp"), get(ref, "boiler-1", "flue_gas_temp"); a < b+40 {
		t.Errorf("fouling: flue %v vs healthy %v", a, b)
	}
	if a, b := get(f, "pv-3", "string_current"), get(f, "pv-1", "string_current"); a > 0.8*b || a < 0.7*b {
		t.Errorf("soiling: pv-3 %.2f A vs peer pv-1 %.2f A", a, b)
	}
	if a, b := get(f, "motor-1", "vibration"), get(ref, "motor-1", "vibration"); a < b+6 {
		t.Errorf("bearing wear: vibration %.2f vs healthy %.2f", a, b)
	}
	ia, ib := get(f, "motor-2", "current_a"), get(f, "motor-2", "current_b")
	va, vb := get(f, "motor-2", "voltage_a"), get(f, "motor-2", "voltage_b")
	if (ia-ib)/ib < 0.18 || math.Abs(va-vb)/va > 0.02 {
		t.Errorf("unbalance: currents %.1f/%.1f A, voltages %.1f/%.1f V", ia, ib, va, vb)
	}
}

func TestProtocolFaultsThroughModbus(t *testing.T) {
	f := startFleet(t, nil)
	advance(t, time.Hour, f)

	t.Run("exception", func(t *testing.T) {
		d := devInfo(t, f, "bf-1")
		c := dial(t, d, time.Second)
		st := inject(t, f, faults.Spec{Device: "bf-1", Kind: faults.Exception, Signal: "top_gas_co", Code: 2})
		if _, err := c.ReadInputRegisters(10, 1); !isException(err, 2) {
			t.Errorf("top_gas_co read: %v, want exception 2", err)
		}
		if _, err := c.ReadInputRegisters(0, 22); !isException(err, 2) {
			t.Errorf("block read over top_gas_co: %v, want exception 2", err)
		}
		if _, err := c.ReadInputRegisters(11, 1); err != nil {
			t.Errorf("neighbour top_gas_co2: %v", err)
		}
		st2 := inject(t, f, faults.Spec{Device: "bf-1", Kind: faults.Exception, Table: "input", Address: ptr(0), Count: 2, Code: 4})
		if _, err := c.ReadInputRegisters(0, 2); !isException(err, 4) {
			t.Errorf("address 0: %v, want exception 4", err)
		}
		f.ClearFault(st.ID)
		f.ClearFault(st2.ID)
		if _, err := c.ReadInputRegisters(0, 22); err != nil {
			t.Errorf("after clear: %v", err)
		}
		// out of the map: illegal data address, as a real device
		if _, err := c.ReadInputRegisters(22, 1); !isException(err, 2) {
			t.Errorf("beyond the map: %v", err)
		}
		if _, err := c.WriteSingleRegister(0, 1); !isException(err, 1) {
			t.Errorf("write: %v, want illegal function", err)
		}
	})

	t.Run("slow", func(t *testing.T) {
		d := devInfo(t, f, "cnc-1")
		c := dial(t, d, 2*time.Second)
		st := inject(t, f, faults.Spec{Device: "cnc-1", Kind: faults.Slow, Delay: faults.Duration(150 * time.Millisecond)})
		t0 := time.Now()
		if _, err := c.ReadHoldingRegisters(0, 9); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(t0); el < 150*time.Millisecond {
			t.Errorf("slow response came after %v", el)
		}
		f.ClearFault(st.ID)
	})

	t.Run("drop", func(t *testing.T) {
		for _, id := range []string{"ac-1", "motor-2"} { // Modbus TCP and RTU over TCP
			d := devInfo(t, f, id)
			conn, err := net.Dial("tcp", d.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// an established session: one request answered first
			req := []byte{0, 1, 0, 0, 0, 6, d.UnitID, 3, 0, 0, 0, 2}
			if d.Transport == TransportRTUOverTCP {
				req = rtuFrame([]byte{d.UnitID, 3, 0, 0, 0, 2})
			}
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write(req); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAtLeast(conn, make([]byte, 64), 9); err != nil {
				t.Fatal(err)
			}
			inject(t, f, faults.Spec{Device: id, Kind: faults.Drop})
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
				t.Errorf("%s: connection still open after drop (n=%d, err=%v)", id, n, err)
			}
			c := dial(t, d, time.Second)
			var rerr error
			waitFor(t, 2*time.Second, id+" to accept again", func() bool { _, rerr = c.ReadHoldingRegisters(0, 2); return rerr == nil })
		}
	})

	t.Run("silent then back", func(t *testing.T) {
		for _, id := range []string{"ex-1", "motor-2"} {
			d := devInfo(t, f, id)
			st := inject(t, f, faults.Spec{Device: id, Kind: faults.Silent, Duration: faults.Duration(time.Minute)})
			c := dial(t, d, 200*time.Millisecond)
			if _, err := c.ReadHoldingRegisters(0, 2); err == nil || !strings.Contains(err.Error(), "timeout") {
				t.Errorf("%s silent: %v, want a timeout", id, err)
			}
			c.close()
			advance(t, time.Minute, f) // the fault ends by itself
			if got := f.Faults(); got[len(got)-1].ID != st.ID || got[len(got)-1].State != stateEnded {
				t.Errorf("silent fault state %+v", got[len(got)-1])
			}
			c2 := dial(t, d, time.Second)
			if _, err := c2.ReadHoldingRegisters(0, 2); err != nil {
				t.Errorf("%s back: %v", id, err)
			}
		}
	})

	t.Run("bad faults", func(t *testing.T) {
		for _, tc := range []struct {
			s    faults.Spec
			want string
		}{
			{faults.Spec{Device: "nope", Kind: faults.Silent}, `unknown device "nope"`},
			{faults.Spec{Device: "ac-1", Kind: faults.Stuck}, "signal: required for a stuck fault"},
			{faults.Spec{Device: "ac-1", Kind: faults.Stuck, Signal: "flue_o2"}, `has no signal "flue_o2"`},
			{faults.Spec{Device: "ac-1", Kind: "fouling", Level: 1}, `"fouling" is not a fault kind, nor a degradation of ac-1`},
			{faults.Spec{Device: "ac-1", Kind: "leak", Level: 0.9}, "level: 0.9 above the leak limit 0.6"},
			{faults.Spec{Device: "ac-1", Kind: faults.Exception, Signal: "load_state", Code: 7}, "code: 7 not one the front can send"},
			{faults.Spec{Device: "ac-1", Kind: faults.Drift, Signal: "dew_point"}, "rate: required"},
		} {
			if _, err := f.InjectFault(tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%+v: %v, want %q", tc.s, err, tc.want)
			}
		}
	})
}

func TestScenarioSchedulesFaults(t *testing.T) {
	sc, err := faults.ParseScenario("test.yaml", []byte(`
scenario: t
faults:
  - {device: boiler-1, kind: stuck, signal: flue_o2, at: 10m, duration: 20m}
  - {device: bf-1, kind: exception, signal: top_gas_co2, at: 5m}
`))
	if err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, func(c *Config) { c.Scenario = sc })
	bf := devInfo(t, f, "bf-1")
	c := dial(t, bf, time.Second)
	if _, err := c.ReadInputRegisters(11, 1); err != nil {
		t.Fatalf("before onset: %v", err)
	}
	advance(t, 5*time.Minute, f)
	if _, err := c.ReadInputRegisters(11, 1); !isException(err, 2) {
		t.Fatalf("after onset: %v", err)
	}
	advance(t, 5*time.Minute, f)
	v1, _, _ := f.Values("boiler-1")
	advance(t, 15*time.Minute, f)
	v2, _, _ := f.Values("boiler-1")
	if v1["flue_o2"] != v2["flue_o2"] {
		t.Errorf("scripted stuck not applied: %v -> %v", v1["flue_o2"], v2["flue_o2"])
	}
	advance(t, 10*time.Minute, f)
	v3, _, _ := f.Values("boiler-1")
	if v3["flue_o2"] == v2["flue_o2"] {
		t.Error("scripted stuck did not end")
	}
	states := map[string]string{}
	for _, s := range f.Faults() {
		states[s.ID] = s.State
	}
	if states["s1"] != stateEnded || states["s2"] != stateActive {
		t.Errorf("states %v", states)
	}
}

func TestParseScenarioRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"faults:\n  - {device: a, kind: noise, signal: x}\n", "faults[0] (s1): sigma: required"},
		{"faults:\n  - {device: a, kind: stuck, signal: x, at: soon}\n", `faults[0].at: want a duration such as 500ms, 30s or 15m, got "soon"`},
		{"faults:\n  - {device: a, kind: leak}\n", "level: required"},
		{"faults:\n  - {id: x, device: a, kind: silent}\n  - {id: x, device: a, kind: silent}\n", `faults[1].id: "x" used twice`},
		{"faults:\n  - {device: a, kind: slow, delay: 5m}\n", "delay: required, within (0, 1m]"},
		{"faults:\n  - {device: a, kind: silent, colour: red}\n", "faults[0].colour: unknown field"},
	} {
		if _, err := faults.ParseScenario("s.yaml", []byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.doc, err, tc.want)
		}
	}
}

// TestControlAPI drives faults over HTTP, as an end-to-end test would.
func TestControlAPI(t *testing.T) {
	f := startFleet(t, nil)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	call := func(method, path, body string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		return b
	}
	var devs []deviceView
	if err := json.Unmarshal(call("GET", "/devices", "", 200), &devs); err != nil || len(devs) != 15 {
		t.Fatalf("devices: %v %d", err, len(devs))
	}
	if devs[0].Addr == "" || len(devs[0].Values) == 0 || devs[0].Nameplate["rated_fad"] != 13 {
		t.Errorf("device view %+v", devs[0])
	}
	call("POST", "/advance?by=1h", "", 200)
	d := devInfo(t, f, "boiler-1")
	c := dial(t, d, time.Second)
	before := readSignal(t, c, d, "flue_o2")
	var st FaultStatus
	json.Unmarshal(call("POST", "/faults", `{"device":"boiler-1","kind":"stuck","signal":"flue_o2"}`, 201), &st)
	if st.ID == "" || st.State != stateActive {
		t.Fatalf("injected %+v", st)
	}
	call("POST", "/advance?by=5m", "", 200)
	if got := readSignal(t, c, d, "flue_o2"); got != before {
		t.Errorf("stuck via API: %v -> %v", before, got)
	}
	var list []FaultStatus
	json.Unmarshal(call("GET", "/faults", "", 200), &list)
	if len(list) != 1 || list[0].ID != st.ID {
		t.Errorf("faults %+v", list)
	}
	call("DELETE", "/faults/"+st.ID, "", 204)
	call("POST", "/advance?by=1m", "", 200)
	if got := readSignal(t, c, d, "flue_o2"); got == before {
		t.Error("cleared fault still stuck")
	}
	for _, tc := range []struct{ body, want string }{
		{`{"device":"boiler-1","kind":"stuck"}`, "signal: required"},
		{`{"device":"boiler-1","kind":"slow","delay":"fast"}`, "duration"},
		{`{"device":"boiler-1","kind":"silent","colour":1}`, "unknown field"},
	} {
		if b := call("POST", "/faults", tc.body, 400); !bytes.Contains(b, []byte(tc.want)) {
			t.Errorf("%s: %s, want %q", tc.body, b, tc.want)
		}
	}
	call("DELETE", "/faults/nope", "", 404)
	call("GET", "/devices/nope", "", 404)
	call("POST", "/advance?by=-1s", "", 400)
}

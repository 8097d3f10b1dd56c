package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/catalog"
	uadriver "github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/simulators/faults"
)

// uaConnect opens an anonymous session on a None channel (plus opts).
func uaConnect(t testing.TB, endpoint string, opts ...opcua.Option) *opcua.Client {
	t.Helper()
	opts = append([]opcua.Option{opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false),
		opcua.DialTimeout(5 * time.Second), opcua.RequestTimeout(5 * time.Second)}, opts...)
	c, err := opcua.NewClient(endpoint, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(cctx)
	})
	return c
}

// uaRead reads the Value attribute of every node in one request.
func uaRead(ctx context.Context, c *opcua.Client, nodes ...string) ([]*ua.DataValue, error) {
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, n := range nodes {
		nid, err := ua.ParseNodeID(n)
		if err != nil {
			return nil, err
		}
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDValue})
	}
	resp, err := c.Read(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != len(nodes) {
		return nil, errors.New("short read response")
	}
	return resp.Results, nil
}

// hasValue reports whether a DataValue carries a value.
func hasValue(dv *ua.DataValue) bool {
	return dv.EncodingMask&ua.DataValueValue != 0 && dv.Value != nil && dv.Value.Value() != nil
}

func mustRead(t testing.TB, c *opcua.Client, nodes ...string) []*ua.DataValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := uaRead(ctx, c, nodes...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// nodesOf returns a device's node ids in signal order.
func nodesOf(t testing.TB, f *Fleet, id string) ([]string, []string) {
	t.Helper()
	d := devInfo(t, f, id)
	vals, _, err := f.Values(id)
	if err != nil {
		t.Fatal(err)
	}
	sigs := make([]string, 0, len(vals))
	for s := range vals {
		sigs = append(sigs, s)
	}
	slices.Sort(sigs)
	nodes := make([]string, len(sigs))
	for i, s := range sigs {
		nodes[i] = d.NodePrefix + s
	}
	return sigs, nodes
}

func injectFault(t testing.TB, f *Fleet, s faults.Spec) string {
	t.Helper()
	st, err := f.InjectFault(s)
	if err != nil {
		t.Fatal(err)
	}
	return st.ID
}

// TestOPCUAServesEveryDevice reads every node of every demo device over OPC
// UA and compares with the fleet's published values: same step, same value
// (double, no rounding), Good status, SourceTimestamp in simulated time.
func TestOPCUAServesEveryDevice(t *testing.T) {
	f := startFleet(t, nil)
	advance(t, 2*time.Hour, f)
	cat := catalog.Default()
	clients := map[string]*opcua.Client{}
	for _, d := range f.Devices() {
		if d.OPCUA == "" || d.OPCUAServer != "plant-ua" || d.NodePrefix != "ns=1;s="+d.ID+"." {
			t.Fatalf("%s: opcua %q server %q prefix %q", d.ID, d.OPCUA, d.OPCUAServer, d.NodePrefix)
		}
		if d.Protocol != "modbus" || d.Addr == "" || !d.OPCUAAnonymous || !slices.Equal(d.OPCUAUsers, []string{"operator"}) {
			t.Fatalf("%s: both protocols expected, got %+v", d.ID, d)
		}
		c := clients[d.OPCUA]
		if c == nil {
			c = uaConnect(t, d.OPCUA)
			clients[d.OPCUA] = c
		}
		sigs, nodes := nodesOf(t, f, d.ID)
		res := mustRead(t, c, nodes...)
		vals, at, _ := f.Values(d.ID)
		for i, s := range sigs {
			dv := res[i]
			if dv.Status != ua.StatusOK {
				t.Errorf("%s: status %v", nodes[i], dv.Status)
				continue
			}
			if got := dv.Value.Float(); got != vals[s] {
				t.Errorf("%s = %v over OPC UA, fleet publishes %v", nodes[i], got, vals[s])
			}
			if dv.SourceTimestamp.After(at) || dv.SourceTimestamp.Before(f.cfg.Start) {
				t.Errorf("%s: source timestamp %v outside simulated [%v, %v]", nodes[i], dv.SourceTimestamp, f.cfg.Start, at)
			}
			if _, err := cat.Lookup(d.Class, s); err != nil {
				t.Errorf("%s: not a catalog signal: %v", nodes[i], err)
			}
		}
	}
	if len(clients) != 1 {
		t.Errorf("demo fleet: %d OPC UA endpoints, want the one plant-ua", len(clients))
	}
}

// TestOPCUAReadsAreOneStep reads all nodes of a device while the fleet
// steps: every read equals the published snapshot of one step.
func TestOPCUAReadsAreOneStep(t *testing.T) {
	f := startFleet(t, nil)
	advance(t, 8*time.Hour, f) // daytime: PV and most machines move every step
	const id = "pv-1"
	sigs, nodes := nodesOf(t, f, id)
	c := uaConnect(t, devInfo(t, f, id).OPCUA)

	type snap map[string]float64
	snaps := map[time.Time]snap{}
	vals, at, _ := f.Values(id)
	snaps[at] = vals
	type obs struct {
		ts   time.Time
		vals []float64
	}
	var reads []obs
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			res, err := uaRead(context.Background(), c, nodes...)
			if err != nil {
				t.Error(err)
				return
			}
			o := obs{vals: make([]float64, len(res))}
			for i, dv := range res {
				o.vals[i] = dv.Value.Float()
				if dv.SourceTimestamp.After(o.ts) {
					o.ts = dv.SourceTimestamp
				}
			}
			reads = append(reads, o)
		}
	}()
	for range 300 {
		if err := f.Advance(f.cfg.Step.D()); err != nil {
			t.Fatal(err)
		}
		vals, at, _ := f.Values(id)
		snaps[at] = vals
	}
	close(done)
	wg.Wait()
	if len(reads) < 5 {
		t.Fatalf("only %d reads", len(reads))
	}
	for _, o := range reads {
		s, ok := snaps[o.ts.UTC()]
		if !ok {
			t.Fatalf("read stamped %v, not a published step", o.ts)
		}
		for i, sig := range sigs {
			if o.vals[i] != s[sig] {
				t.Fatalf("torn read at %v: %s = %v, the step published %v", o.ts, sig, o.vals[i], s[sig])
			}
		}
	}
	t.Logf("%d reads over 300 steps, each one step", len(reads))
}

// TestOPCUASensorFaultsAndDegradations: what Modbus shows, OPC UA shows.
func TestOPCUASensorFaultsAndDegradations(t *testing.T) {
	f := startFleet(t, nil)
	advance(t, time.Hour, f)
	c := uaConnect(t, devInfo(t, f, "boiler-1").OPCUA)
	v := 3.3
	injectFault(t, f, faults.Spec{Device: "boiler-1", Kind: faults.Stuck, Signal: "flue_o2", Value: &v})
	injectFault(t, f, faults.Spec{Device: "motor-1", Kind: faults.Drift, Signal: "bearing_temp", Rate: 50})
	injectFault(t, f, faults.Spec{Device: "ac-2", Kind: faults.Kind("leak"), Level: 0.3})
	advance(t, 30*time.Minute, f)
	for _, sig := range []string{"boiler-1.flue_o2", "motor-1.bearing_temp", "ac-2.input_power", "ac-2.free_air_delivery"} {
		dev, s, _ := strings.Cut(sig, ".")
		vals, _, _ := f.Values(dev)
		got := mustRead(t, c, "ns=1;s="+sig)[0].Value.Float()
		if got != vals[s] {
			t.Errorf("%s: OPC UA %v, fleet %v", sig, got, vals[s])
		}
	}
	if got := mustRead(t, c, "ns=1;s=boiler-1.flue_o2")[0].Value.Float(); got != 3.3 {
		t.Errorf("stuck flue_o2 = %v over OPC UA", got)
	}
	// and the Modbus front agrees
	d := devInfo(t, f, "boiler-1")
	mb := dial(t, d, time.Second)
	for _, p := range template(t, d).Points {
		if p.Signal == "flue_o2" {
			got, err := readPoint(mb, d.Class, p)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-3.3) > 0.01 {
				t.Errorf("stuck flue_o2 = %v over Modbus", got)
			}
		}
	}
}

func TestOPCUAStatusFault(t *testing.T) {
	sc, err := faults.ParseScenario("ua.yaml", []byte(`scenario: ua
faults:
  - {device: bf-1, kind: ua_status, at: 10s, duration: 1m, signal: top_gas_co, status: BadSensorFailure}
`))
	if err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, func(c *Config) { c.Scenario = sc })
	c := uaConnect(t, devInfo(t, f, "bf-1").OPCUA)

	// scripted: Bad at 10s, Good again after its minute
	if dv := mustRead(t, c, "ns=1;s=bf-1.top_gas_co")[0]; dv.Status != ua.StatusOK {
		t.Fatalf("before onset: %v", dv.Status)
	}
	advance(t, 15*time.Second, f)
	res := mustRead(t, c, "ns=1;s=bf-1.top_gas_co", "ns=1;s=bf-1.top_gas_co2")
	if res[0].Status != ua.StatusBadSensorFailure || hasValue(res[0]) {
		t.Errorf("scripted ua_status: %v value %v", res[0].Status, res[0].Value)
	}
	if res[1].Status != ua.StatusOK {
		t.Errorf("other node: %v", res[1].Status)
	}
	advance(t, time.Minute, f)
	vals, _, _ := f.Values("bf-1")
	if dv := mustRead(t, c, "ns=1;s=bf-1.top_gas_co")[0]; dv.Status != ua.StatusOK || dv.Value.Float() != vals["top_gas_co"] {
		t.Errorf("after the fault: %v %v, fleet %v", dv.Status, dv.Value, vals["top_gas_co"])
	}

	// a subscriber (as the gateway) is notified of the Bad status
	ctx := t.Context()
	ch := make(chan *opcua.PublishNotificationData, 64)
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: 20 * time.Millisecond}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth,
		opcua.NewMonitoredItemCreateRequestWithDefaults(ua.MustParseNodeID("ns=1;s=boiler-1.flue_gas_temp"), ua.AttributeIDValue, 1)); err != nil {
		t.Fatal(err)
	}

	// through the control API: a numeric code on every node of the device
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/faults", "application/json",
		strings.NewReader(`{"device":"boiler-1","kind":"ua_status","code":2150694912}`)) // 0x80310000 BadNoCommunication
	if err != nil {
		t.Fatal(err)
	}
	var st FaultStatus
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || st.State != stateActive {
		t.Fatalf("POST /faults: %d %+v", resp.StatusCode, st)
	}
	_, nodes := nodesOf(t, f, "boiler-1")
	for i, dv := range mustRead(t, c, nodes...) {
		if dv.Status != ua.StatusBadNoCommunication {
			t.Errorf("%s: %v", nodes[i], dv.Status)
		}
	}
	deadline := time.After(10 * time.Second)
	for seen := false; !seen; {
		select {
		case n := <-ch:
			if dc, ok := n.Value.(*ua.DataChangeNotification); ok {
				for _, it := range dc.MonitoredItems {
					seen = seen || it.Value.Status == ua.StatusBadNoCommunication
				}
			}
		case <-deadline:
			t.Fatal("subscriber saw no Bad status")
		}
	}
	// an Uncertain code keeps the value; a later fault wins on its signal
	injectFault(t, f, faults.Spec{Device: "boiler-1", Kind: faults.UAStatus, Signal: "flue_o2", Status: "UncertainLastUsableValue"})
	res = mustRead(t, c, "ns=1;s=boiler-1.flue_o2", "ns=1;s=boiler-1.flue_gas_temp")
	vals, _, _ = f.Values("boiler-1")
	if res[0].Status != ua.StatusUncertainLastUsableValue || res[0].Value.Float() != vals["flue_o2"] || res[1].Status != ua.StatusBadNoCommunication {
		t.Errorf("uncertain: %v %v (fleet %v), other %v", res[0].Status, res[0].Value, vals["flue_o2"], res[1].Status)
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/faults/"+st.ID, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	res = mustRead(t, c, "ns=1;s=boiler-1.flue_gas_temp")
	if res[0].Status != ua.StatusOK || res[0].Value.Float() != vals["flue_gas_temp"] {
		t.Errorf("cleared: %v %v", res[0].Status, res[0].Value)
	}

	// refused: Modbus-only kinds and bad codes name the field
	for _, tc := range []struct {
		spec faults.Spec
		want string
	}{
		{faults.Spec{Device: "boiler-1", Kind: faults.UAStatus, Status: "BadNope"}, `status: "BadNope" is not an OPC UA StatusCode name`},
		{faults.Spec{Device: "boiler-1", Kind: faults.UAStatus, Code: 0x00A00000}, "is not a Bad (0x8...) or Uncertain"},
		{faults.Spec{Device: "boiler-1", Kind: faults.UAStatus}, "code: or status required"},
		{faults.Spec{Device: "boiler-1", Kind: faults.UAStatus, Status: "BadSensorFailure", Signal: "nope"}, `signal: boiler-1 (boiler) has no signal "nope"`},
	} {
		if _, err := f.InjectFault(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.spec, err, tc.want)
		}
	}
}

// TestOPCUASilentAndDrop: silent and drop act on the OPC UA front too.
func TestOPCUASilentAndDrop(t *testing.T) {
	cfg := func(c *Config) {
		// ex-1 gets an OPC UA server of its own; the others stay on plant-ua
		for i := range c.Devices {
			if c.Devices[i].ID == "ex-1" {
				c.Devices[i].OPCUA = &DeviceOPCUAConfig{}
			}
		}
	}
	f := startFleet(t, cfg)
	advance(t, time.Hour, f)

	t.Run("silent on a shared server", func(t *testing.T) {
		c := uaConnect(t, devInfo(t, f, "cnc-1").OPCUA)
		id := injectFault(t, f, faults.Spec{Device: "cnc-1", Kind: faults.Silent})
		_, nodes := nodesOf(t, f, "cnc-1")
		for i, dv := range mustRead(t, c, nodes...) {
			if dv.Status != ua.StatusBadNoCommunication || hasValue(dv) {
				t.Errorf("%s while silent: %v %v", nodes[i], dv.Status, dv.Value)
			}
		}
		if dv := mustRead(t, c, "ns=1;s=bf-1.hot_blast_temp")[0]; dv.Status != ua.StatusOK {
			t.Errorf("a neighbour on the same server: %v", dv.Status)
		}
		advance(t, time.Minute, f)
		if err := f.ClearFault(id); err != nil {
			t.Fatal(err)
		}
		vals, at, _ := f.Values("cnc-1")
		sigs, _ := nodesOf(t, f, "cnc-1")
		for i, dv := range mustRead(t, c, nodes...) {
			if dv.Status != ua.StatusOK || dv.Value.Float() != vals[sigs[i]] {
				t.Errorf("%s after silence: %v %v, fleet %v", nodes[i], dv.Status, dv.Value, vals[sigs[i]])
			}
			if !dv.SourceTimestamp.Equal(at) { // the status change is stamped in simulated time
				t.Errorf("%s: stamped %v, want %v", nodes[i], dv.SourceTimestamp, at)
			}
		}
	})

	t.Run("silent on its own server", func(t *testing.T) {
		d := devInfo(t, f, "ex-1")
		if d.OPCUAServer != "ex-1" || d.OPCUA == devInfo(t, f, "ac-1").OPCUA {
			t.Fatalf("ex-1 server %q at %s", d.OPCUAServer, d.OPCUA)
		}
		c := uaConnect(t, d.OPCUA)
		_, nodes := nodesOf(t, f, "ex-1")
		mustRead(t, c, nodes...)
		id := injectFault(t, f, faults.Spec{Device: "ex-1", Kind: faults.Silent})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := uaRead(ctx, c, nodes...)
		cancel()
		if err == nil {
			t.Fatal("a silent server answered")
		}
		if err := f.ClearFault(id); err != nil {
			t.Fatal(err)
		}
		// it comes back as after a reboot, on the same port
		if got := devInfo(t, f, "ex-1").OPCUA; got != d.OPCUA {
			t.Fatalf("endpoint %s after restart, was %s", got, d.OPCUA)
		}
		c2 := uaConnect(t, d.OPCUA)
		vals, _, _ := f.Values("ex-1")
		sigs, _ := nodesOf(t, f, "ex-1")
		for i, dv := range mustRead(t, c2, nodes...) {
			if dv.Status != ua.StatusOK || dv.Value.Float() != vals[sigs[i]] {
				t.Errorf("%s after silence: %v %v", nodes[i], dv.Status, dv.Value)
			}
		}
	})

	t.Run("slow on its own server", func(t *testing.T) {
		d := devInfo(t, f, "ex-1")
		c := uaConnect(t, d.OPCUA)
		id := injectFault(t, f, faults.Spec{Device: "ex-1", Kind: faults.Slow, Delay: faults.Duration(400 * time.Millisecond)})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := uaRead(ctx, c, d.NodePrefix+"engine_speed")
		cancel()
		if err == nil {
			t.Error("a 400ms-slow server answered within 100ms")
		}
		if err := f.ClearFault(id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("drop on its own server", func(t *testing.T) {
		ep := devInfo(t, f, "ex-1").OPCUA
		c := uaConnect(t, ep)
		mustRead(t, c, "ns=1;s=ex-1.engine_speed")
		injectFault(t, f, faults.Spec{Device: "ex-1", Kind: faults.Drop})
		waitFor(t, 10*time.Second, "the dropped session to fail", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := uaRead(ctx, c, "ns=1;s=ex-1.engine_speed")
			return err != nil
		})
		// the server stays up: a new connection reads again
		c2 := uaConnect(t, ep)
		vals, _, _ := f.Values("ex-1")
		if dv := mustRead(t, c2, "ns=1;s=ex-1.engine_speed")[0]; dv.Value.Float() != vals["engine_speed"] {
			t.Errorf("after drop: %v, fleet %v", dv.Value, vals["engine_speed"])
		}
	})

	// a fault on one asset affects only that asset: dropping ac-1's
	// connections (its Modbus port) leaves the shared plant-ua server's
	// sessions, which serve every other asset, alone
	t.Run("drop on a shared server", func(t *testing.T) {
		c := uaConnect(t, devInfo(t, f, "ac-1").OPCUA)
		mustRead(t, c, "ns=1;s=bf-1.hot_blast_temp")
		for range 3 {
			injectFault(t, f, faults.Spec{Device: "ac-1", Kind: faults.Drop})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := uaRead(ctx, c, "ns=1;s=bf-1.hot_blast_temp", "ns=1;s=ac-1.input_power")
			cancel()
			if err != nil {
				t.Fatalf("ac-1's drop cut the shared server's session: %v", err)
			}
		}
	})

	t.Run("exception stays Modbus", func(t *testing.T) {
		c := uaConnect(t, devInfo(t, f, "bf-1").OPCUA)
		id := injectFault(t, f, faults.Spec{Device: "bf-1", Kind: faults.Exception, Signal: "top_gas_co", Code: 2})
		defer f.ClearFault(id)
		if dv := mustRead(t, c, "ns=1;s=bf-1.top_gas_co")[0]; dv.Status != ua.StatusOK {
			t.Errorf("OPC UA node under a Modbus exception: %v", dv.Status)
		}
	})
}

// TestOPCUAThroughGatewayDriver reads demo devices with the gateway's own
// OPC UA driver, logging in as the demo's operator (username on a None
// channel, password encrypted with the server certificate).
func TestOPCUAThroughGatewayDriver(t *testing.T) {
	t.Setenv("SMELTER_SIM_OPCUA_PASSWORD", "from-the-environment")
	f := startFleet(t, nil)
	advance(t, 3*time.Hour, f)
	if pw, ok := f.OPCUAPassword("ac-1", "operator"); !ok || pw != "from-the-environment" {
		t.Fatalf("operator password %q %v", pw, ok)
	}
	for _, id := range []string{"ac-1", "wt-1"} {
		d := devInfo(t, f, id)
		sigs, nodes := nodesOf(t, f, id)
		points := make([]uadriver.Point, len(nodes))
		for i, n := range nodes {
			points[i] = uadriver.Point{NodeID: n, Mode: uadriver.ModePoll, PollInterval: 50 * time.Millisecond}
		}
		cfg := uadriver.Config{Endpoint: d.OPCUA, DataDir: t.TempDir(), AcceptUntrusted: true,
			Auth: uadriver.AuthConfig{Mode: "username", Username: "operator", PasswordEnv: "SMELTER_SIM_OPCUA_PASSWORD"}}
		cl, err := uadriver.New(id, cfg, points, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[int]sample.Sample{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- cl.Run(ctx, func(c *sample.Cycle) {
				mu.Lock()
				for _, u := range c.Samples {
					got[u.Index] = u
				}
				mu.Unlock()
			})
		}()
		waitFor(t, 15*time.Second, id+" values through the gateway driver", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) == len(points)
		})
		cancel()
		<-done
		vals, at, _ := f.Values(id)
		for i, s := range sigs {
			u := got[i]
			if u.Quality != telemetry.QualityGood || u.Num != vals[s] || u.TS > at.UnixMilli() {
				t.Errorf("%s.%s: driver %+v, fleet %v at %v", id, s, u, vals[s], at)
			}
		}
	}
	// a wrong password is refused
	d := devInfo(t, f, "ac-1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, d.OPCUA)
	if err != nil {
		t.Fatal(err)
	}
	var ep *ua.EndpointDescription
	for _, e := range eps {
		if e.SecurityPolicyURI == ua.SecurityPolicyURINone {
			ep = e
		}
	}
	c, err := opcua.NewClient(d.OPCUA, opcua.SecurityFromEndpoint(ep, ua.UserTokenTypeUserName),
		opcua.AuthUsername("operator", "wrong"), opcua.AutoReconnect(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err == nil {
		_ = c.Close(ctx)
		t.Error("wrong password accepted")
	}
}

func TestDeterministicThroughOPCUA(t *testing.T) {
	read := func(seed uint64) []float64 {
		f := startFleet(t, func(c *Config) { c.Seed = seed })
		advance(t, 3*time.Hour, f)
		c := uaConnect(t, devInfo(t, f, "ac-1").OPCUA)
		var out []float64
		for _, d := range f.Devices() {
			_, nodes := nodesOf(t, f, d.ID)
			for _, dv := range mustRead(t, c, nodes...) {
				out = append(out, dv.Value.Float())
			}
		}
		return out
	}
	a, b, c := read(1), read(1), read(2)
	if !slices.Equal(a, b) {
		t.Error("same seed, different OPC UA values")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds, identical OPC UA values")
	}
}

func TestOPCUAOnlyDevice(t *testing.T) {
	dir := t.TempDir()
	doc := `seed: 3
opcua:
  servers:
    ua: {users: {u: {password: p}}, anonymous: false, security: [{policy: None}, {policy: Basic256Sha256}]}
devices:
  - {id: m1, class: motor, opcua: {server: ua}}
  - {id: m2, class: motor, nameplate: {rated_power: 37}, opcua: {}}
`
	path := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = f.Wait() })
	m1, m2 := devInfo(t, f, "m1"), devInfo(t, f, "m2")
	if m1.Protocol != "opcua" || m1.Addr != "" || m1.OPCUAAnonymous || !slices.Equal(m1.OPCUASecurity, []string{"None", "Basic256Sha256/SignAndEncrypt"}) {
		t.Errorf("m1: %+v", m1)
	}
	if m2.OPCUA == m1.OPCUA || m2.OPCUAServer != "m2" || !m2.OPCUAAnonymous {
		t.Errorf("m2: %+v", m2)
	}
	c := uaConnect(t, m2.OPCUA)
	vals, _, _ := f.Values("m2")
	if dv := mustRead(t, c, "ns=1;s=m2.power")[0]; dv.Value.Float() != vals["power"] {
		t.Errorf("m2 power %v, fleet %v", dv.Value, vals["power"])
	}
	// anonymous refused on ua
	anon, _ := opcua.NewClient(m1.OPCUA, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if err := anon.Connect(cctx); err == nil {
		_ = anon.Close(cctx)
		t.Error("anonymous login accepted with anonymous: false")
	}
	// Modbus-only fault kinds are refused on an OPC UA-only device
	if _, err := f.InjectFault(faults.Spec{Device: "m1", Kind: faults.Exception, Signal: "power"}); err == nil ||
		!strings.Contains(err.Error(), "exception needs a Modbus front") {
		t.Errorf("exception on an OPC UA-only device: %v", err)
	}
}

func TestBadOPCUAConfigs(t *testing.T) {
	dir := t.TempDir()
	tpl, _ := os.ReadFile("../../configs/templates/motor-sim.yaml")
	os.WriteFile(filepath.Join(dir, "motor.yaml"), tpl, 0o644)
	t.Setenv("SMELTER_TEST_UNSET_PW", "")
	dev := func(extra string) string {
		return "devices:\n  - {id: m1, class: motor, template: motor.yaml" + extra + "}\n"
	}
	for _, tc := range []struct{ doc, want string }{
		{dev(", opcua: {server: nope}"), `devices[0] (m1).opcua.server: "nope" not defined under opcua.servers`},
		{"opcua: {servers: {ua: {}}}\n" + dev(", opcua: {server: ua, address: '127.0.0.1:0'}"), "give server (a shared server) or the settings"},
		{"opcua: {servers: {ua: {}}}\n" + dev(""), "opcua.servers.ua: no device uses it"},
		{"opcua: {servers: {ua: {address: nohost}}}\n" + dev(", opcua: {server: ua}"), "opcua.servers.ua.address:"},
		{"opcua: {servers: {ua: {security: [{policy: Basic128}]}}}\n" + dev(", opcua: {server: ua}"), `opcua.servers.ua.security[0].policy: "Basic128" is not one of`},
		{"opcua: {servers: {ua: {security: [{policy: None, mode: Sign}]}}}\n" + dev(", opcua: {server: ua}"), "security[0].mode: Sign does not go with policy None"},
		{"opcua: {servers: {ua: {anonymous: false}}}\n" + dev(", opcua: {server: ua}"), "anonymous: false leaves no way to log in"},
		{"opcua: {servers: {ua: {users: {op: {}}}}}\n" + dev(", opcua: {server: ua}"), "users.op.password: set exactly one of"},
		{"opcua: {servers: {ua: {users: {op: {password_env: SMELTER_TEST_UNSET_PW}}}}}\n" + dev(", opcua: {server: ua}"), "users.op.password_env: SMELTER_TEST_UNSET_PW is not set"},
		{"opcua: {servers: {ua: {users: {op: {password: x, password_default: y}}}}}\n" + dev(", opcua: {server: ua}"), "password_default: only goes with password_env"},
		{"opcua: {servers: {ua: {users: {op: {password_file: nope.txt}}}}}\n" + dev(", opcua: {server: ua}"), "users.op.password_file:"},
		{"opcua: {servers: {ua: {cert_file: c.der}}}\n" + dev(", opcua: {server: ua}"), "cert_file: set both"},
		{"devices:\n  - {id: m1, class: motor, modbus: {unit_id: 1}, opcua: {}}\n", "template: required"},
		{dev(", opcua: {bogus: 1}"), "devices[0].opcua.bogus: unknown field"},
	} {
		cfg, err := Parse("fleet.yaml", []byte(tc.doc))
		if err == nil {
			cfg.Dir = dir
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.doc, err, tc.want)
		}
	}
	// scenario faults are checked against the device's fronts before start
	cfg, err := Parse("fleet.yaml", []byte(dev("")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dir
	cfg.Scenario = &faults.Scenario{Name: "x", Faults: []faults.Spec{{ID: "s1", Device: "m1", Kind: faults.UAStatus, Status: "BadSensorFailure"}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "scenario x: faults[0] (s1): kind: ua_status needs an OPC UA front") {
		t.Errorf("ua_status on a Modbus-only device: %v", err)
	}
	if _, err := faults.ParseScenario("s.yaml", []byte("faults:\n  - {device: m1, kind: ua_status, code: 0x808C0000, status: BadSensorFailure}\n")); err == nil ||
		!strings.Contains(err.Error(), "code: or status required (one of them)") {
		t.Errorf("code and status: %v", err)
	}
	sc, err := faults.ParseScenario("s.yaml", []byte("faults:\n  - {device: m1, kind: ua_status, code: 0x808C0000}\n"))
	if err != nil || sc.Faults[0].Code != 0x808C0000 {
		t.Errorf("hex code in YAML: %v %+v", err, sc)
	}
}

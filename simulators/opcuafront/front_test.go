package opcuafront

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/simulators/model"
)

// fixed is a Source with values a test sets.
type fixed struct {
	class   string
	signals []string
	values  []float64
}

func (s *fixed) Class() string     { return s.class }
func (s *fixed) Signals() []string { return s.signals }
func (s *fixed) Values() []float64 { return s.values }

func startFront(t *testing.T, cfg Config, assets []Asset) *Front {
	t.Helper()
	f, err := New(cfg, assets, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Stop() })
	return f
}

func connect(t *testing.T, ctx context.Context, endpoint string) *opcua.Client {
	t.Helper()
	c, err := opcua.NewClient(endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(cctx)
	})
	return c
}

func read(t *testing.T, ctx context.Context, c *opcua.Client, nodes ...string) []*ua.DataValue {
	t.Helper()
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, n := range nodes {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.MustParseNodeID(n), AttributeID: ua.AttributeIDValue})
	}
	resp, err := c.Read(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Results
}

func TestFrontServesValuesUnitsAndStatus(t *testing.T) {
	src := &fixed{class: "blast_furnace", signals: []string{"hot_blast_temp", "top_pressure"}, values: []float64{1183.5, 210}}
	f := startFront(t, Config{}, []Asset{{ID: "bf-2", Source: src}})
	ctx := t.Context()
	if !strings.HasPrefix(f.Endpoint(), "opc.tcp://127.0.0.1:") || strings.HasSuffix(f.Endpoint(), ":0") {
		t.Fatalf("endpoint %q", f.Endpoint())
	}
	c := connect(t, ctx, f.Endpoint())
	if got := f.NodeID("bf-2", "hot_blast_temp"); got != "ns=1;s=bf-2.hot_blast_temp" {
		t.Fatalf("node id %s", got)
	}
	res := read(t, ctx, c, "ns=1;s=bf-2.hot_blast_temp", "ns=1;s=bf-2.hot_blast_temp.EngineeringUnits",
		"ns=1;s=bf-2.hot_blast_temp.EURange", "ns=1;s=bf-2.top_pressure")
	if res[0].Status != ua.StatusOK || res[0].Value.Float() != 1183.5 || res[0].SourceTimestamp.IsZero() {
		t.Fatalf("value %+v", res[0])
	}
	eu, ok := res[1].Value.Value().(*ua.ExtensionObject).Value.(*ua.EUInformation)
	if !ok || eu.UnitID != 4408652 || eu.NamespaceURI != "http://www.opcfoundation.org/UA/units/un/cefact" {
		t.Fatalf("engineering units %+v", res[1].Value.Value())
	}
	rg := res[2].Value.Value().(*ua.ExtensionObject).Value.(*ua.Range)
	if rg.Low != 900 || rg.High != 1350 {
		t.Fatalf("range %+v", rg)
	}
	if res[3].Value.Float() != 210 {
		t.Fatalf("top_pressure %v", res[3].Value.Float())
	}

	if err := f.SetStatus("bf-2", "top_pressure", StatusBadSensorFailure); err != nil {
		t.Fatal(err)
	}
	res = read(t, ctx, c, "ns=1;s=bf-2.top_pressure", "ns=1;s=bf-2.hot_blast_temp")
	if uint32(res[0].Status) != StatusBadSensorFailure || res[0].EncodingMask&ua.DataValueValue != 0 {
		t.Fatalf("bad node served %+v", res[0])
	}
	if res[1].Status != ua.StatusOK {
		t.Fatalf("good node %+v", res[1])
	}
	if err := f.SetStatus("bf-2", "nope", 0); err == nil {
		t.Fatal("unknown node accepted")
	}

	// Refresh copies source values.
	src.values[0] = 1190.25
	f.Refresh(time.Now())
	res = read(t, ctx, c, "ns=1;s=bf-2.hot_blast_temp")
	if res[0].Value.Float() != 1190.25 {
		t.Fatalf("after refresh %v", res[0].Value.Float())
	}

	// Browse: Objects organizes the asset folder, which holds the variables.
	br, err := c.Browse(ctx, &ua.BrowseRequest{NodesToBrowse: []*ua.BrowseDescription{
		{NodeID: ua.NewNumericNodeID(0, id.ObjectsFolder), BrowseDirection: ua.BrowseDirectionForward, IncludeSubtypes: true, ResultMask: uint32(ua.BrowseResultMaskAll)},
		{NodeID: ua.MustParseNodeID("ns=1;s=bf-2"), BrowseDirection: ua.BrowseDirectionForward, IncludeSubtypes: true, ResultMask: uint32(ua.BrowseResultMaskAll)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range br.Results[0].References {
		found = found || r.NodeID.NodeID.String() == "ns=1;s=bf-2"
	}
	if !found {
		t.Fatalf("asset folder not under Objects")
	}
	var vars []string
	for _, r := range br.Results[1].References {
		if r.NodeClass == ua.NodeClassVariable {
			vars = append(vars, r.BrowseName.Name)
		}
	}
	if strings.Join(vars, ",") != "hot_blast_temp,top_pressure" {
		t.Fatalf("variables %v", vars)
	}
}

func TestFrontSubscriptionLimitsAndRestart(t *testing.T) {
	src := &fixed{class: "motor", signals: []string{"power", "frequency", "vibration"}, values: []float64{1, 2, 3}}
	f := startFront(t, Config{Limits: Limits{MaxNodesPerRead: 2, MaxMonitoredItemsPerCall: 2}}, []Asset{{ID: "m-1", Source: src}})
	ctx := t.Context()
	c := connect(t, ctx, f.Endpoint())
	// The limit is advertised.
	res := read(t, ctx, c, "i=11705", "i=11714")
	if res[0].Value.Value() != uint32(2) || res[1].Value.Value() != uint32(2) {
		t.Fatalf("limits %v %v", res[0].Value.Value(), res[1].Value.Value())
	}
	// Over the limit: gopcua's client sees a service fault.
	_, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{
		{NodeID: ua.MustParseNodeID("ns=1;s=m-1.power"), AttributeID: ua.AttributeIDValue},
		{NodeID: ua.MustParseNodeID("ns=1;s=m-1.frequency"), AttributeID: ua.AttributeIDValue},
		{NodeID: ua.MustParseNodeID("ns=1;s=m-1.vibration"), AttributeID: ua.AttributeIDValue},
	}})
	if err == nil || f.Rejected() != 1 {
		t.Fatalf("over-limit read: err %v rejected %d", err, f.Rejected())
	}

	// Subscriptions get changes.
	c2 := connect(t, ctx, f.Endpoint())
	ch := make(chan *opcua.PublishNotificationData, 16)
	sub, err := c2.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: 50 * time.Millisecond}, ch)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth,
		opcua.NewMonitoredItemCreateRequestWithDefaults(ua.MustParseNodeID("ns=1;s=m-1.power"), ua.AttributeIDValue, 7),
		opcua.NewMonitoredItemCreateRequestWithDefaults(ua.MustParseNodeID("ns=1;s=m-1.nope"), ua.AttributeIDValue, 8))
	if err != nil {
		t.Fatal(err)
	}
	if mr.Results[0].StatusCode != ua.StatusOK || mr.Results[1].StatusCode != ua.StatusBadNodeIDUnknown {
		t.Fatalf("monitor results %v %v", mr.Results[0].StatusCode, mr.Results[1].StatusCode)
	}
	if err := f.Set("m-1", "power", 42.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case n := <-ch:
			if dc, ok := n.Value.(*ua.DataChangeNotification); ok {
				for _, it := range dc.MonitoredItems {
					if it.ClientHandle == 7 && it.Value.Value.Float() == 42.5 {
						got = true
					}
				}
			}
		case <-deadline:
			t.Fatal("no data change for 42.5")
		}
	}

	// Restart on the same port.
	ep := f.Endpoint()
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if f.Endpoint() != ep {
		t.Fatalf("restarted on %s, was %s", f.Endpoint(), ep)
	}
	c3 := connect(t, ctx, ep)
	if v := read(t, ctx, c3, "ns=1;s=m-1.power")[0].Value.Float(); v != 42.5 {
		t.Fatalf("after restart %v", v)
	}
}

func TestFrontServesModels(t *testing.T) {
	m, err := model.New("air_compressor", model.Options{ID: "ac-1", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := startFront(t, Config{}, []Asset{{ID: "ac-1", Source: m}})
	now := time.Date(2025, 6, 21, 10, 0, 0, 0, time.UTC)
	m.Step(now, time.Second)
	f.Refresh(now)
	c := connect(t, t.Context(), f.Endpoint())
	sigs := m.Signals()
	var nodes []string
	for _, s := range sigs {
		nodes = append(nodes, f.NodeID("ac-1", s))
	}
	res := read(t, t.Context(), c, nodes...)
	for i, r := range res {
		// SourceTimestamp is the time of the last change, so only changed values carry now.
		if r.Status != ua.StatusOK || r.Value.Float() != m.Values()[i] || r.SourceTimestamp.IsZero() {
			t.Fatalf("%s: %+v want %v", sigs[i], r, m.Values()[i])
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	src := &fixed{class: "motor", signals: []string{"power"}, values: []float64{1}}
	for name, tc := range map[string]struct {
		cfg    Config
		assets []Asset
		want   string
	}{
		"policy":    {Config{Security: []Security{{"Basic128", "Sign"}}}, nil, "security[0].policy"},
		"mode":      {Config{Security: []Security{{"Basic256Sha256", "Encrypt"}}}, nil, "security[0].mode"},
		"none-sign": {Config{Security: []Security{{"None", "Sign"}}}, nil, "cannot use mode"},
		"dup":       {Config{}, []Asset{{ID: "a", Source: src}, {ID: "a", Source: src}}, "duplicate asset id"},
		"addr":      {Config{Addr: "nope"}, nil, "addr"},
		"usercert":  {Config{UserCerts: [][]byte{[]byte("x")}}, nil, "user_certs[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(tc.cfg, tc.assets, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFrontStatusHoldsValuesAndSilence(t *testing.T) {
	src := &fixed{class: "motor", signals: []string{"power", "frequency"}, values: []float64{10, 50}}
	f := startFront(t, Config{}, []Asset{{ID: "m-1", Source: src}})
	t0 := time.Date(2025, 6, 21, 6, 0, 0, 0, time.UTC)
	f.Refresh(t0)
	ctx := t.Context()
	c := connect(t, ctx, f.Endpoint())
	if dv := read(t, ctx, c, "ns=1;s=m-1.power")[0]; !dv.SourceTimestamp.Equal(t0) || dv.Value.Float() != 10 {
		t.Fatalf("first refresh: %v at %v", dv.Value, dv.SourceTimestamp)
	}
	// Bad: the value is hidden and later refreshes are held back
	if err := f.SetStatusAt("m-1", "power", StatusBadSensorFailure, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	src.values = []float64{11, 51}
	f.Refresh(t0.Add(2 * time.Second))
	res := read(t, ctx, c, "ns=1;s=m-1.power", "ns=1;s=m-1.frequency")
	if res[0].Status != ua.StatusBadSensorFailure || res[0].EncodingMask&ua.DataValueValue != 0 || !res[0].SourceTimestamp.Equal(t0.Add(time.Second)) {
		t.Errorf("bad node: %v mask %x at %v", res[0].Status, res[0].EncodingMask, res[0].SourceTimestamp)
	}
	if res[1].Value.Float() != 51 || !res[1].SourceTimestamp.Equal(t0.Add(2*time.Second)) {
		t.Errorf("good node: %v at %v", res[1].Value, res[1].SourceTimestamp)
	}
	// Good again: the current value, stamped with the change
	if err := f.SetStatusAt("m-1", "power", StatusGood, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if dv := read(t, ctx, c, "ns=1;s=m-1.power")[0]; dv.Status != ua.StatusOK || dv.Value.Float() != 11 || !dv.SourceTimestamp.Equal(t0.Add(3*time.Second)) {
		t.Errorf("restored: %v %v at %v", dv.Status, dv.Value, dv.SourceTimestamp)
	}
	if code, ok := f.Status("m-1", "power"); !ok || code != StatusGood {
		t.Errorf("Status: %x %v", code, ok)
	}

	// Silent: nothing answers while the silence lasts; afterwards new sessions work.
	f.SetSilent(true)
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := c.Read(sctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.MustParseNodeID("ns=1;s=m-1.power"), AttributeID: ua.AttributeIDValue}}})
	cancel()
	if err == nil {
		t.Fatal("silent server answered")
	}
	f.SetSilent(false)
	c2 := connect(t, ctx, f.Endpoint())
	if dv := read(t, ctx, c2, "ns=1;s=m-1.power")[0]; dv.Value.Float() != 11 {
		t.Errorf("after silence: %v", dv.Value)
	}
	// The setting survives a restart.
	f.SetSilent(true)
	if err := f.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := opcua.NewClient(f.Endpoint(), opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false), opcua.DialTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if err := cl.Connect(cctx); err == nil {
		t.Error("connected to a silent server after restart")
		_ = cl.Close(ctx)
	}
	ccancel()
	f.SetSilent(false)
	c3 := connect(t, ctx, f.Endpoint())
	if dv := read(t, ctx, c3, "ns=1;s=m-1.frequency")[0]; dv.Value.Float() != 51 {
		t.Errorf("after restart: %v", dv.Value)
	}
}

// TestFrontMethods calls a model's setter method and an action over a
// real session: a good value changes the model, and every malformed call
// is answered with the status a strict server gives, without reaching the
// model.
func TestFrontMethods(t *testing.T) {
	m, err := model.New("air_compressor", model.Options{ID: "ac-1", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var acks, applied atomic.Int32
	f := startFront(t, Config{}, []Asset{{ID: "ac-1", Source: m, Actions: []Action{{Name: "acknowledge_fault", Do: func() ua.StatusCode {
		acks.Add(1)
		return ua.StatusOK
	}}}}})
	setter := m.(model.Setter)
	var mu sync.Mutex // the model is stepped by nobody else; mu orders its use
	f.SetWriter(func(asset, signal string, v float64) ua.StatusCode {
		mu.Lock()
		defer mu.Unlock()
		if err := setter.Set(signal, v); err != nil {
			return ua.StatusBadOutOfRange
		}
		applied.Add(1)
		return ua.StatusOK
	})
	c := connect(t, t.Context(), f.Endpoint())
	obj, set := ua.MustParseNodeID(f.ObjectID("ac-1")), ua.MustParseNodeID(f.MethodID("ac-1", "set_unload_pressure_setpoint"))
	call := func(o, meth *ua.NodeID, args ...any) *ua.CallMethodResult {
		t.Helper()
		in := []*ua.Variant{}
		for _, a := range args {
			in = append(in, ua.MustVariant(a))
		}
		res, err := c.Call(t.Context(), &ua.CallMethodRequest{ObjectID: o, MethodID: meth, InputArguments: in})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := call(obj, set, 0.7); r.StatusCode != ua.StatusOK {
		t.Fatalf("set 0.7: %v", r.StatusCode)
	}
	mu.Lock()
	v := m.Values()[slices.Index(m.Signals(), "unload_pressure_setpoint")]
	mu.Unlock()
	if v != 0.7 || applied.Load() != 1 {
		t.Fatalf("setter not applied: setpoint %v, %d applied", v, applied.Load())
	}
	for name, tc := range map[string]struct {
		obj, meth *ua.NodeID
		args      []any
		want      ua.StatusCode
		arg       ua.StatusCode
	}{
		"refused value":  {obj, set, []any{5.0}, ua.StatusBadInvalidArgument, ua.StatusBadOutOfRange},
		"no argument":    {obj, set, nil, ua.StatusBadArgumentsMissing, 0},
		"two arguments":  {obj, set, []any{0.7, 0.7}, ua.StatusBadTooManyArguments, 0},
		"wrong type":     {obj, set, []any{"0.7"}, ua.StatusBadInvalidArgument, ua.StatusBadTypeMismatch},
		"unknown method": {obj, ua.NewStringNodeID(1, "ac-1.nope"), nil, ua.StatusBadMethodInvalid, 0},
		"unknown object": {ua.NewStringNodeID(1, "nope"), ua.NewStringNodeID(1, "nope.x"), nil, ua.StatusBadNodeIDUnknown, 0},
		"other object":   {ua.NewStringNodeID(1, "x"), set, []any{0.7}, ua.StatusBadMethodInvalid, 0},
		"action with an argument": {obj, ua.MustParseNodeID(f.MethodID("ac-1", "acknowledge_fault")), []any{1.0},
			ua.StatusBadTooManyArguments, 0},
	} {
		t.Run(name, func(t *testing.T) {
			r := call(tc.obj, tc.meth, tc.args...)
			if r.StatusCode != tc.want || (tc.arg != 0 && (len(r.InputArgumentResults) != 1 || r.InputArgumentResults[0] != tc.arg)) {
				t.Fatalf("status %v, argument results %v; want %v, %v", r.StatusCode, r.InputArgumentResults, tc.want, tc.arg)
			}
		})
	}
	if applied.Load() != 1 || acks.Load() != 0 {
		t.Fatalf("malformed calls reached the model: %d applied, %d acks", applied.Load(), acks.Load())
	}
	if r := call(obj, ua.MustParseNodeID(f.MethodID("ac-1", "acknowledge_fault"))); r.StatusCode != ua.StatusOK || acks.Load() != 1 {
		t.Fatalf("action: %v, %d acks", r.StatusCode, acks.Load())
	}
	if f.Calls() != 10 || f.Writes() != 0 {
		t.Fatalf("%d calls, %d writes counted", f.Calls(), f.Writes())
	}
}

// TestStartPicksAnotherInnerPortWhenTaken: the inner port gopcua binds is
// found by listening on port 0 and closing; when another process takes it
// before gopcua binds it, Start picks another instead of failing (a
// flake seen under load: "bind: address already in use").
func TestStartPicksAnotherInnerPortWhenTaken(t *testing.T) {
	var lc net.ListenConfig
	taken, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var calls atomic.Int32
	pickInnerPort = func(ctx context.Context, host string) (int, error) {
		if calls.Add(1) == 1 {
			return taken.Addr().(*net.TCPAddr).Port, nil
		}
		return freePort(ctx, host)
	}
	t.Cleanup(func() { pickInnerPort = freePort })
	f := startFront(t, Config{Addr: "127.0.0.1:0"}, []Asset{{ID: "bf-1", Source: &fixed{class: "blast_furnace", signals: []string{"top_pressure"}, values: []float64{210}}}})
	if n := calls.Load(); n != 2 {
		t.Fatalf("inner port picked %d times, want 2 (the taken one, then another)", n)
	}
	c := connect(t, t.Context(), f.Endpoint())
	if v := read(t, t.Context(), c, "ns=1;s=bf-1.top_pressure"); len(v) != 1 || v[0].Status != ua.StatusOK {
		t.Fatalf("read after the retry: %+v", v)
	}
}

package fleet

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gateway/gatewaytest"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// TestCommandChangesCompressor runs the real gateway against the simulator
// fleet over Modbus TCP with an embedded NATS: a signed command lowers
// ac-1's unload pressure setpoint and the gateway's readings follow (the
// setpoint at once, the discharge pressure band within simulated minutes);
// a command the simulated device refuses fails with its exception code;
// an unauthorized one never reaches the device (its write counter).
func TestCommandChangesCompressor(t *testing.T) {
	f := startFleet(t, nil)
	d := devInfo(t, f, "ac-1")
	dir := t.TempDir()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	op, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := op.PublicKey()
	tpl, err := filepath.Abs(d.Template)
	if err != nil {
		t.Fatal(err)
	}
	cfgText := fmt.Sprintf(`gateway: {id: gw-fleet-cmd, enterprise: acme, site: sim, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
commands: {trusted_keys: [%s]}
devices:
  - id: ac-1
    class: air_compressor
    template: %s
    poll_interval: 100ms
    nameplate: {rated_power: 75, rated_fad: 13, rated_specific_power: 6.2, rated_pressure: 0.75}
    modbus: {address: %q, unit_id: %d}
`, ns.URL(), pub, tpl, d.Addr, d.UnitID)
	gatewaytest.Run(t, cfgText)

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	last := map[string]float64{}
	peak := 0.0 // highest discharge pressure since reset
	sub, err := nc.Subscribe("smelter.v1.sim.air_compressor.ac-1.data", func(m *nats.Msg) {
		b, err := telemetry.DecodeBatch(m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Readings {
			if r.Quality == telemetry.QualityGood {
				last[r.Signal] = r.Value
				if r.Signal == "discharge_pressure" {
					peak = math.Max(peak, r.Value)
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	reading := func(sig string) (float64, bool) {
		mu.Lock()
		defer mu.Unlock()
		v, ok := last[sig]
		return v, ok
	}

	mk := func(id string, v float64, kp nkeys.KeyPair) *command.Command {
		now := time.Now()
		c := &command.Command{Schema: command.Schema, ID: id, Asset: "sim.air_compressor.ac-1", Signal: "unload_pressure_setpoint",
			Value: command.Num(v), Unit: "MPa", Requester: "fleet-test", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := c.Sign(kp); err != nil {
			t.Fatal(err)
		}
		return c
	}
	send := func(c *command.Command) (*command.Result, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return command.Send(ctx, nc, c)
	}
	// the gateway listens once its uplink is ready; probes are refused
	// (unknown key) and never reach the device
	stranger, _ := nkeys.CreateUser()
	waitFor(t, 15*time.Second, "the gateway to answer commands", func() bool {
		res, err := send(mk(fmt.Sprintf("probe-%d", time.Now().UnixNano()), 0.7, stranger))
		return err == nil && res.Verdict == command.Rejected
	})
	waitFor(t, 10*time.Second, "a first reading of the setpoint", func() bool {
		v, ok := reading("unload_pressure_setpoint")
		return ok && v == 0.75
	})
	if n, _ := f.Writes("ac-1"); n != 0 {
		t.Fatalf("unauthorized probes reached the device: %d writes", n)
	}

	res, err := send(mk("lower", 0.66, op))
	if err != nil || res.Verdict != command.Verified {
		t.Fatalf("lower the setpoint: %+v %v", res, err)
	}
	if n, _ := f.Writes("ac-1"); n != 1 {
		t.Fatalf("%d writes for one command", n)
	}
	waitFor(t, 10*time.Second, "the setpoint reading to follow", func() bool {
		v, ok := reading("unload_pressure_setpoint")
		return ok && math.Abs(v-0.66) < 1e-6
	})
	// the controller follows: let the receiver drain to the new band, then
	// the discharge pressure stays below the new unload point (+0.02 MPa
	// while delivering, +noise)
	if err := f.Advance(15 * time.Minute); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	peak = 0
	mu.Unlock()
	for range 20 {
		if err := f.Advance(time.Minute); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		waitFor(t, 5*time.Second, "a poll after the step", func() bool {
			_, ok := reading("discharge_pressure")
			return ok && time.Since(before) > 150*time.Millisecond
		})
	}
	mu.Lock()
	p := peak
	mu.Unlock()
	if p == 0 || p > 0.66+0.02+0.01 {
		t.Errorf("discharge pressure peaked at %v MPa after lowering the unload point to 0.66", p)
	}

	// up again in steps; the simulated machine refuses 0.9 MPa (above its
	// rated 0.75 + 0.1): failed with exception 3, illegal data value
	for _, v := range []float64{0.75, 0.84} {
		if res, err := send(mk(fmt.Sprintf("raise-%v", v), v, op)); err != nil || res.Verdict != command.Verified {
			t.Fatalf("raise to %v: %+v %v", v, res, err)
		}
	}
	res, err = send(mk("too-high", 0.9, op))
	if err != nil || res.Verdict != command.Failed || res.Code != 3 || !strings.Contains(res.Reason, "exception 3") {
		t.Fatalf("device refusal: %+v %v", res, err)
	}
	if n, _ := f.Writes("ac-1"); n != 4 {
		t.Errorf("%d writes for four written commands", n)
	}
}

// TestCommandOverOPCUA: the same command path over the fleet's OPC UA
// server, through the device's session worker (isolation process, the
// default) and in process: the gateway writes the node with its DataType
// (Double), or calls the asset's set_unload_pressure_setpoint method with
// it, the model's setpoint follows, a value the model refuses fails with
// the server's status, an unauthorized command never reaches the server.
func TestCommandOverOPCUA(t *testing.T) {
	for _, tc := range []struct{ name, isolation, write string }{
		{"write-worker", "process", ""},
		{"write-endpoint-worker", "endpoint", ""},
		{"method-worker", "process", `method: {object: "%[1]s", method: "%[1]s.set_unload_pressure_setpoint"}, `},
		{"method-in-process", "none", `method: {object: "%[1]s", method: "%[1]s.set_unload_pressure_setpoint"}, `},
	} {
		t.Run(tc.name, func(t *testing.T) { testCommandOverOPCUA(t, tc.isolation, tc.write) })
	}
}

func testCommandOverOPCUA(t *testing.T, isolation, method string) {
	f := startFleet(t, nil)
	d := devInfo(t, f, "ac-1")
	if method != "" {
		method = fmt.Sprintf(method, strings.TrimSuffix(d.NodePrefix, "."))
	}
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	op, _ := nkeys.CreateUser()
	pub, _ := op.PublicKey()
	gatewaytest.Run(t, fmt.Sprintf(`gateway: {id: gw-fleet-ua, site: sim, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
commands: {trusted_keys: [%s]}
devices:
  - id: ac-1
    class: air_compressor
    opcua: {endpoint: %q, publish_interval: 100ms, backoff_min: 100ms, backoff_max: 1s, isolation: %s}
    points:
      - {signal: discharge_pressure, node_id: "%sdischarge_pressure"}
      - {signal: unload_pressure_setpoint, node_id: "%sunload_pressure_setpoint", write: {%smin: 0.6, max: 0.9, max_step: 0.1}}
`, ns.URL(), pub, d.OPCUA, isolation, d.NodePrefix, d.NodePrefix, method))
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	mk := func(id string, v float64) *command.Command {
		now := time.Now()
		c := &command.Command{Schema: command.Schema, ID: id, Asset: "sim.air_compressor.ac-1", Signal: "unload_pressure_setpoint",
			Value: command.Num(v), Unit: "MPa", Requester: "fleet-test", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := c.Sign(op); err != nil {
			t.Fatal(err)
		}
		return c
	}
	var res *command.Result
	attempt := 0
	waitFor(t, 15*time.Second, "the first command over OPC UA", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		attempt++ // until the session is up the gateway refuses (no session): a new id each time
		res, err = command.Send(ctx, nc, mk(fmt.Sprintf("ua-lower-%d", attempt), 0.7))
		return err == nil && res.Verdict == command.Verified
	})
	vals, _, err := f.Values("ac-1")
	if err != nil || vals["unload_pressure_setpoint"] != 0.7 {
		t.Fatalf("model setpoint %v %v", vals["unload_pressure_setpoint"], err)
	}
	if n := workerChildren(t); (isolation != "none") != (n > 0) {
		t.Fatalf("isolation %s: %d session workers run", isolation, n)
	}
	writes := f.UAWrites()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, v := range []float64{0.8} {
		if res, err := command.Send(ctx, nc, mk("ua-raise", v)); err != nil || res.Verdict != command.Verified {
			t.Fatalf("raise to %v: %+v %v", v, res, err)
		}
	}
	res, err = command.Send(ctx, nc, mk("ua-too-high", 0.9))
	if err != nil || res.Verdict != command.Failed || !strings.Contains(res.Reason, "BadOutOfRange") {
		t.Fatalf("model refusal: %+v %v", res, err)
	}
	stranger, _ := nkeys.CreateUser()
	c := mk("ua-stranger", 0.75)
	if err := c.Sign(stranger); err != nil {
		t.Fatal(err)
	}
	if res, err := command.Send(ctx, nc, c); err != nil || res.Verdict != command.Rejected {
		t.Fatalf("stranger: %+v %v", res, err)
	}
	if n := f.UAWrites() - writes; n != 2 {
		t.Errorf("%d OPC UA writes for two written commands", n)
	}
}

// workerChildren counts this process's children that are OPC UA session
// workers (opcua.WorkerEnv in their environment).
func workerChildren(t *testing.T) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	me := strconv.Itoa(os.Getpid())
	n := 0
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "status"))
		if err != nil || !strings.Contains(string(st), "\nPPid:\t"+me+"\n") {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err == nil && strings.Contains("\x00"+string(env), "\x00"+opcua.WorkerEnv+"=1\x00") {
			n++
		}
	}
	return n
}

// uaDrive is a drive with a fault flag, served by an OPC UA front whose
// acknowledge_fault method (no argument) clears it.
type uaDrive struct{ fault []float64 }

func (d *uaDrive) Class() string     { return "generic" }
func (d *uaDrive) Signals() []string { return []string{"fault_active"} }
func (d *uaDrive) Values() []float64 { return d.fault }

// TestCommandCallsOPCUAAction: a point without a node whose write block
// calls a method without argument (a fault acknowledgement), through a
// session worker and in process: the command's value only triggers the
// call, the outcome is written (nothing to read back), the drive's fault
// clears in the readings, and a value outside the write block is refused
// without a call.
func TestCommandCallsOPCUAAction(t *testing.T) {
	for _, iso := range []string{"process", "none"} {
		t.Run(iso, func(t *testing.T) { testCommandCallsOPCUAAction(t, iso) })
	}
}

func testCommandCallsOPCUAAction(t *testing.T, isolation string) {
	drive := &uaDrive{fault: []float64{1}}
	var fr *opcuafront.Front
	fr, err := opcuafront.New(opcuafront.Config{}, []opcuafront.Asset{{ID: "drive-1", Source: drive, Actions: []opcuafront.Action{{
		Name: "acknowledge_fault",
		Do: func() ua.StatusCode {
			if err := fr.Set("drive-1", "fault_active", 0, time.Now()); err != nil {
				return ua.StatusBadInternalError
			}
			return ua.StatusOK
		}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fr.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fr.Stop() })
	fr.Refresh(time.Now())
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	op, _ := nkeys.CreateUser()
	pub, _ := op.PublicKey()
	gatewaytest.Run(t, fmt.Sprintf(`gateway: {id: gw-fleet-ua-action, site: sim, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
commands: {trusted_keys: [%s]}
devices:
  - id: drive-1
    class: generic
    opcua: {endpoint: %q, publish_interval: 100ms, backoff_min: 100ms, backoff_max: 1s, isolation: %s}
    points:
      - {signal: fault_active, node_id: %q, unit: "1"}
      - {signal: fault_reset, unit: "1", write: {min: 1, max: 1, method: {object: %q, method: %q, argument: none}}}
`, ns.URL(), pub, fr.Endpoint(), isolation, fr.NodeID("drive-1", "fault_active"), fr.ObjectID("drive-1"), fr.MethodID("drive-1", "acknowledge_fault")))
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	last := map[string]telemetry.Reading{}
	sub, err := nc.Subscribe("smelter.v1.sim.generic.drive-1.data", func(m *nats.Msg) {
		b, err := telemetry.DecodeBatch(m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Readings {
			last[r.Signal] = r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	mk := func(id string, v float64) *command.Command {
		now := time.Now()
		c := &command.Command{Schema: command.Schema, ID: id, Asset: "sim.generic.drive-1", Signal: "fault_reset",
			Value: command.Num(v), Requester: "fleet-test", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := c.Sign(op); err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitFor(t, 15*time.Second, "the fault reading", func() bool {
		mu.Lock()
		defer mu.Unlock()
		r, ok := last["fault_active"]
		return ok && r.Quality == telemetry.QualityGood && r.Value == 1
	})
	waitFor(t, 15*time.Second, "the gateway to answer commands", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		c := mk(fmt.Sprintf("probe-%d", time.Now().UnixNano()), 1)
		c.Signature = "" // unsigned: rejected, never called
		res, err := command.Send(ctx, nc, c)
		return err == nil && res.Verdict == command.Rejected
	})
	if fr.Calls() != 0 {
		t.Fatalf("%d calls before any signed command", fr.Calls())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res, err := command.Send(ctx, nc, mk("ack-0", 0)); err != nil || res.Verdict != command.Rejected || fr.Calls() != 0 {
		t.Fatalf("a value outside the write block: %+v %v, %d calls", res, err, fr.Calls())
	}
	res, err := command.Send(ctx, nc, mk("ack-1", 1))
	if err != nil || res.Verdict != command.Written || !strings.Contains(res.Reason, "no read-back") || res.Old != nil {
		t.Fatalf("acknowledge: %+v %v", res, err)
	}
	if fr.Calls() != 1 {
		t.Errorf("%d calls for one command", fr.Calls())
	}
	waitFor(t, 10*time.Second, "the fault to clear in the readings", func() bool {
		mu.Lock()
		defer mu.Unlock()
		r, ok := last["fault_active"]
		return ok && r.Quality == telemetry.QualityGood && r.Value == 0
	})
	mu.Lock()
	_, acquired := last["fault_reset"]
	mu.Unlock()
	if acquired {
		t.Error("the action point (no node) appeared in the readings")
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// cmdRig is a gateway with commands enabled over a real Modbus TCP server
// (a stack we did not write, whose request log is the write counter) and
// an embedded NATS JetStream server.
type cmdRig struct {
	bank *modbustest.Bank
	nats *brokers.NATS
	nc   *nats.Conn
	op   nkeys.KeyPair // the trusted operator key
	cfg  *gwconfig.Config
	path string
}

const cmdDevices = `devices:
  - id: sp-1
    class: generic
    poll_interval: 100ms
    modbus: {address: %[1]q, unit_id: 1, timeout: 500ms}
    points:
      - {signal: pressure_setpoint, table: holding, address: 20, type: uint16, scale: 0.001, unit: MPa,
         write: {min: 0.6, max: 0.9, max_step: 0.1}}
      - {signal: tank_level, table: holding, address: 21, type: uint16, unit: "%%"}
      - {signal: valve_position, table: holding, address: 22, type: uint16, unit: "%%", write: {min: 0, max: 100}}
      - {signal: trim, table: holding, address: 23, type: int16, scale: 0.1, unit: "%%", write: {min: -10, max: 10, min_interval: 1h}}
  - id: ac-1
    class: air_compressor
    poll_interval: 100ms
    modbus: {address: %[1]q, unit_id: 2, timeout: 500ms}
    points:
      - {signal: load_state, table: holding, address: 30, type: uint16, write: {allowed: [off, loaded]}}
`

func newCmdRig(t testing.TB, trusted string, extraUplinks ...string) *cmdRig {
	t.Helper()
	return newCmdRigWith(t, trusted, "", extraUplinks...)
}

// newCmdRigWith is newCmdRig with more fields of the commands block
// (commands: "remember: 1, ").
func newCmdRigWith(t testing.TB, trusted, commands string, extraUplinks ...string) *cmdRig {
	t.Helper()
	dir := t.TempDir()
	r := &cmdRig{bank: modbustest.NewBank()}
	r.bank.SetRegisters(modbustest.HoldingRegisters, 20, 700, 55, 10, 0)
	r.bank.SetRegisters(modbustest.HoldingRegisters, 30, 1)
	srv := modbustest.StartServer(t, r.bank)
	var err error
	r.nats, err = brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nats.Shutdown)
	r.op, err = nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	if trusted == "operator" {
		pub, _ := r.op.PublicKey()
		trusted = "[" + pub + "]"
	}
	text := fmt.Sprintf("gateway: {id: gw-cmd, enterprise: acme, site: plant1, data_dir: ./data}\nhttp: {listen: \"off\"}\n"+
		"uplinks:\n  nats: {url: %q}\n%scommands: {%strusted_keys: %s, timeout: 2s}\n", r.nats.URL(), strings.Join(extraUplinks, ""), commands, trusted) +
		fmt.Sprintf(cmdDevices, srv.Addr)
	r.path = filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(r.path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	r.cfg, err = gwconfig.Load(r.path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	r.nc, err = nats.Connect(r.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	return r
}

// cmd builds a command for the rig's assets, valid for a minute.
func (r *cmdRig) cmd(id, asset, signal string, v command.Value, unit string) *command.Command {
	now := time.Now()
	return &command.Command{Schema: command.Schema, ID: id, Asset: "plant1." + asset, Signal: signal, Value: v, Unit: unit,
		Requester: "test@plant1", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
}

func (r *cmdRig) signed(t testing.TB, c *command.Command) *command.Command {
	t.Helper()
	if err := c.Sign(r.op); err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *cmdRig) send(t testing.TB, c *command.Command) *command.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := command.Send(ctx, r.nc, c)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitListening waits until the gateway answers commands (its uplink is
// ready and it subscribed).
func (r *cmdRig) waitListening(t testing.TB) {
	t.Helper()
	wait.For(t, 10*time.Second, "the gateway to listen for commands", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		c := r.cmd(fmt.Sprintf("probe-%d", time.Now().UnixNano()), "generic.sp-1", "tank_level", command.Num(1), "")
		_, err := command.Send(ctx, r.nc, c) // unsigned: rejected, never written
		return err == nil
	})
}

// auditLog gathers the audit stream's records.
type auditLog struct {
	mu   sync.Mutex
	recs []command.Result
}

func (a *auditLog) of(id string) []command.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []command.Result
	for _, r := range a.recs {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

func (r *cmdRig) audit(t *testing.T) *auditLog {
	t.Helper()
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	a := &auditLog{}
	var cons jetstream.Consumer
	wait.For(t, 10*time.Second, "the SMELTER_AUDIT stream", func() bool {
		cons, err = js.OrderedConsumer(context.Background(), telemetry.AuditStream,
			jetstream.OrderedConsumerConfig{FilterSubjects: []string{"smelter.v1.*.*.*.audit"}})
		return err == nil
	})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var res command.Result
		if json.Unmarshal(m.Data(), &res) == nil {
			a.mu.Lock()
			a.recs = append(a.recs, res)
			a.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return a
}

// TestCommandsEndToEnd: authorized commands change the device and the
// readings follow; every refused command writes nothing (the server's
// write counter proves it), answers with a clear reason, and each command
// is audited at first contact and at its outcome.
func TestCommandsEndToEnd(t *testing.T) {
	r := newCmdRig(t, "operator")
	g := runGateway(t, r.cfg)
	_ = g
	r.waitListening(t)
	audit := r.audit(t)

	// the readings of the setpoint, as the collector sees them
	var mu sync.Mutex
	var setpoints []float64
	sub, err := r.nc.Subscribe("smelter.v1.plant1.generic.sp-1.data", func(m *nats.Msg) {
		b, err := telemetry.DecodeBatch(m.Data)
		if err != nil {
			return
		}
		for _, rd := range b.Readings {
			if rd.Signal == "pressure_setpoint" && rd.Quality == telemetry.QualityGood {
				mu.Lock()
				setpoints = append(setpoints, rd.Value)
				mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// authorized: 7.5 bar is 0.75 MPa, register 750
	writes := r.bank.Writes()
	ok := r.send(t, r.signed(t, r.cmd("c-ok", "generic.sp-1", "pressure_setpoint", command.Num(7.5), "bar")))
	if ok.Verdict != command.Verified || !near(ok.Old, 0.7) || !near(ok.New, 0.75) || !near(ok.ReadBack, 0.75) || ok.Unit != "MPa" {
		t.Fatalf("authorized command: %+v", ok)
	}
	if r.bank.Writes() != writes+1 {
		t.Fatalf("%d writes for one command", r.bank.Writes()-writes)
	}
	wait.For(t, 10*time.Second, "the readings to follow the setpoint", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(setpoints) > 0 && near(&setpoints[len(setpoints)-1], 0.75)
	})

	unknown, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	expired := r.cmd("c-expired", "generic.sp-1", "pressure_setpoint", command.Num(0.74), "MPa")
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-2*time.Minute), time.Now().Add(-time.Minute)
	byUnknown := r.cmd("c-unknown-key", "generic.sp-1", "pressure_setpoint", command.Num(0.74), "MPa")
	if err := byUnknown.Sign(unknown); err != nil {
		t.Fatal(err)
	}
	moved := r.signed(t, r.cmd("c-moved", "generic.sp-1", "pressure_setpoint", command.Num(0.74), "MPa"))
	moved.Asset = "plant1.air_compressor.ac-1" // signature no longer matches
	refused := []struct {
		c      *command.Command
		reason string
	}{
		{r.signed(t, r.cmd("c-limit", "generic.sp-1", "pressure_setpoint", command.Num(9.5), "bar")), "outside the write limits 0.6..0.9 MPa"},
		{r.signed(t, r.cmd("c-step", "generic.sp-1", "pressure_setpoint", command.Num(0.9), "MPa")), "exceeds write.max_step 0.1"},
		{r.cmd("c-unsigned", "generic.sp-1", "pressure_setpoint", command.Num(0.74), "MPa"), "unsigned"},
		{byUnknown, "does not verify with any trusted key"},
		{moved, "does not verify with any trusted key"},
		{r.signed(t, expired), "expired at"},
		{r.signed(t, r.cmd("c-unwritable", "generic.sp-1", "tank_level", command.Num(50), "%")), "is not writable"},
		{r.signed(t, r.cmd("c-nosignal", "generic.sp-1", "flow", command.Num(1), "")), "has no signal flow"},
		{r.signed(t, r.cmd("c-unit", "generic.sp-1", "pressure_setpoint", command.Num(0.74), "Cel")), "unit:"},
		{r.signed(t, r.cmd("c-label", "generic.sp-1", "pressure_setpoint", command.Label("high"), "")), "takes a number"},
		{r.signed(t, r.cmd("c-state", "air_compressor.ac-1", "load_state", command.Label("unloaded"), "")), "is not allowed"},
		{r.signed(t, r.cmd("c-asset", "generic.sp-9", "pressure_setpoint", command.Num(0.74), "MPa")), "not on this gateway"},
	}
	writes = r.bank.Writes()
	for _, c := range refused {
		if c.c.ID == "c-asset" {
			// no gateway listens on sp-9's subject: nobody answers
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, err := command.Send(ctx, r.nc, c.c)
			cancel()
			if err == nil {
				t.Errorf("%s: answered", c.c.ID)
			}
			continue
		}
		res := r.send(t, c.c)
		if res.Verdict != command.Rejected || !strings.Contains(res.Reason, c.reason) {
			t.Errorf("%s: %s %q, want rejected %q", c.c.ID, res.Verdict, res.Reason, c.reason)
		}
	}
	// replay: the earlier outcome, no second write
	replay := r.send(t, r.signed(t, r.cmd("c-ok", "generic.sp-1", "pressure_setpoint", command.Num(7.5), "bar")))
	if !replay.Duplicate || replay.Verdict != command.Verified {
		t.Errorf("replay: %+v", replay)
	}
	if n := r.bank.Writes() - writes; n != 0 {
		t.Fatalf("refused commands wrote %d times", n)
	}

	// a state signal by label
	st := r.send(t, r.signed(t, r.cmd("c-loaded", "air_compressor.ac-1", "load_state", command.Label("loaded"), "")))
	if st.Verdict != command.Verified || st.OldLabel != "unloaded" || st.NewLabel != "loaded" {
		t.Errorf("state command: %+v", st)
	}
	// min_interval: the second write within the hour is refused
	if res := r.send(t, r.signed(t, r.cmd("c-trim-1", "generic.sp-1", "trim", command.Num(-2.5), "%"))); res.Verdict != command.Verified {
		t.Errorf("trim: %+v", res)
	}
	if res := r.send(t, r.signed(t, r.cmd("c-trim-2", "generic.sp-1", "trim", command.Num(-2), "%"))); res.Verdict != command.Rejected ||
		!strings.Contains(res.Reason, "min_interval") {
		t.Errorf("trim again: %+v", res)
	}
	// the device refuses: failed with its exception code
	r.bank.SetWriteException(modbustest.HoldingRegisters, 22, 4)
	before := r.bank.Writes()
	fail := r.send(t, r.signed(t, r.cmd("c-exc", "generic.sp-1", "valve_position", command.Num(40), "%")))
	if fail.Verdict != command.Failed || fail.Code != 4 || !strings.Contains(fail.Reason, "exception 4") {
		t.Errorf("device exception: %+v", fail)
	}
	if r.bank.Writes() != before+1 {
		t.Errorf("%d write requests for the refused write", r.bank.Writes()-before)
	}

	// every command is in the audit stream: received first, then its outcome
	ids := []string{"c-ok", "c-loaded", "c-exc", "c-trim-2"}
	for _, c := range refused {
		if c.c.ID != "c-asset" {
			ids = append(ids, c.c.ID)
		}
	}
	wait.For(t, 10*time.Second, "every command in the audit stream", func() bool {
		for _, id := range ids {
			if len(audit.of(id)) < 2 {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		recs := audit.of(id)
		if recs[0].Verdict != command.Received || recs[0].Gateway != "gw-cmd" || recs[0].Requester != "test@plant1" {
			t.Errorf("%s: first audit record %+v", id, recs[0])
		}
	}
	okRecs := audit.of("c-ok")
	verdicts := []command.Verdict{}
	for _, rec := range okRecs {
		verdicts = append(verdicts, rec.Verdict)
	}
	if len(okRecs) < 5 || verdicts[1] != command.Accepted || verdicts[2] != command.Verified || !okRecs[4].Duplicate {
		t.Errorf("c-ok audit trail %v", verdicts)
	}
	if rec := okRecs[2]; !near(rec.Old, 0.7) || !near(rec.New, 0.75) || rec.Signer == "" {
		t.Errorf("c-ok outcome record %+v", rec)
	}
}

// near: v is set and equals want within float64 rounding of a scaled
// register.
func near(v *float64, want float64) bool { return v != nil && math.Abs(*v-want) < 1e-9 }

// TestCommandsNoTrustedKeys: a gateway that trusts no key refuses every
// command, signed or not, and writes nothing.
func TestCommandsNoTrustedKeys(t *testing.T) {
	r := newCmdRig(t, "[]")
	runGateway(t, r.cfg)
	r.waitListening(t)
	res := r.send(t, r.signed(t, r.cmd("c-1", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "trusts no keys") {
		t.Errorf("%+v", res)
	}
	if n := r.bank.Writes(); n != 0 {
		t.Errorf("%d writes", n)
	}
}

// TestCommandsNeedTheAuditStream: on a telemetry stream from before the
// audit stream (SMELTER on smelter.v1.>), the audit stream cannot exist;
// every command is refused, naming the change, and nothing is written nor
// stored (not even in SMELTER). Once SMELTER is narrowed (the gateway
// checks again every few seconds), commands run and are audited in SMELTER_AUDIT.
func TestCommandsNeedTheAuditStream(t *testing.T) {
	r := newCmdRig(t, "operator")
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMELTER", Subjects: []string{"smelter.v1.>"}}); err != nil {
		t.Fatal(err)
	}
	runGateway(t, r.cfg)
	r.waitListening(t)
	res := r.send(t, r.signed(t, r.cmd("c-legacy", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "audit unavailable") ||
		!strings.Contains(res.Reason, "nats stream edit SMELTER --subjects 'smelter.v1.*.*.*.data,") {
		t.Fatalf("%+v", res)
	}
	if n := r.bank.Writes(); n != 0 {
		t.Fatalf("%d writes", n)
	}
	sub, err := r.nc.SubscribeSync("smelter.v1.*.*.*.audit")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "SMELTER", Subjects: telemetry.TelemetryStreamSubjects("*")}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "a verified command once SMELTER is narrowed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		res, err := command.Send(ctx, r.nc, r.signed(t, r.cmd(fmt.Sprintf("c-%d", time.Now().UnixNano()), "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
		return err == nil && res.Verdict == command.Verified
	})
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no audit record: %v", err)
	}
	s, err := js.Stream(ctx, telemetry.AuditStream)
	if err != nil || s.CachedInfo().State.Msgs == 0 {
		t.Fatalf("audit stream: %v, %+v", err, s)
	}
	// the audit stream lost behind the gateway's back (same connection):
	// the next command is refused, and the gateway creates the stream again
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, telemetry.AuditStream); err != nil {
		t.Fatal(err)
	}
	res = r.send(t, r.signed(t, r.cmd("c-lost", "generic.sp-1", "pressure_setpoint", command.Num(0.7), "MPa")))
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "audit unavailable") {
		t.Fatalf("with the audit stream gone: %+v", res)
	}
	wait.For(t, 20*time.Second, "the audit stream created again", func() bool {
		_, err := js.Stream(ctx, telemetry.AuditStream)
		return err == nil
	})
}

// TestCommandIDsSurviveRestart: a command retried after a gateway restart
// gets its earlier outcome and is not written again.
func TestCommandIDsSurviveRestart(t *testing.T) {
	r := newCmdRig(t, "operator")
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(r.cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	r.waitListening(t)
	c := r.signed(t, r.cmd("c-persist", "generic.sp-1", "pressure_setpoint", command.Num(0.72), "MPa"))
	if res := r.send(t, c); res.Verdict != command.Verified {
		t.Fatalf("%+v", res)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	writes := r.bank.Writes()
	cfg, err := gwconfig.Load(r.path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	runGateway(t, cfg)
	r.waitListening(t)
	res := r.send(t, c)
	if !res.Duplicate || res.Verdict != command.Verified {
		t.Errorf("retry after restart: %+v", res)
	}
	if n := r.bank.Writes() - writes; n != 0 {
		t.Errorf("retry after restart wrote %d times", n)
	}
}

// TestCommandsOverMQTTMirror: the same signed command on the MQTT mirror
// topic is checked, audited and written like one over NATS; its result
// comes back on <topic>/result; an unsigned one is refused there too.
func TestCommandsOverMQTTMirror(t *testing.T) {
	r, mq := newMirrorRig(t)

	results := make(chan command.Result, 16)
	const topic = "smelter/v1/plant1/generic/sp-1/cmd"
	cl := resultsClient(t, mq.URL(), "mirror-test", topic, func(res command.Result) { results <- res })
	// a signed command left retained on the broker before the gateway
	// subscribes: delivered as retained, refused and audited, never
	// written (a command is never stored for later)
	before := r.bank.Writes()
	kept, err := json.Marshal(r.signed(t, r.cmd("mq-retained", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if err != nil {
		t.Fatal(err)
	}
	if tok := cl.Publish(topic, 1, true, kept); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("retained publish: %v", tok.Error())
	}
	runGateway(t, r.cfg)
	r.waitListening(t)
	audit := r.audit(t)
	select {
	case res := <-results:
		// refused as retained, or, when MQTT subscribed before the NATS
		// connection was up, as unauditable (mqtt's TestSubscribeReportsRetained
		// pins the retained flag itself); never written either way
		if res.ID != "mq-retained" || res.Verdict != command.Rejected ||
			(!strings.Contains(res.Reason, "retained MQTT message is not a command") && !strings.Contains(res.Reason, "audit unavailable")) {
			t.Errorf("retained command: %+v", res)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no result for the retained command")
	}
	if tok := cl.Publish(topic, 1, true, []byte{}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil { // clear it
		t.Fatalf("clear the retained command: %v", tok.Error())
	}
	if n := r.bank.Writes() - before; n != 0 {
		t.Errorf("the retained command wrote %d times", n)
	}
	publish := func(c *command.Command) command.Result {
		t.Helper()
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var res command.Result
		wait.For(t, 10*time.Second, "a result on the mirror topic", func() bool {
			// the gateway subscribes once its MQTT uplink is up: resend (same id) until answered
			if tok := cl.Publish(topic, 1, false, data); !tok.WaitTimeout(time.Second) {
				return false
			}
			select {
			case res = <-results:
				return res.ID == c.ID
			case <-time.After(300 * time.Millisecond):
				return false
			}
		})
		return res
	}
	writes := r.bank.Writes()
	if res := publish(r.cmd("mq-unsigned", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")); res.Verdict != command.Rejected {
		t.Errorf("unsigned over MQTT: %+v", res)
	}
	res := publish(r.signed(t, r.cmd("mq-ok", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if res.Verdict != command.Verified { // first answer, or the record of it on a resend
		t.Fatalf("signed over MQTT: %+v", res)
	}
	if n := r.bank.Writes() - writes; n != 1 {
		t.Errorf("%d writes for one command (resent until answered)", n)
	}
	wait.For(t, 10*time.Second, "the MQTT command in the audit stream", func() bool { return len(audit.of("mq-ok")) >= 3 })
}

// newMirrorRig is newCmdRig with an MQTT uplink (the JSON mirror) to an
// in-process broker, returned too.
func newMirrorRig(t *testing.T) (*cmdRig, *brokers.MQTT) {
	t.Helper()
	mq, err := brokers.StartMQTT(brokers.MQTTOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mq.Close() })
	return newCmdRig(t, "operator", fmt.Sprintf("  mqtt: {url: %q}\n", mq.URL())), mq
}

// resultsClient connects an MQTT client to url as id and calls got with
// every command result on topic's result topic (<topic>/result).
func resultsClient(t *testing.T, url, id, topic string, got func(command.Result)) paho.Client {
	t.Helper()
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	if tok := cl.Subscribe(topic+"/result", 1, func(_ paho.Client, m paho.Message) {
		var res command.Result
		if json.Unmarshal(m.Payload(), &res) == nil {
			got(res)
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return cl
}

// TestCommandReplayWithSmallRemember: with commands.remember 1, a second
// command within the first one's lifetime is refused rather than the
// first id forgotten, so replaying the first is answered from the record
// and never written twice.
func TestCommandReplayWithSmallRemember(t *testing.T) {
	r := newCmdRigWith(t, "operator", "remember: 1, ")
	runGateway(t, r.cfg)
	r.waitListening(t)
	a := r.signed(t, r.cmd("c-a", "generic.sp-1", "valve_position", command.Num(40), "%"))
	if res := r.send(t, a); res.Verdict != command.Verified {
		t.Fatalf("A: %+v", res)
	}
	writes := r.bank.Writes()
	b := r.send(t, r.signed(t, r.cmd("c-b", "generic.sp-1", "valve_position", command.Num(50), "%")))
	if b.Verdict != command.Rejected || !strings.Contains(b.Reason, "commands.remember") {
		t.Errorf("B with remember full: %+v", b)
	}
	again := r.send(t, a)
	if !again.Duplicate || again.Verdict != command.Verified {
		t.Errorf("A replayed: %+v", again)
	}
	if n := r.bank.Writes() - writes; n != 0 {
		t.Errorf("B and A's replay wrote %d times", n)
	}
}

// TestCommandOversizedFieldsBounded: an unsigned sender cannot make the
// gateway store, answer or log large text: a 900 KB requester (a request
// beyond command.MaxRequestBytes) and a 2 KB requester within a small
// request are both refused, and every audit record and reply stays small
// (the oversized request named by its size and digest, fields clipped).
func TestCommandOversizedFieldsBounded(t *testing.T) {
	r := newCmdRig(t, "operator")
	runGateway(t, r.cfg)
	r.waitListening(t)
	audit, err := r.nc.SubscribeSync("smelter.v1.*.*.*.audit")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	later := time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano)
	doc := func(id, requester string) []byte {
		return fmt.Appendf(nil, `{"schema":"smelter.command/1","id":%q,"asset":"plant1.generic.sp-1","signal":"valve_position","value":40,"unit":"%%","requester":%q,"issued_at":%q,"expires_at":%q}`,
			id, requester, now, later)
	}
	for _, c := range []struct {
		data   []byte
		reason string
	}{
		{doc("big-1", strings.Repeat("m", 900_000)), "exceeds 4096"},
		{doc("big-2", strings.Repeat("m", 2000)), "requester longer than 128"},
		{append(doc("big-3", "mallory"), `{"x":1}`...), "data after"},
	} {
		m, err := r.nc.Request("smelter.v1.plant1.generic.sp-1.cmd", c.data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var res command.Result
		if err := json.Unmarshal(m.Data, &res); err != nil || res.Verdict != command.Rejected || !strings.Contains(res.Reason, c.reason) {
			t.Errorf("%.40s: %v %.300s, want rejected %q", c.data, err, m.Data, c.reason)
		}
		if len(m.Data) > 2048 {
			t.Errorf("%.40s: a reply of %d bytes", c.data, len(m.Data))
		}
		for range 2 { // received, rejected
			a, err := audit.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Data) > 2048 {
				t.Errorf("%.40s: an audit record of %d bytes", c.data, len(a.Data))
			}
		}
	}
	if n := r.bank.Writes(); n != 0 {
		t.Errorf("%d writes", n)
	}
}

// TestMinIntervalSurvivesRestart: write.min_interval holds across a
// gateway restart (and so a reload): the point's last write time is kept
// in <data_dir>/commands/last_writes.json.
func TestMinIntervalSurvivesRestart(t *testing.T) {
	r := newCmdRig(t, "operator")
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(r.cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	r.waitListening(t)
	if res := r.send(t, r.signed(t, r.cmd("c-trim-1", "generic.sp-1", "trim", command.Num(-2.5), "%"))); res.Verdict != command.Verified {
		t.Fatalf("trim: %+v", res)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(r.path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	runGateway(t, cfg)
	r.waitListening(t)
	writes := r.bank.Writes()
	res := r.send(t, r.signed(t, r.cmd("c-trim-2", "generic.sp-1", "trim", command.Num(-2), "%")))
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "min_interval") {
		t.Errorf("a second write within min_interval after a restart: %+v", res)
	}
	if n := r.bank.Writes() - writes; n != 0 {
		t.Errorf("%d writes", n)
	}
}

// TestDuplicateMustMatchAsset: a command id already used answers its
// earlier outcome only to the same asset and signal; the same id for
// another asset, or a command sent on another asset's subject, is refused
// without learning the outcome, and the id keeps its record.
func TestDuplicateMustMatchAsset(t *testing.T) {
	r := newCmdRig(t, "operator")
	runGateway(t, r.cfg)
	r.waitListening(t)
	first := r.signed(t, r.cmd("c-dup", "generic.sp-1", "valve_position", command.Num(30), "%"))
	if res := r.send(t, first); res.Verdict != command.Verified {
		t.Fatalf("first: %+v", res)
	}
	writes := r.bank.Writes()
	other := r.send(t, r.signed(t, r.cmd("c-dup", "air_compressor.ac-1", "load_state", command.Label("loaded"), "")))
	if other.Duplicate || other.Verdict != command.Rejected || !strings.Contains(other.Reason, "already names a command for plant1.generic.sp-1") {
		t.Errorf("same id, another asset: %+v", other)
	}
	// the signed sp-1 command sent on ac-1's subject
	data, _ := json.Marshal(first)
	m, err := r.nc.Request("smelter.v1.plant1.air_compressor.ac-1.cmd", data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var moved command.Result
	if err := json.Unmarshal(m.Data, &moved); err != nil || moved.Duplicate || moved.Verdict != command.Rejected ||
		!strings.Contains(moved.Reason, "is not the subject's asset") {
		t.Errorf("on another subject: %v %+v", err, moved)
	}
	// the same id, asset and signal with another value (review of #13: it
	// was answered with the earlier "verified" for a write that never
	// happened)
	if other := r.send(t, r.signed(t, r.cmd("c-dup", "generic.sp-1", "valve_position", command.Num(40), "%"))); other.Duplicate ||
		other.Verdict != command.Rejected || !strings.Contains(other.Reason, "already names another command") || strings.Contains(other.Reason, "30") {
		t.Errorf("same id, another value: %+v", other)
	}
	if again := r.send(t, first); !again.Duplicate || again.Verdict != command.Verified {
		t.Errorf("the id's own retry: %+v", again)
	}
	if n := r.bank.Writes() - writes; n != 0 {
		t.Errorf("%d writes", n)
	}
}

// TestRetainedCommandRefusedOnce (review16 L-1): a signed command left
// retained on the mirror topic is refused, audited and answered once; the
// broker delivers it again at every reconnect (here: the broker drops the
// gateway's connection twice), and those deliveries are counted and
// dropped, not audited or answered again. Before, each reconnect audited
// another refusal and published another result.
func TestRetainedCommandRefusedOnce(t *testing.T) {
	r, mq := newMirrorRig(t)
	var mu sync.Mutex
	var got []command.Result
	const topic = "smelter/v1/plant1/generic/sp-1/cmd"
	cl := resultsClient(t, mq.URL(), "retained-test", topic, func(res command.Result) {
		mu.Lock()
		got = append(got, res)
		mu.Unlock()
	})
	refusals := func() (retained, unaudited int) {
		mu.Lock()
		defer mu.Unlock()
		for _, res := range got {
			switch {
			case strings.Contains(res.Reason, "retained MQTT message is not a command"):
				retained++
			case strings.HasPrefix(res.Reason, "audit unavailable"):
				unaudited++
			}
		}
		return retained, unaudited
	}
	kept, err := json.Marshal(r.signed(t, r.cmd("mq-kept", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if err != nil {
		t.Fatal(err)
	}
	if tok := cl.Publish(topic, 1, true, kept); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("retained publish: %v", tok.Error())
	}
	before := r.bank.Writes()
	g := runGateway(t, r.cfg)
	r.waitListening(t)
	// the first delivery may come before the audit stream is usable
	// (refused unaudited, tried again at the next delivery): drop the
	// gateway's connection after each such refusal until the refusal as
	// retained is audited and answered
	kicked := 0
	wait.For(t, 60*time.Second, "the retained command refused as retained", func() bool {
		n, un := refusals()
		if n > 0 {
			return true
		}
		if un > kicked && mq.Disconnect("gw-cmd") {
			kicked = un
		}
		return false
	})
	repeats := func() float64 {
		if g.mx.cmd == nil {
			return 0
		}
		return testutil.ToFloat64(g.mx.cmd.retainedRepeats)
	}
	for i := 1; i <= 2; i++ {
		wait.For(t, 10*time.Second, "the gateway's MQTT connection dropped", func() bool { return mq.Disconnect("gw-cmd") })
		wait.For(t, 30*time.Second, "the retained command delivered again after the reconnect", func() bool { return repeats() >= float64(i) })
	}
	// a later command's result is proof the gateway answers on the
	// topic: by then a second answer to the retained one would be here
	fresh, err := json.Marshal(r.signed(t, r.cmd("mq-fresh", "generic.sp-1", "pressure_setpoint", command.Num(0.71), "MPa")))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the result of a fresh command", func() bool {
		if tok := cl.Publish(topic, 1, false, fresh); !tok.WaitTimeout(time.Second) {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(got, func(res command.Result) bool { return res.ID == "mq-fresh" })
	})
	if n, _ := refusals(); n != 1 {
		t.Fatalf("%d results refusing the retained command as retained, want 1 (the broker delivered it %v times more)", n, repeats())
	}
	if n := r.bank.Writes() - before; n != 1 {
		t.Fatalf("%d writes, want 1 (the fresh command's)", n)
	}
}

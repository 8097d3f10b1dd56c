package gateway

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// verdicts lists the verdicts of records.
func verdicts(recs []command.Result) []command.Verdict {
	out := make([]command.Verdict, len(recs))
	for i, r := range recs {
		out[i] = r.Verdict
	}
	return out
}

// waitVerdicts waits until the audit holds exactly want for id, in order.
func waitVerdicts(t *testing.T, a *auditLog, id string, want ...command.Verdict) []command.Result {
	t.Helper()
	var got []command.Result
	wait.For(t, 20*time.Second, "the audit records of "+id, func() bool {
		got = a.of(id)
		return len(got) >= len(want)
	})
	if v := verdicts(got); len(v) != len(want) || strings.Join(strVerdicts(v), ",") != strings.Join(strVerdicts(want), ",") {
		t.Fatalf("audit of %s: %v, want %v (%+v)", id, v, want, got)
	}
	return got
}

func strVerdicts(v []command.Verdict) []string {
	out := make([]string, len(v))
	for i := range v {
		out[i] = string(v[i])
	}
	return out
}

// onFirstWrite calls f once, when the bank gets its first write request
// from now on (before the bank answers it).
func onFirstWrite(bank *modbustest.Bank, f func()) {
	var once sync.Once
	bank.OnRequest(func(q modbustest.Request) {
		if q.Write {
			once.Do(f)
		}
	})
}

// TestCommandNonFiniteRefused (review16 M-2): a finite value that the unit
// conversion makes infinite (1.7e308 of unit "1" on a % signal is +Inf %)
// is refused before the limits and max_step (no comparison with Inf
// refuses it), with a reason, audited and answered; nothing is written.
func TestCommandNonFiniteRefused(t *testing.T) {
	r := newCmdRig(t, "operator")
	runGateway(t, r.cfg)
	r.waitListening(t)
	audit := r.audit(t)
	for i, v := range []float64{1.7e308, -1.7e308} {
		id := []string{"inf-pos", "inf-neg"}[i]
		res := r.send(t, r.signed(t, r.cmd(id, "generic.sp-1", "valve_position", command.Num(v), "1")))
		if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "not a finite number") {
			t.Fatalf("%g of unit 1: %+v, want rejected, not a finite number", v, res)
		}
		recs := waitVerdicts(t, audit, id, command.Received, command.Rejected)
		if recs[1].Reason != res.Reason {
			t.Errorf("audited reason %q, answered %q", recs[1].Reason, res.Reason)
		}
	}
	if n := r.bank.Writes(); n != 0 {
		t.Fatalf("%d writes", n)
	}
}

// TestCommandLostReplyIsOutcomeUnknown (review16 M-1): the write reaches
// the device but its reply comes after the Modbus timeout: the command is
// failed "outcome unknown" (the device may hold the value), audited so,
// with the requested value as target and no new value (L-2), counted as
// outcome_unknown; a retry of the id answers the same without writing.
func TestCommandLostReplyIsOutcomeUnknown(t *testing.T) {
	r := newCmdRig(t, "operator")
	g := runGateway(t, r.cfg)
	r.waitListening(t)
	audit := r.audit(t)
	onFirstWrite(r.bank, func() { r.bank.SetDelay(1500*time.Millisecond, 1) }) // the timeout is 500ms
	c := r.signed(t, r.cmd("lost-reply", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa"))
	res := r.send(t, c)
	if res.Verdict != command.Failed || !strings.HasPrefix(res.Reason, command.OutcomeUnknown) || !strings.Contains(res.Reason, "timeout") {
		t.Fatalf("lost reply: %+v, want failed, %q", res, command.OutcomeUnknown)
	}
	if res.New != nil || !near(res.Target, 0.75) || !near(res.Old, 0.7) {
		t.Errorf("failed record: new %v target %v old %v, want no new, target 0.75, old 0.7", res.New, res.Target, res.Old)
	}
	recs := waitVerdicts(t, audit, "lost-reply", command.Received, command.Accepted, command.Failed)
	if !strings.HasPrefix(recs[2].Reason, command.OutcomeUnknown) {
		t.Errorf("audited outcome %q", recs[2].Reason)
	}
	if n := r.bank.Writes(); n != 1 {
		t.Fatalf("%d writes, want 1", n)
	}
	again := r.send(t, c)
	if !again.Duplicate || !strings.HasPrefix(again.Reason, command.OutcomeUnknown) {
		t.Errorf("retry: %+v", again)
	}
	if n := r.bank.Writes(); n != 1 {
		t.Fatalf("%d writes after the retry, want 1", n)
	}
	if n := testutil.ToFloat64(g.mx.cmd.results.WithLabelValues("outcome_unknown")); n != 1 {
		t.Errorf("smelter_gateway_commands_total{result=outcome_unknown} %v, want 1", n)
	}
}

// TestCommandSurvivesStop (review16 M-6): the gateway is stopped (as a
// reload or SIGTERM stops it) while a write waits for its reply: the write
// still completes, its outcome is answered and audited, and Run returns
// after it.
func TestCommandSurvivesStop(t *testing.T) {
	r := newCmdRig(t, "operator")
	g, err := New(r.cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	r.waitListening(t)
	audit := r.audit(t)
	onFirstWrite(r.bank, func() {
		r.bank.SetDelay(300*time.Millisecond, 1) // within the 500ms timeout
		cancel()                                 // stop while the write waits for its reply
	})
	res := r.send(t, r.signed(t, r.cmd("stop-mid-write", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if res.Verdict != command.Verified || !near(res.New, 0.75) {
		t.Fatalf("stopped mid-write: %+v, want verified", res)
	}
	waitVerdicts(t, audit, "stop-mid-write", command.Received, command.Accepted, command.Verified)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not stop")
	}
}

// TestCommandOutcomeAuditedLater (review16 M-3): NATS goes down while a
// write waits for its reply, so the outcome record cannot be published:
// the gateway keeps it in its id store and publishes it once NATS is back,
// and the trail does not end at "accepted".
func TestCommandOutcomeAuditedLater(t *testing.T) {
	r := newCmdRig(t, "operator")
	g := runGateway(t, r.cfg)
	r.waitListening(t)
	onFirstWrite(r.bank, func() {
		r.bank.SetDelay(300*time.Millisecond, 1)
		r.nats.Shutdown()
	})
	c := r.signed(t, r.cmd("nats-down", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa"))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = command.Send(ctx, r.nc, c) // no answer: NATS is down
	}()
	wait.For(t, 20*time.Second, "the outcome's audit to fail", func() bool {
		return g.mx.cmd != nil && testutil.ToFloat64(g.mx.cmd.auditFailures.WithLabelValues("outcome")) >= 1
	})
	if n := testutil.ToFloat64(g.mx.cmd.pending); n != 1 {
		t.Fatalf("smelter_gateway_command_audit_pending %v, want 1", n)
	}
	if err := r.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	audit := r.audit(t)
	recs := waitVerdicts(t, audit, "nats-down", command.Received, command.Accepted, command.Verified)
	if !near(recs[2].ReadBack, 0.75) {
		t.Errorf("late outcome record: %+v", recs[2])
	}
	wait.For(t, 10*time.Second, "no pending outcome", func() bool { return testutil.ToFloat64(g.mx.cmd.pending) == 0 })
	// the retry answers the outcome, nothing written again
	if res := r.send(t, c); res.Verdict != command.Verified || !res.Duplicate {
		t.Errorf("retry: %+v", res)
	}
	if n := r.bank.Writes(); n != 1 {
		t.Fatalf("%d writes, want 1", n)
	}
}

// TestCommandInterruptedAuditedAtStart (review16 M-3, kill -9): the id
// store holds a command still "accepted" (the gateway died between
// accepting it and its outcome): the next start records and audits it as
// failed "outcome unknown", and a retry answers that without writing.
func TestCommandInterruptedAuditedAtStart(t *testing.T) {
	r := newCmdRig(t, "operator")
	c := r.signed(t, r.cmd("killed", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa"))
	st, err := command.OpenStore(filepath.Join(r.cfg.DataDir, "commands", "ids.jsonl"), 10, time.Minute, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v := 0.75
	acc := command.Result{Schema: command.ResultSchema, ID: c.ID, Gateway: "gw-cmd", Asset: c.Asset, Signal: c.Signal, Requester: c.Requester,
		Verdict: command.Accepted, Requested: "0.75", RequestedUnit: "MPa", New: &v, IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, At: time.Now()}
	if err := st.Put(acc); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	runGateway(t, r.cfg)
	r.waitListening(t)
	audit := r.audit(t)
	recs := waitVerdicts(t, audit, "killed", command.Failed)
	if !strings.HasPrefix(recs[0].Reason, command.OutcomeUnknown) || recs[0].New != nil || !near(recs[0].Target, 0.75) {
		t.Errorf("interrupted command's outcome: %+v", recs[0])
	}
	if res := r.send(t, c); !res.Duplicate || res.Verdict != command.Failed {
		t.Errorf("retry: %+v", res)
	}
	if n := r.bank.Writes(); n != 0 {
		t.Fatalf("%d writes", n)
	}
}

// TestCommandRefusedAfterLostRecord (review16 L-6): a command id file with
// an unreadable record (not a torn last line) lost an id the gateway may
// have accepted and written: a command issued before the gateway opened
// its store (+ max_skew) is refused, nothing written, naming the lost
// record; it is never executed as new.
func TestCommandRefusedAfterLostRecord(t *testing.T) {
	r := newCmdRig(t, "operator")
	c := r.signed(t, r.cmd("maybe-done", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa"))
	path := filepath.Join(r.cfg.DataDir, "commands", "ids.jsonl")
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	// the record of "maybe-done" damaged on disk, a readable one after it
	lost := "{\"id\":\"maybe-d\x00\x00\x00\n" + `{"id":"other","verdict":"verified","expires_at":"` + c.ExpiresAt.Format(time.RFC3339Nano) + `"}` + "\n"
	if err := os.WriteFile(path, []byte(lost), 0o600); err != nil {
		t.Fatal(err)
	}
	runGateway(t, r.cfg)
	r.waitListening(t)
	res := r.send(t, c)
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "lost 1 record") {
		t.Errorf("a command issued before the store lost a record: %+v", res)
	}
	if n := r.bank.Writes(); n != 0 {
		t.Fatalf("%d writes", n)
	}
}

package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/streams"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// auditRig is one collector with commands on an in-process JetStream with
// the telemetry stream and a separate audit stream.
type auditRig struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	col *running
	mu  sync.Mutex
	got []alert.Alert // command alerts as published, raised and updated
}

func startAuditRig(t *testing.T) *auditRig {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	r := &auditRig{}
	if r.nc, err = nats.Connect(ns.URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	r.js, _ = jetstream.New(r.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tel := jetstream.StreamConfig{Name: "SMELTER", Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		Subjects: []string{"smelter.v1.*.*.*.data", "smelter.v1.*.*.*.birth", "smelter.v1.*.*.*.death", "smelter.v1.*.*.*.alert",
			"smelter.v1.*.*.*.kpi", "smelter.v1.*.*.*.status"}}
	if _, err := r.js.CreateStream(ctx, tel); err != nil {
		t.Fatal(err)
	}
	r.createAudit(t)
	sub, err := r.nc.Subscribe("smelter.v1.*.*.*.alert", func(m *nats.Msg) {
		var a alert.Alert
		if json.Unmarshal(m.Data, &a) == nil && a.Kind == KindCommand && a.State != alert.Cleared {
			r.mu.Lock()
			r.got = append(r.got, a)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Commands = &CommandsConfig{}
	r.col = startCfg(t, cfg)
	r.waitConsumer(t)
	return r
}

func (r *auditRig) createAudit(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultAuditStream, Storage: jetstream.FileStorage, Subjects: []string{auditFilter}}); err != nil {
		t.Fatal(err)
	}
}

func (r *auditRig) waitConsumer(t *testing.T) {
	t.Helper()
	wait.For(t, 30*time.Second, "the audit consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.js.Consumer(ctx, DefaultAuditStream, Defaults().Group+"-audit")
		return err == nil
	})
}

// reject publishes a rejected record of an unsigned command id.
func (r *auditRig) reject(t *testing.T, id, requester string) {
	t.Helper()
	r.publish(t, command.Result{Schema: command.ResultSchema, ID: id, Gateway: "gw-1", Asset: "site1.air_compressor.ac-1",
		Signal: "unload_pressure_setpoint", Requester: requester, Verdict: command.Rejected, At: time.Now().UTC(),
		Reason: "unsigned: commands must be signed with a trusted key"})
}

// publish stores an audit record on its asset's audit subject.
func (r *auditRig) publish(t *testing.T, rec command.Result) {
	t.Helper()
	data, _ := json.Marshal(rec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.js.Publish(ctx, "smelter.v1."+rec.Asset+".audit", data); err != nil {
		t.Fatal(err)
	}
}

// alerted counts the alert events (raised, updated) naming s in their
// message.
func (r *auditRig) alerted(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.got {
		if strings.Contains(a.Message, s) {
			n++
		}
	}
	return n
}

// TestCommandAlertsSurviveAuditLoss: the collector's durable audit
// consumer deleted (alone, or with the whole audit stream, which a gateway
// then creates again) is created again; refused commands recorded after
// the loss still raise their alarm, and records handled before it are not
// alerted again.
func TestCommandAlertsSurviveAuditLoss(t *testing.T) {
	r := startAuditRig(t)
	r.reject(t, "before-loss", "mallory-1")
	wait.For(t, 20*time.Second, "the first alarm", func() bool { return r.alerted("mallory-1") == 1 })

	// the consumer alone deleted
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.js.DeleteConsumer(ctx, DefaultAuditStream, Defaults().Group+"-audit"); err != nil {
		t.Fatal(err)
	}
	r.reject(t, "after-consumer-loss", "mallory-2")
	wait.For(t, 30*time.Second, "an alarm after the consumer was deleted", func() bool { return r.alerted("mallory-2") == 1 })
	if n := r.alerted("mallory-1"); n != 1 {
		t.Errorf("a record handled before the loss alerted %d times", n)
	}

	// the whole stream deleted and created again (as a gateway does)
	if err := r.js.DeleteStream(ctx, DefaultAuditStream); err != nil {
		t.Fatal(err)
	}
	r.createAudit(t)
	r.reject(t, "after-stream-loss", "mallory-3")
	wait.For(t, 30*time.Second, "an alarm after the stream was created again", func() bool { return r.alerted("mallory-3") == 1 })
	r.waitConsumer(t)
}

// TestCommandAlertFloodAggregated: a flood of refused unsigned commands on
// one asset, with hostile ids (line feeds, NUL) and changing signals, is
// one active unauthorized_command alarm whose attempts count them; its id
// and message carry no raw control characters; a record without id or
// requester reads cleanly.
func TestCommandAlertFloodAggregated(t *testing.T) {
	r := startAuditRig(t)
	const n = 30
	for i := range n {
		rec := command.Result{Schema: command.ResultSchema, ID: fmt.Sprintf("evil\n%d\x00id", i), Gateway: "gw-1", Asset: "site1.air_compressor.ac-1",
			Signal: fmt.Sprintf("sig_%d", i), Requester: "mallory\r\nforged: line", Verdict: command.Rejected, At: time.Now().UTC(),
			Reason: "unsigned: commands must be signed with a trusted key"}
		r.publish(t, rec)
	}
	active := func() []alert.Alert {
		var out []alert.Alert
		for _, a := range r.col.c.Alerts(true) {
			if a.Kind == KindCommand {
				out = append(out, a)
			}
		}
		return out
	}
	wait.For(t, 30*time.Second, "every attempt counted", func() bool {
		a := active()
		return len(a) == 1 && a[0].Values[attemptsValue] == n
	})
	a := active()[0]
	if a.Rule != RuleUnauthorizedCommand || a.Key != "site1.ac-1."+RuleUnauthorizedCommand {
		t.Errorf("alarm %+v", a)
	}
	for _, s := range []string{a.ID, a.Message} {
		if strings.ContainsAny(s, "\n\r\x00") {
			t.Errorf("raw control characters in %q", s)
		}
	}
	// an undecodable command: no id, no requester
	r.publish(t, command.Result{Schema: command.ResultSchema, Gateway: "gw-1", Asset: "site1.air_compressor.ac-2", Verdict: command.Rejected,
		At: time.Now().UTC(), Reason: "invalid command: unexpected EOF"})
	wait.For(t, 30*time.Second, "the alarm on ac-2", func() bool { return len(active()) == 2 })
	for _, a := range active() {
		if a.Asset == "ac-2" && a.Message != "unauthorized command (no id) on - by an unknown requester (gateway gw-1): invalid command: unexpected EOF" {
			t.Errorf("message %q", a.Message)
		}
	}
}

// A collector that starts before the audit stream exists (make demo: the
// gateway's uplink creates it a moment later) says so once at INFO, not
// WARN "audit stream not ready" at every start; still missing after
// auditMissingQuiet it warns, and it binds once the stream is there.
func TestAuditStreamMissingAtStartNotWarned(t *testing.T) {
	ns := brokertest.NATS(t, brokers.NATSOptions{})
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var tries atomic.Int64 // the service's stream info requests
	if _, err := nc.Subscribe("$JS.API.STREAM.INFO.SMELTER_AUDIT", func(*nats.Msg) { tries.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	var skew atomic.Int64 // how far the service's clock is ahead
	k := &CommandsConfig{AuditStream: "SMELTER_AUDIT", AuditConsumer: "grp-audit", AlertHold: Duration(time.Hour)}
	s := &commandService{cfg: k, js: js, log: slog.New(slog.NewTextHandler(&logs, nil)),
		now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan jetstream.Consumer, 1)
	go func() { got <- s.auditConsumer(ctx, &auditPosition{}) }()
	wait.For(t, 10*time.Second, "the missing audit stream said at INFO", func() bool {
		return strings.Contains(logs.String(), `level=INFO msg="audit stream not created yet`)
	})
	wait.For(t, 10*time.Second, "three attempts to bind", func() bool { return tries.Load() >= 3 })
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a missing audit stream at start warned:\n%s", logs.String())
	}
	skew.Store(int64(auditMissingQuiet + time.Second))
	wait.For(t, 10*time.Second, "the audit stream still missing after auditMissingQuiet warned", func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="audit stream not ready, retrying"`) && strings.Contains(logs.String(), "stream not found")
	})
	if _, err := js.CreateStream(ctx, streams.Audit(k.AuditStream, telemetry.AuditStreamSubjects("*"), 1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		if c == nil {
			t.Fatal("no audit consumer")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the audit consumer was not bound once the stream existed")
	}
	if n := strings.Count(logs.String(), "audit stream not created yet"); n != 1 {
		t.Fatalf("the missing stream said %d times at INFO, want once:\n%s", n, logs.String())
	}
}

package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/wait"
)

// TestCommandAlertsOnReplicas runs two partitioned replicas of one group
// with the audit stream as its own stream (SMELTER_AUDIT on
// smelter.v1.*.*.*.audit; the telemetry stream captures the other kinds):
// every rejected audit record is counted once over the group (the shared
// durable consumer: one alert event each, one active alert per condition
// and replica), a record handled twice (a redelivery) stores
// its alert once (Nats-Msg-Id), and both replicas serve the same audit
// trail, which is not theirs to own.
func TestCommandAlertsOnReplicas(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// the layout with a dedicated audit stream: streams may not overlap
	tel := jetstream.StreamConfig{Name: "SMELTER", Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		Subjects: []string{"smelter.v1.*.*.*.data", "smelter.v1.*.*.*.birth", "smelter.v1.*.*.*.death", "smelter.v1.*.*.*.alert",
			"smelter.v1.*.*.*.kpi", "smelter.v1.*.*.*.status"}}
	if _, err := js.CreateStream(ctx, tel); err != nil {
		t.Fatal(err)
	}
	aud, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultAuditStream, Storage: jetstream.FileStorage, Subjects: []string{auditFilter}})
	if err != nil {
		t.Fatal(err)
	}
	replica := func(i int) *running {
		cfg := Defaults()
		cfg.NATS.URL = ns.URL()
		cfg.HTTP.Listen = "127.0.0.1:0"
		cfg.DataDir = t.TempDir()
		cfg.Replica = "r" + strconv.Itoa(i)
		cfg.Commands = &CommandsConfig{}
		cfg.Cluster = ClusterConfig{Partitions: 2, Replicas: 1, AckWait: Duration(2 * time.Second), PinnedTTL: Duration(2 * time.Second),
			MemberTimeout: Duration(2 * time.Second), Fetch: 64}
		r := startCfg(t, cfg)
		wait.For(t, 20*time.Second, "replica "+cfg.Replica+" audit consumer", func() bool {
			_, err := js.Consumer(ctx, DefaultAuditStream, cfg.Group+"-audit")
			return err == nil
		})
		return r
	}
	reps := []*running{replica(1), replica(2)}

	var mu sync.Mutex
	published := map[string]int{} // alert events by id and attempts
	sub, err := nc.Subscribe("smelter.v1.*.*.*.alert", func(m *nats.Msg) {
		var a alert.Alert
		if json.Unmarshal(m.Data, &a) == nil && a.Kind == KindCommand {
			mu.Lock()
			published[a.ID+"/"+strconv.Itoa(int(a.Values[attemptsValue]))]++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// audit records as gateways publish them: per command received, then
	// rejected; half unsigned (unauthorized), half beyond limits
	const n = 20
	t0 := time.Now().UTC()
	for i := range n {
		r := command.Result{Schema: command.ResultSchema, ID: fmt.Sprintf("c-%02d", i), Gateway: "gw-1", Asset: "site1.air_compressor.ac-1",
			Signal: "unload_pressure_setpoint", Requester: "someone", Verdict: command.Received, At: t0.Add(time.Duration(i) * time.Millisecond)}
		for _, v := range []command.Verdict{command.Received, command.Rejected} {
			r.Verdict = v
			if v == command.Rejected {
				r.Reason = "unsigned: commands must be signed with a trusted key"
				if i%2 == 1 {
					r.Signer, r.Reason = "UKEY", "0.95 MPa is outside the write limits 0.6..0.9 MPa"
				}
			}
			data, _ := json.Marshal(r)
			if _, err := js.Publish(ctx, "smelter.v1.site1.air_compressor.ac-1.audit", data); err != nil {
				t.Fatal(err)
			}
		}
	}
	// one alert event (raised, then updated) per rejected record over
	// the group; each replica holds at most one active alert per condition,
	// whose attempts add up to the records
	attempts := func() map[string]int {
		rules := map[string]int{}
		for _, r := range reps {
			for _, a := range r.c.Alerts(true) {
				if a.Kind == KindCommand {
					rules[a.Rule+"/"+a.Severity.String()] += int(a.Values[attemptsValue])
				}
			}
		}
		return rules
	}
	wait.For(t, 30*time.Second, "every rejected record counted", func() bool {
		r := attempts()
		return r[RuleUnauthorizedCommand+"/alarm"] == n/2 && r[RuleCommandRejected+"/warn"] == n/2
	})
	wait.For(t, 10*time.Second, "one alert event per rejected record", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(published) == n
	})
	mu.Lock()
	for id, k := range published {
		if k != 1 {
			t.Errorf("alert event %s published %d times", id, k)
		}
	}
	mu.Unlock()
	for _, r := range reps {
		if act := len(r.c.Alerts(true)); act > 2 {
			t.Errorf("replica %s holds %d active alerts, want one per condition", r.c.replicaID(), act)
		}
	}

	// a redelivered record: its alert is stored once
	s, _ := js.Stream(ctx, "SMELTER")
	info, _ := s.Info(ctx)
	before := info.State.Msgs
	msg, err := aud.GetMsg(ctx, 2) // c-00 rejected
	if err != nil {
		t.Fatal(err)
	}
	svc := reps[0].c.cmds
	if err := svc.auditRecord(ctx, msg.Subject, msg.Data); err != nil {
		t.Fatal(err)
	}
	info, _ = s.Info(ctx)
	if info.State.Msgs != before {
		t.Errorf("a redelivered record stored its alert again: %d -> %d messages", before, info.State.Msgs)
	}

	// the trail on both replicas: every record, newest first
	for _, r := range reps {
		resp, err := http.Get("http://" + r.c.HTTPAddr() + "/api/v1/assets/site1/ac-1/audit?limit=500")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page dashboard.AuditPage
		if err := json.Unmarshal(body, &page); err != nil || len(page.Records) != 2*n || page.Records[0].ID != fmt.Sprintf("c-%02d", n-1) ||
			page.Records[0].Verdict != command.Rejected {
			t.Errorf("replica %s trail: %d records, %v: %.300s", r.c.replicaID(), len(page.Records), err, body)
		}
	}
}

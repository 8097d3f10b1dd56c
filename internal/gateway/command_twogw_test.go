package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/wait"
)

// twin returns the rig's configuration as a second gateway, gw-cmd-b, with
// the same devices (the same assets) and a data directory of its own: the
// misconfiguration of review16 H-1.
func (r *cmdRig) twin(t *testing.T) *gwconfig.Config {
	t.Helper()
	text, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(text), "id: gw-cmd,", "id: gw-cmd-b,", 1)
	s = strings.Replace(s, "data_dir: ./data}", "data_dir: ./data-b}", 1)
	path := filepath.Join(filepath.Dir(r.path), "gateway-b.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTwoGatewaysOneAssetWriteOnce (review16 H-1): two gateways configured
// with the same asset on one NATS server and one MQTT broker execute every
// command at most once. Over NATS the queue group hands each command to
// one of them (one write, one trail). Over the MQTT mirror both receive
// it: the audit stream's duplicate window lets only the first accept the
// id; the second refuses it naming the misconfiguration, writes nothing
// and counts a conflict.
func TestTwoGatewaysOneAssetWriteOnce(t *testing.T) {
	r, mq := newMirrorRig(t)
	gb := r.twin(t)
	ga := runGateway(t, r.cfg)
	gB := runGateway(t, gb)
	r.waitListening(t)
	audit := r.audit(t)

	// NATS: one write and one trail per command
	var ids []string
	for i, v := range []float64{0.75, 0.8, 0.85, 0.8} {
		id := fmt.Sprintf("two-gw-nats-%d", i)
		ids = append(ids, id)
		if res := r.send(t, r.signed(t, r.cmd(id, "generic.sp-1", "pressure_setpoint", command.Num(v), "MPa"))); res.Verdict != command.Verified {
			t.Fatalf("%s: %+v", id, res)
		}
	}
	if n := r.bank.Writes(); n != len(ids) {
		t.Fatalf("%d writes for %d commands", n, len(ids))
	}

	// MQTT mirror: both gateways get the command
	var mu sync.Mutex
	byGateway := map[string]command.Result{}
	const topic = "smelter/v1/plant1/generic/sp-1/cmd"
	cl := resultsClient(t, mq.URL(), "twin-test", topic, func(res command.Result) {
		if res.ID != "two-gw-mqtt" {
			return
		}
		mu.Lock()
		if _, ok := byGateway[res.Gateway]; !ok || !res.Duplicate {
			byGateway[res.Gateway] = res
		}
		mu.Unlock()
	})
	data, err := json.Marshal(r.signed(t, r.cmd("two-gw-mqtt", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa")))
	if err != nil {
		t.Fatal(err)
	}
	both := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, res := range byGateway {
			if strings.HasPrefix(res.Reason, "audit unavailable") {
				// a gateway whose NATS uplink is not up yet refuses it,
				// nothing done, nothing recorded: the resend is judged
				// afresh (CI: gw-cmd-b answered before its uplink was up)
				return false
			}
		}
		return len(byGateway) == 2
	}
	next := time.Now()
	wait.For(t, 20*time.Second, "a result from both gateways", func() bool {
		// each gateway subscribes once its MQTT uplink is up: resend (same
		// id, answered from the record where known) until both answered
		if !both() && time.Now().After(next) {
			next = time.Now().Add(300 * time.Millisecond)
			if tok := cl.Publish(topic, 1, false, data); !tok.WaitTimeout(time.Second) {
				return false
			}
		}
		return both()
	})
	if n := r.bank.Writes(); n != len(ids)+1 {
		t.Fatalf("%d writes for %d commands", n, len(ids)+1)
	}
	verified, refused := 0, 0
	for gw, res := range byGateway {
		switch {
		case res.Verdict == command.Verified:
			verified++
		case res.Verdict == command.Rejected && strings.Contains(res.Reason, "already accepted") && strings.Contains(res.Reason, "another gateway"):
			refused++
		default:
			t.Errorf("%s: %+v", gw, res)
		}
	}
	if verified != 1 || refused != 1 {
		t.Errorf("%d verified, %d refused as already accepted: want 1 and 1", verified, refused)
	}
	if n := testutil.ToFloat64(ga.mx.cmd.conflicts) + testutil.ToFloat64(gB.mx.cmd.conflicts); n < 1 {
		t.Errorf("smelter_gateway_command_conflicts_total %v, want at least 1", n)
	}
	// the NATS commands, long done: one trail each
	for _, id := range ids {
		if v := verdicts(audit.of(id)); len(v) != 3 {
			t.Errorf("audit of %s: %v, want received, accepted, verified once", id, v)
		}
	}
}

package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/sppb"
	"github.com/smelterio/smelter/internal/sparkplug/tahutest"
	"github.com/smelterio/smelter/internal/wait"
)

// dcmdRig is a commands rig whose MQTT uplink is a Sparkplug edge node
// (group plant1, edge node gw-cmd) on an embedded mochi broker, with a
// Sparkplug host client that sends DCMDs and reads the results.
type dcmdRig struct {
	*cmdRig
	cl      paho.Client
	results chan command.Result
}

// newDCMDRig starts the rig on the MQTT broker at url (an embedded mochi
// broker when "") with Sparkplug group group; start runs the gateway.
func newDCMDRig(t testing.TB, url, group string, start func(*gwconfig.Config)) *dcmdRig {
	t.Helper()
	if url == "" {
		mq, err := brokers.StartMQTT(brokers.MQTTOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mq.Close() })
		url = mq.URL()
	}
	r := &dcmdRig{cmdRig: newCmdRig(t, "operator", fmt.Sprintf("  mqtt: {url: %q, client_id: %q, encoding: sparkplug_b, sparkplug: {group_id: %q}}\n",
		url, group+"-gw", group)), results: make(chan command.Result, 64)}
	start(r.cfg)
	r.waitListening(t)
	r.cl = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(group + "-host").SetCleanSession(true))
	if tok := r.cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { r.cl.Disconnect(100) })
	if tok := r.cl.Subscribe("smelter/v1/plant1/+/+/cmd/result", 1, func(_ paho.Client, m paho.Message) {
		var res command.Result
		if json.Unmarshal(m.Payload(), &res) == nil {
			r.results <- res
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return r
}

// dcmd sends payload as a DCMD to device (QoS 0, as Sparkplug requires)
// until a result that match accepts arrives: the gateway subscribes once
// its edge node is connected.
func (r *dcmdRig) dcmd(t testing.TB, device string, payload []byte, match func(command.Result) bool) command.Result {
	t.Helper()
	var res command.Result
	wait.For(t, 10*time.Second, "a DCMD result", func() bool {
		if tok := r.cl.Publish(sparkplug.DeviceTopic("plant1", sparkplug.DCMD, "gw-cmd", device), 0, false, payload); !tok.WaitTimeout(time.Second) {
			return false
		}
		for {
			select {
			case res = <-r.results:
				if match(res) {
					return true
				}
			case <-time.After(300 * time.Millisecond):
				return false
			}
		}
	})
	return res
}

func dcmdPayload(t testing.TB, ms ...*sppb.Payload_Metric) []byte {
	t.Helper()
	b, err := sparkplug.Encode(&sppb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: ms})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signedMetric(t testing.TB, c *command.Command) *sppb.Payload_Metric {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &sppb.Payload_Metric{Name: proto.String(sparkplug.MetricCommand), Datatype: proto.Uint32(uint32(sppb.DataType_String)),
		Value: &sppb.Payload_Metric_StringValue{StringValue: string(data)}}
}

// TestCommandsOverSparkplugDCMD: with encoding sparkplug_b the gateway
// takes commands as DCMD. A plain DCMD (a Sparkplug host's write of the
// metric, no signature) is refused as unsigned and audited, nothing is
// written; a DCMD carrying the signed command as metric smelter/command is
// checked and executed like a NATS command (verified, once, however often
// resent); a DCMD to a device the gateway does not have is refused and
// audited on the gateway's own subject. Results arrive on the MQTT mirror
// result topic.
func TestCommandsOverSparkplugDCMD(t *testing.T) {
	r := newDCMDRig(t, "", "plant1", func(cfg *gwconfig.Config) { runGateway(t, cfg) })
	audit := r.audit(t)
	writes := r.bank.Writes()

	plain := dcmdPayload(t, &sppb.Payload_Metric{Name: proto.String("pressure_setpoint"),
		Datatype: proto.Uint32(uint32(sppb.DataType_Double)), Value: &sppb.Payload_Metric_DoubleValue{DoubleValue: 0.75}})
	res := r.dcmd(t, "sp-1", plain, func(res command.Result) bool { return res.Requested == "pressure_setpoint=0.75" })
	if res.Verdict != command.Rejected || !strings.HasPrefix(res.Reason, "unsigned: a plain Sparkplug DCMD") ||
		res.Asset != "plant1.generic.sp-1" || res.Signal != "pressure_setpoint" {
		t.Errorf("plain DCMD: %+v", res)
	}

	c := r.signed(t, r.cmd("sp-ok", "generic.sp-1", "pressure_setpoint", command.Num(0.75), "MPa"))
	res = r.dcmd(t, "sp-1", dcmdPayload(t, signedMetric(t, c)), func(res command.Result) bool { return res.ID == "sp-ok" })
	if res.Verdict != command.Verified {
		t.Fatalf("signed DCMD: %+v", res)
	}
	if n := r.bank.Writes() - writes; n != 1 {
		t.Errorf("%d writes, want 1 (the signed DCMD only)", n)
	}

	// signed for sp-1 but sent to ac-1's DCMD topic: the asset is signed
	moved := r.signed(t, r.cmd("sp-moved", "generic.sp-1", "pressure_setpoint", command.Num(0.8), "MPa"))
	res = r.dcmd(t, "ac-1", dcmdPayload(t, signedMetric(t, moved)), func(res command.Result) bool { return res.ID == "sp-moved" })
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "is not the subject's asset") {
		t.Errorf("DCMD to another device: %+v", res)
	}

	res = r.dcmd(t, "no-such", plain, func(res command.Result) bool { return res.Asset == "plant1._gateway.gw-cmd" })
	if res.Verdict != command.Rejected || !strings.Contains(res.Reason, "device no-such") {
		t.Errorf("DCMD to an unknown device: %+v", res)
	}
	if n := r.bank.Writes() - writes; n != 1 {
		t.Errorf("%d writes after the refused DCMDs, want 1", n)
	}

	wait.For(t, 10*time.Second, "every DCMD in the audit stream", func() bool {
		var plainRefused, unknown bool
		for _, a := range audit.of("") { // the refused DCMDs have no command id
			plainRefused = plainRefused || a.Verdict == command.Rejected && a.Requested == "pressure_setpoint=0.75" && a.Asset == "plant1.generic.sp-1"
			unknown = unknown || a.Verdict == command.Rejected && a.Asset == "plant1._gateway.gw-cmd"
		}
		return plainRefused && unknown && len(audit.of("sp-ok")) >= 3
	})
}

// TestInteropSparkplugTahuPlainDCMDRefused: a plain DCMD as Eclipse Tahu's
// sparkplug-payload encodes it (deploy/sparkplug-interop/dcmd.js, a write
// of pressure_setpoint = 0.75 such as a Tahu or Ignition host sends),
// through the machine's Mosquitto, is refused as unsigned, audited, and
// nothing is written.
func TestInteropSparkplugTahuPlainDCMDRefused(t *testing.T) {
	tahutest.Need(t)
	group := fmt.Sprintf("smelter-dcmd-%d", os.Getpid())
	r := newDCMDRig(t, "tcp://127.0.0.1:1883", group, func(cfg *gwconfig.Config) { runGateway(t, cfg) })
	audit := r.audit(t)
	host := tahutest.Start(t, "dcmd.js", "--url", "mqtt://127.0.0.1:1883", "--group", group, "--node", "gw-cmd")
	if l := host.Next(t, 30*time.Second); !strings.Contains(l, `"ready":true`) {
		t.Fatalf("dcmd.js: %s (stderr %s)", l, host.Stderr())
	}
	writes := r.bank.Writes()
	var res command.Result
	wait.For(t, 20*time.Second, "the result of Tahu's DCMD", func() bool {
		host.Send(t, map[string]any{"device": "sp-1", "metric": "pressure_setpoint", "value": 0.75})
		select {
		case res = <-r.results:
			return res.Requested == "pressure_setpoint=0.75"
		case <-time.After(500 * time.Millisecond):
			return false
		}
	})
	if res.Verdict != command.Rejected || !strings.HasPrefix(res.Reason, "unsigned: a plain Sparkplug DCMD") {
		t.Fatalf("Tahu's DCMD: %+v", res)
	}
	if n := r.bank.Writes() - writes; n != 0 {
		t.Fatalf("%d writes", n)
	}
	wait.For(t, 10*time.Second, "Tahu's DCMD in the audit stream", func() bool {
		for _, a := range audit.of("") {
			if a.Verdict == command.Rejected && a.Requested == "pressure_setpoint=0.75" {
				return true
			}
		}
		return false
	})
}

// BenchmarkCommandLatencyDCMD is BenchmarkCommandLatency with the command
// sent as a Sparkplug DCMD (metric smelter/command, QoS 0) through an
// embedded mochi broker and answered on the MQTT mirror result topic
// (QoS 1) instead of a NATS request; the audit still goes to JetStream.
func BenchmarkCommandLatencyDCMD(b *testing.B) {
	r := newDCMDRig(b, "", "plant1", func(cfg *gwconfig.Config) { startQuiet(b, cfg) })
	warm := dcmdPayload(b, &sppb.Payload_Metric{Name: proto.String("tank_level"), Datatype: proto.Uint32(uint32(sppb.DataType_Double)),
		Value: &sppb.Payload_Metric_DoubleValue{DoubleValue: 1}})
	r.dcmd(b, "sp-1", warm, func(command.Result) bool { return true }) // subscribed: refused, nothing written
	benchCommands(b, r.cmdRig, func(c *command.Command) command.Result {
		return r.dcmd(b, "sp-1", dcmdPayload(b, signedMetric(b, c)), func(res command.Result) bool { return res.ID == c.ID })
	})
}

package deploy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/wait"
)

// TestMosquittoCommandACL runs the machine's mosquitto with
// mosquitto/smelter.acl, two gateways' blocks rendered from its template
// (gw-plant1 of site plant1, gw-plant2 of site plant2) and
// use_username_as_clientid: a command published on an asset's .../cmd
// topic by viewer or by a gateway never reaches the gateway's subscription,
// commander's does (the broker processes one connection's messages in
// order: commander's command is the barrier); the other site's gateway can
// neither read the command, publish the site's data, status or command
// results, nor take over its client id; viewer publishes nothing. Skips
// where no mosquitto binary is installed.
func TestMosquittoCommandACL(t *testing.T) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("no mosquitto binary on PATH: install mosquitto to run this test")
	}
	pwTool, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("no mosquitto_passwd on PATH")
	}
	shipped, err := os.ReadFile("mosquitto/smelter.acl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	acl := filepath.Join(dir, "smelter.acl")
	text := string(shipped) + "\n" + gatewayACL(t, string(shipped), "gw-plant1", "plant1") + "\n" + gatewayACL(t, string(shipped), "gw-plant2", "plant2")
	if err := os.WriteFile(acl, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "passwd")
	users := map[string]string{"commander": "cmd-pw", "gw-plant1": "gw1-pw", "gw-plant2": "gw2-pw", "viewer": "view-pw"}
	for u, p := range users {
		args := []string{"-b", pwFile, u, p}
		if _, err := os.Stat(pwFile); err != nil {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(pwTool, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	text = fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\nuse_username_as_clientid true\nuser root\n", port, pwFile, acl)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(pwFile, 0o600)
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	connectAs := func(user, clientID string) paho.Client {
		t.Helper()
		var cl paho.Client
		wait.For(t, 10*time.Second, "mosquitto to accept "+user, func() bool {
			cl = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetUsername(user).
				SetPassword(users[user]).SetCleanSession(true).SetConnectRetry(false).SetAutoReconnect(false))
			tok := cl.Connect()
			return tok.WaitTimeout(2*time.Second) && tok.Error() == nil
		})
		t.Cleanup(func() { cl.Disconnect(100) })
		return cl
	}
	connect := func(user string) paho.Client { return connectAs(user, "acl-"+user) }
	const topic = "smelter/v1/plant1/air_compressor/ac-1/cmd"
	got := make(chan string, 16)
	gw := connectAs("gw-plant1", "gw-plant1")
	if tok := gw.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	// plant2's gateway subscribing to plant1's commands gets nothing, and
	// logging in with plant1's client id does not take over its session
	// (use_username_as_clientid): gw-plant1 still gets the command below
	other := connectAs("gw-plant2", "gw-plant1")
	leaked := make(chan string, 16)
	if tok := other.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { leaked <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	// what a viewer sees: every publish that got through
	seen := make(chan string, 64)
	view := connect("viewer")
	if tok := view.Subscribe("smelter/v1/#", 1, func(_ paho.Client, m paho.Message) { seen <- m.Topic() + " " + string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := func(cl paho.Client, who, topic string) {
		t.Helper()
		if tok := cl.Publish(topic, 1, false, "from-"+who); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s publish: %v", who, tok.Error())
		}
	}
	for u, cl := range map[string]paho.Client{"viewer": view, "gw-plant1": gw, "gw-plant2": other} { // one client id each
		pub(cl, u, topic)
	}
	// plant2 forging plant1's telemetry, status and command result; viewer
	// publishing anything
	for _, tp := range []string{"smelter/v1/plant1/air_compressor/ac-1/data", "smelter/v1/plant1/_gateway/gw-1/status",
		"smelter/v1/plant1/air_compressor/ac-1/cmd/result"} {
		pub(other, "gw-plant2", tp)
	}
	pub(view, "viewer", "smelter/v1/viewer/air_compressor/x/data")
	// plant1 publishing its own telemetry and result: allowed
	pub(gw, "gw-plant1", "smelter/v1/plant1/air_compressor/ac-1/data")
	pub(gw, "gw-plant1", "smelter/v1/plant1/air_compressor/ac-1/cmd/result")
	pub(connect("commander"), "commander", topic)
	select {
	case m := <-got:
		if m != "from-commander" {
			t.Errorf("the gateway received %q: the ACL let it through", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("commander's command never arrived (was gw-plant1's session taken over?)")
	}
	// every publish before the commander's has been routed by now (one
	// connection each, QoS 1, in order through one broker): the viewer saw
	// plant1's own two and the command, nothing of plant2's or its own
	want := map[string]bool{
		"smelter/v1/plant1/air_compressor/ac-1/data from-gw-plant1":       true,
		"smelter/v1/plant1/air_compressor/ac-1/cmd/result from-gw-plant1": true,
		topic + " from-commander":                                         true,
	}
	wait.For(t, 10*time.Second, "the viewer to see plant1's publishes and the command", func() bool {
		for {
			select {
			case m := <-seen:
				if !want[m] {
					t.Errorf("the viewer saw %q: the ACL let it through", m)
				}
				delete(want, m)
			default:
				return len(want) == 0
			}
		}
	})
	select {
	case m := <-leaked:
		t.Errorf("plant2's gateway received plant1's command %q", m)
	default:
	}
}

// gatewayACL renders the gateway template of the ACL text acl (the lines
// between its "--- gateway template ---" and "--- end of gateway template
// ---" markers, uncommented) for gateway id of site.
func gatewayACL(t *testing.T, acl, id, site string) string {
	t.Helper()
	_, rest, ok := strings.Cut(acl, "# --- gateway template ---\n")
	if !ok {
		t.Fatal("the ACL has no gateway template")
	}
	tmpl, _, ok := strings.Cut(rest, "# --- end of gateway template ---")
	if !ok {
		t.Fatal("the ACL's gateway template has no end marker")
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(tmpl), "\n") {
		line = strings.TrimPrefix(line, "# ")
		line = strings.ReplaceAll(strings.ReplaceAll(line, "GATEWAY_ID", id), "SITE", site)
		b.WriteString(line + "\n")
	}
	return b.String()
}

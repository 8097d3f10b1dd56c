package deploy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/wait"
)

// TestMosquittoCommandACL runs the machine's mosquitto with
// mosquitto/smelter.acl: a command published on an asset's .../cmd topic
// by user viewer or user gateway never reaches the gateway's subscription,
// and user commander's does (the broker processes one connection's
// messages in order: commander's command is the barrier). Skips where no
// mosquitto binary is installed.
func TestMosquittoCommandACL(t *testing.T) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("no mosquitto binary on PATH: install mosquitto to run this test")
	}
	pwTool, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("no mosquitto_passwd on PATH")
	}
	acl, err := filepath.Abs("mosquitto/smelter.acl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	users := map[string]string{"commander": "cmd-pw", "gateway": "gw-pw", "viewer": "view-pw"}
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
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\nuser root\n", port, pwFile, acl)
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
	connect := func(user string) paho.Client {
		t.Helper()
		var cl paho.Client
		wait.For(t, 10*time.Second, "mosquitto to accept "+user, func() bool {
			cl = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("acl-" + user).SetUsername(user).
				SetPassword(users[user]).SetCleanSession(true).SetConnectRetry(false))
			tok := cl.Connect()
			return tok.WaitTimeout(2*time.Second) && tok.Error() == nil
		})
		t.Cleanup(func() { cl.Disconnect(100) })
		return cl
	}
	const topic = "smelter/v1/plant1/air_compressor/ac-1/cmd"
	got := make(chan string, 16)
	gw := connect("gateway")
	if tok := gw.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	for _, u := range []string{"viewer", "gateway", "commander"} {
		cl := gw
		if u != "gateway" {
			cl = connect(u)
		}
		if tok := cl.Publish(topic, 1, false, "from-"+u); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s publish: %v", u, tok.Error())
		}
	}
	select {
	case m := <-got:
		if m != "from-commander" {
			t.Errorf("the gateway received %q: the ACL let it through", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("commander's command never arrived")
	}
}

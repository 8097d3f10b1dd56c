package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gateway/gatewaytest"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// TestCommandTool: keygen writes a seed and prints the key a gateway
// trusts; send signs with the seed and a real gateway writes a real Modbus
// server; a second keygen never overwrites the seed.
func TestCommandTool(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join(dir, "operator.nk")
	code, pub, errs := runCmd("command", "keygen", "-seed", seed)
	pub = strings.TrimSpace(pub)
	if code != 0 || !strings.HasPrefix(pub, "U") {
		t.Fatalf("keygen: %d %q %s", code, pub, errs)
	}
	if st, err := os.Stat(seed); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v %v", st, err)
	}
	if code, _, _ := runCmd("command", "keygen", "-seed", seed); code == 0 {
		t.Error("keygen overwrote an existing seed")
	}

	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 20, 700)
	srv := modbustest.StartServer(t, bank)
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfgText := fmt.Sprintf(`gateway: {id: gw-tool, site: plant1, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
commands: {trusted_keys: [%s]}
devices:
  - id: sp-1
    class: generic
    modbus: {address: %q, unit_id: 1}
    points:
      - {signal: pressure_setpoint, table: holding, address: 20, type: uint16, scale: 0.001, unit: MPa, write: {min: 0.6, max: 0.9}}
`, ns.URL(), pub, srv.Addr)
	gatewaytest.Run(t, cfgText)

	send := func(value, id string) (int, string, string) {
		return runCmd("command", "send", "-url", ns.URL(), "-seed", seed, "-asset", "plant1.generic.sp-1",
			"-signal", "pressure_setpoint", "-value", value, "-unit", "bar", "-requester", "alice", "-id", id, "-timeout", "2s")
	}
	wait.For(t, 10*time.Second, "the gateway to answer", func() bool {
		code, out, _ := send("99", fmt.Sprintf("probe-%d", time.Now().UnixNano())) // beyond limits: refused
		return code == 1 && strings.Contains(out, `"verdict": "rejected"`) && bank.Writes() == 0
	})
	code, out, errs := send("8", "c-tool")
	var res command.Result
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Verdict != command.Verified || res.Requester != "alice" {
		t.Fatalf("send: %d %s %s", code, out, errs)
	}
	if bank.Writes() != 1 {
		t.Errorf("%d writes", bank.Writes())
	}
}

// TestCommandToolHelp: -h prints the usage to stdout and exits 0; an
// unknown subcommand is still an error.
func TestCommandToolHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help", "help"} {
		if code, out, errs := runCmd("command", h); code != 0 || !strings.Contains(out, "smelter-gateway command keygen") || errs != "" {
			t.Errorf("command %s: %d %q %q", h, code, out, errs)
		}
	}
	if code, _, errs := runCmd("command", "bogus"); code != 2 || !strings.Contains(errs, `unknown subcommand "bogus"`) {
		t.Errorf("command bogus: %d %q", code, errs)
	}
}

// TestCommandToolRequesterAndNoGateway (review16 L-4): send without
// -requester is a usage error, nothing sent ($USER is no longer taken:
// under systemd it is unset and the command was refused and alarmed as
// unauthorized); with no gateway subscribed the NATS server's "no
// responders" is reported as certain: nothing executed, no advice to
// resend for an outcome.
func TestCommandToolRequesterAndNoGateway(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join(dir, "operator.nk")
	if code, _, errs := runCmd("command", "keygen", "-seed", seed); code != 0 {
		t.Fatalf("keygen: %s", errs)
	}
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	t.Setenv("USER", "someone")
	args := []string{"command", "send", "-url", ns.URL(), "-seed", seed, "-asset", "plant1.generic.sp-1",
		"-signal", "pressure_setpoint", "-value", "8", "-timeout", "5s"}
	if code, _, errs := runCmd(args...); code != 2 || !strings.Contains(errs, "-requester are required") {
		t.Errorf("without -requester: %d %q", code, errs)
	}
	start := time.Now()
	code, _, errs := runCmd(append(args, "-requester", "alice", "-id", "c-nobody")...)
	if code != 1 || !strings.Contains(errs, "no gateway listens") || !strings.Contains(errs, "nothing was executed") || strings.Contains(errs, "resend") {
		t.Errorf("no gateway: %d %q", code, errs)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("no gateway answered after %v: the server's no-responders should end it at once", d)
	}
}

package demo

import (
	"bytes"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/commandtest"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/wait"
)

// TestDemoCommandVerified: the demo configures commands out of the box.
// With the plant clock hours from the wall clock and running at 60x, the
// operator's token (the file the banner names, mode 0600) commands the
// compressor's unload pressure setpoint through the collector's HTTP
// API; the gateway verifies the write (command expiry is wall-clock time)
// and the readings follow. Without the token the command is refused.
func TestDemoCommandVerified(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	var banner bytes.Buffer
	d := New(Options{FleetPath: filepath.Join(root, "configs/sim-fleet.yaml"), DataDir: ".demo", Seed: -1,
		Speed: 60, Start: time.Now().Add(-5 * time.Hour), PollInterval: 250 * time.Millisecond, Out: &banner})
	startRun(t, d)
	urls := d.URLs()
	for _, f := range []string{urls.OperatorTokenFile, filepath.Join(filepath.Dir(urls.OperatorTokenFile), commanderSeedFile)} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	tokData, err := os.ReadFile(urls.OperatorTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokData))
	if len(tok) != 64 || !strings.Contains(banner.String(), urls.Dashboard+"?token="+tok) {
		t.Errorf("token %d chars; banner does not show the operator's login:\n%s", len(tok), banner.String())
	}
	col := d.Collector()
	wait.For(t, 60*time.Second, "ac-1's writable setpoint at the collector", func() bool {
		for _, a := range col.Assets() {
			if a.ID == "ac-1" && len(a.Writable) > 0 {
				return true
			}
		}
		return false
	})
	url := urls.Dashboard + "api/v1/assets/demo/ac-1/commands"
	// one id throughout: a retry learns the outcome without a second write
	body := map[string]any{"signal": "unload_pressure_setpoint", "value": 0.7, "unit": "MPa", "id": "demo-test-1"}
	if code := commandtest.Call(t, http.MethodPost, url, "", body, nil); code != http.StatusForbidden {
		t.Errorf("a viewer's command: %d, want 403", code)
	}
	// the gateway subscribes to commands once its NATS uplink is up, maybe
	// after Ready: until then the collector answers 504 (no responders)
	var (
		code int
		res  command.Result
	)
	wait.For(t, 30*time.Second, "the gateway to answer the operator's command", func() bool {
		res = command.Result{}
		code = commandtest.Call(t, http.MethodPost, url, tok, body, &res)
		return code != http.StatusGatewayTimeout
	})
	if code != http.StatusOK || res.Verdict != command.Verified || res.Requester != operatorName || res.Signer == "" ||
		res.ReadBack == nil || math.Abs(*res.ReadBack-0.7) > 1e-6 {
		t.Fatalf("operator's command: %d %+v", code, res)
	}
	wait.For(t, 30*time.Second, "ac-1's setpoint reading to follow the command", func() bool {
		for _, a := range col.Assets() {
			if a.ID != "ac-1" {
				continue
			}
			for _, s := range a.Signals {
				if s.Signal == "unload_pressure_setpoint" && s.Valid && math.Abs(s.Value-0.7) < 1e-6 {
					return true
				}
			}
		}
		return false
	})
}

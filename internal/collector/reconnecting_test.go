package collector

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/wait"
)

// An API request that needs NATS while the collector reconnects to it (its
// connections fail requests at once: ReconnectBufSize -1) is answered 503
// with Retry-After and an error that says so. Before, a command got 502
// "nats: outbound buffer limit exceeded" (the audit trail too), or its
// command was buffered and sent when the server came back, after the
// operator had been told it got no answer (commands are never spooled).
func TestAPIWhileReconnectingToNATS(t *testing.T) {
	ns := natsServer(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Commands = &CommandsConfig{SeedFile: write("commander.nk", string(seed)),
		Operators: []Operator{{Name: "alice", TokenFile: write("alice.token", "alice-token")}}}
	r := startCfg(t, cfg)
	api := "http://" + r.c.HTTPAddr() + "/api/v1/assets/site1/ac-1"

	ns.Shutdown()
	wait.For(t, 10*time.Second, "the collector's connections reconnecting", func() bool {
		io := r.c.js.Load()
		return io != nil && io.nc.IsReconnecting() && r.c.cmds != nil && r.c.cmds.cmd.IsReconnecting()
	})
	for _, c := range []struct{ name, method, url, body string }{
		{"command", "POST", api + "/commands", `{"class":"air_compressor","signal":"unload_pressure_setpoint","value":0.7}`},
		{"audit", "GET", api + "/audit", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), c.method, c.url, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer alice-token")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			var body struct{ Error string }
			_ = json.Unmarshal(data, &body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
				!strings.Contains(body.Error, "collector is reconnecting to NATS, retry") {
				t.Fatalf("%s while reconnecting: %d Retry-After %q %s", c.name, resp.StatusCode, resp.Header.Get("Retry-After"), data)
			}
		})
	}
}

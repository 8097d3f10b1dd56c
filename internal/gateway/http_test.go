package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/wait"
)

// serveHTTP serves g's HTTP handler on a random loopback port until the
// test ends and returns its address.
func serveHTTP(t *testing.T, g *Gateway) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, "127.0.0.1:0", func(a net.Addr) { addrc <- a.String() }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		t.Fatal("no HTTP address")
	}
	return addr
}

// duplicateKeys returns the keys a JSON object (one log line) holds more
// than once, at any depth.
func duplicateKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	var dups []string
	var object func()
	var value func()
	object = func() {
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatalf("%v in %s", err, line)
			}
			if seen[k.(string)] {
				dups = append(dups, k.(string))
			}
			seen[k.(string)] = true
			value()
		}
		_, _ = dec.Token() // }
	}
	value = func() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v in %s", err, line)
		}
		switch tok {
		case json.Delim('{'):
			object()
		case json.Delim('['):
			for dec.More() {
				value()
			}
			_, _ = dec.Token()
		}
	}
	value()
	return dups
}

// TestStatusAgreesWithReadyzAndLogsAreClean: /status "ready" is what
// /readyz answers, with the same reason, while the uplink is up and while
// it is down; the gateway's JSON log (the production logger, scoped by
// gateway as smelter-gateway does) has no line with a repeated key.
func TestStatusAgreesWithReadyzAndLogsAreClean(t *testing.T) {
	r := newRelRig(t, true)
	buf := &logtest.Buffer{}
	log, err := logging.New(io.MultiWriter(buf, testWriter{t}), "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	rg := startGateway(t, r.config(t, relConfig{nats: true, mqtt: true}), log.With("gateway", relGateway))
	addr := serveHTTP(t, rg.g)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	agree := func(when string) {
		t.Helper()
		code, body := get("/readyz")
		_, js := get("/status")
		var st Status
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			t.Fatal(err)
		}
		if st.Ready != (code == http.StatusOK) || st.ReadyReason != strings.TrimSpace(body) || !st.Running {
			t.Fatalf("%s: /readyz %d %q, /status ready %v reason %q running %v", when, code, body, st.Ready, st.ReadyReason, st.Running)
		}
	}
	wait.For(t, 15*time.Second, "ready", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })
	agree("both uplinks up")
	r.nats.Shutdown()
	wait.For(t, 10*time.Second, "the outage noticed", func() bool { return !rg.uplink("nats").Connected })
	wait.For(t, 10*time.Second, "a backlog", func() bool { return rg.uplink("nats").LagRecords >= 5 })
	agree("nats down")
	if err := r.nats.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "ready again", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })
	rg.stop(t)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d log lines", len(lines))
	}
	for _, l := range lines {
		if d := duplicateKeys(t, l); len(d) > 0 {
			t.Errorf("keys %v repeated in %s", d, l)
		}
		if strings.Contains(l, `"retry_in":`) && !strings.Contains(l, `"retry_in":"`) {
			t.Errorf("a duration written as a number: %s", l)
		}
	}
}

// TestPProfOnlyWhenConfigured: /debug/pprof/ answers with http.pprof on
// and is absent by default.
func TestPProfOnlyWhenConfigured(t *testing.T) {
	for _, on := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "gw.yaml")
		doc := fmt.Sprintf("gateway: {id: gw, site: s, data_dir: ./data}\nhttp: {pprof: %v}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\n"+
			"devices:\n  - {id: a, class: motor, modbus: {address: \"127.0.0.1:1\"}, points: [{signal: power, table: holding, address: 0, type: float32, unit: kW}]}\n", on)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := gwconfig.Load(path, Drivers()...)
		if err != nil {
			t.Fatal(err)
		}
		g, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(g.Handler())
		resp, err := http.Get(srv.URL + "/debug/pprof/heap?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		got := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "heap profile")
		if got != on {
			t.Errorf("pprof %v: /debug/pprof/heap answered %d %.60q", on, resp.StatusCode, body)
		}
	}
}

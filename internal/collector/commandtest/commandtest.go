// Package commandtest runs the whole command path for tests of other
// packages (the collector's end-to-end test, the dashboard's browser
// test): an in-process nats-server with JetStream, a simulated air
// compressor (simulators/fleet, Modbus), a real smelter-gateway that
// trusts one key and polls it, and a real collector with its HTTP API,
// one viewer token and one operator, signing with that key.
package commandtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/gateway/gatewaytest"
	"github.com/smelterio/smelter/internal/streams"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/fleet"
)

// Tokens and names of the rig's HTTP API.
const (
	ViewerToken   = "viewer-token-e2e"
	OperatorToken = "operator-token-e2e"
	OperatorName  = "alice"
	Site          = "sim"
	Asset         = "ac-1"
	Class         = "air_compressor"
)

// Rig is the running command path.
type Rig struct {
	URL       string     // NATS
	NC        *nats.Conn // an unrestricted client of the same server
	JS        jetstream.JetStream
	Fleet     *fleet.Fleet // ac-1
	Collector *collector.Collector
	API       string        // http://host:port of the collector
	Key       nkeys.KeyPair // the key the gateway trusts (the collector's seed)
}

// Start runs the rig until the test ends and returns once the collector
// shows ac-1 with its writable setpoint. The audit stream SMELTER_AUDIT is
// created when missing (EnsureAuditStream).
func Start(tb testing.TB) *Rig {
	tb.Helper()
	dir := tb.TempDir()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Shutdown)
	r := &Rig{URL: ns.URL()}
	if r.NC, err = nats.Connect(r.URL); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.NC.Close)
	if r.JS, err = jetstream.New(r.NC); err != nil {
		tb.Fatal(err)
	}
	if r.Key, err = nkeys.CreateUser(); err != nil {
		tb.Fatal(err)
	}
	seed, _ := r.Key.Seed()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}

	// the simulated compressor
	tpl, err := filepath.Abs(filepath.Join(repoRoot(tb), "configs/templates/air_compressor-sim-a.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	fcfg, err := fleet.Load(write("fleet.yaml", fmt.Sprintf(`seed: 1
speed: 0
devices:
  - id: %s
    class: %s
    template: %s
    nameplate: {rated_power: 75, rated_fad: 13, rated_specific_power: 6.2, rated_pressure: 0.75}
    modbus: {address: 127.0.0.1:0, unit_id: 1}
`, Asset, Class, tpl)))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.Fleet = fleet.New(fcfg, nil)
	if err := r.Fleet.Start(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		if err := r.Fleet.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			tb.Error(err)
		}
	})
	dev, _ := r.Fleet.Device(Asset)

	// the collector: viewer token, one operator, the seed
	cfg := collector.Defaults()
	cfg.DataDir = filepath.Join(dir, "collector")
	cfg.NATS.URL = r.URL
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.TokenFile = write("viewer.token", ViewerToken)
	cfg.Commands = &collector.CommandsConfig{SeedFile: write("commander.nk", string(seed)),
		Operators: []collector.Operator{{Name: OperatorName, TokenFile: write("alice.token", OperatorToken)}}}
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		tb.Fatal(err)
	}
	col, err := collector.New(cfg, set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	r.Collector = col
	cctx, ccancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- col.Run(cctx) }()
	tb.Cleanup(func() {
		ccancel()
		if err := <-done; err != nil {
			tb.Errorf("collector.Run: %v", err)
		}
	})
	wait.For(tb, 20*time.Second, "collector ready", col.Ready)
	r.API = "http://" + col.HTTPAddr()
	EnsureAuditStream(tb, r.JS)
	wait.For(tb, 30*time.Second, "the collector's audit consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.JS.Consumer(ctx, AuditStream, cfg.Group+"-audit")
		return err == nil
	})

	// the gateway, trusting the collector's key
	pub, _ := r.Key.PublicKey()
	gatewaytest.Run(tb, fmt.Sprintf(`gateway: {id: gw-e2e, enterprise: acme, site: %s, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
commands: {trusted_keys: [%s]}
devices:
  - id: %s
    class: %s
    template: %s
    poll_interval: 100ms
    nameplate: {rated_power: 75, rated_fad: 13, rated_specific_power: 6.2, rated_pressure: 0.75}
    modbus: {address: %q, unit_id: %d}
`, Site, r.URL, pub, Asset, Class, tpl, dev.Addr, dev.UnitID))
	wait.For(tb, 30*time.Second, "the gateway to listen for ac-1's commands", func() bool {
		subj := "smelter.v1." + Site + "." + Class + "." + Asset + ".cmd"
		sz, err := ns.Server().Subsz(&server.SubszOptions{Subscriptions: true, Test: subj})
		if err != nil {
			return false
		}
		for _, s := range sz.Subs { // the gateway's own, not the stream's smelter.v1.>
			if s.Subject == subj {
				return true
			}
		}
		return false
	})
	wait.For(tb, 30*time.Second, "the collector to show ac-1 with its writable setpoint", func() bool {
		v, ok := col.Asset(Site, Asset)
		return ok && len(v.Writable) > 0
	})
	return r
}

// AuditStream is the stream the rig's collector reads audit records from
// (the collector's default).
const AuditStream = collector.DefaultAuditStream

// EnsureAuditStream makes sure the audit stream exists: left as it is when
// present (the gateway or an operator created it), else created on
// telemetry.AuditStreamSubjects, as nats-init creates it.
func EnsureAuditStream(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, AuditStream); err == nil {
		return
	}
	cfg := streams.Audit(AuditStream, telemetry.AuditStreamSubjects("*"), 1, 0)
	if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		tb.Fatalf("create audit stream %s: %v", AuditStream, err)
	}
}

// Call makes one HTTP API request: body (nil: none) sent as JSON, token
// (empty: none) as the bearer token; the answer's JSON is decoded into out
// (nil: not decoded). It returns the status code; any transport or decoding
// failure fails the test.
func Call(tb testing.TB, method, url, token string, body any, out any) int {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(tb.Context(), method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			tb.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// repoRoot finds the module root from the working directory.
func repoRoot(tb testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

package collector

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// A pull refused by the server's permissions (to publish the pull request,
// or to subscribe to the pulls' inbox) backs off as a failed dial does
// (100 ms doubling up to 5 s), on the one pull connection: the server
// keeps a connection after a permissions violation, and so does natswire.
// Before, each refused pull dialed again (natswire closed the connection
// on the -ERR) and the dial reset the pause: about 5 dials a second for
// ever (blackbox finding 4).
func TestPullRefusedByPermissionsBacksOff(t *testing.T) {
	for name, perms := range map[string]*server.Permissions{
		"publish": {Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.CONSUMER.MSG.NEXT.>"}}},
		"subscribe": {Publish: &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"_INBOX.>"}}},
	} {
		t.Run(name, func(t *testing.T) { pullRefused(t, perms) })
	}
}

func pullRefused(t *testing.T, perms *server.Permissions) {
	ns := brokertest.Server(t, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{
			{Username: "admin", Password: "admin-pw"},
			{Username: "noperm", Password: "noperm-pw", Permissions: perms},
		}})
	admin, err := nats.Connect(ns.ClientURL(), nats.UserInfo("admin", "admin-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	pullRigOn(t, admin, 0, false, 0) // stream PULL, consumer c
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("noperm", "noperm-pw"), nats.Name("main"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pl, d := countingPuller(t, nc, "PULL", "c")
	for i := range 4 {
		// each pull's expiry (1 s) outlasts the pause before it (up to 400 ms)
		_, err := pl.pull(1, time.Second, 0)
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("pull %d: %v, want a permissions violation", i+1, err)
		}
		if want := pullRetryMin << i; pl.retry != want {
			t.Fatalf("after refused pull %d: pause %v, want %v (doubling from %v)", i+1, pl.retry, want, pullRetryMin)
		}
		if d.ok != 1 || d.failed != 0 {
			t.Fatalf("after refused pull %d: %d dials (%d failed), want the one connection kept", i+1, d.ok, d.failed)
		}
	}
	// a pull sent before the pause is over fails at once, dialing nothing
	if _, err := pl.pull(1, 10*time.Millisecond, 0); !errors.Is(err, nats.ErrPermissionViolation) || d.ok != 1 {
		t.Fatalf("pull within the pause: %v, %d dials", err, d.ok)
	}
}

// A pull connection the server refuses (its maximum connections taken by
// the main connection) leaves the partition's worker running, dialing
// again with backoff and logging one WARN, with no "partition worker
// stopped" per try (blackbox finding 3); once the pulls have failed for
// longer than the grace /readyz answers 503 naming the partition and the
// error, and smelter_collector_partitions_stalled is 1 (finding 2); when
// the server takes the connection again, the collector is ready.
func TestPullDialRefusedNotReady(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir(), MaxConn: 1}
	ns := brokertest.Server(t, opts)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir, cfg.Rules.Files = ns.ClientURL(), "127.0.0.1:0", t.TempDir(), nil
	var logs logtest.Buffer
	c := newCollectorLog(t, cfg, &logs)
	c.pullGrace = time.Second
	runCollector(t, c)
	errs := c.m.pullDials.WithLabelValues("error")
	wait.For(t, 30*time.Second, "the pull connection refused 4 times", func() bool { return testutil.ToFloat64(errs) >= 4 })
	if n := testutil.ToFloat64(c.m.workerStops); n != 0 {
		t.Fatalf("the worker stopped %v times on refused dials, want 0 (it waits for the next dial)\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "partition worker stopped") {
		t.Fatalf("a refused dial stopped the worker:\n%s", logs.String())
	}
	if n := strings.Count(logs.String(), "pull connection could not be set up"); n != 1 {
		t.Fatalf("%d WARNs of the refused dial, want 1 (rate-limited)\n%s", n, logs.String())
	}
	var body string
	wait.For(t, 30*time.Second, "/readyz 503 naming the stalled partition", func() bool {
		resp, err := http.Get("http://" + c.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "partition 0: no working pull") || !strings.Contains(body, "maximum connections exceeded") {
		t.Fatalf("/readyz: %q, want the partition and the error", body)
	}
	if m := httpBody(t, c, "/metrics"); !strings.Contains(m, "smelter_collector_partitions_stalled 1") {
		t.Fatalf("no stalled partition in the metrics:\n%s", m)
	}
	raised := *opts
	raised.MaxConn = 10
	if err := ns.ReloadOptions(&raised); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "ready once the server takes the pull connection", c.Ready)
	if m := httpBody(t, c, "/metrics"); !strings.Contains(m, "smelter_collector_partitions_stalled 0") {
		t.Fatalf("a stalled partition left in the metrics:\n%s", m)
	}
}

// A pull refused for the user's permissions makes /readyz answer 503 once
// it lasts past the grace (blackbox finding 2, user noperm).
func TestPullPermissionMissingNotReady(t *testing.T) {
	cfg := collectorWithout(t, `"$JS.API.CONSUMER.MSG.NEXT.SMELTER.*"`)
	c := newCollector(t, cfg)
	c.pullGrace = time.Second
	runCollector(t, c)
	wait.For(t, 30*time.Second, "consuming", c.ready.Load)
	wait.For(t, 30*time.Second, "not ready: pulls refused", func() bool {
		ok, why := c.readiness()
		return !ok && strings.Contains(why, "partition 0: no working pull") && strings.Contains(why, "ermissions")
	})
	// the refused pulls back off on the one pull connection: in 4 s of
	// refusals (pauses of 0.1, 0.2, 0.4, 0.8, 1.6 s) no dial more
	wait.For(t, 30*time.Second, "pulls refused for 4 s", func() bool {
		ps, _ := c.pulls.stalled(4 * time.Second)
		return len(ps) > 0
	})
	if n := testutil.ToFloat64(c.m.pullDials.WithLabelValues("ok")); n != 1 {
		t.Fatalf("%v pull connections dialed while pulls were refused, want the one kept", n)
	}
}

// Credentials in a server URL are refused by the check, for every URL of
// a list and every URL field, naming file, line and field, without
// quoting the secret (blackbox finding 1).
func TestConfigRefusesCredentialsInURLs(t *testing.T) {
	for _, tc := range []struct{ name, yaml, field string }{
		{"password", "nats:\n  url: nats://collector:Col-S3cret-pw@127.0.0.1:4222\n", ":2: nats.url: credentials in the URL are not allowed (URL 1 of the list)"},
		{"token", "nats:\n  url: tls://Tok-S3cret-123@localhost:4222\n", ":2: nats.url: credentials in the URL are not allowed (URL 1 of the list)"},
		{"second of a list", "nats:\n  url: nats://a:4222, nats://Tok-S3cret-123@b:4222\n", ":2: nats.url: credentials in the URL are not allowed (URL 2 of the list)"},
		{"bare host", "nats:\n  url: Tok-S3cret-123@b:4222\n", ":2: nats.url: credentials"},
		{"commands", "nats:\n  url: nats://a:4222\ncommands:\n  nats:\n    url: nats://commander:Col-S3cret-pw@a:4222\n", ":5: commands.nats.url: credentials"},
		{"mqtt", "mqtt:\n  url: tcp://u:Col-S3cret-pw@a:1883\n", ":2: mqtt.url: credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "collector.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if err == nil || !strings.Contains(err.Error(), p+tc.field) {
				t.Fatalf("error %v, want %s%s", err, p, tc.field)
			}
			if strings.Contains(err.Error(), "S3cret") {
				t.Fatalf("the error quotes the secret: %v", err)
			}
		})
	}
	for _, u := range []string{"", "nats://127.0.0.1:4222", "127.0.0.1:4222", "nats://a:1,tls://b:2"} {
		if ps := urlProblems(nil, "nats.url", u, ""); len(ps) > 0 {
			t.Errorf("%q: %v", u, ps)
		}
	}
}

// A heartbeat refused while the connection reconnects (ReconnectBufSize
// -1: nats.ErrReconnectBufExceeded) is logged at INFO as what it is, not
// as a WARN "member heartbeat failed ... outbound buffer limit exceeded"
// on every broker restart (blackbox finding 6).
func TestBeatWhileReconnectingInfo(t *testing.T) {
	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var b beatEpisode
	b.note(log, nats.ErrReconnectBufExceeded)
	if l := logs.String(); !strings.Contains(l, "level=INFO") || !strings.Contains(l, "NATS connection is reconnecting") || strings.Contains(l, "WARN") {
		t.Fatalf("log %q", l)
	}
	var other beatEpisode
	other.note(log, errors.New("nats: timeout"))
	if !strings.Contains(logs.String(), "level=WARN msg=\"member heartbeat failed") {
		t.Fatalf("another failure not at WARN: %q", logs.String())
	}
}

// A malformed gateway status is counted once: the stream's consumer counts
// it, the core subscription every replica has for the dashboard does not
// count it again (blackbox finding 5: invalid +2 per message).
func TestMalformedStatusCountedOnce(t *testing.T) {
	ns := brokertest.Server(t, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	r := start(t, ns.ClientURL())
	c := r.c
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	subject := func(gw string) string { return "smelter.v1.site1._gateway." + gw + ".status" }
	if _, err := js.Publish(ctx, subject("gw-evil2"), []byte("zz")); err != nil {
		t.Fatal(err)
	}
	ok, _ := telemetry.MarshalStatus(&telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-ok", Online: true, TSGW: time.Now().UnixMilli()})
	if _, err := js.Publish(ctx, subject("gw-ok"), ok); err != nil {
		t.Fatal(err)
	}
	// the valid one, after the malformed one on both paths: the stream's
	// consumer (ingested) and the core subscription (the gateway shown)
	wait.For(t, 30*time.Second, "the valid status through both paths", func() bool {
		shown := false
		for _, g := range c.Live().Gateways() {
			shown = shown || g.ID == "gw-ok"
		}
		return shown && testutil.ToFloat64(c.m.ingested.WithLabelValues("status")) >= 1
	})
	if n := testutil.ToFloat64(c.m.malformed.WithLabelValues("invalid")); n != 1 {
		t.Fatalf("malformed{invalid} %v for one malformed status, want 1", n)
	}
}

// runCollector runs c until the test ends.
func runCollector(t *testing.T, c *Collector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

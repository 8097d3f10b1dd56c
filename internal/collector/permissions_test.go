package collector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/internal/wait"
)

// permServer starts nats-server with exactly deploy/nats/nats-server.conf:
// certificates and passwords come from the environment, as in production;
// only the port (random, loopback) and the store directory are replaced.
func permServer(t *testing.T) (url string, pki *brokertest.PKI, pw map[string]string) {
	t.Helper()
	return permServerEdited(t, nil)
}

// permServerEdited is permServer with deploy/nats/smelter-accounts.conf
// passed through edit (when not nil): accounts of another version.
func permServerEdited(t *testing.T, edit func(accounts string) string) (url string, pki *brokertest.PKI, pw map[string]string) {
	t.Helper()
	conf := "../../deploy/nats/nats-server.conf"
	if edit != nil {
		dir := t.TempDir()
		for _, f := range []string{"nats-server.conf", "smelter-accounts.conf"} {
			b, err := os.ReadFile(filepath.Join("../../deploy/nats", f))
			if err != nil {
				t.Fatal(err)
			}
			if f == "smelter-accounts.conf" {
				b = []byte(edit(string(b)))
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		conf = filepath.Join(dir, "nats-server.conf")
	}
	pki = brokertest.NewPKI(t)
	t.Setenv("SMELTER_NATS_TLS_CERT", pki.ServerCertFile)
	t.Setenv("SMELTER_NATS_TLS_KEY", pki.ServerKeyFile)
	pw = map[string]string{}
	for _, u := range []string{"COLLECTOR", "COMMANDER", "GW_SITE1", "GW_SITE2"} {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		pw[u] = hex.EncodeToString(b)
		t.Setenv("SMELTER_NATS_"+u+"_PASSWORD", pw[u])
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", -1, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL(), pki, pw
}

// client is a connection whose asynchronous errors (permission
// violations) are collected.
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []error
}

func connect(t *testing.T, url string, pki *brokertest.PKI, user, pass string) *client {
	t.Helper()
	c := &client{}
	nc, err := nats.Connect(url, nats.UserInfo(user, pass), nats.RootCAs(pki.CAFile),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.errs = append(c.errs, err)
		}))
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// denied runs op and waits for the server's permissions violation naming
// subject; op's own error (a timeout, no responders) is expected too.
func (c *client) denied(t *testing.T, what, subject string, op func() error) {
	t.Helper()
	err := op()
	wait.For(t, 5*time.Second, what+": permissions violation for "+subject, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, e := range c.errs {
			if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), `"`+subject+`"`) {
				return true
			}
		}
		return false
	})
	if err == nil && !strings.HasPrefix(what, "subscribe") {
		t.Errorf("%s: succeeded despite the violation", what)
	}
}

func (c *client) request(subject string) func() error {
	return func() error {
		_, err := c.nc.Request(subject, []byte("{}"), 500*time.Millisecond)
		return err
	}
}

// jsPublish publishes {} to subject through JetStream, waiting at most a
// second for the PubAck (a denied publish gets none).
func jsPublish(ctx context.Context, js jetstream.JetStream, subject string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Publish(ctx, subject, []byte(`{}`))
		return err
	}
}

func hotBatch(site string, seq uint64, ts int64) telemetry.Envelope {
	b := &telemetry.Batch{Gateway: "gw-" + site, Seq: seq, TSGW: ts,
		Asset:    telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", site, "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
	return telemetry.Envelope{Subject: telemetry.Subject(site, "air_compressor", "ac-1", telemetry.KindData), MsgID: b.MsgID(), Data: b.AppendJSON(nil)}
}

// TestNATSPermissionsExample runs the shipped accounts and permissions
// (deploy/nats/nats-server.conf) with the real collector and the gateway's
// real uplink: the gateway of site1 publishes its site's data and gets
// every PubAck, the collector consumes it, raises an alert and keeps it in
// its bucket with no error; then every denial the file promises is
// asserted for each credential.
func TestNATSPermissionsExample(t *testing.T) {
	url, pki, pw := permServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// the collector, with its own credentials
	cfg := Defaults()
	cfg.DataDir, cfg.HTTP.Listen, cfg.Rules.Files = t.TempDir(), "", nil
	cfg.NATS.URL, cfg.NATS.Username, cfg.NATS.PasswordEnv = url, "collector", "SMELTER_NATS_COLLECTOR_PASSWORD"
	cfg.NATS.TLS = &secret.TLS{CAFile: pki.CAFile}
	col := newCollector(t, cfg)
	done := make(chan error, 1)
	cctx, stop := context.WithCancel(ctx)
	go func() { done <- col.Run(cctx) }()
	t.Cleanup(func() { stop(); <-done })
	wait.For(t, 10*time.Second, "collector ready (stream, bucket and consumer created)", col.Ready)

	// the gateway of site1 through its real uplink: every batch acknowledged
	f := false
	ucfg := natsjs.Config{URL: url, Username: "gw-site1", PasswordEnv: "SMELTER_NATS_GW_SITE1_PASSWORD", CreateStream: &f,
		TLS: secret.TLS{CAFile: pki.CAFile}}
	ucfg.SetDefaults("gw-site1")
	up, err := natsjs.New(ucfg, slog.New(slog.NewTextHandler(io.Discard, nil)), natsjs.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	uctx, ustop := context.WithCancel(ctx)
	udone := make(chan error, 1)
	go func() { udone <- up.Run(uctx) }()
	t.Cleanup(func() { ustop(); <-udone })
	wait.For(t, 10*time.Second, "gateway uplink ready (stream info through its account)", up.Ready)
	t0 := time.Now().UnixMilli() - 60000
	var envs []telemetry.Envelope
	for i := range 30 {
		envs = append(envs, hotBatch("site1", uint64(i+1), t0+int64(i)*1000))
	}
	if err := up.Publish(ctx, envs); err != nil {
		t.Fatalf("gateway publish of its own site: %v", err)
	}
	wait.For(t, 10*time.Second, "the collector's alerts on the gateway's data", func() bool { return len(col.Alerts(true)) > 0 })
	a := col.Alerts(true)[0]
	key := stateKey(0, a.Site, a.Asset) // the asset's checkpoint, which holds its active alerts
	coll := connect(t, url, pki, "collector", pw["COLLECTOR"])
	kv, err := coll.js.KeyValue(ctx, cfg.stateBucket())
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the asset's state with its alert in the collector's bucket", func() bool {
		_, err := kv.Get(ctx, key)
		return err == nil
	})
	if n := counterValue(t, col.m.pubErrors); n != 0 {
		t.Fatalf("the collector had %v publish or bucket errors under its permissions", n)
	}
	if _, err := coll.js.Publish(ctx, "smelter.v1.site2.motor.m-1.kpi", []byte(`{}`)); err != nil {
		t.Fatalf("collector KPI publish: %v", err)
	}

	t.Run("gateway", func(t *testing.T) {
		gw := connect(t, url, pki, "gw-site1", pw["GW_SITE1"])
		if ack, err := gw.js.Publish(ctx, "smelter.v1.site1._gateway.gw-site1.status", []byte(`{}`)); err != nil || ack.Stream != "SMELTER" {
			t.Fatalf("own site: %v %+v", err, ack)
		}
		pub := func(subj string) func() error { return jsPublish(ctx, gw.js, subj) }
		gw.denied(t, "publish another site's data", "smelter.v1.site2.air_compressor.ac-1.data", pub("smelter.v1.site2.air_compressor.ac-1.data"))
		gw.denied(t, "publish an alert of its own site", "smelter.v1.site1.air_compressor.ac-1.alert", pub("smelter.v1.site1.air_compressor.ac-1.alert"))
		gw.denied(t, "publish a KPI of its own site", "smelter.v1.site1.motor.m-1.kpi", pub("smelter.v1.site1.motor.m-1.kpi"))
		// 7 tokens: stored as sent by a partitioned stream, so a gateway could
		// name a partition or forge an alert/KPI as the collector stores them
		for _, s := range []string{"smelter.v1.site1.air_compressor.ac-1.data.3", "smelter.v1.site1.air_compressor.ac-1.birth.0",
			"smelter.v1.site1.air_compressor.ac-1.alert.3", "smelter.v1.site1.air_compressor.ac-1.kpi.x",
			"smelter.v1.site1._gateway.gw-site1.status.1", "smelter.v1.site1.air_compressor.ac-1.other"} {
			gw.denied(t, "publish "+s, s, pub(s))
		}
		gw.denied(t, "subscribe to the telemetry", "smelter.>", func() error { _, err := gw.nc.SubscribeSync("smelter.>"); return err })
		gw.denied(t, "subscribe to the JetStream API", "$JS.API.>", func() error { _, err := gw.nc.SubscribeSync("$JS.API.>"); return err })
		gw.denied(t, "create a consumer", "$JS.API.CONSUMER.CREATE.SMELTER.spy", gw.request("$JS.API.CONSUMER.CREATE.SMELTER.spy"))
		gw.denied(t, "delete the stream", "$JS.API.STREAM.DELETE.SMELTER", gw.request("$JS.API.STREAM.DELETE.SMELTER"))
		gw.denied(t, "read the alert bucket", "$KV.smelter-collector_state.x", pub("$KV.smelter-collector_state.x"))
	})

	t.Run("other site's gateway", func(t *testing.T) {
		gw2 := connect(t, url, pki, "gw-site2", pw["GW_SITE2"])
		if _, err := gw2.js.Publish(ctx, "smelter.v1.site2.air_compressor.ac-9.data", hotBatch("site2", 1, t0).Data); err != nil {
			t.Fatalf("site2's own data: %v", err)
		}
		gw2.denied(t, "publish site1's data", "smelter.v1.site1.air_compressor.ac-1.data", jsPublish(ctx, gw2.js, "smelter.v1.site1.air_compressor.ac-1.data"))
		if _, err := connect(t, url, pki, "gw-site2", pw["GW_SITE2"]).nc.Request("$JS.API.STREAM.INFO.SMELTER", nil, 2*time.Second); err != nil {
			t.Fatalf("stream info through the site account: %v", err)
		}
		if _, err := nats.Connect(url, nats.UserInfo("gw-site2", pw["GW_SITE1"]), nats.RootCAs(pki.CAFile)); err == nil {
			t.Fatal("gw-site2 connected with site1's password")
		}
	})

	t.Run("collector", func(t *testing.T) {
		c := connect(t, url, pki, "collector", pw["COLLECTOR"])
		pub := func(subj string) func() error { return jsPublish(ctx, c.js, subj) }
		c.denied(t, "publish data", "smelter.v1.site1.air_compressor.ac-1.data", pub("smelter.v1.site1.air_compressor.ac-1.data"))
		c.denied(t, "publish a birth", "smelter.v1.site1.air_compressor.ac-1.birth", pub("smelter.v1.site1.air_compressor.ac-1.birth"))
		c.denied(t, "subscribe to the raw telemetry", "smelter.v1.>", func() error { _, err := c.nc.SubscribeSync("smelter.v1.>"); return err })
		c.denied(t, "subscribe to the data", "smelter.v1.*.*.*.data", func() error { _, err := c.nc.SubscribeSync("smelter.v1.*.*.*.data"); return err })
		c.denied(t, "subscribe to a 7-token alert subject", "smelter.v1.*.*.*.alert.*", func() error {
			_, err := c.nc.SubscribeSync("smelter.v1.*.*.*.alert.*")
			return err
		})
		// its own outputs live, as smelter-collector tail -config -kind
		// alert,kpi subscribes (bbtest F2): what the stream it reads holds
		for _, k := range []string{"alert", "kpi"} {
			sub, err := c.nc.SubscribeSync("smelter.v1.*.*.*." + k)
			if err == nil {
				err = c.nc.Flush() // the subscription is in place before the publish
			}
			if err != nil {
				t.Fatal(err)
			}
			subj := "smelter.v1.site1.motor.m-1." + k
			if _, err := coll.js.Publish(ctx, subj, []byte(`{}`)); err != nil {
				t.Fatalf("collector %s publish: %v", k, err)
			}
			if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != subj {
				t.Fatalf("collector subscribed to %s: %v %v", k, m, err)
			}
		}
		c.denied(t, "delete the stream", "$JS.API.STREAM.DELETE.SMELTER", c.request("$JS.API.STREAM.DELETE.SMELTER"))
		c.denied(t, "purge the stream", "$JS.API.STREAM.PURGE.SMELTER", c.request("$JS.API.STREAM.PURGE.SMELTER"))
		c.denied(t, "create another stream", "$JS.API.STREAM.CREATE.OTHER", c.request("$JS.API.STREAM.CREATE.OTHER"))
		c.denied(t, "delete its consumer", "$JS.API.CONSUMER.DELETE.SMELTER.smelter-collector", c.request("$JS.API.CONSUMER.DELETE.SMELTER.smelter-collector"))
		c.denied(t, "write another bucket", "$KV.other.x", pub("$KV.other.x"))
		c.denied(t, "delete its bucket", "$JS.API.STREAM.DELETE.KV_smelter-collector_state", c.request("$JS.API.STREAM.DELETE.KV_smelter-collector_state"))
	})
}

// TestFencePermissionMissing: the accounts of a version before the stream
// fence (the collector's user may not publish smelter.fence.<group>.*)
// stop the collector's start at once with the permission to add, not a
// retry until StartTimeout and not partition workers failing on every
// fence (docs/collector.md, "Fencing").
func TestFencePermissionMissing(t *testing.T) {
	cfg := collectorWithout(t, `"smelter.fence.smelter-collector.*"`)
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout/2)
	defer cancel()
	err := newCollector(t, cfg).Run(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "allow it to publish smelter.fence.smelter-collector.*") {
		t.Fatalf("Run: %v, want the missing fence permission named before StartTimeout", err)
	}
}

// A collector whose NATS user may not pull (the publish permission on
// $JS.API.CONSUMER.MSG.NEXT.SMELTER.* removed from the shipped accounts)
// says so at WARN, naming what to allow, instead of retrying in silence
// (the server's -ERR was a DEBUG fetch error).
func TestPullPermissionMissingWarned(t *testing.T) {
	cfg := collectorWithout(t, `"$JS.API.CONSUMER.MSG.NEXT.SMELTER.*"`)
	runUntilLogged(t, cfg, "the refused pull logged at WARN", func(l string) bool {
		return strings.Contains(l, "level=WARN") && strings.Contains(l, "pull refused by the NATS server's permissions") &&
			strings.Contains(l, "$JS.API.CONSUMER.MSG.NEXT.SMELTER.*")
	})
}

// runUntilLogged runs a collector of cfg until a line of its log matches
// (within 30 s, what names it), then stops it.
func runUntilLogged(t *testing.T, cfg Config, what string, match func(line string) bool) {
	t.Helper()
	var logs logtest.Buffer
	c := newCollectorLog(t, cfg, &logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	wait.For(t, 30*time.Second, what, func() bool {
		return slices.ContainsFunc(strings.Split(logs.String(), "\n"), match)
	})
}

// collectorWithout is the config of a collector connecting as the shipped
// accounts' collector user (TLS, password from the environment) to a
// server whose accounts lack grant (deploy/nats/smelter-accounts.conf
// with grant removed once; the test fails when the file has no such grant).
func collectorWithout(t *testing.T, grant string) Config {
	t.Helper()
	url, pki, _ := permServerEdited(t, func(acc string) string {
		out := strings.Replace(acc, grant, "", 1)
		if out == acc {
			t.Fatalf("deploy/nats/smelter-accounts.conf grants no %s to remove", grant)
		}
		return out
	})
	return collectorUser(t, url, pki)
}

// collectorUser is the config of a collector connecting to url as the
// shipped accounts' collector user (TLS with pki's CA, password from the
// environment permServer set).
func collectorUser(t *testing.T, url string, pki *brokertest.PKI) Config {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir, cfg.HTTP.Listen, cfg.Rules.Files = t.TempDir(), "", nil
	cfg.NATS.URL, cfg.NATS.Username, cfg.NATS.PasswordEnv = url, "collector", "SMELTER_NATS_COLLECTOR_PASSWORD"
	cfg.NATS.TLS = &secret.TLS{CAFile: pki.CAFile}
	return cfg
}

// A permissions violation on one of the collector's subscriptions (its
// user may not subscribe to the gateways' status notices) is logged
// through the collector's logger, at WARN with the subject, not as
// nats.go's raw stderr line, which broke the JSON log (bbtest F4).
func TestAsyncNATSErrorLogged(t *testing.T) {
	cfg := collectorWithout(t, `"smelter.v1.*._gateway.*.status"`)
	runUntilLogged(t, cfg, "the refused status subscription logged at WARN", func(l string) bool {
		return strings.Contains(l, "level=WARN") && strings.Contains(l, `msg="NATS asynchronous error"`) && strings.Contains(l, "connection=nats") &&
			strings.Contains(l, "permissions violation") && strings.Contains(l, `smelter.v1.*._gateway.*.status`)
	})
}

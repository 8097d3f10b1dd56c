package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/internal/wait"
)

const natsClusterConf = "nats/nats-cluster.conf"

// natsEnv sets what nats-cluster.conf and smelter-accounts.conf read from the
// server's environment, and returns the passwords.
func natsEnv(t *testing.T) map[string]string {
	env := map[string]string{
		"NATS_SERVER_NAME":                "nats-1",
		"SMELTER_NATS_COLLECTOR_PASSWORD": "collector-test-password",
		"SMELTER_NATS_COMMANDER_PASSWORD": "commander-test-password",
		"SMELTER_NATS_GW_SITE1_PASSWORD":  "site1-test-password",
		"SMELTER_NATS_GW_SITE2_PASSWORD":  "site2-test-password",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	return env
}

// TestNATSClusterConfigParses loads the cluster node configuration that
// Compose runs (and whose accounts file Kubernetes includes) with
// nats-server's own parser, and checks that every deployment file includes
// the one accounts layout: per-site accounts, the collector alone in SMELTER.
func TestNATSClusterConfigParses(t *testing.T) {
	env := natsEnv(t)
	opts, err := server.ProcessConfigFile(natsClusterConf)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", natsClusterConf, err)
	}
	if opts.ServerName != "nats-1" || !opts.JetStream || opts.StoreDir != "/data/jetstream" {
		t.Errorf("server_name %q jetstream %v store_dir %q", opts.ServerName, opts.JetStream, opts.StoreDir)
	}
	if opts.Cluster.Name != "smelter" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
		t.Errorf("cluster %q port %d routes %v: want a 3-node cluster named smelter", opts.Cluster.Name, opts.Cluster.Port, opts.Routes)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	want := map[string]string{"collector": "SMELTER", "commander": "SMELTER", "gw-site1": "SITE_site1", "gw-site2": "SITE_site2"}
	for name, acc := range want {
		u := users[name]
		if u == nil || u.Account == nil || u.Account.Name != acc {
			t.Errorf("user %s: missing or not in account %s", name, acc)
			continue
		}
		envName := "SMELTER_NATS_" + strings.ToUpper(name) + "_PASSWORD"
		if strings.HasPrefix(name, "gw-") {
			envName = "SMELTER_NATS_GW_" + strings.ToUpper(strings.TrimPrefix(name, "gw-")) + "_PASSWORD"
		}
		if u.Password != env[envName] {
			t.Errorf("user %s: the password is not the environment's %s", name, envName)
		}
	}
	for name, u := range users {
		if want[name] == "" {
			t.Errorf("user %s is not in the reviewed layout", name)
		}
		// no gateway shares the collector's account: its _INBOX.> would see the collector's replies
		if name != "collector" && name != "commander" && u.Account != nil && u.Account.Name == "SMELTER" {
			t.Errorf("user %s is in account SMELTER with the collector", name)
		}
	}

	// one layout: the single-server example and the cluster include the same file
	for _, f := range []string{"nats/nats-server.conf", natsClusterConf} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^include \./smelter-accounts\.conf$`).Match(data) || strings.Contains(string(data), "accounts {") {
			t.Errorf("%s does not include ./smelter-accounts.conf, or defines accounts of its own", f)
		}
	}

	// no password is written in the files: without the environment they do not load
	os.Unsetenv("SMELTER_NATS_GW_SITE2_PASSWORD")
	if _, err := server.ProcessConfigFile(natsClusterConf); err == nil || !strings.Contains(err.Error(), "SMELTER_NATS_GW_SITE2_PASSWORD") {
		t.Errorf("without SMELTER_NATS_GW_SITE2_PASSWORD: %v, want an error naming it", err)
	}
}

// violations is a NATS connection whose asynchronous errors are collected.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

// saw reports whether a permissions violation naming subject arrived.
func (v *violations) saw(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(strings.ToLower(e), "permissions violation") && strings.Contains(e, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

// hotBatch is a batch of site's air compressor asset whose discharge
// temperature raises the default rules' alert.
func hotBatch(site, asset string, seq uint64, ts int64) telemetry.Envelope {
	b := &telemetry.Batch{Gateway: "gw-compose", Seq: seq, TSGW: ts,
		Asset:    telemetry.Asset{ID: asset, Class: "air_compressor", Path: []string{"acme", site, "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
	return telemetry.Envelope{Subject: telemetry.Subject(site, "air_compressor", asset, telemetry.KindData), MsgID: b.MsgID(), Data: b.AppendJSON(nil)}
}

// gathered is the value of the metric name in reg (0 when absent).
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestNATSAccountsServeSmelter runs one node from the Compose cluster file
// (cluster routes removed, loopback port, temporary store) with exactly what
// Compose runs against it: the stream created by user collector as the
// nats-init service does, two real collector replicas with
// compose/smelter/collector.yaml (partitioned: 8 partitions, pinned
// consumers, state and member buckets, the stream's subject transform,
// message get), and the Compose gateway's real JetStream uplink as user
// gw-site1. Each collector must work with no permission error, and the
// gateways must see nothing of the collector: a site2 gateway subscribed to
// every reply inbox of its account receives none of the collector's
// JetStream replies, and gw-site1 may neither publish alerts nor read the
// telemetry.
func TestNATSAccountsServeSmelter(t *testing.T) {
	env := natsEnv(t)
	opts, err := server.ProcessConfigFile(natsClusterConf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	url := srv.ClientURL()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// a site2 gateway listening to every reply inbox its account can see
	var spyErrs violations
	spy, err := nats.Connect(url, nats.UserInfo("gw-site2", env["SMELTER_NATS_GW_SITE2_PASSWORD"]), nats.ErrorHandler(spyErrs.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	inbox, err := spy.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	// nats-init: the stream, created by user collector as compose.yaml does
	init, err := nats.Connect(url, nats.UserInfo("collector", env["SMELTER_NATS_COLLECTOR_PASSWORD"]))
	if err != nil {
		t.Fatal(err)
	}
	defer init.Close()
	ijs, err := jetstream.New(init)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ijs.CreateStream(ctx, jetstream.StreamConfig{Name: natsjs.DefaultStream, Subjects: telemetry.TelemetryStreamSubjects("*"),
		Storage: jetstream.FileStorage, MaxAge: 168 * time.Hour, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatalf("nats-init as collector: %v", err)
	}
	if _, err := ijs.CreateStream(ctx, jetstream.StreamConfig{Name: natsjs.DefaultAuditStream, Subjects: telemetry.AuditStreamSubjects("*"),
		Storage: jetstream.FileStorage, MaxAge: natsjs.DefaultAuditMaxAge, DenyDelete: true, DenyPurge: true}); err != nil {
		t.Fatalf("nats-init as collector: audit stream: %v", err)
	}

	// two collector replicas with the Compose configuration
	ccfg, err := collector.LoadConfig("compose/smelter/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.Cluster.Partitions == 0 {
		t.Fatal("the Compose collectors are not partitioned")
	}
	type replica struct {
		col *collector.Collector
		reg *prometheus.Registry
		log *logtest.Buffer
	}
	var reps []replica
	for i := range 2 {
		cfg := ccfg
		cfg.NATS.URL, cfg.DataDir, cfg.HTTP.Listen = url, t.TempDir(), ""
		cfg.Cluster.Replicas = 1 // one server here; Compose has three
		cfg.History = nil        // no compose PostgreSQL here: TestComposeFile checks the history block
		cfg.Replica = fmt.Sprintf("collector-%d", i+1)
		set, err := cfg.LoadRules(catalog.Default())
		if err != nil {
			t.Fatal(err)
		}
		r := replica{reg: prometheus.NewRegistry(), log: &logtest.Buffer{}}
		if r.col, err = collector.New(cfg, set, r.log.Logger(slog.LevelDebug), r.reg); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		cctx, stop := context.WithCancel(ctx)
		go func() { done <- r.col.Run(cctx) }()
		t.Cleanup(func() { stop(); <-done })
		reps = append(reps, r)
	}
	for i, r := range reps {
		wait.For(t, 20*time.Second, fmt.Sprintf("collector-%d ready (stream transform, buckets, partition consumers)", i+1), r.col.Ready)
	}

	// the Compose gateway's uplink, as configured
	root := serviceRoot(t, readCompose(t)["gateway"])
	gcfg, err := gwconfig.Load(filepath.Join(root, "etc/smelter/gateway.yaml"), gateway.Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	ucfg := *gcfg.Raw.Uplinks.NATS
	ucfg.URL, ucfg.Replicas = url, 1
	ucfg.SetDefaults(gcfg.Raw.Gateway.ID)
	site := gcfg.Raw.Gateway.Site
	up, err := natsjs.New(ucfg, slog.New(slog.DiscardHandler), natsjs.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	uctx, ustop := context.WithCancel(ctx)
	udone := make(chan error, 1)
	go func() { udone <- up.Run(uctx) }()
	t.Cleanup(func() { ustop(); <-udone })
	wait.For(t, 10*time.Second, "gateway uplink ready as "+ucfg.Username, up.Ready)
	t0 := time.Now().UnixMilli() - 60000
	// assets spread over the partitions: a partition whose first message is
	// not the stream's first makes its new owner look up the earlier
	// messages by sequence (message get) before evaluating
	var envs []telemetry.Envelope
	for i := range 30 {
		for a := range 8 {
			envs = append(envs, hotBatch(site, fmt.Sprintf("ac-%d", a+1), uint64(i*8+a+1), t0+int64(i)*1000))
		}
	}
	if err := up.Publish(ctx, envs); err != nil {
		t.Fatalf("publish as %s: %v", ucfg.Username, err)
	}
	wait.For(t, 90*time.Second, "an alert on each asset from the collector replicas", func() bool {
		assets := map[string]bool{}
		for _, r := range reps {
			for _, a := range r.col.Alerts(true) {
				assets[a.Asset] = true
			}
		}
		return len(assets) == 8
	})

	s, err := ijs.Stream(ctx, natsjs.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.CachedInfo().Config.SubjectTransform; st == nil {
		t.Error("the collectors did not set the stream's partition transform")
	}
	for p := range ccfg.Cluster.Partitions {
		name := fmt.Sprintf("%s-p%d", ccfg.Group, p)
		if _, err := s.Consumer(ctx, name); err != nil {
			t.Errorf("partition consumer %s: %v", name, err)
		}
	}
	for _, b := range []string{ccfg.Group + "_state", ccfg.Group + "_members"} {
		if _, err := ijs.KeyValue(ctx, b); err != nil {
			t.Errorf("bucket %s: %v", b, err)
		}
	}
	for i, r := range reps {
		if n := gathered(t, r.reg, "smelter_collector_publish_errors_total"); n != 0 {
			t.Errorf("collector-%d: %v publish or bucket errors", i+1, n)
		}
		if l := strings.ToLower(r.log.String()); strings.Contains(l, "permission") || strings.Contains(l, "authorization") {
			t.Errorf("collector-%d logged a permission error:\n%s", i+1, r.log.String())
		}
	}

	// the gateways see nothing of the collector's traffic
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := inbox.Pending(); n != 0 {
		m, _ := inbox.NextMsg(0)
		t.Errorf("a site2 gateway received %d messages on _INBOX.> (first on %s): the collector's JetStream replies leak", n, m.Subject)
	}
	// the subscription does receive what is meant for its account: its own
	// stream-info reply (so the zero above is not a dead subscription)
	if _, err := spy.Request("$JS.API.STREAM.INFO."+natsjs.DefaultStream, nil, 5*time.Second); err != nil {
		t.Fatalf("gw-site2 stream info: %v", err)
	}
	wait.For(t, 5*time.Second, "gw-site2's own reply on its _INBOX.> subscription", func() bool {
		n, _, _ := inbox.Pending()
		return n > 0
	})

	var gwErrs violations
	gw, err := nats.Connect(url, nats.UserInfo(ucfg.Username, env[ucfg.PasswordEnv]), nats.ErrorHandler(gwErrs.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	alert := telemetry.Subject(site, "air_compressor", "ac-1", "alert")
	if err := gw.Publish(alert, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.SubscribeSync("smelter.v1.>"); err != nil {
		t.Fatal(err)
	}
	other := telemetry.Subject("site2", "air_compressor", "ac-1", telemetry.KindData)
	if err := gw.Publish(other, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// 7 tokens: the partitioned stream stores them as sent, so they would
	// name a partition of the publisher's choosing or pass for the
	// collector's stored alerts and KPIs (...alert.<p>)
	seven := []string{telemetry.Subject(site, "air_compressor", "ac-1", telemetry.KindData) + ".0", alert + ".3",
		telemetry.Subject(site, "air_compressor", "ac-1", "kpi") + ".x"}
	for _, subj := range seven {
		if err := gw.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range append([]string{alert, "smelter.v1.>", other}, seven...) {
		wait.For(t, 5*time.Second, ucfg.Username+": permissions violation for "+subj, func() bool { return gwErrs.saw(subj) })
	}
	gjs, err := jetstream.New(gw)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if err := gjs.DeleteStream(dctx, natsjs.DefaultStream); err == nil {
		t.Fatal(ucfg.Username + " deleted the stream")
	}
}

// helmTLS is the NATS chart's TLS block of a port.
type helmTLS struct {
	Enabled    bool   `yaml:"enabled"`
	SecretName string `yaml:"secretName"`
}

// TestHelmValuesIncludeTheAccounts checks that the Kubernetes NATS cluster
// includes the same accounts file Compose uses and passes every password it
// reads.
func TestHelmValuesIncludeTheAccounts(t *testing.T) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool    `yaml:"enabled"`
				Replicas int     `yaml:"replicas"`
				TLS      helmTLS `yaml:"tls"`
			} `yaml:"cluster"`
			NATS struct {
				TLS helmTLS `yaml:"tls"`
			} `yaml:"nats"`
			JetStream struct {
				Enabled bool `yaml:"enabled"`
			} `yaml:"jetstream"`
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
		TLSCA struct {
			Enabled    bool   `yaml:"enabled"`
			SecretName string `yaml:"secretName"`
			Key        string `yaml:"key"`
		} `yaml:"tlsCA"`
		Container struct {
			Env map[string]any `yaml:"env"`
		} `yaml:"container"`
	}
	readYAML(t, "kubernetes/nats-values.yaml", &v)
	// TLS on every hop (docs/install.md): client connections and routes,
	// verified against the CA
	for what, tls := range map[string]helmTLS{"config.cluster.tls (routes)": v.Config.Cluster.TLS, "config.nats.tls (clients)": v.Config.NATS.TLS} {
		if !tls.Enabled || tls.SecretName == "" {
			t.Errorf("%s = %+v: want enabled with a secretName", what, tls)
		}
	}
	if !v.TLSCA.Enabled || v.TLSCA.SecretName == "" || v.TLSCA.Key == "" {
		t.Errorf("tlsCA = %+v: the routes and clients verify against no CA", v.TLSCA)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 || !v.Config.JetStream.Enabled {
		t.Errorf("cluster %+v jetstream %v: want 3 JetStream replicas", v.Config.Cluster, v.Config.JetStream.Enabled)
	}
	inc, _ := v.Config.Merge["$include"].(string)
	if filepath.Base(inc) != "smelter-accounts.conf" {
		t.Errorf("config.merge $include = %q, want the shared smelter-accounts.conf", inc)
	}
	data, err := os.ReadFile("nats/smelter-accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`\$(SMELTER_[A-Z0-9_]+)`).FindAllStringSubmatch(string(data), -1)
	if len(vars) == 0 {
		t.Fatal("smelter-accounts.conf reads no password from the environment")
	}
	for _, m := range vars {
		if _, ok := v.Container.Env[m[1]]; !ok {
			t.Errorf("container.env lacks %s, which smelter-accounts.conf reads", m[1])
		}
	}
}

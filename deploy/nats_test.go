package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
		"SMELTER_NATS_SYS_PASSWORD":       "sys-test-password",
		"SMELTER_NATS_GATEWAY_PASSWORD":   "gateway-test-password",
		"SMELTER_NATS_COLLECTOR_PASSWORD": "collector-test-password",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	return env
}

// TestNATSClusterConfigParses loads the cluster node configuration that
// Compose runs (and whose accounts file Kubernetes includes) with
// nats-server's own parser.
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
	if opts.SystemAccount != "SYS" {
		t.Errorf("system_account = %q", opts.SystemAccount)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for name, acc := range map[string]string{"sys": "SYS", "gateway": "SMELTER", "collector": "SMELTER"} {
		u := users[name]
		if u == nil || u.Account == nil || u.Account.Name != acc {
			t.Errorf("user %s: missing or not in account %s", name, acc)
			continue
		}
		if want := env["SMELTER_NATS_"+strings.ToUpper(name)+"_PASSWORD"]; u.Password != want {
			t.Errorf("user %s: the password is not the environment's", name)
		}
	}
	if g := users["gateway"]; g != nil && (g.Permissions == nil || g.Permissions.Publish == nil || !slices.Contains(g.Permissions.Publish.Allow, "smelter.v1.>")) {
		t.Errorf("gateway user: publish permissions %+v", g.Permissions)
	}

	// no password is written in the files: without the environment they do not load
	os.Unsetenv("SMELTER_NATS_GATEWAY_PASSWORD")
	if _, err := server.ProcessConfigFile(natsClusterConf); err == nil || !strings.Contains(err.Error(), "SMELTER_NATS_GATEWAY_PASSWORD") {
		t.Errorf("without SMELTER_NATS_GATEWAY_PASSWORD: %v, want an error naming it", err)
	}
}

// TestNATSAccountsServeSmelter runs one node from the same file (cluster
// routes removed, loopback port, temporary store) and proves the accounts
// work for Smelter: the gateway's real JetStream uplink creates the stream
// and publishes as user gateway, the collector user reads it and creates the
// alert KV bucket, and the gateway user can neither delete the stream nor
// read other gateways' traffic.
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

	cfg := natsjs.Config{URL: url, Username: "gateway", PasswordEnv: "SMELTER_NATS_GATEWAY_PASSWORD", MaxAge: time.Hour}
	cfg.SetDefaults("gw-deploy-test")
	up, err := natsjs.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.For(t, 10*time.Second, "gateway uplink ready as user gateway", up.Ready)
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	msg := telemetry.Envelope{Subject: "smelter.v1.deploy.air_compressor.ac-1.data", MsgID: "gw-deploy-test-1", Data: []byte(`{"seq":1}`)}
	if err := up.Publish(pctx, []telemetry.Envelope{msg}); err != nil {
		t.Fatalf("publish as gateway: %v", err)
	}

	col, err := nats.Connect(url, nats.UserInfo("collector", env["SMELTER_NATS_COLLECTOR_PASSWORD"]))
	if err != nil {
		t.Fatalf("connect as collector: %v", err)
	}
	defer col.Close()
	js, err := jetstream.New(col)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(pctx, natsjs.DefaultStream)
	if err != nil {
		t.Fatalf("collector: stream: %v", err)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	if _, err := js.CreateKeyValue(pctx, jetstream.KeyValueConfig{Bucket: "smelter_alerts"}); err != nil {
		t.Fatalf("collector: create KV bucket: %v", err)
	}

	gw, err := nats.Connect(url, nats.UserInfo("gateway", env["SMELTER_NATS_GATEWAY_PASSWORD"]))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	perm := make(chan error, 4)
	gw.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perm <- err })
	gjs, err := jetstream.New(gw)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if err := gjs.DeleteStream(dctx, natsjs.DefaultStream); err == nil {
		t.Fatal("user gateway deleted the stream")
	}
	if _, err := gw.SubscribeSync("smelter.v1.>"); err != nil {
		t.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-perm:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("subscribe as gateway: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("user gateway may subscribe to smelter.v1.>")
	}
}

// TestHelmValuesIncludeTheAccounts checks that the Kubernetes NATS cluster
// includes the same accounts file Compose uses and passes every password it
// reads.
func TestHelmValuesIncludeTheAccounts(t *testing.T) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled bool `yaml:"enabled"`
			} `yaml:"jetstream"`
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
		Container struct {
			Env map[string]any `yaml:"env"`
		} `yaml:"container"`
	}
	readYAML(t, "kubernetes/nats-values.yaml", &v)
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
	vars := regexp.MustCompile(`\$(SMELTER_[A-Z_]+)`).FindAllStringSubmatch(string(data), -1)
	if len(vars) == 0 {
		t.Fatal("smelter-accounts.conf reads no password from the environment")
	}
	for _, m := range vars {
		if _, ok := v.Container.Env[m[1]]; !ok {
			t.Errorf("container.env lacks %s, which smelter-accounts.conf reads", m[1])
		}
	}
}

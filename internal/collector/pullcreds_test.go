package collector

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/wait"
)

// Every credential form of the nats: block (username with password_file
// or password_env, token_file, creds_file in operator mode, TLS with a CA
// and a client certificate, insecure_skip_verify) reaches the partition
// workers' pull connections, which dial with the main connection's
// options: a batch is evaluated end to end through Run, every pull
// connection is set up at its first try, and no secret is logged
// (wirereview: the pull connection had been tested with nats.Options, not
// through the collector's configuration).
func TestPullConnectionEveryCredentialForm(t *testing.T) {
	pki := brokertest.NewPKI(t)
	dir := pki.Dir
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("nats.pass", "pa55-file\n")
	write("nats.token", "t0ken-file\n")
	t.Setenv("SMELTER_TEST_PULL_PASSWORD", "pa55-env")
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	op := brokertest.OperatorNATS(t)
	opCreds, err := os.ReadFile(op.Creds)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		url     func() string
		nats    string // the nats: block after its url
		client  []nats.Option
		secrets []string
	}{
		{"password_file and mutual TLS", func() string {
			return brokertest.NATS(t, brokers.NATSOptions{Username: "collector", Password: "pa55-file", TLS: pki.ServerTLS(true), VerifyClients: true}).URL()
		}, "  username: collector\n  password_file: nats.pass\n  tls: {ca_file: " + rel(pki.CAFile) + ", cert_file: " + rel(pki.ClientCertFile) + ", key_file: " + rel(pki.ClientKeyFile) + "}\n",
			[]nats.Option{nats.UserInfo("collector", "pa55-file"), nats.Secure(pki.ClientTLS())}, []string{"pa55-file"}},
		{"password_env", func() string {
			return brokertest.NATS(t, brokers.NATSOptions{Username: "collector", Password: "pa55-env"}).URL()
		}, "  username: collector\n  password_env: SMELTER_TEST_PULL_PASSWORD\n", []nats.Option{nats.UserInfo("collector", "pa55-env")}, []string{"pa55-env"}},
		{"token_file and insecure_skip_verify", func() string {
			return brokertest.NATS(t, brokers.NATSOptions{Token: "t0ken-file", TLS: pki.ServerTLS(false)}).URL()
		}, "  token_file: nats.token\n  tls: {insecure_skip_verify: true}\n", []nats.Option{nats.Token("t0ken-file"), nats.Secure(pki.ClientTLS())}, []string{"t0ken-file"}},
		{"creds_file in operator mode", op.URL, "  creds_file: " + op.Creds + "\n", []nats.Option{nats.UserCredentials(op.Creds)},
			credsSecrets(string(opCreds))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url()
			doc := "data_dir: " + t.TempDir() + "\nhttp: {listen: ''}\nrules: {files: []}\nnats:\n  url: " + url + "\n" + tc.nats
			cfg, err := loadConfigText(t, dir, doc)
			if err != nil {
				t.Fatal(err)
			}
			var logs logtest.Buffer
			r := &running{c: newCollectorLog(t, cfg, &logs), done: make(chan error, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			r.cancel = cancel
			go func() { r.done <- r.c.Run(ctx) }()
			t.Cleanup(r.stop)
			wait.For(t, 15*time.Second, "collector ready", r.c.Ready)
			nc, err := nats.Connect(url, tc.client...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ts := time.Now().UnixMilli()
			if _, err := js.Publish(ctx, subj, batchJSON(1, ts, 80)); err != nil {
				t.Fatal(err)
			}
			evaluated(t, r, ts)
			if ok, failed := counterVec(r.c.m.pullDials, "ok"), counterVec(r.c.m.pullDials, "error"); ok < 1 || failed != 0 {
				t.Errorf("pull connections: %v set up, %v failed", ok, failed)
			}
			r.stop()
			out := logs.String()
			for _, s := range tc.secrets {
				if strings.Contains(out, s) {
					t.Errorf("a secret (%.6s...) in the log", s)
				}
			}
		})
	}
}

// credsSecrets returns the user JWT and the nkey seed of a creds file.
func credsSecrets(creds string) []string {
	var out []string
	for _, l := range strings.Fields(creds) {
		if strings.HasPrefix(l, "eyJ") || strings.HasPrefix(l, "SU") {
			out = append(out, l)
		}
	}
	return out
}

package collector

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/catalog"
)

// loadConfigText writes doc as dir/collector.yaml and loads it, so relative
// paths in it resolve against dir.
func loadConfigText(t *testing.T, dir, doc string) (Config, error) {
	t.Helper()
	p := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(p)
}

func newCollector(t *testing.T, cfg Config) *Collector {
	t.Helper()
	lw := io.Discard
	if os.Getenv("SMELTER_TEST_LOG") != "" { // SMELTER_TEST_LOG=1: the collectors' logs on stderr
		lw = os.Stderr
	}
	return newCollectorLog(t, cfg, lw)
}

// newCollectorLog is newCollector logging (debug and up, text) to lw.
func newCollectorLog(t *testing.T, cfg Config, lw io.Writer) *Collector {
	t.Helper()
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, set, slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug})), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The collector reads its NATS password, client certificate and CA through
// internal/secret, with paths relative to the config file, and connects to a
// broker that requires mTLS and a password.
func TestNATSPasswordFileAndMutualTLS(t *testing.T) {
	pki := brokertest.NewPKI(t)
	n, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir(), Username: "collector", Password: "s3cret",
		TLS: pki.ServerTLS(true), VerifyClients: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	dir := pki.Dir
	if err := os.WriteFile(filepath.Join(dir, "nats.pass"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	doc := "data_dir: " + t.TempDir() + "\nhttp: {listen: ''}\nrules: {files: []}\n" +
		"nats:\n  url: " + n.URL() + "\n  username: collector\n  password_file: nats.pass\n" +
		"  tls: {ca_file: " + rel(pki.CAFile) + ", cert_file: " + rel(pki.ClientCertFile) + ", key_file: " + rel(pki.ClientKeyFile) + "}\n"
	cfg, err := loadConfigText(t, dir, doc)
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !c.Ready() {
		select {
		case err := <-done:
			t.Fatalf("collector stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("collector not ready over mTLS with a password file")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Bad secret and TLS settings stop Run before any connection, with an error
// naming the field; an incomplete tls block fails validation.
func TestSecretErrorsNameTheField(t *testing.T) {
	t.Setenv("SMELTER_TEST_UNSET_PASSWORD", "")
	os.Unsetenv("SMELTER_TEST_UNSET_PASSWORD")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad-ca.pem"), []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "data_dir: " + t.TempDir() + "\nrules: {files: []}\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"missing password file", "nats: {url: 'nats://127.0.0.1:1', username: u, password_file: none.pass}\n",
			"collector: nats.password_file: read " + filepath.Join(dir, "none.pass")},
		{"unset password env", "nats: {url: 'nats://127.0.0.1:1', username: u, password_env: SMELTER_TEST_UNSET_PASSWORD}\n",
			"collector: nats.password_env: environment variable SMELTER_TEST_UNSET_PASSWORD is not set"},
		{"missing token file", "nats: {url: 'nats://127.0.0.1:1', token_file: none.token}\n", "collector: nats.token_file: read"},
		{"bad ca", "nats: {url: 'nats://127.0.0.1:1', tls: {ca_file: bad-ca.pem}}\n",
			"collector: nats.tls.ca_file: " + filepath.Join(dir, "bad-ca.pem") + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfigText(t, dir, head+tc.doc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = newCollector(t, cfg).Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ doc, want string }{
		{"nats: {tls: {cert_file: c.pem}}\n", "nats.tls.key_file: required with cert_file"},
		{"mqtt: {tls: {key_file: k.pem}}\n", "mqtt.tls.cert_file: required with key_file"},
	} {
		if _, err := loadConfigText(t, dir, head+tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %s", tc.doc, err, tc.want)
		}
	}
}

func TestHTTPTokenSources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api.token"), []byte("tok-123\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.token"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMELTER_TEST_API_TOKEN", " tok-env ")
	t.Setenv("SMELTER_TEST_BLANK_TOKEN", " \t")
	if err := os.WriteFile(filepath.Join(dir, "blank.token"), []byte("  \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "data_dir: " + t.TempDir() + "\nrules: {files: []}\n"
	for _, tc := range []struct{ doc, want, wantErr string }{
		{"http: {token_file: api.token}\n", "tok-123", ""},
		{"http: {token_env: SMELTER_TEST_API_TOKEN}\n", "tok-env", ""},
		{"http: {}\n", "", ""},
		{"http: {token_file: none.token}\n", "", "collector: http.token_file: read " + filepath.Join(dir, "none.token")},
		{"http: {token_file: empty.token}\n", "", "collector: http.token_file: file " + filepath.Join(dir, "empty.token") + " is empty"},
		{"http: {token_env: SMELTER_TEST_BLANK_TOKEN}\n", "", "collector: http.token_env: environment variable SMELTER_TEST_BLANK_TOKEN is empty"},
		{"http: {token_file: blank.token}\n", "", "collector: http.token_file: file " + filepath.Join(dir, "blank.token") + " is empty"},
		{"http: {token_env: SMELTER_TEST_NO_SUCH_TOKEN}\n", "", "collector: http.token_env: environment variable SMELTER_TEST_NO_SUCH_TOKEN is not set"},
	} {
		cfg, err := loadConfigText(t, dir, head+tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := newCollector(t, cfg).httpToken()
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: got %v, want %s", tc.doc, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("%q: got %q, %v, want %q", tc.doc, got, err, tc.want)
		}
	}
}

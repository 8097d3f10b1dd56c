package secret

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	s := New("hunter2-value")
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %d", s, s, s, s, s, s, s), s.String(), s.GoString(),
		fmt.Sprintf("%v", struct{ P Secret }{s}),
	} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("printed the secret: %s", out)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "pw", s, slog.Any("any", s))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "pw", s)
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), "[redacted]") {
		t.Fatalf("log: %s", buf.String())
	}
	if s.Reveal() != "hunter2-value" || s.IsZero() || !(Secret{}).IsZero() {
		t.Fatal("Reveal/IsZero")
	}
}

func TestFromEnvAndFile(t *testing.T) {
	t.Setenv("SMELTER_SECRET_TEST", "env-value")
	t.Setenv("SMELTER_SECRET_EMPTY", "")
	if s, err := FromEnv("f.password_env", "SMELTER_SECRET_TEST"); err != nil || s.Reveal() != "env-value" {
		t.Fatalf("FromEnv = %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte("file-value\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := FromFile("f.password_file", p); err != nil || s.Reveal() != "file-value" {
		t.Fatalf("FromFile = %q %v", s.Reveal(), err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		err  error
		want []string
	}{
		{func() error { _, e := FromEnv("f.password_env", "SMELTER_SECRET_UNSET"); return e }(), []string{"f.password_env", "SMELTER_SECRET_UNSET", "not set"}},
		{func() error { _, e := FromEnv("f.password_env", "SMELTER_SECRET_EMPTY"); return e }(), []string{"SMELTER_SECRET_EMPTY", "empty"}},
		{func() error { _, e := FromFile("f.token_file", dir+"/none"); return e }(), []string{"f.token_file", dir + "/none", "no such file"}},
		{func() error { _, e := FromFile("f.token_file", empty); return e }(), []string{empty, "empty"}},
	}
	for _, tc := range cases {
		if tc.err == nil {
			t.Fatal("no error")
		}
		for _, w := range tc.want {
			if !strings.Contains(tc.err.Error(), w) {
				t.Fatalf("%q does not mention %q", tc.err, w)
			}
		}
	}
	if Resolve("/etc/x", "a.pem") != "/etc/x/a.pem" || Resolve("/etc/x", "/abs") != "/abs" || Resolve("/etc/x", "") != "" {
		t.Fatal("Resolve")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("this is not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		tls  TLS
		want string
	}{
		{TLS{CertFile: "c"}, "x.tls.key_file: required with cert_file"},
		{TLS{KeyFile: "k"}, "x.tls.cert_file: required with key_file"},
		{TLS{CAFile: dir + "/missing.pem"}, "x.tls.ca_file: read " + dir + "/missing.pem"},
		{TLS{CAFile: notPEM}, "x.tls.ca_file: " + notPEM + " holds no PEM certificate"},
		{TLS{CertFile: notPEM, KeyFile: notPEM}, "x.tls.cert_file: load " + notPEM},
	}
	for _, tc := range cases {
		_, err := tc.tls.Config("x.tls")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Config(%+v) = %v, want %q", tc.tls, err, tc.want)
		}
	}
	c, err := (&TLS{ServerName: "broker", InsecureSkipVerify: true}).Config("x.tls")
	if err != nil || c.ServerName != "broker" || !c.InsecureSkipVerify || c.RootCAs != nil {
		t.Fatalf("config %+v %v", c, err)
	}
	if (&TLS{}).Enabled() || !(&TLS{ServerName: "x"}).Enabled() {
		t.Fatal("Enabled")
	}
}

func TestTLSNeeded(t *testing.T) {
	schemes := []string{"tls://", "wss://"}
	cases := []struct {
		tls  TLS
		urls string
		want bool
	}{
		{TLS{}, "nats://a:4222", false},
		{TLS{}, "nats://a:4222, tls://b:4222", true},
		{TLS{}, " wss://a/ws", true},
		{TLS{}, "ws://a/ws,nats://b", false},
		{TLS{CAFile: "ca.pem"}, "nats://a:4222", true},
		{TLS{InsecureSkipVerify: true}, "", true},
	}
	for _, c := range cases {
		if got := c.tls.Needed(c.urls, schemes...); got != c.want {
			t.Errorf("%+v.Needed(%q) = %v, want %v", c.tls, c.urls, got, c.want)
		}
	}
}

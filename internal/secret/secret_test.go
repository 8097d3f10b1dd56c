package secret

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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

// RedactURL hides user information (a password or a token: nats.go's
// ConnectedUrlRedacted shows a token) and a query or fragment
// (?password=X is no credential to the clients, but it is one to whoever
// wrote it), in every URL of a list.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"tls://Tok-S3cret-123@localhost:4222":   "tls://redacted@localhost:4222",
		"nats://collector:pw@127.0.0.1:4222":    "nats://redacted@127.0.0.1:4222",
		"nats://a:1,nats://tok@b:2":             "nats://a:1,nats://redacted@b:2",
		"tok@b:2":                               "redacted@b:2",
		"nats://127.0.0.1:4222":                 "nats://127.0.0.1:4222",
		"nats://u:p@[::1":                       "(a URL that does not parse)",
		"nats://h:1?password=S3cret":            "nats://h:1?redacted",
		"nats://h:1/?user=a&password=S3cret":    "nats://h:1/?redacted",
		"nats://a:1, nats://h:2?token=S3cret":   "nats://a:1,nats://h:2?redacted",
		"h:1?password=S3cret":                   "h:1?redacted",
		"nats://h:1#S3cret":                     "nats://h:1#redacted",
		"nats://u:S3cret@h:1?password=S3cret#x": "nats://redacted@h:1?redacted#redacted",
		"nats://h:%zz?password=S3cret":          "(a URL that does not parse)",
	} {
		if got := RedactURL(in); got != want || strings.Contains(got, "S3cret") {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// URLProblems names the URL of a list by its place and the settings to use
// instead, and never quotes a URL or its credentials.
func TestURLProblems(t *testing.T) {
	nats := URLRules{Scheme: "nats", Example: "nats://host:4222", Instead: "token_file"}
	strict := URLRules{Schemes: []string{"nats", "tls"}, Example: "nats://host:4222", Instead: "creds_file"}
	for _, c := range []struct {
		raw  string
		r    URLRules
		want []string
	}{
		{"", nats, nil},
		{"nats://a:1, b:2", nats, nil},
		{"nats://a:1,u:S3cret@b:2", nats, []string{"credentials in the URL are not allowed (URL 2 of the list); use token_file"}},
		{"Tok-S3cret@b:2", strict, []string{"URL 1 of the list is not a URL like nats://host:4222"}},
		{"tls://a:1,http://S3cret@b:2", strict, []string{"scheme \"http\" of URL 2 of the list is not nats or tls",
			"credentials in the URL are not allowed (URL 2 of the list); use creds_file"}},
		{"nats://u:S3cret@[::1", nats, []string{"URL 1 of the list is not a URL like nats://host:4222"}},
	} {
		got := URLProblems(c.raw, c.r)
		if !slices.Equal(got, c.want) || strings.Contains(strings.Join(got, ""), "S3cret") {
			t.Errorf("URLProblems(%q) = %q, want %q", c.raw, got, c.want)
		}
	}
}

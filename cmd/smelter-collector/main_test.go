package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/procs/procstest"
	"github.com/smelterio/smelter/internal/wait"
)

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestConfigsValidate loads every collector configuration in configs/: the
// example must pass -t with its rule files, every collector*.bad.yaml must
// fail with exactly the errors in its .err file, in order.
func TestConfigsValidate(t *testing.T) {
	code, out, errs := runCmd("-t", "-config", "../../configs/collector.yaml")
	if code != 0 || !strings.Contains(out, "collector.yaml: ok (") {
		t.Fatalf("example: code %d\n%s%s", code, out, errs)
	}
	bads, _ := filepath.Glob("../../configs/collector*.bad.yaml")
	if len(bads) == 0 {
		t.Fatal("no bad configs found")
	}
	for _, bad := range bads {
		want, err := os.ReadFile(strings.TrimSuffix(bad, ".yaml") + ".err")
		if err != nil {
			t.Fatal(err)
		}
		code, _, errs := runCmd("-t", "-config", bad)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", bad, code)
		}
		lines := strings.Split(strings.TrimSpace(string(want)), "\n")
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(errs), "\n") {
			if strings.Contains(l, "collector") && strings.Contains(l, ".bad.yaml:") {
				got = append(got, l[strings.Index(l, "collector"):])
			}
		}
		if strings.Join(got, "\n") != strings.Join(lines, "\n") {
			t.Errorf("%s: errors\n%s\nwant\n%s", bad, strings.Join(got, "\n"), strings.Join(lines, "\n"))
		}
		if !strings.Contains(errs, fmt.Sprintf("%d error(s): the configuration is invalid", len(lines))) {
			t.Errorf("%s: no verdict in\n%s", bad, errs)
		}
	}
}

// Running refuses an invalid configuration before anything starts.
func TestRunRefusesInvalidConfig(t *testing.T) {
	code, _, errs := runCmd("-config", "../../configs/collector.bad.yaml")
	if code != 1 || !strings.Contains(errs, "the configuration is invalid") || !strings.Contains(errs, "nats.embeded_port: unknown field") {
		t.Fatalf("code %d: %s", code, errs)
	}
	if code, _, errs := runCmd("-config", filepath.Join(t.TempDir(), "none.yaml")); code != 1 || !strings.Contains(errs, "none.yaml: open: no such file or directory") {
		t.Fatalf("missing file: code %d: %s", code, errs)
	}
	if code, _, _ := runCmd("-bogus"); code != 2 {
		t.Fatalf("bad flag: code %d", code)
	}
	if code, _, errs := runCmd("-h"); code != 0 || !strings.Contains(errs, "Examples:") {
		t.Fatalf("-h: code %d: %s", code, errs)
	}
	if code, _, errs := runCmd("tail", "-bogus"); code != 1 || !strings.Contains(errs, "flag provided but not defined: -bogus") {
		t.Fatalf("tail bad flag: code %d: %s", code, errs)
	}
}

// TestCheckSparkplugMapping: -t loads the Sparkplug mapping file and
// prints its errors as file:line: field: reason.
func TestCheckSparkplugMapping(t *testing.T) {
	dir := t.TempDir()
	mapping := filepath.Join(dir, "mapping.yaml")
	if err := os.WriteFile(mapping, []byte("nodes:\n  - group: plant\n    edge_node: n1\n    devices:\n      - {device: d1, asset: ac-1, class: aircompressor}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: ./d\nsparkplug:\n  url: tcp://127.0.0.1:1883\n  client_id: x\n  groups: [plant]\n  mapping: mapping.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("-t", "-config", cfg)
	if code != 1 || !strings.Contains(errs, mapping+":5: nodes[0].devices[0].class: unknown equipment class \"aircompressor\"") ||
		!strings.Contains(errs, "1 error(s): the configuration is invalid") {
		t.Fatalf("code %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCmd("-t", "-config", "../../configs/sparkplug/collector.yaml"); code != 0 {
		t.Fatalf("example: code %d\n%s%s", code, out, errs)
	}
}

// -t warns when the rules name more signals of a class than
// max_signals_per_asset (they are held all the same), and still says ok.
func TestCheckWarnsSignalBoundBelowRules(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: ./d\nmax_signals_per_asset: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("-t", "-config", cfg)
	if code != 0 || !strings.Contains(out, "ok (") ||
		!strings.Contains(errs, cfg+": warning: max_signals_per_asset: 1 is below the 3 signals the rules name for class air_compressor (") {
		t.Fatalf("code %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCmd("-t", "-config", "../../configs/collector.yaml"); code != 0 || strings.Contains(errs, "warning") {
		t.Fatalf("example: code %d, %s", code, errs)
	}
}

// TestStartProcs: the collector's max_procs is put in force as the
// gateway's: a fixed value at once, logged with its field; auto starts
// from one P (internal/procs raises it when the collector is busy).
func TestStartProcs(t *testing.T) {
	def := procstest.Default(t)
	dir := t.TempDir()
	load := func(v string) collector.Config {
		f := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(f, []byte("data_dir: "+dir+"\nmax_procs: "+v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := collector.LoadConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	startProcs(load("3"), log, prometheus.NewRegistry())
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("GOMAXPROCS %d after max_procs: 3", got)
	}
	if !strings.Contains(logs.String(), `"msg":"max procs","procs":3,"from":"max_procs"`) {
		t.Fatalf("log: %s", logs.String())
	}
	startProcs(load("auto"), log, prometheus.NewRegistry())
	if got := runtime.GOMAXPROCS(0); def > 1 && got != 1 {
		t.Fatalf("GOMAXPROCS %d after max_procs: auto, want auto's start, 1 (default %d)", got, def)
	}
}

// tail refuses credentials in -url, reads the collector's nats: block
// with -config (a secret never on the command line), and prints no secret
// in its errors (blackbox finding 1).
func TestTailCredentials(t *testing.T) {
	code, _, errs := runCmd("tail", "-url", "nats://collector:Col-S3cret-pw@127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, "-url: credentials in the URL are not allowed") || strings.Contains(errs, "S3cret") {
		t.Fatalf("-url with a password: code %d: %s", code, errs)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfg, []byte("nats:\n  url: nats://Tok-S3cret-123@127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCmd("tail", "-config", cfg)
	if code != 1 || !strings.Contains(errs, "nats.url: credentials in the URL are not allowed") || strings.Contains(errs, "S3cret") {
		t.Fatalf("-config with a token in the URL: code %d: %s", code, errs)
	}
	// a password from the file's password_file: the connect error names
	// the server, not the password
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("Col-S3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("nats:\n  url: nats://127.0.0.1:1\n  username: collector\n  password_file: pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCmd("tail", "-config", cfg)
	if code != 1 || !strings.Contains(errs, "connect nats://127.0.0.1:1") || strings.Contains(errs, "S3cret") {
		t.Fatalf("-config, server down: code %d: %s", code, errs)
	}
}

// tailServer starts a nats-server whose users hold what tail may need:
// viewer may subscribe only to alerts, KPIs and the gateways' status (as
// the shipped collector user), nosub to its inbox only, pub publishes anything.
func tailServer(t *testing.T) string {
	t.Helper()
	inbox := &server.SubjectPermission{Allow: []string{"_INBOX.>"}}
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Users: []*server.User{
		{Username: "viewer", Password: "viewer-pw", Permissions: &server.Permissions{Publish: inbox,
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "smelter.v1.*.*.*.alert", "smelter.v1.*.*.*.kpi", "smelter.v1.*._gateway.*.status"}}}},
		{Username: "nosub", Password: "nosub-pw", Permissions: &server.Permissions{Publish: inbox, Subscribe: inbox}},
		{Username: "pub", Password: "pub-pw"},
	}}
	return brokertest.Server(t, o).ClientURL()
}

// runTail runs tail -config (a collector.yaml connecting as user) with
// args until ctx ends; the returned channel gives its error.
func runTail(ctx context.Context, t *testing.T, url, user string, stdout, stderr io.Writer, args ...string) <-chan error {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte(user+"-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfg, []byte("nats:\n  url: "+url+"\n  username: "+user+"\n  password_file: pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tail(ctx, append([]string{"-config", cfg}, args...), stdout, stderr) }()
	return done
}

// tail -kind subscribes to each kind's subjects, not to smelter.v1.> with
// a filter of its own: a user allowed only alert and KPI subjects (the
// shipped collector user) tails them (bbtest F2).
func TestTailKindsSubscribedByServer(t *testing.T) {
	url := tailServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errs logtest.Buffer
	done := runTail(ctx, t, url, "viewer", &out, &errs, "-kind", "alert,kpi,status")
	pub, err := nats.Connect(url, nats.UserInfo("pub", "pub-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	wait.For(t, 10*time.Second, "tail printing an alert and a KPI", func() bool {
		for _, k := range []string{"data", "alert", "kpi", "birth"} {
			_ = pub.Publish("smelter.v1.s1.motor.m-1."+k, []byte(`{"k":"`+k+`"}`))
		}
		_ = pub.Publish("smelter.v1.s1._gateway.gw-1.status", []byte(`{"k":"status"}`))
		_ = pub.Flush()
		return strings.Contains(out.String(), `smelter.v1.s1.motor.m-1.alert {"k":"alert"}`) &&
			strings.Contains(out.String(), `smelter.v1.s1.motor.m-1.kpi {"k":"kpi"}`) &&
			strings.Contains(out.String(), `smelter.v1.s1._gateway.gw-1.status {"k":"status"}`)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail: %v (stderr %s)", err, errs.String())
	}
	if strings.Contains(out.String(), ".data") || strings.Contains(out.String(), ".birth") || errs.String() != "" {
		t.Fatalf("tail -kind alert,kpi,status printed other kinds or errors:\n%s\nstderr: %s", out.String(), errs.String())
	}
}

// A subscription the server refuses ends tail with an error naming the
// subject and what to allow, instead of a raw nats.go line on stderr and
// a tail that runs on with nothing to show (bbtest F2).
func TestTailRefusedSubscriptionEnds(t *testing.T) {
	url := tailServer(t)
	for _, c := range []struct {
		user, kinds, refused string
	}{
		{"nosub", "alert,kpi", "smelter.v1.*.*.*.alert"},
		{"viewer", "alert,data", "smelter.v1.*.*.*.data"},
		{"viewer", "", "smelter.v1.>"},
	} {
		t.Run(c.user+"/"+c.kinds, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out, errs logtest.Buffer
			var err error
			select {
			case err = <-runTail(ctx, t, url, c.user, &out, &errs, "-kind", c.kinds):
			case <-time.After(10 * time.Second):
				t.Fatalf("tail still running 10 s after a refused subscription; stderr: %s", errs.String())
			}
			if err == nil || !strings.Contains(err.Error(), "refused the subscription to "+c.refused+" (permissions violation)") ||
				!strings.Contains(err.Error(), "allow this user to subscribe to "+c.refused) {
				t.Fatalf("tail: %v, want the refused subscription to %s named", err, c.refused)
			}
		})
	}
	// the command's exit code and message
	code, _, errs := runCmd("tail", "-url", url, "-kind", "alert")
	if code != 1 || !strings.Contains(errs, "smelter-collector tail: ") {
		t.Fatalf("tail without a user: code %d: %s", code, errs)
	}
}

func TestTailSubjects(t *testing.T) {
	for _, c := range []struct {
		filter, kinds string
		want          []string
	}{
		{"smelter.v1.>", "", []string{"smelter.v1.>"}},
		{"smelter.v1.>", "alert, kpi,alert", []string{"smelter.v1.*.*.*.alert", "smelter.v1.*.*.*.kpi"}},
		{"smelter.v1.*.air_compressor.>", "data,alert", []string{"smelter.v1.*.air_compressor.*.data", "smelter.v1.*.air_compressor.*.alert"}},
		{"smelter.v1.s1.*.*.data", "data,alert", []string{"smelter.v1.s1.*.*.data"}},
		// status: the gateways' subjects (class _gateway), which the
		// shipped collector user may subscribe to (bbretest F1)
		{">", "status", []string{"smelter.v1.*._gateway.*.status"}},
		{"smelter.v1.s1.>", "alert,status", []string{"smelter.v1.s1.*.*.alert", "smelter.v1.s1._gateway.*.status"}},
		{"smelter.v1.s1.*.*.*", "kpi", []string{"smelter.v1.s1.*.*.kpi"}},
	} {
		got, err := tailSubjects(c.filter, c.kinds)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("tailSubjects(%q, %q) = %q, %v; want %q", c.filter, c.kinds, got, err, c.want)
		}
	}
	for _, c := range [][2]string{{"smelter.v1.s1.*.*.data", "alert"}, {"smelter.v1.*.*.*.*.3", "alert"}, {"other.>", "kpi"}, {"smelter.v1.>", "a.b"}, {"smelter.v1.>", "*"}} {
		if got, err := tailSubjects(c[0], c[1]); err == nil {
			t.Errorf("tailSubjects(%q, %q) = %q, want an error", c[0], c[1], got)
		}
	}
}

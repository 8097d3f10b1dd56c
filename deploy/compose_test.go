package deploy

import (
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/history"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/simulators/fleet"
)

type composeService struct {
	Image       string                                `yaml:"image"`
	Build       *struct{ Context, Dockerfile string } `yaml:"build"`
	Command     []string                              `yaml:"command"`
	Volumes     []string                              `yaml:"volumes"`
	Ports       []string                              `yaml:"ports"`
	Environment map[string]string                     `yaml:"environment"`
	DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
}

func readCompose(t *testing.T) map[string]composeService {
	t.Helper()
	var c struct {
		Services map[string]composeService `yaml:"services"`
	}
	readYAML(t, "compose/compose.yaml", &c) // yaml.v3 resolves the << merge keys as compose does
	return c.Services
}

// serviceRoot lays out a service's bind mounts (host paths relative to
// deploy/compose) under a fresh directory, as the container sees them.
func serviceRoot(t *testing.T, s composeService) string {
	t.Helper()
	root := t.TempDir()
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if !strings.HasPrefix(parts[0], ".") {
			continue // a named volume
		}
		mount(t, root, filepath.Join("compose", filepath.FromSlash(parts[0])), parts[1])
	}
	return root
}

// arg returns the value after flag in a command line.
func arg(t *testing.T, cmd []string, flag string) string {
	t.Helper()
	i := slices.Index(cmd, flag)
	if i < 0 || i+1 >= len(cmd) {
		t.Fatalf("command %q has no %s", cmd, flag)
	}
	return cmd[i+1]
}

// TestComposeFile checks the compose file without a container engine: the
// services issue 12 asks for, every bind-mounted configuration loaded with its
// binary's own loader from the container's point of view, the NATS nodes on
// the file TestNATSClusterConfigParses parses, every secret taken from .env
// (listed in env.example) and every published port on loopback.
// `docker compose config` runs in deploy/package/check.sh where Compose exists.
func TestComposeFile(t *testing.T) {
	svcs := readCompose(t)
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "mosquitto", "sim", "gateway", "collector-1", "collector-2", "postgres"} {
		if _, ok := svcs[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	serverVersion := ""
	if m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v([0-9.]+)`).FindSubmatch(gomod); m != nil {
		serverVersion = string(m[1])
	}
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := svcs[name]
		// the image runs the nats-server release whose parser TestNATSClusterConfigParses uses
		if serverVersion == "" || !strings.HasPrefix(s.Image, "nats:"+serverVersion+"-") {
			t.Errorf("%s: image %q, want nats:%s-* (the nats-server version in go.mod)", name, s.Image, serverVersion)
		}
		conf := arg(t, s.Command, "--config")
		root := serviceRoot(t, s)
		got, err := os.ReadFile(filepath.Join(root, conf))
		if err != nil {
			t.Fatalf("%s: %s is not mounted: %v", name, conf, err)
		}
		want, _ := os.ReadFile(natsClusterConf)
		if string(got) != string(want) {
			t.Errorf("%s runs %s, which is not %s", name, conf, natsClusterConf)
		}
		if s.Environment["NATS_SERVER_NAME"] != name {
			t.Errorf("%s: NATS_SERVER_NAME = %q", name, s.Environment["NATS_SERVER_NAME"])
		}
	}

	gw := svcs["gateway"]
	root := serviceRoot(t, gw)
	cfg, err := gwconfig.Load(filepath.Join(root, arg(t, gw.Command, "-config")), gateway.Drivers()...)
	if err != nil {
		t.Fatalf("gateway config: %v", err)
	}
	if cfg.Raw.Uplinks.NATS == nil || cfg.Raw.Uplinks.MQTT == nil {
		t.Fatal("the compose gateway publishes to NATS and Mosquitto")
	}
	for _, env := range []string{cfg.Raw.Uplinks.NATS.PasswordEnv, cfg.Raw.Uplinks.MQTT.PasswordEnv} {
		if _, ok := gw.Environment[env]; !ok {
			t.Errorf("gateway config reads %s, which the service does not set", env)
		}
	}

	sim := svcs["sim"]
	fl, err := fleet.Load(filepath.Join(serviceRoot(t, sim), arg(t, sim.Command, "-fleet")))
	if err != nil {
		t.Fatalf("sim fleet: %v", err)
	}
	served := map[string]string{}
	for _, d := range fl.Devices {
		if d.Modbus != nil {
			_, port, _ := strings.Cut(d.Modbus.Address, ":")
			served[d.ID] = "sim:" + port
		}
	}
	for _, d := range cfg.Devices {
		mb, ok := d.Driver.(*modbus.DeviceConfig)
		if !ok || served[d.ID] != mb.Config.Address {
			t.Errorf("gateway device %s is not served by the sim service (sim serves %v)", d.ID, served)
		}
	}

	for _, name := range []string{"collector-1", "collector-2"} {
		s := svcs[name]
		c, err := collector.LoadConfig(filepath.Join(serviceRoot(t, s), arg(t, s.Command, "-config")))
		if err != nil {
			t.Fatalf("%s config: %v", name, err)
		}
		if _, err := c.LoadRules(catalog.Default()); err != nil {
			t.Fatalf("%s rules: %v", name, err)
		}
		if _, ok := s.Environment[c.NATS.PasswordEnv]; !ok || c.NATS.URL == "" {
			t.Errorf("%s: nats.url %q, password from %s not set by the service", name, c.NATS.URL, c.NATS.PasswordEnv)
		}
		// history in the compose PostgreSQL: the DSN the service sets, with
		// its password as env.example says (hex), parses as the collector
		// checks it at start
		if c.History == nil || c.History.DSNEnv == "" {
			t.Fatalf("%s keeps no history in the compose PostgreSQL", name)
		}
		dsn, ok := s.Environment[c.History.DSNEnv]
		if !ok {
			t.Fatalf("%s: history.dsn_env %s is not set by the service", name, c.History.DSNEnv)
		}
		dsn = regexp.MustCompile(`\$\{[A-Z0-9_]+[^}]*\}`).ReplaceAllString(dsn, "0123abcd")
		if err := history.CheckDSN(secret.New(dsn)); err != nil || !strings.Contains(dsn, "@postgres:5432/") {
			t.Errorf("%s: %s = %q: %v", name, c.History.DSNEnv, dsn, err)
		}
		if s.DependsOn["postgres"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for postgres", name)
		}
	}

	data, err := os.ReadFile("compose/env.example")
	if err != nil {
		t.Fatal(err)
	}
	example := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			if v != "" {
				t.Errorf("env.example ships a value for %s", k)
			}
			example[k] = true
		}
	}
	ref := regexp.MustCompile(`\$\{([A-Z0-9_]+)(:?[?-][^}]*)?\}`)
	for name, s := range svcs {
		for k, v := range s.Environment {
			if strings.Contains(k, "PASSWORD") && !ref.MatchString(v) {
				t.Errorf("%s: %s is written in the compose file; take it from .env", name, k)
			}
			for _, m := range ref.FindAllStringSubmatch(v, -1) {
				if !example[m[1]] {
					t.Errorf("%s reads ${%s}, which env.example does not list", name, m[1])
				}
			}
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond loopback", name, p)
			}
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join("compose", s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build file: %v", name, err)
			}
		}
	}
}

// TestDockerfiles checks each binary's image: a multi-stage build of that
// binary with CGO disabled, a distroless static base (CA certificates
// included) and a non-root user.
func TestDockerfiles(t *testing.T) {
	for _, bin := range []string{"gateway", "collector", "sim", "demo"} {
		data, err := os.ReadFile(path.Join("docker", bin+".Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		froms := regexp.MustCompile(`(?m)^FROM `).FindAllStringIndex(s, -1)
		for _, want := range []string{"CGO_ENABLED=0", "./cmd/smelter-" + bin, "FROM gcr.io/distroless/static-debian12:nonroot",
			"USER 65532:65532", `ENTRYPOINT ["/usr/bin/smelter-` + bin + `"]`, "internal/version.version=$VERSION"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s.Dockerfile lacks %q", bin, want)
			}
		}
		if len(froms) < 2 {
			t.Errorf("%s.Dockerfile is not a multi-stage build", bin)
		}
	}
}

// TestKubernetesCollector checks the collector example: its ConfigMap loads
// with the collector's loader, the Secret ships no value, and the Deployment
// runs replicas with probes on /healthz and /readyz at the configured port.
func TestKubernetesCollector(t *testing.T) {
	f, err := os.Open("kubernetes/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(f)
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			break
		}
		docs[d["kind"].(string)] = d
	}
	get := func(v any, keys ...any) any {
		for _, k := range keys {
			switch k := k.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				l, _ := v.([]any)
				if k >= len(l) {
					return nil
				}
				v = l[k]
			}
		}
		return v
	}
	data, _ := get(docs["ConfigMap"], "data", "collector.yaml").(string)
	p := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := collector.LoadConfig(p)
	if err != nil {
		t.Fatalf("ConfigMap collector.yaml: %v", err)
	}
	// the secrets are created by the header's kubectl command, never applied
	// from this file (an applied empty Secret would overwrite them)
	if _, ok := docs["Secret"]; ok {
		t.Error("collector.yaml ships a Secret: kubectl apply would overwrite the one created by the header's command")
	}
	raw, err := os.ReadFile("kubernetes/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	created := map[string]bool{}
	for _, m := range regexp.MustCompile(`--from-literal=([A-Z0-9_]+)=`).FindAllStringSubmatch(string(raw), -1) {
		created[m[1]] = true
	}
	if cfg.HTTP.TokenEnv == "" && cfg.HTTP.TokenFile == "" {
		t.Error("the collector's API and dashboard have no bearer token (http.token_env)")
	}
	// the history's DSN is a secret from the same Secret, over verified TLS
	if cfg.History == nil || cfg.History.DSNEnv == "" {
		t.Fatal("the collector writes no history: the ConfigMap has no history.dsn_env")
	}
	if m := regexp.MustCompile(`--from-literal=` + cfg.History.DSNEnv + `='([^']*)'`).FindStringSubmatch(string(raw)); m == nil ||
		!strings.Contains(m[1], "sslmode=verify-full") {
		t.Errorf("the header's %s example must use sslmode=verify-full (got %v)", cfg.History.DSNEnv, m)
	}
	for _, env := range []string{cfg.NATS.PasswordEnv, cfg.HTTP.TokenEnv, cfg.History.DSNEnv} {
		if env != "" && !created[env] {
			t.Errorf("the header's kubectl create secret does not set %s, which the configuration reads", env)
		}
	}
	if !strings.HasPrefix(cfg.NATS.URL, "tls://") || cfg.NATS.TLS == nil || cfg.NATS.TLS.CAFile == "" {
		t.Errorf("nats.url %q, tls %+v: the collector must reach NATS over TLS with the cluster's CA", cfg.NATS.URL, cfg.NATS.TLS)
	}
	dep := docs["Deployment"]
	if r, _ := get(dep, "spec", "replicas").(int); r < 2 {
		t.Errorf("replicas = %v", get(dep, "spec", "replicas"))
	}
	c := get(dep, "spec", "template", "spec", "containers", 0)
	_, port, _ := strings.Cut(cfg.HTTP.Listen, ":")
	if got := get(c, "ports", 0, "containerPort"); got == nil || port == "" || port != itoa(got) {
		t.Errorf("containerPort %v, http.listen %q", got, cfg.HTTP.Listen)
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := get(c, probe, "httpGet", "path"); got != want {
			t.Errorf("%s path = %v, want %s", probe, got, want)
		}
	}
	if got := get(c, "envFrom", 0, "secretRef", "name"); got != "smelter-collector" || !strings.Contains(string(raw), "create secret generic smelter-collector") {
		t.Errorf("envFrom secret %v is not the one the header creates", got)
	}
	mounted := false
	mounts, _ := get(c, "volumeMounts").([]any)
	for _, m := range mounts {
		if p, _ := get(m, "mountPath").(string); p != "" && cfg.NATS.TLS != nil && strings.HasPrefix(cfg.NATS.TLS.CAFile, p+"/") {
			mounted = true
		}
	}
	if !mounted && cfg.NATS.TLS != nil {
		t.Errorf("nats.tls.ca_file %s is in no mounted volume", cfg.NATS.TLS.CAFile)
	}

	// the NetworkPolicy selects the collector's pods and admits only its port
	np := docs["NetworkPolicy"]
	if np == nil {
		t.Fatal("no NetworkPolicy: the API port is open to every pod")
	}
	podLabels, _ := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	sel, _ := get(np, "spec", "podSelector", "matchLabels").(map[string]any)
	if len(sel) == 0 {
		t.Error("NetworkPolicy selects every pod")
	}
	for k, v := range sel {
		if podLabels[k] != v {
			t.Errorf("NetworkPolicy selector %s=%v does not match the collector's pods %v", k, v, podLabels)
		}
	}
	types := fmt.Sprint(get(np, "spec", "policyTypes"))
	if !strings.Contains(types, "Ingress") || !strings.Contains(types, "Egress") {
		t.Errorf("policyTypes %s: want Ingress and Egress", types)
	}
	ingress, _ := get(np, "spec", "ingress").([]any)
	for i, rule := range ingress {
		if len(fmt.Sprint(get(rule, "from"))) <= 2 {
			t.Errorf("ingress rule %d admits every source", i)
		}
		ports, _ := get(rule, "ports").([]any)
		if len(ports) != 1 || itoa(get(ports[0], "port")) != port {
			t.Errorf("ingress rule %d ports %v: want only %s", i, ports, port)
		}
	}
	if len(ingress) == 0 {
		t.Error("NetworkPolicy admits nothing: Prometheus and API clients need port " + port)
	}
	// the collector may reach its NATS, its PostgreSQL and DNS, nothing more
	out := map[string]bool{}
	egress, _ := get(np, "spec", "egress").([]any)
	for _, rule := range egress {
		ports, _ := get(rule, "ports").([]any)
		for _, p := range ports {
			out[itoa(get(p, "port"))] = true
		}
	}
	if want := map[string]bool{"4222": true, "5432": true, "53": true}; !maps.Equal(out, want) {
		t.Errorf("NetworkPolicy egress ports %v, want %v", out, want)
	}
	pgMounted := false
	for _, m := range mounts {
		if p, _ := get(m, "mountPath").(string); p != "" && strings.Contains(string(raw), "sslrootcert="+p+"/") {
			pgMounted = true
		}
	}
	if !pgMounted {
		t.Error("the DSN's sslrootcert is in no mounted volume")
	}
	if got := get(c, "volumeMounts", 0, "mountPath"); got != "/etc/smelter" || get(c, "args", 1) != "/etc/smelter/collector.yaml" {
		t.Errorf("the ConfigMap is mounted at %v, the collector reads %v", got, get(c, "args", 1))
	}
}

func itoa(v any) string {
	n, ok := v.(int)
	if !ok {
		return ""
	}
	return strconv.Itoa(n)
}

// TestComposeStreamsMatchTheCode: nats-init creates the streams on the
// subjects the gateway and collector check (no overlap, .cmd in neither).
func TestComposeStreamsMatchTheCode(t *testing.T) {
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"nats stream add SMELTER --subjects '" + strings.Join(telemetry.TelemetryStreamSubjects("*"), ",") + "'",
		"nats stream add SMELTER_AUDIT --subjects '" + strings.Join(telemetry.AuditStreamSubjects("*"), ",") + "'",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("compose.yaml lacks %q", want)
		}
	}
}

// TestComposeMosquittoACL checks that the compose Mosquitto enforces the
// ACL TestMosquittoCommandACL tests (deploy/mosquitto/smelter.acl), as the
// container sees its files: no anonymous clients, the ACL mounted where
// acl_file says, and the compose gateway's MQTT user given a section in it
// (without one, Mosquitto would deny it everything).
func TestComposeMosquittoACL(t *testing.T) {
	svcs := readCompose(t)
	m := svcs["mosquitto"]
	root := serviceRoot(t, m)
	conf, err := os.ReadFile(filepath.Join(root, "/mosquitto/config/mosquitto.conf"))
	if err != nil {
		t.Fatalf("mosquitto.conf is not mounted: %v", err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(conf), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			settings[f[0]] = f[1]
		}
	}
	if settings["allow_anonymous"] != "false" {
		t.Errorf("allow_anonymous = %q, want false", settings["allow_anonymous"])
	}
	aclPath := settings["acl_file"]
	if aclPath == "" {
		t.Fatal("the compose Mosquitto has no acl_file: every user may publish commands")
	}
	got, err := os.ReadFile(filepath.Join(root, aclPath))
	if err != nil {
		t.Fatalf("acl_file %s is not mounted: %v", aclPath, err)
	}
	want, err := os.ReadFile("mosquitto/smelter.acl")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("acl_file %s is not deploy/mosquitto/smelter.acl", aclPath)
	}
	gw := svcs["gateway"]
	cfg, err := gwconfig.Load(filepath.Join(serviceRoot(t, gw), arg(t, gw.Command, "-config")), gateway.Drivers()...)
	if err != nil {
		t.Fatalf("gateway config: %v", err)
	}
	// a gateway's MQTT user is its gateway id, with its block of the
	// ACL's template, and client ids are user names
	if user, id := cfg.Raw.Uplinks.MQTT.Username, cfg.Raw.Gateway.ID; user != id {
		t.Errorf("the compose gateway's MQTT user is %q, not its gateway id %q", user, id)
	}
	if block := gatewayACL(t, string(got), cfg.Raw.Gateway.ID, cfg.Raw.Gateway.Site); !strings.Contains(string(got), block) {
		t.Errorf("the ACL has no block for the compose gateway (its template rendered):\n%s", block)
	}
	if settings["use_username_as_clientid"] != "true" {
		t.Error("the compose Mosquitto lets a user take any client id: another's session and will")
	}
}

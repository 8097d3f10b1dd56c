package deploy

import (
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
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/simulators/fleet"
)

type composeService struct {
	Image       string                                `yaml:"image"`
	Build       *struct{ Context, Dockerfile string } `yaml:"build"`
	Command     []string                              `yaml:"command"`
	Volumes     []string                              `yaml:"volumes"`
	Ports       []string                              `yaml:"ports"`
	Environment map[string]string                     `yaml:"environment"`
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
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "mosquitto", "sim", "gateway", "collector-1", "collector-2"} {
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
	secret, _ := get(docs["Secret"], "stringData").(map[string]any)
	if _, ok := secret[cfg.NATS.PasswordEnv]; !ok {
		t.Errorf("Secret lacks %s, which the configuration reads", cfg.NATS.PasswordEnv)
	}
	for k, v := range secret {
		if v != "" {
			t.Errorf("Secret ships a value for %s", k)
		}
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
	if got := get(c, "envFrom", 0, "secretRef", "name"); got != get(docs["Secret"], "metadata", "name") {
		t.Errorf("envFrom secret %v", got)
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

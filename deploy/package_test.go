package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/simulators/fleet"
)

// TestPackagedConfigsLoad lays out /etc/smelter exactly as the package does
// and loads every configuration with the binaries' own loaders, so a packaged
// file that `smelter-gateway validate` would refuse fails here first.
func TestPackagedConfigsLoad(t *testing.T) {
	root, configs := packagedRoot(t)
	for _, want := range []string{"/etc/smelter/gateway.yaml", "/etc/smelter/collector.yaml", "/etc/smelter/gateway.env",
		"/etc/smelter/collector.env", "/etc/smelter/sim-quickstart.yaml", "/etc/smelter/templates/air_compressor-sim-a.yaml"} {
		if !slices.Contains(configs, want) {
			t.Errorf("%s is not packaged as a configuration file", want)
		}
	}
	etc := filepath.Join(root, "etc/smelter")
	gw, err := gwconfig.Load(filepath.Join(etc, "gateway.yaml"), gateway.Drivers()...)
	if err != nil {
		t.Fatalf("packaged gateway.yaml: %v", err)
	}
	if !strings.HasPrefix(gw.Raw.Gateway.DataDir, "/var/lib/smelter/") {
		t.Errorf("gateway data_dir %q is outside the units' StateDirectory /var/lib/smelter", gw.Raw.Gateway.DataDir)
	}
	col, err := collector.LoadConfig(filepath.Join(etc, "collector.yaml"))
	if err != nil {
		t.Fatalf("packaged collector.yaml: %v", err)
	}
	if _, err := col.LoadRules(catalog.Default()); err != nil {
		t.Fatalf("packaged collector rules: %v", err)
	}
	if !strings.HasPrefix(col.DataDir, "/var/lib/smelter/") {
		t.Errorf("collector data_dir %q is outside /var/lib/smelter", col.DataDir)
	}
	sim, err := fleet.Load(filepath.Join(etc, "sim-quickstart.yaml"))
	if err != nil {
		t.Fatalf("packaged sim-quickstart.yaml: %v", err)
	}
	// the quickstart's gateway polls the quickstart's simulator
	var mb *modbus.DeviceConfig
	if len(gw.Devices) == 1 {
		mb, _ = gw.Devices[0].Driver.(*modbus.DeviceConfig)
	}
	if len(sim.Devices) != 1 || len(gw.Raw.Devices) != 1 || mb == nil ||
		sim.Devices[0].ID != gw.Raw.Devices[0].ID || sim.Devices[0].Modbus.Address != mb.Config.Address ||
		sim.Devices[0].Modbus.UnitID != int(mb.Config.UnitID) || sim.Devices[0].Template != gw.Raw.Devices[0].Template {
		t.Errorf("the packaged gateway.yaml does not poll the device sim-quickstart.yaml serves")
	}
	for _, env := range []string{"gateway.env", "collector.env"} {
		noAssignments(t, filepath.Join(etc, env))
	}
}

// noAssignments fails when an environment file ships a VAR=value line: the
// packaged files only explain where secrets go.
func noAssignments(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			t.Errorf("%s:%d: ships a value (%q); secrets are set by the operator", path, n, line)
		}
	}
}

// unit is a systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u, section := unit{}, ""
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestSystemdUnits checks the hardening and life-cycle settings issue 12 asks
// for; `systemd-analyze verify` (deploy/package/check.sh) checks the syntax.
func TestSystemdUnits(t *testing.T) {
	_, configs := packagedRoot(t)
	for _, name := range []string{"smelter-gateway", "smelter-collector"} {
		t.Run(name, func(t *testing.T) {
			u := readUnit(t, filepath.Join("systemd", name+".service"))
			for key, want := range map[string]string{
				"User": "smelter", "Group": "smelter", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
				"ProtectHome": "yes", "PrivateTmp": "yes", "StateDirectory": "smelter", "Restart": "on-failure",
				"CapabilityBoundingSet": "",
			} {
				if got, ok := u["Service"][key]; !ok || got[len(got)-1] != want {
					t.Errorf("[Service] %s = %q, want %q", key, got, want)
				}
			}
			if d, err := time.ParseDuration(u.get("Service", "RestartSec")); err != nil || d < time.Second || d > time.Minute {
				t.Errorf("RestartSec %q: want 1s..1m (%v)", u.get("Service", "RestartSec"), err)
			}
			stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
			// the gateway drains the spool for Options.DrainTimeout (5 s by
			// default, docs/operations.md) and then fsyncs and closes it
			if err != nil || stop < 3*5*time.Second {
				t.Errorf("TimeoutStopSec %q: want at least 3x the 5 s drain timeout (%v)", u.get("Service", "TimeoutStopSec"), err)
			}
			if u.get("Install", "WantedBy") != "multi-user.target" {
				t.Errorf("WantedBy = %q", u.get("Install", "WantedBy"))
			}
			exec := strings.Fields(u.get("Service", "ExecStart"))
			if len(exec) == 0 || exec[0] != "/usr/bin/"+name {
				t.Fatalf("ExecStart = %q", u.get("Service", "ExecStart"))
			}
			cfg := exec[slices.Index(exec, "-config")+1]
			if !slices.Contains(configs, cfg) {
				t.Errorf("ExecStart reads %s, which the package does not install as a configuration file", cfg)
			}
			if env := strings.TrimPrefix(u.get("Service", "EnvironmentFile"), "-"); !slices.Contains(configs, env) {
				t.Errorf("EnvironmentFile %s is not packaged", env)
			}
			reload := u.get("Service", "ExecReload")
			if name == "smelter-gateway" && reload != "/bin/kill -HUP $MAINPID" {
				t.Errorf("gateway ExecReload = %q: SIGHUP reloads its configuration", reload)
			}
			// ProtectClock=yes on systemd < 252 implies DeviceAllow=char-rtc r:
			// the device policy becomes an allow-list and serial ports fail EPERM
			if name == "smelter-gateway" && u.get("Service", "ProtectClock") == "yes" {
				for _, dev := range []string{"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"} {
					if !slices.Contains(u["Service"]["DeviceAllow"], dev) {
						t.Errorf("ProtectClock=yes without DeviceAllow=%s: Modbus RTU ports fail EPERM on systemd < 252", dev)
					}
				}
			}
			if name == "smelter-collector" && reload != "" {
				t.Errorf("collector ExecReload = %q: the collector has no reload", reload)
			}
		})
	}
}

// TestPackageVersion runs deploy/package/pkgversion.sh in a scratch git
// repository: tags, commits after a tag, uncommitted changes and an
// untagged history each map to a version dpkg and rpm order correctly.
func TestPackageVersion(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	script, err := filepath.Abs("package/pkgversion.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@example.invalid", "GIT_COMMITTER_DATE=2026-11-30T01:00:00Z", "GIT_AUTHOR_DATE=2026-11-30T01:00:00Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	commit := func(content string) {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		run("git", "add", "f")
		run("git", "commit", "-q", "-m", content)
	}
	run("git", "init", "-q")
	commit("1")
	hash := run("git", "rev-parse", "--short=7", "HEAD")
	if got, want := run("sh", script), "0.0.0+git20261130."+hash; got != want {
		t.Errorf("untagged: %q, want %q", got, want)
	}
	run("git", "tag", "v0.4.0")
	if got := run("sh", script); got != "0.4.0" {
		t.Errorf("on tag v0.4.0: %q", got)
	}
	commit("2")
	commit("3")
	hash = run("git", "rev-parse", "--short", "HEAD")
	if got, want := run("sh", script), "0.4.0+2.g"+hash; got != want {
		t.Errorf("two commits after v0.4.0: %q, want %q", got, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := run("sh", script), "0.4.0+2.g"+hash+".dirty"; got != want {
		t.Errorf("dirty tree: %q, want %q", got, want)
	}
	// dpkg orders them as releases go: tag < commits after it < next tag
	if _, err := exec.LookPath("dpkg"); err == nil {
		for _, pair := range [][2]string{{"0.0.0+git20261130." + hash, "0.4.0"}, {"0.4.0", "0.4.0+2.g" + hash}, {"0.4.0+2.g" + hash, "0.4.1"}} {
			if out, err := exec.Command("dpkg", "--compare-versions", pair[0], "lt", pair[1]).CombinedOutput(); err != nil {
				t.Errorf("dpkg: %s is not lower than %s (%v %s)", pair[0], pair[1], err, out)
			}
		}
	}
}

// TestPackageDocs checks what lintian and a new user look for in the .deb:
// a manual page for every binary (gzipped by make package from
// deploy/package/man), a copyright file with a notice lintian recognises,
// and every documentation page and example the shipped docs send the reader
// to for Sparkplug B.
func TestPackageDocs(t *testing.T) {
	root, _ := packagedRoot(t)
	var c nfpmConfig
	readYAML(t, filepath.Join(repo, "deploy/package/nfpm.yaml"), &c)
	dsts := map[string]string{}
	for _, e := range c.Contents {
		dsts[e.Dst] = e.Src
	}
	for dst := range dsts {
		bin, ok := strings.CutPrefix(dst, "/usr/bin/")
		if !ok {
			continue
		}
		page := "/usr/share/man/man1/" + bin + ".1.gz"
		if src := dsts[page]; src != "${SMELTER_DIST}/man/"+bin+".1.gz" {
			t.Errorf("%s: no manual page %s built by make package (src %q)", bin, page, src)
		}
		data, err := os.ReadFile(filepath.Join(repo, "deploy/package/man", bin+".1"))
		if err != nil {
			t.Errorf("%s: %v", bin, err)
			continue
		}
		if !strings.HasPrefix(string(data), ".TH "+strings.ToUpper(bin)+" 1 ") || !strings.Contains(string(data), "\n.SH NAME\n"+bin+` \- `) {
			t.Errorf("%s.1: want .TH %s 1 and a NAME section naming %s", bin, strings.ToUpper(bin), bin)
		}
	}
	mk, err := os.ReadFile(filepath.Join(repo, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "deploy/package/man/*.1; do gzip -9nc") {
		t.Error("make package does not gzip deploy/package/man/*.1 into the platform's man directory")
	}

	// lintian's copyright-without-copyright-notice: a "Copyright ... <year>" line
	cp, err := os.ReadFile(filepath.Join(root, "usr/share/doc/smelter/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?i)(Copyright|Copr\.|©)(.*|[(C):\s]+)\b\d{4}\b`).Match(cp) {
		t.Error("the copyright file has no copyright notice with a year (lintian: copyright-without-copyright-notice)")
	}

	for _, want := range []string{"usr/share/doc/smelter/sparkplug.md"} {
		if _, err := os.Stat(filepath.Join(root, want)); err != nil {
			t.Errorf("/%s is not packaged", want)
		}
	}
	examples, _ := filepath.Glob(filepath.Join(repo, "configs/sparkplug/*.yaml"))
	if len(examples) == 0 {
		t.Fatal("no configs/sparkplug/*.yaml")
	}
	for _, ex := range examples {
		if _, err := os.Stat(filepath.Join(root, "usr/share/doc/smelter/examples/sparkplug", filepath.Base(ex))); err != nil {
			t.Errorf("%s is not packaged under /usr/share/doc/smelter/examples/sparkplug", ex)
		}
	}

	// maintainer scripts: Debian's helpers first (lintian
	// maintainer-script-calls-systemctl); systemctl only for daemon-reload or
	// where they are missing (RPM)
	for _, s := range []string{"postinstall.sh", "preremove.sh", "postremove.sh"} {
		data, err := os.ReadFile(filepath.Join(repo, "deploy/package", s))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		calls := regexp.MustCompile(`(?m)^(?:.+;)?\s*systemctl\b.*$`).FindAllString(text, -1)
		for _, l := range calls {
			if !strings.Contains(l, "daemon-reload") && !strings.Contains(text, "command -v deb-systemd-") {
				t.Errorf("%s calls systemctl without preferring Debian's deb-systemd-invoke/helper: %q", s, strings.TrimSpace(l))
			}
		}
	}
}

package deploy

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// registries builds the metrics registries of a real gateway (both uplinks,
// Modbus and OPC UA drivers, the spool) and a real collector. Construction
// registers every metric and does no I/O.
func registries(t *testing.T) []*prometheus.Registry {
	t.Helper()
	root := serviceRoot(t, readCompose(t)["gateway"]) // NATS and MQTT uplinks
	t.Setenv("SMELTER_NATS_GW_SITE1_PASSWORD", "test")
	t.Setenv("SMELTER_MQTT_GATEWAY_PASSWORD", "test")
	cfg, err := gwconfig.Load(filepath.Join(root, "etc/smelter/gateway.yaml"), gateway.Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	gw := prometheus.NewRegistry()
	if _, err := gateway.New(cfg, gateway.Options{Registry: gw}); err != nil {
		t.Fatal(err)
	}
	ccfg, err := collector.LoadConfig(filepath.Join(repo, "configs/collector.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := ccfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	col := prometheus.NewRegistry()
	if _, err := collector.New(ccfg, set, slog.New(slog.DiscardHandler), col); err != nil {
		t.Fatal(err)
	}
	// the collector's Sparkplug B source registers its counters when it
	// starts (a configured sparkplug section); these are its own constructor's
	sp := prometheus.NewRegistry()
	ingest.NewSparkplugMetrics(sp)
	return []*prometheus.Registry{gw, col, sp}
}

// registered reports whether a metric family called name is registered in reg.
// A registry refuses a second descriptor of an existing name with other help
// text, and accepts it (the probe is then removed) for a new name; vectors
// without children count too, which Gather would not show.
func registered(reg *prometheus.Registry, name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "deploy test probe"})
	if err := reg.Register(probe); err != nil {
		return true
	}
	reg.Unregister(probe)
	return false
}

var (
	smelterMetric = regexp.MustCompile(`\bsmelter_[a-z0-9_]+`)
	selector      = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
)

// checkExpr fails for every metric expr names that no registry has
// (histogram series suffixes resolve to their family); `up` is Prometheus's own.
func checkExpr(t *testing.T, regs []*prometheus.Registry, where, expr string) {
	t.Helper()
	names := smelterMetric.FindAllString(expr, -1)
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		if m[1] != "up" && !strings.HasPrefix(m[1], "smelter_") {
			t.Errorf("%s: %s is not a Smelter metric", where, m[1])
		}
	}
	if len(names) == 0 && !strings.Contains(expr, "up{") {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		t.Errorf("%s: unbalanced brackets in %q", where, expr)
	}
	for _, n := range names {
		found := false
		for _, r := range regs {
			found = found || registered(r, n)
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suffix); ok {
					found = found || registered(r, base)
				}
			}
		}
		if !found {
			t.Errorf("%s: metric %s does not exist in the gateway's or collector's registry", where, n)
		}
	}
}

func TestRegisteredProbe(t *testing.T) {
	regs := registries(t)
	if !registered(regs[0], "smelter_gateway_device_up") || !registered(regs[1], "smelter_collector_alerts_active") {
		t.Fatal("the probe misses registered metrics")
	}
	if registered(regs[0], "smelter_gateway_no_such_metric") {
		t.Fatal("the probe finds an unregistered metric")
	}
}

var promDuration = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

// TestAlertRules checks deploy/prometheus/smelter-alerts.yaml as Prometheus
// would load it (promtool is not on every machine; deploy/package/check.sh
// runs `promtool check rules` where it is): the rule group structure, valid
// durations, a severity and summary on every alert, and only metrics that
// exist in the code.
func TestAlertRules(t *testing.T) {
	regs := registries(t)
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, "prometheus/smelter-alerts.yaml", &f)
	seen := map[string]bool{}
	var exprs string
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a name and rules are required", g.Name)
		}
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("%s: alert name empty or repeated", where)
			}
			seen[r.Alert] = true
			if r.For != "" && !promDuration.MatchString(r.For) {
				t.Errorf("%s: for %q is not a Prometheus duration", where, r.For)
			}
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q", where, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description annotations are required", where)
			}
			checkExpr(t, regs, where, r.Expr)
			exprs += r.Expr + "\n"
		}
	}
	// the alerts docs/operations.md tells operators to set
	for _, m := range []string{"smelter_gateway_device_up", "smelter_gateway_uplink_ready", "smelter_spool_reader_lag_oldest_age_seconds",
		"smelter_spool_reader_discarded_records_total", "smelter_gateway_data_age_seconds_bucket", "smelter_collector_ingested_total",
		"smelter_gateway_set_aside_total", "smelter_collector_sparkplug_errors_total", "smelter_collector_sparkplug_rebirth_requests_total",
		"smelter_collector_cycles_dropped_total"} {
		if !strings.Contains(exprs, m) {
			t.Errorf("no alert on %s", m)
		}
	}
}

// TestGrafanaDashboard checks the dashboard JSON: unique panel ids, a
// Prometheus query on every panel, and only metrics that exist in the code.
func TestGrafanaDashboard(t *testing.T) {
	regs := registries(t)
	data, err := os.ReadFile("grafana/smelter-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string         `json:"uid"`
		Title  string         `json:"title"`
		Panels []grafanaPanel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard uid and title are required")
	}
	// a collapsed row carries its panels inside it: check those too
	var panels []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			panels = append(panels, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	ids := map[int]bool{}
	families := map[string]bool{}
	shown := map[string]bool{}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d repeated", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			checkExpr(t, regs, "panel "+p.Title, q.Expr)
			checkLegend(t, "panel "+p.Title, q.Expr, q.LegendFormat)
			for _, m := range smelterMetric.FindAllString(q.Expr, -1) {
				families[strings.SplitN(m, "_", 3)[1]] = true
				shown[m] = true
			}
		}
	}
	for _, f := range []string{"gateway", "spool", "modbus", "opcua", "collector"} {
		if !families[f] {
			t.Errorf("the dashboard shows no smelter_%s_* metric", f)
		}
	}
	// records skipped for good and the Sparkplug B source (review finding 13)
	for _, m := range []string{"smelter_gateway_set_aside_total", "smelter_collector_sparkplug_messages_total",
		"smelter_collector_sparkplug_errors_total", "smelter_collector_sparkplug_rebirth_requests_total",
		"smelter_collector_cycles_dropped_total",
		// overruns caused by another unit of a shared link, beside the device's own
		"smelter_gateway_poll_overruns_total", "smelter_gateway_poll_delayed_total",
		"smelter_collector_duplicates_total", "smelter_collector_late_batches_total"} {
		if !shown[m] {
			t.Errorf("the dashboard shows no %s", m)
		}
	}
}

// grafanaPanel is a dashboard panel; a row's collapsed panels are nested.
type grafanaPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

var (
	legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	byClause    = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

// checkLegend fails when a legend names a label the query's outermost
// aggregation drops (sum by (device) and {{by}}: every series would be
// drawn with an empty name).
func checkLegend(t *testing.T, where, expr, legend string) {
	t.Helper()
	by := byClause.FindStringSubmatch(expr)
	if by == nil {
		return // no aggregation: the series keep their labels
	}
	kept := map[string]bool{}
	for _, l := range strings.Split(by[1], ",") {
		kept[strings.TrimSpace(l)] = true
	}
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		if !kept[m[1]] {
			t.Errorf("%s: legend %q names %s, which %q drops", where, legend, m[1], expr)
		}
	}
}

package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/history"
	"github.com/smelterio/smelter/internal/wait"
)

// pgDSNEnv gives the history tests a PostgreSQL; without it they skip.
const pgDSNEnv = "SMELTER_PG_DSN"

// historyConfig returns a history block on a schema of the test's own
// (dropped at the end), or skips without a database.
func historyConfig(t *testing.T) *HistoryConfig {
	t.Helper()
	dsn := os.Getenv(pgDSNEnv)
	if dsn == "" {
		t.Skipf("no PostgreSQL: set %s (e.g. postgres://smelter:smelter@127.0.0.1:5432/smelter_test; .ci/run creates it)", pgDSNEnv)
	}
	schema := fmt.Sprintf("tc_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			_ = conn.Close(context.Background())
		}
	})
	return &HistoryConfig{DSNEnv: pgDSNEnv, Schema: schema, FlushInterval: Duration(100 * time.Millisecond)}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// TestHistorySinkEndToEnd: a collector with a history block stores the
// batches it consumes, the alert it raises and serves them on
// /api/v1/history (JSON and CSV); the same batches published again store
// nothing twice. Single replica and partitioned (the stream then stores a
// partition token).
func TestHistorySinkEndToEnd(t *testing.T) {
	for _, parts := range []int{0, 2} {
		t.Run(fmt.Sprintf("partitions=%d", parts), func(t *testing.T) { historyEndToEnd(t, parts) })
	}
}

func historyEndToEnd(t *testing.T, parts int) {
	hc := historyConfig(t)
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir, cfg.History = ns.URL(), "127.0.0.1:0", t.TempDir(), hc
	cfg.Cluster.Partitions = parts
	// this test polls the history API from one address as fast as
	// wait.For turns, far beyond a person's rate: the per-client limit
	// (http.rate_limit, tested in httplimit_test.go) would answer 429
	cfg.HTTP.RateLimit.PerSecond = 0
	r := startCfg(t, cfg)
	base := "http://" + r.c.HTTPAddr()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	t0 := time.Now().UnixMilli() - 60000
	own, err := nc.SubscribeSync("smelter.v1.site1.*.ac-1.alert")
	if err != nil {
		t.Fatal(err)
	}
	// an alert another collector group published on the same stream: not
	// this group's history (review of #14, finding 3)
	foreign := alert.Alert{Schema: alert.Schema, ID: "site1.ac-1.other@1", Key: "site1.ac-1.other", State: alert.Raised, Site: "site1",
		Class: "air_compressor", Asset: "ac-1", Rule: "other", Kind: "threshold", Severity: alert.Alarm, Message: "other group",
		RaisedAt: t0, UpdatedAt: t0, Group: "other-group"}
	fdata, _ := json.Marshal(foreign)
	if _, err := js.Publish(ctx, "smelter.v1.site1.air_compressor.ac-1.alert", fdata); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		for i := range 30 {
			if _, err := js.Publish(ctx, subj, batchJSON(uint64(i+1), t0+int64(i)*1000, 115)); err != nil {
				t.Fatal(err)
			}
		}
		if round == 0 {
			wait.For(t, 30*time.Second, "30 readings of discharge_temp in the history", func() bool {
				var s history.Series
				return getJSON(t, base+"/api/v1/history/series?site=site1&asset=ac-1&signal=discharge_temp&range=1h", &s) == 200 && len(s.Points) == 30
			})
		}
	}
	var st dashboard.HistoryStatus
	if code := getJSON(t, base+"/api/v1/history/status", &st); code != 200 || !st.Ready || st.Mode != "partitions" {
		t.Fatalf("status %d %+v", code, st)
	}
	wait.For(t, 30*time.Second, "the alarm in the alert history", func() bool {
		var a dashboard.HistoryAlerts
		return getJSON(t, base+"/api/v1/history/alerts?asset=ac-1&severity=alarm", &a) == 200 && len(a.Alerts) > 0
	})
	wait.For(t, 30*time.Second, "the republished batches consumed", func() bool {
		return r.c.histM != nil && metricValue(t, base, "smelter_history_duplicates_total") >= 30
	})
	var al dashboard.HistoryAlerts
	getJSON(t, base+"/api/v1/history/alerts?asset=ac-1", &al)
	for _, a := range al.Alerts {
		if a.ID == foreign.ID {
			t.Fatalf("another group's alert stored: %+v", a)
		}
	}
	for pub := foreign; pub.ID == foreign.ID; {
		m, err := own.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &pub); err != nil || (pub.ID != foreign.ID && pub.Group != cfg.Group) {
			t.Fatalf("published alert %s: group %q, want %q (%v)", m.Data, pub.Group, cfg.Group, err)
		}
	}
	var s history.Series
	getJSON(t, base+"/api/v1/history/series?site=site1&asset=ac-1&signal=discharge_temp&range=1h", &s)
	if len(s.Points) != 30 || s.Resolution != history.Raw || *s.Points[0].Mean != 115+float64(1%5)*0.1 {
		t.Fatalf("series after the redelivery: %d points at %s, first %v", len(s.Points), s.Resolution, *s.Points[0].Mean)
	}
	resp, err := http.Get(base + "/api/v1/history/series?site=site1&asset=ac-1&signal=discharge_temp&range=1y&format=csv")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if resp.StatusCode != 200 || resp.Header.Get("X-Smelter-Resolution") != "1h" || !strings.HasPrefix(lines[0], "ts,time,mean,min,max,count,good_share") ||
		len(lines) < 2 || len(lines) > 3 || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment;") {
		t.Fatalf("csv %d %v:\n%s", resp.StatusCode, resp.Header, body)
	}
	if code := getJSON(t, base+"/api/v1/history/series?site=site1&asset=ac-1&signal=discharge_temp&range=2y", nil); code != 400 {
		t.Fatalf("range=2y: %d", code)
	}
}

// metricValue reads one unlabelled metric from /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// TestHistoryAbsentAPI404: without a history block the history endpoints
// do not exist (the dashboard hides its history controls on this 404).
func TestHistoryAbsentAPI404(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	r := start(t, ns.URL())
	if code := getJSON(t, "http://"+r.c.HTTPAddr()+"/api/v1/history/status", nil); code != 404 {
		t.Fatalf("status without history: %d", code)
	}
}

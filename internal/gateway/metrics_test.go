package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestDeviceMetricsCreatedWhenCounted: a device's ok polls and its
// overruns have a series from their first count only; partial and failed
// polls (failures: metrics.configure), the poll histogram and device_up
// from the start. Readings are counted by quality, once per batch.
func TestDeviceMetricsCreatedWhenCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, func() float64 { return 0 })
	dm := newDeviceMetrics(m, "d1")
	dm.up.Set(1)
	dm.pollDur.Observe(0.01)
	if n := testutil.CollectAndCount(m.polls); n != 2 {
		t.Errorf("%d poll series before any poll, want 2 (partial and failed at 0)", n)
	}
	if n := testutil.CollectAndCount(m.overruns); n != 0 {
		t.Errorf("%d overrun series before an overrun", n)
	}
	dm.poll(3, 3)
	dm.poll(3, 3)
	if n := testutil.CollectAndCount(m.polls); n != 3 {
		t.Errorf("%d poll series after two ok polls, want 3", n)
	}
	dm.poll(1, 3)
	dm.poll(0, 3)
	dm.overrun()
	for _, c := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.polls.WithLabelValues("d1", "ok"), 2}, {m.polls.WithLabelValues("d1", "partial"), 1},
		{m.polls.WithLabelValues("d1", "failed"), 1}, {m.overruns.WithLabelValues("d1"), 1},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%v = %v, want %v", c.c.(prometheus.Metric).Desc(), got, c.want)
		}
	}
	dm.count([]telemetry.Reading{{Quality: telemetry.QualityGood}, {Quality: telemetry.QualityBad},
		{Quality: telemetry.QualityGood}, {Quality: telemetry.QualityStale}})
	for q, want := range map[telemetry.Quality]float64{telemetry.QualityGood: 2, telemetry.QualityUncertain: 0,
		telemetry.QualityBad: 1, telemetry.QualityStale: 1} {
		if got := testutil.ToFloat64(m.readings.WithLabelValues(q.String())); got != want {
			t.Errorf("readings{quality=%s} = %v, want %v", q, got, want)
		}
	}
}

// TestReadingsBuffersAreLent: the acquisition loops borrow their readings
// buffers from the gateway, so an idle device holds none.
func TestReadingsBuffersAreLent(t *testing.T) {
	g := &Gateway{}
	rs := g.borrowReadings(100)
	if len(rs) != 0 || cap(rs) < 100 {
		t.Fatalf("new buffer: len %d cap %d", len(rs), cap(rs))
	}
	rs = append(rs, telemetry.Reading{Signal: "a"})
	g.returnReadings(rs)
	again := g.borrowReadings(100)
	if len(again) != 0 {
		t.Fatalf("a returned buffer is lent with %d readings", len(again))
	}
	g.returnReadings(nil) // nothing to keep
}

// TestFailureSeriesFollowTheConfiguration: the per-device series of
// failures exist at 0 for every configured device before it runs; a
// reload that removes or renames a device deletes every per-device series
// of the old name (counters included: it is no longer polled), while a
// device kept goes on counting.
func TestFailureSeriesFollowTheConfiguration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, func() float64 { return 0 })
	m.configure([]string{"kept", "renamed"})
	if n := testutil.CollectAndCount(m.stalls); n != 2 {
		t.Fatalf("%d stall series for 2 devices before any stall, want 2", n)
	}
	for _, id := range []string{"kept", "renamed"} {
		for _, r := range []string{"partial", "failed"} {
			if !hasSeries(t, reg, "smelter_gateway_polls_total", "device", id, "result", r) {
				t.Errorf("polls_total{device=%s,result=%s} missing before any poll", id, r)
			}
		}
	}
	m.stalls.WithLabelValues("kept").Inc()
	m.stalls.WithLabelValues("renamed").Inc()
	old := newDeviceMetrics(m, "renamed")
	old.poll(0, 1)
	old.overrun()
	old.delayedBy("kept")
	newDeviceMetrics(m, "kept").delayedBy("renamed")

	m.configure([]string{"kept", "new-name"}) // the reload
	if got := testutil.ToFloat64(m.stalls.WithLabelValues("kept")); got != 1 {
		t.Errorf("stalls of the device kept = %v after the reload, want 1", got)
	}
	if got := testutil.ToFloat64(m.stalls.WithLabelValues("new-name")); got != 0 {
		t.Errorf("stalls of the renamed device = %v, want 0", got)
	}
	for _, l := range strings.Split(exposition(reg), "\n") {
		if strings.Contains(l, `"renamed"`) {
			t.Errorf("%s: a series of the device the reload renamed", l)
		}
	}
}

// hasSeries reports whether reg has a sample of name with the label pairs.
func hasSeries(t *testing.T, reg *prometheus.Registry, name string, labels ...string) bool {
	t.Helper()
	_, ok := sampleOf(t, exposition(reg), name, labels...)
	return ok
}

// exposition returns reg's samples as /metrics shows them.
func exposition(reg *prometheus.Registry) string {
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// TestAlertSeriesAtZeroFromStart: the series a user alerts on (failures,
// timeouts, connection errors, replies that cannot be trusted, bytes
// dropped, publish errors, messages set aside; the up gauges of the
// Modbus connection and the uplinks) are on /metrics of a started gateway
// with a configured device from the start, the counters at 0: an alert on
// increase() fires on the first event, and an uplink or connection that
// never comes up shows as down, not absent. The device answers every read
// (5 s timeout), so nothing of this counts while the test looks.
func TestAlertSeriesAtZeroFromStart(t *testing.T) {
	r := newRig(t, "")
	// ac-1 read every second with a 5 s timeout: no timeout on a loaded machine
	cfg := loadConfigText(t, r.dir, strings.NewReplacer("poll_interval: 100ms", "poll_interval: 1s", "timeout: 500ms", "timeout: 5s").Replace(r.text))
	g := runGateway(t, cfg)
	web := httptest.NewServer(g.Handler())
	t.Cleanup(web.Close)
	conn := "tcp|" + r.server.Addr
	atZero := [][]string{
		{"smelter_gateway_device_stalls_total", "device", "ac-1"},
		{"smelter_gateway_polls_total", "device", "ac-1", "result", "partial"},
		{"smelter_gateway_polls_total", "device", "ac-1", "result", "failed"},
		{"smelter_modbus_errors_total", "device", "ac-1", "kind", "timeout"},
		{"smelter_modbus_errors_total", "device", "ac-1", "kind", "connection"},
		{"smelter_modbus_suspect_replies_total", "connection", conn, "device", "ac-1"},
		{"smelter_modbus_suspect_replies_total", "connection", conn, "device", ""},
		{"smelter_modbus_discarded_bytes_total", "connection", conn},
		{"smelter_modbus_reconnects_total", "connection", conn},
	}
	present := [][]string{
		{"smelter_modbus_connection_up", "connection", conn},
		{"smelter_gateway_device_up", "device", "ac-1"}, // once the first cycle is in
	}
	for _, up := range []string{"nats", "mqtt"} {
		atZero = append(atZero, []string{"smelter_gateway_publish_errors_total", "uplink", up},
			[]string{"smelter_spool_reader_discarded_records_total", "reader", up})
		for _, reason := range []string{"too_large", "reading_too_large", "signal_too_large"} {
			atZero = append(atZero, []string{"smelter_gateway_set_aside_total", "uplink", up, "reason", reason})
		}
		present = append(present, []string{"smelter_gateway_uplink_ready", "uplink", up})
	}
	var body string
	wait.For(t, 10*time.Second, "every series on /metrics", func() bool {
		body = getMetrics(t, web.URL)
		for _, s := range append(slices.Clone(atZero), present...) {
			if _, ok := sampleOf(t, body, s[0], s[1:]...); !ok {
				return false
			}
		}
		return true
	})
	for _, s := range atZero {
		if v, _ := sampleOf(t, body, s[0], s[1:]...); v != 0 {
			t.Errorf("%s %v = %v, want 0", s[0], s[1:], v)
		}
	}
}

// getMetrics returns the text of GET base/metrics.
func getMetrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// sampleOf returns the value of the sample of name with exactly the label
// pairs labels in the exposition text body, and whether there is one
// (labels are written sorted by name).
func sampleOf(t *testing.T, body, name string, labels ...string) (float64, bool) {
	t.Helper()
	var sel []string
	for i := 0; i+1 < len(labels); i += 2 {
		sel = append(sel, labels[i]+"="+strconv.Quote(labels[i+1]))
	}
	slices.Sort(sel)
	want := name + "{" + strings.Join(sel, ",") + "} "
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, want) {
			continue
		}
		v, err := strconv.ParseFloat(l[len(want):], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		return v, true
	}
	return 0, false
}

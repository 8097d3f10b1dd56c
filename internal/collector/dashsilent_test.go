package collector

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestDashboardGatewaySilentAfterConfig: http.gateway_silent_after (30s
// by default) reaches the dashboard's clients: /api/v1/gateways and the
// event stream's gateways.snapshot carry it as silent_after_ms, the
// threshold the page judges silence by; and http.gateway_clock_tolerance
// (2s by default, 0s: off) as clock_tolerance_ms, what clock_skew means.
func TestDashboardGatewaySilentAfterConfig(t *testing.T) {
	for _, c := range []struct {
		yaml      string
		want, tol int64
	}{{"", 30000, 2000}, {"http:\n  gateway_silent_after: 20s\n  gateway_clock_tolerance: 0s\n", 20000, 0},
		{"http:\n  gateway_silent_after: 2h\n  gateway_clock_tolerance: 5m\n", 7200000, 300000}} {
		dir := t.TempDir()
		cfg, err := loadConfigText(t, dir, "data_dir: "+dir+"\n"+c.yaml)
		if err != nil {
			t.Fatal(err)
		}
		col := newCollector(t, cfg)
		col.Live().ObserveStatus("s1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-1", Online: true})
		srv := httptest.NewServer(col.HTTPHandler(""))
		var list struct {
			SilentAfterMS    int64 `json:"silent_after_ms"`
			ClockToleranceMS int64 `json:"clock_tolerance_ms"`
		}
		resp, err := http.Get(srv.URL + "/api/v1/gateways")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || list.SilentAfterMS != c.want || list.ClockToleranceMS != c.tol {
			t.Errorf("%q: /api/v1/gateways silent_after_ms %d clock_tolerance_ms %d (%v), want %d %d", c.yaml, list.SilentAfterMS, list.ClockToleranceMS, err, c.want, c.tol)
		}
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/events?gateways=delta", nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var snap struct {
			SilentAfterMS    int64 `json:"silent_after_ms"`
			ClockToleranceMS int64 `json:"clock_tolerance_ms"`
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				err = json.Unmarshal([]byte(d), &snap)
				break
			}
		}
		cancel()
		resp.Body.Close()
		srv.Close()
		if err != nil || snap.SilentAfterMS != c.want || snap.ClockToleranceMS != c.tol {
			t.Errorf("%q: gateways.snapshot silent_after_ms %d clock_tolerance_ms %d (%v), want %d %d", c.yaml, snap.SilentAfterMS, snap.ClockToleranceMS, err, c.want, c.tol)
		}
	}
}

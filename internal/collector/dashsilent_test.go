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
// threshold the page judges silence by.
func TestDashboardGatewaySilentAfterConfig(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want int64
	}{{"", 30000}, {"http:\n  gateway_silent_after: 20s\n", 20000}, {"http:\n  gateway_silent_after: 2h\n", 7200000}} {
		dir := t.TempDir()
		cfg, err := loadConfigText(t, dir, "data_dir: "+dir+"\n"+c.yaml)
		if err != nil {
			t.Fatal(err)
		}
		col := newCollector(t, cfg)
		col.Live().ObserveStatus("s1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-1", Online: true})
		srv := httptest.NewServer(col.HTTPHandler(""))
		var list struct {
			SilentAfterMS int64 `json:"silent_after_ms"`
		}
		resp, err := http.Get(srv.URL + "/api/v1/gateways")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || list.SilentAfterMS != c.want {
			t.Errorf("%q: /api/v1/gateways silent_after_ms %d (%v), want %d", c.yaml, list.SilentAfterMS, err, c.want)
		}
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/events?gateways=delta", nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var snap struct {
			SilentAfterMS int64 `json:"silent_after_ms"`
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
		if err != nil || snap.SilentAfterMS != c.want {
			t.Errorf("%q: gateways.snapshot silent_after_ms %d (%v), want %d", c.yaml, snap.SilentAfterMS, err, c.want)
		}
	}
}

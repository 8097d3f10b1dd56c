package collector

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/catalog"
)

// http.rate_limit reaches the collector's API (session 7): its defaults,
// the limit on the audit trail (here without a commands: block, so 503
// until the limit answers 429), and its counter, present at 0 for every
// endpoint from the start.
func TestHTTPRateLimitConfigAndMetric(t *testing.T) {
	cfg := Defaults()
	if rl := cfg.HTTP.RateLimit; rl.PerSecond != DefaultHTTPRatePerSecond || rl.Burst != DefaultHTTPRateBurst || rl.PerSecond <= 0 {
		t.Fatalf("defaults %+v", rl)
	}
	cfg.DataDir, cfg.HTTP.Listen = t.TempDir(), ""
	cfg.HTTP.RateLimit = HTTPRateLimit{PerSecond: 0.1, Burst: 2}
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rateLimitedEndpoints {
		if got := counterVec(c.m.rateLimited, e); got != 0 {
			t.Fatalf("%s starts at %v", e, got)
		}
	}
	h := c.HTTPHandler("")
	var codes []int
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/assets/s1/a1/audit", nil))
		codes = append(codes, rec.Code)
	}
	if codes[0] != http.StatusServiceUnavailable || codes[1] != http.StatusServiceUnavailable || codes[2] != http.StatusTooManyRequests {
		t.Fatalf("codes %v, want 503 503 429", codes)
	}
	if got := counterVec(c.m.rateLimited, "audit"); got != 1 {
		t.Errorf("smelter_collector_http_rate_limited_total{endpoint=audit} %v, want 1", got)
	}
}

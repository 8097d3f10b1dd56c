package collector

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/catalog"
)

// http.rate_limit reaches the collector's API (session 7): its defaults,
// the limit on the audit trail (reads of an audit stream that is not
// there, 502, until the limit answers 429; without a commands: block the
// 503 costs no token), and its counter, present at 0 for every endpoint
// from the start.
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
	audit := func(h http.Handler, n int) []int {
		var codes []int
		for range n {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/assets/s1/a1/audit", nil))
			codes = append(codes, rec.Code)
		}
		return codes
	}
	if codes := audit(c.HTTPHandler(""), 3); !slices.Equal(codes, []int{503, 503, 503}) {
		t.Fatalf("without commands: codes %v, want 503 503 503 (no read, no token)", codes)
	}
	c.cmds = &commandService{cfg: &CommandsConfig{AuditStream: "SMELTER_AUDIT"}, js: noStreams{}}
	if codes := audit(c.HTTPHandler(""), 3); !slices.Equal(codes, []int{502, 502, 429}) {
		t.Fatalf("codes %v, want 502 502 429", codes)
	}
	if got := counterVec(c.m.rateLimited, "audit"); got != 1 {
		t.Errorf("smelter_collector_http_rate_limited_total{endpoint=audit} %v, want 1", got)
	}
}

// noStreams is a JetStream without streams and without a connection (its
// other methods are not called by the audit trail).
type noStreams struct{ jetstream.JetStream }

func (noStreams) Conn() *nats.Conn { return nil }

func (noStreams) OrderedConsumer(context.Context, string, jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	return nil, jetstream.ErrStreamNotFound
}

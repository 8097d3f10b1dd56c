package collector

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/dashboard"
)

// HTTPRateLimit is http.rate_limit: the HTTP API's expensive requests (the
// command audit trail, the PostgreSQL history queries) per client
// (docs/api.md, "Rate limits").
type HTTPRateLimit struct {
	// PerSecond is the rate a client's bucket refills at, requests per
	// second (default 5); 0 turns the limit off.
	PerSecond float64 `yaml:"per_second"`
	// Burst is the bucket's size (default 30: a ship's 28 charts, the
	// largest asset page of the catalog, load their history at once).
	Burst int `yaml:"burst"`
	// TrustedProxies are the reverse proxies (addresses or CIDR prefixes)
	// whose X-Forwarded-For names the client; default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Defaults of http.rate_limit.
const (
	DefaultHTTPRatePerSecond = 5
	DefaultHTTPRateBurst     = 30
	maxHTTPRate              = 10000
	// maxHTTPStreams bounds http.max_streams: a stalled stream holds its
	// goroutines, socket buffers and a reference to a shared event.
	maxHTTPStreams = 100000
)

// streamsRefusedHelp is the help of
// smelter_collector_dashboard_streams_refused_total{limit}.
const streamsRefusedHelp = "Dashboard event streams refused with 503, by limit: max_streams (http.max_streams streams were open) or max_streams_per_client (their client had http.max_streams_per_client open)."

// rateLimitedEndpoints are the endpoint labels of
// smelter_collector_http_rate_limited_total.
var rateLimitedEndpoints = []string{"audit", "history", "refused_command"}

func newRateLimitedMetric() *prometheus.CounterVec {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_http_rate_limited_total",
		Help: "HTTP API requests refused with 429 because their client exceeded http.rate_limit, by endpoint: audit (the command audit trail), history (the PostgreSQL history queries); " +
			fmt.Sprintf("refused_command: commands the collector refused itself (a viewer's) whose audit record was not written because their client exceeded "+
				"%d a minute, burst %d (the request is still answered 403; docs/commands.md).", dashboard.RefusedAuditPerMinute, dashboard.RefusedAuditBurst)},
		[]string{"endpoint"})
	for _, e := range rateLimitedEndpoints { // present at 0 from the start
		m.WithLabelValues(e)
	}
	return m
}

// problems checks http.rate_limit.
func (h HTTPRateLimit) problems(ps []problem) []problem {
	bad := func(field, format string, args ...any) {
		ps = append(ps, problem{"http.rate_limit." + field, fmt.Sprintf(format, args...)})
	}
	if h.PerSecond < 0 || h.PerSecond > maxHTTPRate {
		bad("per_second", "%g out of range 0-%d (0: no limit)", h.PerSecond, maxHTTPRate)
	}
	if h.PerSecond > 0 && (h.Burst < 1 || h.Burst > maxHTTPRate) {
		bad("burst", "%d out of range 1-%d", h.Burst, maxHTTPRate)
	}
	for i, p := range h.TrustedProxies {
		if _, err := parseProxy(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not an IP address or CIDR prefix (10.0.0.1, 10.0.0.0/8)", p)
		}
	}
	return ps
}

func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// httpRateLimit is the dashboard's rate limit from the validated config.
func (c *Collector) httpRateLimit() dashboard.RateLimit {
	h := c.cfg.HTTP.RateLimit
	rl := dashboard.RateLimit{PerSecond: h.PerSecond, Burst: h.Burst, Now: time.Now,
		OnLimited: func(e string) { c.m.rateLimited.WithLabelValues(e).Inc() }}
	for _, p := range h.TrustedProxies {
		if pp, err := parseProxy(p); err == nil {
			rl.TrustedProxies = append(rl.TrustedProxies, pp)
		}
	}
	return rl
}

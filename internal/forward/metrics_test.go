package forward

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/uplink"
)

// TestUplinkSeriesFromStartUntilRemoved: an uplink's ready gauge, publish
// errors and set-aside counters exist at 0 as soon as its forwarder is
// made; a reload that drops the uplink (Only) deletes every series of it,
// counters included, and keeps the others' counts.
func TestUplinkSeriesFromStartUntilRemoved(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	// series counts: uplink_ready, publish_errors_total, set_aside_total, published_total
	counts := func(when string, want ...int) {
		t.Helper()
		for i, vec := range []*prometheus.MetricVec{m.uplinkReady.MetricVec, m.publishErr.MetricVec, m.setAside.MetricVec, m.published.MetricVec} {
			if n := testutil.CollectAndCount(vec); n != want[i] {
				t.Errorf("%s: %d series of family %d, want %d", when, n, i, want[i])
			}
		}
	}
	m.start("nats")
	m.start("mqtt")
	counts("two uplinks before any publish", 2, 2, 6, 0)
	if v := testutil.ToFloat64(m.setAside.WithLabelValues("mqtt", uplink.ReasonTooLarge)); v != 0 {
		t.Errorf("set_aside_total{mqtt,too_large} = %v at start", v)
	}
	m.publishErr.WithLabelValues("nats").Inc()
	m.published.WithLabelValues("mqtt").Inc()
	m.uplinkReady.WithLabelValues("mqtt").Set(1)

	m.Only([]string{"nats"})
	counts("the reload kept nats only", 1, 1, 3, 0)
	if v := testutil.ToFloat64(m.publishErr.WithLabelValues("nats")); v != 1 {
		t.Errorf("publish_errors_total{nats} = %v after the reload, want 1 (kept)", v)
	}
}

package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestDeviceMetricsCreatedWhenCounted: a device's partial and failed polls
// and its overruns have a series from their first count only; ok polls,
// the poll histogram and device_up from the start (ok on the first poll).
// Readings are counted by quality, once per batch.
func TestDeviceMetricsCreatedWhenCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, func() float64 { return 0 })
	dm := newDeviceMetrics(m, "d1")
	dm.up.Set(1)
	dm.pollDur.Observe(0.01)
	if n := testutil.CollectAndCount(m.polls); n != 0 {
		t.Errorf("%d poll series before any poll", n)
	}
	if n := testutil.CollectAndCount(m.overruns); n != 0 {
		t.Errorf("%d overrun series before an overrun", n)
	}
	dm.poll(3, 3)
	dm.poll(3, 3)
	if n := testutil.CollectAndCount(m.polls); n != 1 {
		t.Errorf("%d poll series after two ok polls, want 1", n)
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

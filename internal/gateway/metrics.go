package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway pipeline's own self-metrics (prefix
// smelter_gateway_); the delivery metrics are the forwarders'
// (forward.Metrics).
type metrics struct {
	polls        *prometheus.CounterVec
	pollDuration *prometheus.HistogramVec
	overruns     *prometheus.CounterVec
	readings     *prometheus.CounterVec
	batches      prometheus.Counter
	spoolErrors  prometheus.Counter
	deviceUp     *prometheus.GaugeVec
	seq          prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_polls_total",
			Help: "Acquisition cycles by device and result (ok: every point good; partial: some bad; failed: none good)."},
			[]string{"device", "result"}),
		pollDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "smelter_gateway_poll_duration_seconds",
			Help: "Time to read one acquisition group.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)},
			[]string{"device"}),
		overruns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_poll_overruns_total",
			Help: "Cycles that took longer than their poll interval."}, []string{"device"}),
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_readings_total",
			Help: "Normalized readings by quality."}, []string{"quality"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_batches_total",
			Help: "Batches written to the spool."}),
		spoolErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_spool_errors_total",
			Help: "Batches that could not be written to the spool."}),
		deviceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "smelter_gateway_device_up",
			Help: "1 while the device is alive: it answered (even with exceptions) within 3 x its interval."}, []string{"device"}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_gateway_seq",
			Help: "Last sequence number assigned to a batch."}),
	}
	if reg != nil {
		reg.MustRegister(m.polls, m.pollDuration, m.overruns, m.readings, m.batches, m.spoolErrors, m.deviceUp, m.seq)
	}
	return m
}

package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway pipeline's own self-metrics (prefix smelter_gateway_).
type metrics struct {
	polls        *prometheus.CounterVec
	pollDuration *prometheus.HistogramVec
	overruns     *prometheus.CounterVec
	readings     *prometheus.CounterVec
	batches      prometheus.Counter
	spoolErrors  prometheus.Counter
	deviceUp     *prometheus.GaugeVec
	published    *prometheus.CounterVec
	publishErr   *prometheus.CounterVec
	dataAge      *prometheus.HistogramVec
	uplinkReady  *prometheus.GaugeVec
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
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_published_total",
			Help: "Spooled messages confirmed by the broker, per uplink."}, []string{"uplink"}),
		publishErr: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_publish_errors_total",
			Help: "Failed publish attempts per uplink (the messages are retried)."}, []string{"uplink"}),
		dataAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "smelter_gateway_data_age_seconds",
			Help:    "End-to-end data age: from the read (spool append) to the broker's acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600}},
			[]string{"uplink"}),
		uplinkReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "smelter_gateway_uplink_ready",
			Help: "1 while the uplink is connected."}, []string{"uplink"}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_gateway_seq",
			Help: "Last sequence number assigned to a batch."}),
	}
	if reg != nil {
		reg.MustRegister(m.polls, m.pollDuration, m.overruns, m.readings, m.batches, m.spoolErrors, m.deviceUp,
			m.published, m.publishErr, m.dataAge, m.uplinkReady, m.seq)
	}
	return m
}

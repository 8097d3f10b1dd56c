package mqtt

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the uplink's self-metrics, labelled uplink="mqtt". The names
// and help texts match the NATS uplink's so both register in one registry.
type Metrics struct {
	Published  prometheus.Counter
	Bytes      prometheus.Counter
	Errors     prometheus.Counter
	Latency    prometheus.Histogram
	Connected  prometheus.Gauge
	Reconnects prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	l := prometheus.Labels{"uplink": "mqtt"}
	m := &Metrics{
		Published: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_published_messages_total",
			Help: "Messages the broker acknowledged.", ConstLabels: l}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_published_bytes_total",
			Help: "Payload bytes the broker acknowledged.", ConstLabels: l}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_publish_errors_total",
			Help: "Publish calls that failed (the caller retries the whole slice).", ConstLabels: l}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "smelter_uplink_publish_latency_seconds",
			Help:        "Time from publish to broker acknowledgement, per message.",
			ConstLabels: l, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_uplink_connected",
			Help: "1 while connected to the broker and ready to publish.", ConstLabels: l}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_reconnects_total",
			Help: "Connections re-established after a loss.", ConstLabels: l}),
	}
	if reg != nil {
		reg.MustRegister(m.Published, m.Bytes, m.Errors, m.Latency, m.Connected, m.Reconnects)
	}
	return m
}

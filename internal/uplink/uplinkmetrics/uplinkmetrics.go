// Package uplinkmetrics defines, once, the self-metrics every uplink
// exports. The uplinks register the same names side by side in one registry,
// told apart by a constant uplink label; Prometheus accepts that only while
// names, help texts and label names agree, which a single definition keeps
// true.
package uplinkmetrics

import "github.com/prometheus/client_golang/prometheus"

// Set is the metrics common to every uplink.
type Set struct {
	Published  prometheus.Counter
	Bytes      prometheus.Counter
	Errors     prometheus.Counter
	Latency    prometheus.Histogram
	Connected  prometheus.Gauge
	Reconnects prometheus.Counter
}

// New creates the common metrics labelled uplink=name, unregistered.
func New(name string) Set {
	l := prometheus.Labels{"uplink": name}
	return Set{
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
}

// Collectors lists the metrics for registration.
func (s Set) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.Published, s.Bytes, s.Errors, s.Latency, s.Connected, s.Reconnects}
}

package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/uplink/uplinkmetrics"
)

// Metrics are the uplink's self-metrics, labelled uplink="mqtt"; the
// definitions are shared with the NATS uplink so both register in one
// registry.
type Metrics struct {
	uplinkmetrics.Set
	Sparkplug SparkplugMetrics
}

// SparkplugMetrics are the edge node's own metrics (encoding sparkplug_b;
// registered always, so they read 0 with the JSON encoding).
type SparkplugMetrics struct {
	Births          prometheus.Counter // NBIRTH sequences published
	RebirthRequests prometheus.Counter // NCMD Node Control/Rebirth received
	NCMDErrors      prometheus.Counter // NCMD payloads that did not decode
	BdSeq           prometheus.Gauge   // bdSeq of the current (or last) connection
	SetAside        prometheus.Counter // devices set aside: their DBIRTH exceeds max_packet_size
}

func (m *SparkplugMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Births, m.RebirthRequests, m.NCMDErrors, m.BdSeq, m.SetAside}
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Set: uplinkmetrics.New("mqtt"), Sparkplug: SparkplugMetrics{
		Births: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_sparkplug_births_total",
			Help: "Sparkplug B birth sequences (NBIRTH and its DBIRTHs) published: after a connect, a rebirth request or the primary host's return."}),
		RebirthRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_sparkplug_rebirth_requests_total",
			Help: "Sparkplug B NCMD Node Control/Rebirth requests received."}),
		NCMDErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_sparkplug_ncmd_errors_total",
			Help: "Sparkplug B NCMD messages that did not decode (ignored)."}),
		BdSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_gateway_sparkplug_bdseq",
			Help: "Sparkplug B bdSeq of the current (or last) MQTT connection, 0-255."}),
		SetAside: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_sparkplug_devices_set_aside_total",
			Help: "Sparkplug B devices set aside because their DBIRTH exceeds max_packet_size (their messages are set aside until a birth fits)."}),
	}}
	if reg != nil {
		reg.MustRegister(m.Collectors()...)
		reg.MustRegister(m.Sparkplug.collectors()...)
	}
	return m
}

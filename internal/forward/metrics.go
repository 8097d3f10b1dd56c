package forward

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/uplink"
)

// Metrics are the forwarders' self-metrics, labelled by uplink (prefix
// smelter_gateway_: they describe the gateway's delivery, whatever the
// uplink).
type Metrics struct {
	published   *prometheus.CounterVec
	publishErr  *prometheus.CounterVec
	dataAge     *prometheus.HistogramVec
	uplinkReady *prometheus.GaugeVec
	setAside    *prometheus.CounterVec
	split       *prometheus.CounterVec

	mu      sync.Mutex
	uplinks map[string]bool // the uplinks with series (start)
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_published_total",
			Help: "Spooled messages confirmed by the broker, per uplink (a batch sent in parts counts once)."}, []string{"uplink"}),
		publishErr: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_publish_errors_total",
			Help: "Failed publish attempts per uplink (the messages are retried)."}, []string{"uplink"}),
		dataAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "smelter_gateway_data_age_seconds",
			Help:    "End-to-end data age: from the read (spool append) to the broker's acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600}},
			[]string{"uplink"}),
		uplinkReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "smelter_gateway_uplink_ready",
			Help: "1 while the uplink is connected."}, []string{"uplink"}),
		setAside: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_set_aside_total",
			Help: "Messages (reason too_large), single readings (reading_too_large) and birth signals (signal_too_large) the uplink's broker can never accept: logged with their seq and skipped, never retried."},
			[]string{"uplink", "reason"}),
		split: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_split_batches_total",
			Help: "Batches and births over the uplink's message size limit sent as several parts."}, []string{"uplink"}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.publishErr, m.dataAge, m.uplinkReady, m.setAside, m.split)
	}
	return m
}

// start gives uplink the series a user alerts on, before its first
// publish: smelter_gateway_uplink_ready at 0 (not ready until a publish is
// confirmed; an uplink that never connects is then seen as down, not
// absent), its publish errors and set-aside messages of every reason at
// 0 (an alert on their increase() fires on the first).
func (m *Metrics) start(uplinkName string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.uplinks == nil {
		m.uplinks = map[string]bool{}
	}
	m.uplinks[uplinkName] = true
	m.uplinkReady.WithLabelValues(uplinkName).Set(0)
	m.publishErr.WithLabelValues(uplinkName)
	for _, r := range [...]string{uplink.ReasonTooLarge, reasonReading, reasonSignal} {
		m.setAside.WithLabelValues(uplinkName, r)
	}
}

// Only deletes the series of every uplink not in names (counters
// included): a reload that removed an uplink leaves no series saying it
// is ready, or counting, when nothing forwards to it any more. The
// series of the uplinks kept go on. Called before the forwarders of a
// configuration are created, the previous configuration's stopped.
func (m *Metrics) Only(names []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.uplinks {
		if slices.Contains(names, name) {
			continue
		}
		l := prometheus.Labels{"uplink": name}
		for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
			m.published, m.publishErr, m.dataAge, m.uplinkReady, m.setAside, m.split} {
			v.DeletePartialMatch(l)
		}
		delete(m.uplinks, name)
	}
}

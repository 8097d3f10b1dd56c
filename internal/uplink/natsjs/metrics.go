package natsjs

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/uplink/uplinkmetrics"
)

// Metrics are the uplink's self-metrics, labelled uplink="nats": the set
// shared with the MQTT uplink (so both register in one registry) and the
// JetStream duplicate count.
type Metrics struct {
	uplinkmetrics.Set
	Duplicates prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Set: uplinkmetrics.New("nats"),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_uplink_publish_duplicates_total",
			Help:        "Messages the broker acknowledged as duplicates of an earlier one (deduplicated).",
			ConstLabels: prometheus.Labels{"uplink": "nats"}})}
	if reg != nil {
		reg.MustRegister(append(m.Collectors(), m.Duplicates)...)
	}
	return m
}

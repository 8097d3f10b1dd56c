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
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Set: uplinkmetrics.New("mqtt")}
	if reg != nil {
		reg.MustRegister(m.Collectors()...)
	}
	return m
}

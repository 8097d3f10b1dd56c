package fleet

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests   *prometheus.CounterVec
	exceptions *prometheus.CounterVec
	steps      prometheus.Counter
	simTime    prometheus.Gauge
	faults     prometheus.Gauge
	drops      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_sim_modbus_requests_total", Help: "Modbus requests addressed to a simulated device.",
		}, []string{"device"}),
		exceptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_sim_modbus_exceptions_total", Help: "Modbus exception responses sent by a simulated device.",
		}, []string{"device"}),
		steps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smelter_sim_steps_total", Help: "Simulation steps taken.",
		}),
		simTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smelter_sim_time_seconds", Help: "Current simulated time (Unix seconds).",
		}),
		faults: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smelter_sim_faults_active", Help: "Faults currently active.",
		}),
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smelter_sim_connection_drops_total", Help: "Times a fault dropped a listener's connections.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.exceptions, m.steps, m.simTime, m.faults, m.drops)
	}
	return m
}

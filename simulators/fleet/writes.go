package fleet

import "github.com/prometheus/client_golang/prometheus"

// writesCollector exposes the fleet's write counters on /metrics, so an
// operator can check from outside that a refused command wrote nothing:
// smelter_sim_modbus_writes_total{device} (write requests a device's
// Modbus front received, applied or refused) and
// smelter_sim_opcua_writes_total (node writes and method calls the fleet's
// OPC UA servers received).
type writesCollector struct{ f *Fleet }

var (
	descModbusWrites = prometheus.NewDesc("smelter_sim_modbus_writes_total",
		"Modbus write requests (FC5/6/15/16/22) a simulated device received, applied or refused.", []string{"device"}, nil)
	descUAWrites = prometheus.NewDesc("smelter_sim_opcua_writes_total",
		"OPC UA node writes and method calls the fleet's servers received, applied or refused.", nil, nil)
)

func (c writesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descModbusWrites
	ch <- descUAWrites
}

func (c writesCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.f.Devices() {
		if n, ok := c.f.Writes(d.ID); ok {
			ch <- prometheus.MustNewConstMetric(descModbusWrites, prometheus.CounterValue, float64(n), d.ID)
		}
	}
	ch <- prometheus.MustNewConstMetric(descUAWrites, prometheus.CounterValue, float64(c.f.UAWrites()))
}

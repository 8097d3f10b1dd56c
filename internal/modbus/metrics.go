package modbus

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the driver's Prometheus collectors (prefix smelter_modbus_).
type Metrics struct {
	requests    *prometheus.CounterVec   // device, result
	errors      *prometheus.CounterVec   // device, kind
	registers   *prometheus.CounterVec   // device
	bits        *prometheus.CounterVec   // device
	duration    *prometheus.HistogramVec // device
	quarantined *prometheus.GaugeVec     // device
	connUp      *prometheus.GaugeVec     // connection
	discarded   *prometheus.CounterVec   // connection
	suspect     *prometheus.CounterVec   // connection
	reopened    *prometheus.CounterVec   // connection
}

// NewMetrics creates the collectors and registers them with reg; a nil reg
// leaves them unregistered (they still count, nobody scrapes them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_requests_total",
			Help: "Modbus read requests sent, by device and result (ok, exception, timeout, connection, framing, bad_length, checksum, transaction_mismatch, wrong_unit, wrong_function, canceled).",
		}, []string{"device", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_errors_total",
			Help: "Modbus errors by device and kind (exception, timeout, connection, framing, bad_length, checksum, transaction_mismatch, wrong_unit, wrong_function, not_finite); connection counts failed connects and lost connections.",
		}, []string{"device", "kind"}),
		registers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_registers_read_total",
			Help: "Holding and input registers received in good replies.",
		}, []string{"device"}),
		bits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_bits_read_total",
			Help: "Coils and discrete inputs received in good replies.",
		}, []string{"device"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "smelter_modbus_request_duration_seconds",
			Help:    "Time from sending a Modbus request to its reply or failure, including waiting for a silent line.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"device"}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "smelter_modbus_quarantined_points",
			Help: "Points excluded from merged requests after raising an exception.",
		}, []string{"device"}),
		connUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "smelter_modbus_connection_up",
			Help: "1 while the shared connection (transport|address) is open.",
		}, []string{"connection"}),
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_discarded_bytes_total",
			Help: "Bytes received on a connection that answer no request (late replies, leftovers on the line, noise), discarded before a request or while waiting for a silent line.",
		}, []string{"connection"}),
		suspect: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_suspect_replies_total",
			Help: "Times bytes arrived on an RTU or ASCII connection between an accepted reply and the next request: a late reply may have been taken for another request's answer (raise silence).",
		}, []string{"connection"}),
		reopened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_reconnects_total",
			Help: "Modbus TCP connections reopened after a reply that left the stream in doubt (wrong transaction id, unit, function, length, malformed, timeout); logged at debug level only.",
		}, []string{"connection"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.errors, m.registers, m.bits, m.duration, m.quarantined, m.connUp, m.discarded,
			m.suspect, m.reopened)
	}
	return m
}

// devMetrics holds one device's children so the read path does no label lookups.
type devMetrics struct {
	result      [kindCount]prometheus.Counter
	errKind     [kindCount]prometheus.Counter // nil for ok and canceled
	registers   prometheus.Counter
	bits        prometheus.Counter
	duration    prometheus.Observer
	quarantined prometheus.Gauge
}

func (m *Metrics) device(id string) devMetrics {
	var d devMetrics
	for k := range kindCount {
		if k != kindNotFinite {
			d.result[k] = m.requests.WithLabelValues(id, kindNames[k])
		}
		if k != kindOK && k != kindCanceled {
			d.errKind[k] = m.errors.WithLabelValues(id, kindNames[k])
		}
	}
	d.registers = m.registers.WithLabelValues(id)
	d.bits = m.bits.WithLabelValues(id)
	d.duration = m.duration.WithLabelValues(id)
	d.quarantined = m.quarantined.WithLabelValues(id)
	return d
}

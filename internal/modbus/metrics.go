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
}

// NewMetrics creates the collectors and registers them with reg; a nil reg
// leaves them unregistered (they still count, nobody scrapes them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_requests_total",
			Help: "Modbus read requests sent, by device and result (ok, exception, timeout, connection, framing, bad_length, canceled).",
		}, []string{"device", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_errors_total",
			Help: "Modbus errors by device and kind (exception, timeout, connection, framing); connection counts failed connects and lost connections.",
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
			Help:    "Time from sending a Modbus request to its reply or failure, including waiting for the shared connection.",
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
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.errors, m.registers, m.bits, m.duration, m.quarantined, m.connUp)
	}
	return m
}

func (m *Metrics) errorsFor(dev, kind string) prometheus.Counter {
	return m.errors.WithLabelValues(dev, kind)
}

// devMetrics holds one device's children so the read path does no label lookups.
type devMetrics struct {
	result      [resultCount]prometheus.Counter
	errKind     [resultCount]prometheus.Counter
	registers   prometheus.Counter
	bits        prometheus.Counter
	duration    prometheus.Observer
	quarantined prometheus.Gauge
}

const (
	resOK = iota
	resException
	resTimeout
	resConnection
	resFraming
	resBadLength
	resCanceled
	resultCount
)

var resultNames = [resultCount]string{"ok", "exception", "timeout", "connection", "framing", "bad_length", "canceled"}
var kindNames = [resultCount]string{"", "exception", "timeout", "connection", "framing", "framing", ""}

func (m *Metrics) device(id string) devMetrics {
	var d devMetrics
	for i := range resultCount {
		d.result[i] = m.requests.WithLabelValues(id, resultNames[i])
		if kindNames[i] != "" {
			d.errKind[i] = m.errors.WithLabelValues(id, kindNames[i])
		}
	}
	d.registers = m.registers.WithLabelValues(id)
	d.bits = m.bits.WithLabelValues(id)
	d.duration = m.duration.WithLabelValues(id)
	d.quarantined = m.quarantined.WithLabelValues(id)
	return d
}

func resultOf(status uint32) int {
	switch status {
	case StatusGood:
		return resOK
	case StatusTimeout:
		return resTimeout
	case StatusConnection:
		return resConnection
	case StatusFraming:
		return resFraming
	case StatusBadLength:
		return resBadLength
	case StatusCanceled:
		return resCanceled
	}
	return resException
}

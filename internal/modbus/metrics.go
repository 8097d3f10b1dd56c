package modbus

import (
	"sync"

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
	suspect     *prometheus.CounterVec   // connection, device
	noise       *prometheus.CounterVec   // connection, device
	reopened    *prometheus.CounterVec   // connection
	owed        *prometheus.CounterVec   // connection, device
	stray       *prometheus.CounterVec   // connection, unit
}

// NewMetrics creates the collectors and registers them with reg; a nil reg
// leaves them unregistered (they still count, nobody scrapes them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_requests_total",
			Help: "Modbus requests sent, by device and result (ok, exception, timeout, connection, framing, bad_length, checksum, transaction_mismatch, wrong_unit, wrong_function, bad_echo, untied, canceled): a read's own request by the read's result, each request more it sent (sent again after another unit's late frame, the reads that prove an answer in doubt) by its own; errors_total counts each read's result once.",
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
			Help: "Replies on a connection that cannot be tied to their request, discarded, by the device that sent them (\"\" when unknown): on RTU or ASCII a reply later than timeout + silence (another unit's frame while a unit was asked, bytes on the line after a unit's timeout, a second reply after an accepted one: raise silence; a second frame after an accepted reply or a reply with another function or byte count: another master, an echoing link or a unit one request behind, the read discarded); on Modbus TCP a duplicate of an answered transaction or a frame out of turn.",
		}, []string{"connection", "device"}),
		noise: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_noise_total",
			Help: "Runs of bytes that are no frame (line noise, a transceiver's glitch) found on an RTU line ahead of the asked unit's well-formed answer, by the device whose reply they followed (\"\" when none did): the answer was discarded and the request sent again on a quiet line, the asked device not blamed. The bytes are also counted in smelter_modbus_discarded_bytes_total.",
		}, []string{"connection", "device"}),
		reopened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_reconnects_total",
			Help: "Modbus TCP connections reopened after a reply that left the stream in doubt (wrong transaction id, unit, function, length, malformed, timeout); logged at debug level only.",
		}, []string{"connection"}),
		owed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_owed_answers_total",
			Help: "Modbus TCP requests whose answer may still come and be relayed by a converter to a later request, by the device that sent them (\"\" when no device reads the unit): a timeout, an exception (any code: a converter may answer one in place of a slow slave), a reply with another function or length. For 30 x timeout after each, the connection's answers of that request's function and length to another request are proven by a read of another length (2 to 4 more requests each).",
		}, []string{"connection", "device"}),
		stray: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_modbus_stray_frames_total",
			Help: "Well-formed Modbus frames on a connection from a unit no device of the connection reads (a misaddressed unit, or another master's traffic), by the unit id the frame claimed, received while another unit was asked: discarded, never published, the asked unit's request sent again on a quiet line and not charged with them.",
		}, []string{"connection", "unit"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.errors, m.registers, m.bits, m.duration, m.quarantined, m.connUp, m.discarded,
			m.suspect, m.noise, m.reopened, m.owed, m.stray)
	}
	return m
}

// devMetrics holds one device's children so the read path does no label
// lookups. The children of request results, of the error kinds of broken
// replies and of register or bit counts are created when first counted: a
// device has a series for the results and kinds it has seen (at 100
// devices, ~20 never-used series each cost ~2 MB of live heap). The error
// kinds that say the device or its connection is failing (alwaysKinds:
// timeout, connection), the duration histogram and the quarantined gauge
// exist from the start, so an alert on their increase() fires on the first.
type devMetrics struct {
	m           *Metrics
	id          string
	result      [kindCount]lazyCounter
	errKind     [kindCount]lazyCounter
	registers   lazyCounter
	bits        lazyCounter
	duration    prometheus.Observer
	quarantined prometheus.Gauge
}

// lazyCounter is a counter child created on its first use.
type lazyCounter struct {
	once sync.Once
	c    prometheus.Counter
}

// add adds v to the child of vec with the label values device (and kind,
// unless "").
func (l *lazyCounter) add(v float64, vec *prometheus.CounterVec, device, kind string) {
	l.once.Do(func() {
		if kind == "" {
			l.c = vec.WithLabelValues(device)
		} else {
			l.c = vec.WithLabelValues(device, kind)
		}
	})
	l.c.Add(v)
}

func (m *Metrics) device(id string) *devMetrics {
	d := &devMetrics{m: m, id: id, duration: m.duration.WithLabelValues(id), quarantined: m.quarantined.WithLabelValues(id)}
	for _, k := range alwaysKinds {
		d.errKind[k].add(0, m.errors, id, kindNames[k])
	}
	return d
}

// alwaysKinds are the error kinds whose series exist at 0 from the start:
// the device does not answer, its connection fails.
var alwaysKinds = [...]int{kindTimeout, kindConnection}

// request counts one request of result kind k (and, unless it is ok or
// canceled, an error of that kind).
func (d *devMetrics) request(k int) {
	if k != kindNotFinite {
		d.result[k].add(1, d.m.requests, d.id, kindNames[k])
	}
	if k != kindOK && k != kindCanceled {
		d.errKind[k].add(1, d.m.errors, d.id, kindNames[k])
	}
}

// sent counts one request of result kind k sent in a proof or sent again
// (link.trip): in smelter_modbus_requests_total only, the read's errors
// being counted once by its result (request).
func (d *devMetrics) sent(k int) {
	if k != kindNotFinite {
		d.result[k].add(1, d.m.requests, d.id, kindNames[k])
	}
}

// replyError counts an error of kind k against the device without a
// request of its own: its late reply, found answering another request.
func (d *devMetrics) replyError(k int) {
	d.errKind[k].add(1, d.m.errors, d.id, kindNames[k])
}

// connectFailed counts a failed connect attempt as a connection error.
func (d *devMetrics) connectFailed() {
	d.errKind[kindConnection].add(1, d.m.errors, d.id, kindNames[kindConnection])
}

// read counts n registers (or bits) received in a good reply.
func (d *devMetrics) read(n int, bits bool) {
	if bits {
		d.bits.add(float64(n), d.m.bits, d.id, "")
	} else {
		d.registers.add(float64(n), d.m.registers, d.id, "")
	}
}

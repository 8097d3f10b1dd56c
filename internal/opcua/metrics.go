package opcua

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Session states reported by smelter_opcua_session_state.
const (
	StateDisconnected = 0
	StateConnecting   = 1
	StateConnected    = 2
)

// Metrics are the driver's Prometheus collectors (prefix smelter_opcua_).
type Metrics struct {
	notifications   *prometheus.CounterVec   // device
	publishes       *prometheus.CounterVec   // device
	reads           *prometheus.CounterVec   // device, result
	reconnects      *prometheus.CounterVec   // device
	state           *prometheus.GaugeVec     // device
	badStatus       *prometheus.CounterVec   // device, code
	publishLatency  *prometheus.HistogramVec // device
	panics          *prometheus.CounterVec   // device
	faults          *prometheus.CounterVec   // device, service, status
	workerExits     *prometheus.CounterVec   // device, cause
	unitChanges     *prometheus.CounterVec   // device
	unknownHandles  *prometheus.CounterVec   // device
	namespaceRemaps *prometheus.CounterVec   // device
	// namespaceChecks: NamespaceArray reads during sessions; namespaceChanges:
	// acquisitions rebuilt after one (device, seen_by); pinWriteErrors:
	// failed writes of the pin file (device), counted once per failure state
	namespaceChecks  *prometheus.CounterVec
	namespaceChanges *prometheus.CounterVec
	pinWriteErrors   *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg; a nil reg
// leaves them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_notifications_total",
			Help: "Monitored item notifications (data changes) received.",
		}, []string{"device"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_publish_responses_total",
			Help: "Publish responses received: data changes and keep-alives (service faults are counted in smelter_opcua_service_faults_total).",
		}, []string{"device"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_reads_total",
			Help: "Read service calls by result (ok, error); poll points and watchdog.",
		}, []string{"device", "result"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_reconnects_total",
			Help: "Sessions lost and re-established attempts started.",
		}, []string{"device"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "smelter_opcua_session_state",
			Help: "0 disconnected, 1 connecting, 2 connected (session active, subscriptions created).",
		}, []string{"device"}),
		badStatus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_bad_status_total",
			Help: "Values received with a Bad or Uncertain StatusCode, by code (hex) - including monitored item creation failures.",
		}, []string{"device", "code"}),
		publishLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "smelter_opcua_publish_latency_seconds",
			Help:    "Time from the newest ServerTimestamp in a publish response with data changes to its arrival at the gateway; not observed when the server's clock is ahead of the gateway's.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"device"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_session_panics_total",
			Help: "Sessions dropped because handling a server's answer panicked (a hostile or broken server); the driver reconnects with backoff.",
		}, []string{"device"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_service_faults_total",
			Help: "Service faults the session survived, by service and status (e.g. Publish BadTimeout).",
		}, []string{"device", "service", "status"}),
		workerExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_worker_exits_total",
			Help: "Session worker processes (isolation: process or endpoint) that ended on their own or were killed as silent, by cause (panic, exit: killed, crashed or exited); each is restarted with backoff.",
		}, []string{"device", "cause"}),
		unitChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_unit_changes_total",
			Help: "Points whose EngineeringUnits or EURange changed on the server while the gateway ran (read again on a session, or at a reconnect); each is applied before the next value.",
		}, []string{"device"}),
		unknownHandles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_unknown_handles_total",
			Help: "Data-change notifications whose client handle matches no subscribed point (a hostile or broken server): discarded, and the publish response that carried them confirms no other point unchanged.",
		}, []string{"device"}),
		namespaceRemaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_namespace_remaps_total",
			Help: "Namespaces of ns=<index> node ids found at another index of the server's NamespaceArray than the one pinned at the device's first session (a server that reordered its namespaces): its nodes are read at the new index. Counted once per move.",
		}, []string{"device"}),
		namespaceChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_namespace_checks_total",
			Help: "Reads of the server's NamespaceArray during a session (every namespace_check, at once when a poll read found it changed, soon after a BadNodeIdUnknown), by devices whose node ids name a namespace.",
		}, []string{"device"}),
		namespaceChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_namespace_changes_total",
			Help: "Acquisitions rebuilt within a session because the server's NamespaceArray changed what a node id names (a namespace added to the live server, a URI moved or gone), by what saw it first: check (the periodic read), read (a poll read's NamespaceArray), command (a command's read or its write's pre-read), unknown or refused (a BadNodeIdUnknown).",
		}, []string{"device", "seen_by"}),
		pinWriteErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_opcua_namespace_pin_write_errors_total",
			Help: "Failures to write a device's namespace pin file (counted when a failure starts or its error changes; retried at every namespace check while the file differs from the pins in memory).",
		}, []string{"device"}),
	}
	if reg != nil {
		reg.MustRegister(m.notifications, m.publishes, m.reads, m.reconnects, m.state, m.badStatus, m.publishLatency, m.panics, m.faults, m.workerExits, m.unitChanges, m.unknownHandles, m.namespaceRemaps,
			m.namespaceChecks, m.namespaceChanges, m.pinWriteErrors)
	}
	return m
}

type devMetrics struct {
	m              *Metrics
	id             string
	notifications  prometheus.Counter
	publishes      prometheus.Counter
	readOK         prometheus.Counter
	readErr        prometheus.Counter
	reconnects     prometheus.Counter
	state          prometheus.Gauge
	publishLatency prometheus.Observer
	panics         prometheus.Counter
	faults         *prometheus.CounterVec

	badMu sync.Mutex
	badBy map[uint32]prometheus.Counter // smelter_opcua_bad_status_total by status, looked up once
}

func (m *Metrics) device(id string) *devMetrics {
	return &devMetrics{m: m, id: id,
		notifications:  m.notifications.WithLabelValues(id),
		publishes:      m.publishes.WithLabelValues(id),
		readOK:         m.reads.WithLabelValues(id, "ok"),
		readErr:        m.reads.WithLabelValues(id, "error"),
		reconnects:     m.reconnects.WithLabelValues(id),
		state:          m.state.WithLabelValues(id),
		publishLatency: m.publishLatency.WithLabelValues(id),
		panics:         m.panics.WithLabelValues(id),
		faults:         m.faults,
	}
}

// bad counts one Bad or Uncertain status: the series is looked up once per
// status code (a label lookup allocated twice per sample, 140 times per
// 1,000-item publish response with one value in seven Uncertain).
func (d *devMetrics) bad(code uint32) {
	d.badMu.Lock()
	ctr := d.badBy[code]
	if ctr == nil {
		if d.badBy == nil {
			d.badBy = map[uint32]prometheus.Counter{}
		}
		ctr = d.m.badStatus.WithLabelValues(d.id, statusHex(code))
		d.badBy[code] = ctr
	}
	d.badMu.Unlock()
	ctr.Inc()
}

// isolated gives device id, whose sessions run in a worker process, its
// smelter_opcua_worker_exits_total series of both causes at 0 (a series a
// user alerts on: a worker that crashed or was killed as silent; at 0 from
// the start, an alert on increase() fires on the first).
func (m *Metrics) isolated(id string) {
	for _, cause := range [...]string{"panic", "exit"} {
		m.workerExits.WithLabelValues(id, cause)
	}
}

// unitChanges counts n points whose units changed; the series is created
// when first counted (an event most devices never have).
func (d *devMetrics) unitChanges(n int) {
	if n > 0 {
		d.m.unitChanges.WithLabelValues(d.id).Add(float64(n))
	}
}

func statusHex(code uint32) string {
	const hexd = "0123456789ABCDEF"
	b := []byte("0x00000000")
	for i := 0; i < 8; i++ {
		b[9-i] = hexd[code>>(4*i)&0xF]
	}
	return string(b)
}

// counterVec is the counter family named name (a session worker's metrics
// are applied to the gateway's by name), nil when there is none.
func (m *Metrics) counterVec(name string) *prometheus.CounterVec {
	switch name {
	case "smelter_opcua_notifications_total":
		return m.notifications
	case "smelter_opcua_publish_responses_total":
		return m.publishes
	case "smelter_opcua_reads_total":
		return m.reads
	case "smelter_opcua_reconnects_total":
		return m.reconnects
	case "smelter_opcua_bad_status_total":
		return m.badStatus
	case "smelter_opcua_session_panics_total":
		return m.panics
	case "smelter_opcua_service_faults_total":
		return m.faults
	case "smelter_opcua_unit_changes_total":
		return m.unitChanges
	case "smelter_opcua_unknown_handles_total":
		return m.unknownHandles
	case "smelter_opcua_namespace_remaps_total":
		return m.namespaceRemaps
	case "smelter_opcua_namespace_checks_total":
		return m.namespaceChecks
	case "smelter_opcua_namespace_changes_total":
		return m.namespaceChanges
	case "smelter_opcua_namespace_pin_write_errors_total":
		return m.pinWriteErrors
	}
	return nil
}

// gaugeVec is the gauge family named name, nil when there is none.
func (m *Metrics) gaugeVec(name string) *prometheus.GaugeVec {
	if name == "smelter_opcua_session_state" {
		return m.state
	}
	return nil
}

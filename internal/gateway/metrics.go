package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/forward"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
)

// Metrics are a gateway process's metrics, registered once and kept
// across reloads: pass the same Metrics to every Gateway the process
// builds (Options.Metrics) and counters go on counting through SIGHUP.
// The drivers' own metrics (modbus, opcua) are registered by each
// gateway's drivers in a registry of that gateway, which Gatherer adds
// while it runs: they start again from zero after a reload.
type Metrics struct {
	reg   *prometheus.Registry
	gw    *metrics
	spool *spool.Metrics
	fwd   *forward.Metrics

	mu   sync.Mutex
	nats *natsjs.Metrics // registered at the first gateway with that uplink
	mqtt *mqtt.Metrics
	cmd  *commandMetrics // at the first gateway with commands (command.go)

	drivers atomic.Pointer[prometheus.Registry] // the running gateway's driver metrics
	cur     atomic.Pointer[spool.Spool]         // the running gateway's spool (smelter_gateway_seq)
}

// NewMetrics registers the gateway's metrics in reg.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	mx := &Metrics{reg: reg, spool: spool.NewMetrics(reg), fwd: forward.NewMetrics(reg)}
	mx.gw = newMetrics(reg, func() float64 {
		if sp := mx.cur.Load(); sp != nil {
			return float64(sp.LastSeq())
		}
		return 0
	})
	return mx
}

// Registry returns the registry the metrics are registered in.
func (mx *Metrics) Registry() *prometheus.Registry { return mx.reg }

// Gatherer gathers the registry and the running gateway's driver metrics.
func (mx *Metrics) Gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		gs := prometheus.Gatherers{mx.reg}
		if d := mx.drivers.Load(); d != nil && d != mx.reg {
			gs = append(gs, d)
		}
		return gs.Gather()
	})
}

func (mx *Metrics) natsMetrics() *natsjs.Metrics {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if mx.nats == nil {
		mx.nats = natsjs.NewMetrics(mx.reg)
	}
	return mx.nats
}

func (mx *Metrics) mqttMetrics() *mqtt.Metrics {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if mx.mqtt == nil {
		mx.mqtt = mqtt.NewMetrics(mx.reg)
	}
	return mx.mqtt
}

// metrics are the gateway pipeline's own self-metrics (prefix
// smelter_gateway_); the delivery metrics are the forwarders'
// (forward.Metrics).
type metrics struct {
	polls        *prometheus.CounterVec
	pollDuration *prometheus.HistogramVec
	overruns     *prometheus.CounterVec
	delayed      *prometheus.CounterVec
	readings     *prometheus.CounterVec
	batches      prometheus.Counter
	spoolErrors  prometheus.Counter
	notices      *prometheus.CounterVec
	deviceUp     *prometheus.GaugeVec
	stalls       *prometheus.CounterVec

	mu      sync.Mutex
	devices map[string]bool // the devices that have series: the running configuration's (configure)
}

// configure gives the per-device series to the devices ids of the
// configuration about to run, and to them only. The counts of failures a
// user alerts on (stalls, failed and partial polls) exist at 0 from the
// start: an alert on their increase() then fires on the first one, and an
// absent series means no such device, not no failure yet. Events of
// normal operation or tuning (ok polls, overruns, delays by another
// device) get theirs when first counted (docs/operations.md). The series
// of devices that a reload removed or renamed are deleted, counters
// included: kept, they would report a device the gateway no longer
// polls. Counters of the devices kept go on counting; device_up is
// cleared, each device without a value until its first cycle. Called
// before the configuration's devices run, the previous one's stopped.
func (m *metrics) configure(ids []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deviceUp.Reset()
	keep := make(map[string]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
	}
	for id := range m.devices {
		if keep[id] {
			continue
		}
		dev := prometheus.Labels{"device": id}
		m.polls.DeletePartialMatch(dev)
		m.pollDuration.DeletePartialMatch(dev)
		m.overruns.DeletePartialMatch(dev)
		m.delayed.DeletePartialMatch(dev)
		m.delayed.DeletePartialMatch(prometheus.Labels{"by": id})
		m.stalls.DeletePartialMatch(dev)
	}
	for _, id := range ids {
		m.stalls.WithLabelValues(id)
		for _, r := range failureResults {
			m.polls.WithLabelValues(id, r)
		}
	}
	m.devices = keep
}

// failureResults are the results of smelter_gateway_polls_total that
// count failures: their series exist at 0 from the start (configure).
var failureResults = [...]string{"partial", "failed"}

func newMetrics(reg prometheus.Registerer, seq func() float64) *metrics {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_polls_total",
			Help: "Acquisition cycles by device and result (ok: every point good; partial: some bad; failed: none good)."},
			[]string{"device", "result"}),
		pollDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "smelter_gateway_poll_duration_seconds",
			Help: "Time to read one acquisition group.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)},
			[]string{"device"}),
		overruns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_poll_overruns_total",
			Help: "Cycles that took longer than their poll interval because of the device itself: its own reads (or, on a link shared with other devices, its own use of the link) took most of the cycle."}, []string{"device"}),
		delayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_poll_delayed_total",
			Help: "Cycles that took longer than their poll interval because another device (by) on the same shared link (units behind one RTU gateway or on one serial line) used the link for most of the cycle; not counted as the device's overruns."},
			[]string{"device", "by"}),
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_readings_total",
			Help: "Normalized readings by quality."}, []string{"quality"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_batches_total",
			Help: "Batches written to the spool."}),
		spoolErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_gateway_spool_errors_total",
			Help: "Batches that could not be written to the spool (lost; while a birth is pending after a failed one, the cycle's batch is counted here without an append)."}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_notice_failures_total",
			Help: "Birth and status notices that could not be spooled (kind: birth, status); each is retried later."},
			[]string{"kind"}),
		deviceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "smelter_gateway_device_up",
			Help: "1 while the device is alive: it answered (even with exceptions) within 3 x its interval."}, []string{"device"}),
		stalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_gateway_device_stalls_total",
			Help: "Times a device's driver emitted no cycle (neither data nor an error) within its stall limit, max(30s, 3 x (longest interval + longest cycle duration)), while the device was alive: its points were published stale and the driver restarted."},
			[]string{"device"}),
	}
	if reg != nil {
		reg.MustRegister(m.polls, m.pollDuration, m.overruns, m.delayed, m.readings, m.batches, m.spoolErrors, m.notices, m.deviceUp, m.stalls,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_gateway_seq",
				Help: "Last sequence number the spool assigned (batches, notices and lost appends alike): the seq /status shows."}, seq))
	}
	return m
}

package spool

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the spool's Prometheus metrics (prefix smelter_spool_).
type Metrics struct {
	appendedRecords  prometheus.Counter
	appendedBytes    prometheus.Counter
	appendSeconds    prometheus.Histogram
	appendErrors     prometheus.Counter
	appendWrites     prometheus.Counter
	writeRecords     prometheus.Histogram
	lostAppends      prometheus.Counter
	blockedSeconds   prometheus.Counter
	diskBytes        prometheus.Gauge
	segments         prometheus.Gauge
	discarded        prometheus.Counter
	readerDiscarded  *prometheus.CounterVec
	recoveredRecords prometheus.Gauge
	droppedRecords   prometheus.Counter
	droppedBytes     prometheus.Counter
	cursorResets     prometheus.Counter
	corruptReadBytes prometheus.Counter
	diskReads        *prometheus.CounterVec
	cacheReads       *prometheus.CounterVec
	fsyncSeconds     prometheus.Histogram
	fsyncErrors      prometheus.Counter

	lag *lagCollector
}

// NewMetrics creates the spool metrics and registers them with reg (nil:
// not registered, useful in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "smelter", "spool"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	perReader := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, []string{"reader"})
	}
	m := &Metrics{
		appendedRecords: counter("appended_records_total", "Records appended to the spool."),
		appendedBytes:   counter("appended_bytes_total", "Bytes appended to the spool (framing included)."),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "append_seconds",
			Help:    "Append latency, including any fsync and any time blocked on a full spool.",
			Buckets: []float64{2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.02, 0.1, 1}}),
		appendErrors: counter("append_errors_total", "Appends that failed (write error, closed spool, cancelled while blocked)."),
		appendWrites: counter("append_writes_total",
			"Write syscalls that appended records; concurrent appends share one (group commit), so appended_records_total / append_writes_total is the records per write."),
		writeRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "append_group_records",
			Help:    "Records written together by one group commit (one fsync with fsync: always; one write per arena chunk they span).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}),
		lostAppends: counter("append_lost_records_total",
			"Records lost because writing them failed (disk full, I/O error); each cost its seq, so consumers see the gap."),
		blockedSeconds:   counter("append_blocked_seconds_total", "Time appends spent blocked on a full spool (when_full: block)."),
		diskBytes:        gauge("disk_bytes", "Bytes of all segment files."),
		segments:         gauge("segments", "Number of segment files."),
		discarded:        counter("discarded_records_total", "Records deleted by max_bytes or max_age before every reader committed them."),
		readerDiscarded:  perReader("reader_discarded_records_total", "Records a reader skipped because they were discarded before it read them (equals the seq gap it delivered)."),
		recoveredRecords: gauge("recovered_records", "Records found valid by the recovery scan at open."),
		droppedRecords:   counter("recovery_dropped_records_total", "Records dropped by recovery at open (corrupt or torn)."),
		droppedBytes:     counter("recovery_dropped_bytes_total", "Bytes dropped by recovery at open (corrupt or torn)."),
		cursorResets: counter("recovery_cursor_resets_total",
			"Reader cursor files found unreadable at open; the reader restarts from the oldest record (re-delivery, no loss)."),
		corruptReadBytes: counter("read_corrupt_bytes_total", "Corrupt bytes skipped by readers after open."),
		diskReads:        perReader("reader_disk_records_total", "Records a reader read from segment files (backlog replay); rate() is the replay rate."),
		cacheReads:       perReader("reader_cache_records_total", "Records a reader read from the in-memory tail cache (live)."),
		fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "fsync_seconds",
			Help: "Duration of segment fsyncs.", Buckets: prometheus.ExponentialBuckets(1e-4, 4, 8)}),
		fsyncErrors: counter("fsync_errors_total", "Failed fsyncs."),
		lag:         newLagCollector(ns, sub),
	}
	if reg != nil {
		reg.MustRegister(m.appendedRecords, m.appendedBytes, m.appendSeconds, m.appendErrors, m.appendWrites, m.writeRecords, m.lostAppends, m.blockedSeconds,
			m.diskBytes, m.segments, m.discarded, m.readerDiscarded, m.recoveredRecords, m.droppedRecords,
			m.droppedBytes, m.cursorResets, m.corruptReadBytes, m.diskReads, m.cacheReads, m.fsyncSeconds, m.fsyncErrors, m.lag)
	}
	return m
}

// lagCollector reports each reader's lag at scrape time, so appends pay
// nothing for it.
type lagCollector struct {
	records, bytes, age *prometheus.Desc

	mu    sync.Mutex
	spool *Spool
}

func newLagCollector(ns, sub string) *lagCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, sub, name), help, []string{"reader"}, nil)
	}
	return &lagCollector{
		records: d("reader_lag_records", "Records appended and not yet committed by the reader."),
		bytes:   d("reader_lag_bytes", "Segment bytes not yet committed by the reader (approximate to 32 records)."),
		age:     d("reader_lag_oldest_age_seconds", "Age of the oldest record the reader has not committed (0 when caught up)."),
	}
}

func (c *lagCollector) attach(s *Spool) {
	c.mu.Lock()
	c.spool = s
	c.mu.Unlock()
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.records
	ch <- c.bytes
	ch <- c.age
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	s := c.spool
	c.mu.Unlock()
	if s == nil {
		return
	}
	for name, l := range s.lags() {
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue, float64(l.Records), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(l.Bytes), name)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, l.OldestAge.Seconds(), name)
	}
}

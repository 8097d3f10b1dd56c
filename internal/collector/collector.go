// Package collector is smelter-collector: it ingests the normalized
// telemetry stream from NATS JetStream (or MQTT), deduplicates it, runs the
// anomaly rules and energy KPIs, publishes alerts and KPI results back onto
// the brokers, keeps alert state in a JetStream KV bucket and offers an
// in-process query API for the HTTP API and dashboard.
package collector

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/history"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
)

// recentCap bounds the recent-alerts history kept for the query API.
const recentCap = 1000

// Collector is one collector instance: a replica of its group.
type Collector struct {
	cfg Config
	log *slog.Logger
	cat *catalog.Catalog
	set *rules.Set

	// fenceSerial: fenced outputs are sent one at a time (the stream is
	// replicated: commit.go's send); fenceOff: the stream's leader was
	// found not to check the fence (commit.go's fenceIgnored), no fence
	// from then on
	fenceSerial, fenceOff atomic.Bool

	mu     sync.Mutex // guards shards, recent and cmdAlerts
	shards map[int]*shard
	// statsMu guards retired and every shard's gone flag; taken before a
	// shard's mu, never after. retired holds the counts of the shards
	// dropped or replaced, so the counters summed over the shards
	// (readings, evaluations, alerts raised, seq jumps) never go back when
	// a partition's worker starts again (review11 F2: with N partitions
	// Prometheus read one partition's restart as a reset of the sum).
	statsMu sync.Mutex
	retired shardCounts
	recent  []alert.Alert
	// cmdAlerts: active alerts on rejected commands (commands.go), by key
	cmdAlerts map[string]alert.Alert
	// command service and operators' tokens, set by Run before serving
	cmds      *commandService
	operators map[string]string

	tracked atomic.Int64 // assets tracked over all shards (MaxAssets)
	full    atomic.Int64 // Unix s of the last "limit reached" log

	live *dashboard.Live // history, KPI windows, gateway health for the dashboard
	// liveLag is the package's liveLag (arrivedAt); tests shorten it to
	// make a backlog without waiting 10 s
	liveLag time.Duration
	// streams counts the dashboard's event streams (metrics)
	streams *dashboard.StreamStats
	logLim  logLimits // malformed and refused messages: logged first per reason, then at most once a minute

	ready atomic.Bool
	// pulls: since when each partition this replica should own has had
	// its pulls fail (readiness.go); pullGrace, when set (tests), replaces
	// the package's pullGrace
	pulls     pullHealth
	pullGrace time.Duration
	// reconnects counts the NATS connection's reconnections: the members
	// watch is set up again after one (members.run)
	reconnects atomic.Uint64
	// disrupted dates the newest disruptions of the stream's evidence, from
	// which silence is counted (disruptions)
	disrupted disruptions
	url       atomic.Value // string: NATS URL in use
	httpAddr  atomic.Value // string: bound HTTP address
	js        atomic.Pointer[natsIO]

	// onCommit, when set (tests), is called with the batches whose effects
	// were published and checkpointed, before they are acknowledged.
	onCommit func(p int, batches []BatchRef)
	// beforeFetch, when set (tests), is called by a partition's worker
	// before every fetch.
	beforeFetch func(p int)
	// onStartRetry, when set (tests), is called on every retried start step.
	onStartRetry func(err error)
	// stall, when set (tests), is called in every loop of a running
	// collector (each partition worker's fetch, once its pull request is
	// sent; the membership heartbeat and watch; the supervisor): a test
	// blocks in it to pause the replica the way SIGSTOP or a frozen VM does.
	stall func()
	// inFetch, when set (tests), is called by a partition's worker once
	// the pull request of a fetch is sent, before its messages are read,
	// instead of stall: a test may take the messages (puller.lose) as
	// happens when the pull's timer fires first after a pause (they are
	// lost), or send another pull.
	inFetch func(p int, pl *puller)
	// published, when set (tests), is called by commit (Tick, Handle) and
	// a partition's cycle once its alert events are published, before their assets are
	// checkpointed: a test kills the collector there.
	published func(p int, events []alert.Alert)
	// publishing, when set (tests), is called by commit and a partition's
	// cycle once its tenure is confirmed, before its outputs are sent: a
	// test pauses the replica there, as SIGSTOP may.
	publishing func(p int, events []alert.Alert)
	// natsErr is the main NATS connection's last error (Run sets it:
	// startRetry tells a request refused for permissions from a slow
	// JetStream)
	natsErr func() error
	// memberChecked, when set (tests), runs between a replica's check of
	// the live members and its first heartbeat (members.checked)
	memberChecked func()
	// onJudge, when set (tests), is called when a partition's worker judges
	// its assets' silence as of at, counted from no earlier than from (Unix
	// ms; see disruptions).
	onJudge func(p int, at, from int64)

	m   metrics
	reg *prometheus.Registry

	hist  atomic.Pointer[history.Store] // set by Run with a history: block
	histM *history.Metrics
	// repartitioned: another group partitioned the stream while this
	// single replica ran (checkRepartitioned)
	repartitioned atomic.Bool
}

// BatchRef identifies one evaluated batch.
type BatchRef struct {
	Gateway string
	Seq     uint64
	Site    string
	Asset   string
	TSGW    int64
}

// natsIO is what the commit path needs of a running connection.
type natsIO struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	mq     mqtt.Client
	// fence: partition workers fence their partition before a restore
	// and their outputs carry the fence (fence.go): the server checks it
	// (2.11 and later) and the stream captures the group's fence subjects
	fence bool
}

// output is one alert or KPI message; msgID deduplicates a re-publish
// after a takeover (JetStream Nats-Msg-Id). It starts with the group: two
// groups on one stream publish the same alerts and KPIs, and without it
// the stream's duplicate window dropped the second group's as repeats.
type output struct {
	subject string
	data    []byte
	msgID   string
}

// kvWrite is one asset record to checkpoint, expected at revision rev.
type kvWrite struct {
	asset [2]string
	key   string
	data  []byte
	rev   uint64
}

// cycle collects what one evaluate-publish-checkpoint cycle produced.
type cycle struct {
	outs    []output
	kv      []kvWrite
	batches []BatchRef      // evaluated since the last checkpoint, for onCommit only (tests)
	batch   telemetry.Batch // decoded into, message after message
	// the alert events and KPI results of outs, shown (recent alerts, the
	// dashboard, the log) once published: a cycle dropped unpublished
	// (ownership lost) shows nothing
	alerts []alert.Alert
	kpis   []kpi.Result
	// own: the worker's hold on its partition, checked before publishing
	// (nil: Handle, Tick, tests)
	own *tenure
	// foreign: another partition's message was delivered (and skipped) in
	// this cycle; the worker sets its consumer's filter again
	foreign bool
}

func (cy *cycle) reset() {
	clear(cy.batches)
	clear(cy.alerts)
	clear(cy.kpis)
	cy.outs, cy.kv, cy.batches, cy.alerts, cy.kpis = cy.outs[:0], cy.kv[:0], cy.batches[:0], cy.alerts[:0], cy.kpis[:0]
}

// clockSkewedHelp is the help of smelter_collector_gateways_clock_skewed:
// a count per direction, not a series per gateway (up to
// dashboard.MaxGateways gateways would be as many series); which gateways
// is /api/v1/gateways' clock_skew.
const clockSkewedHelp = "Gateways of this replica's list (/api/v1/gateways) whose measured clock offset (clock_offset_ms: the median ts_gw minus arrival of their last 5 live batches of the last minute) lies beyond http.gateway_clock_tolerance (default 2s; 0s: both 0), ahead or behind (direction); online gateways only (not silent or offline); which ones: /api/v1/gateways, clock_skew."

type metrics struct {
	ingested   *prometheus.CounterVec
	duplicates prometheus.Counter
	late       prometheus.Counter
	malformed  *prometheus.CounterVec
	published  *prometheus.CounterVec
	pubErrors  prometheus.Counter
	rejected   prometheus.Counter
	sigRefused *prometheus.CounterVec
	takeovers  prometheus.Counter
	fenced     prometheus.Counter
	fenceBusy  prometheus.Counter
	checkpts   prometheus.Counter
	owned      prometheus.Gauge
	dropped    *prometheus.CounterVec
	future     prometheus.Counter
	// ahead: batches, births and deaths dated ahead of the collector's
	// clock inside max_future, set to the arrival (ingest.BoundBatch)
	ahead *prometheus.CounterVec
	// shifted: batches, births and deaths whose gateway times were moved
	// by the gateway clock's lead measured from Smelter-Sent-At;
	// sentAtIgnored: such headers ignored, by reason (ingest.SentAtLead)
	shifted       *prometheus.CounterVec
	sentAtIgnored *prometheus.CounterVec
	// foreignBirths: births applied from a gateway other than the one
	// the asset is alive on (review6 F5)
	foreignBirths prometheus.Counter
	// foreign: messages of another partition delivered to a partition's
	// consumer (its filter not the partition's; review12 F1)
	foreign prometheus.Counter
	// workerStops: partition workers ended by an error (restarted after 1 s)
	workerStops prometheus.Counter
	// restored: alert events of a replay not published again, found on the
	// stream by the restore's read-back (reconcile)
	restored  prometheus.Counter
	badState  *prometheus.CounterVec
	partsDrop *prometheus.CounterVec
	// rateLimited: HTTP API requests refused by http.rate_limit (httplimit.go)
	rateLimited *prometheus.CounterVec
	// rewatches: watches of the KV buckets set up again after theirs
	// ended, by watch (watchMembers, watchState)
	rewatches *prometheus.CounterVec
	// pullDials: partition workers' pull connections set up (natswire),
	// by result (ok, error)
	pullDials *prometheus.CounterVec

	// ingestedData is ingested's kind="data" series, looked up at the
	// first data message (not before: the series appears with it, as it
	// did) and kept: a label lookup per message was 0.7 % of the ingest
	// path's CPU
	ingestedData atomic.Pointer[prometheus.Counter]
}

// The watches of smelter_collector_rewatches_total.
const (
	watchMembers = "members" // the group's members bucket (members.run)
	watchState   = "state"   // a partition's state records while its worker loads them (loadWatch)
)

// New builds a collector from a validated config and rule set. It does no
// I/O. reg receives the collector's metrics.
func New(cfg Config, set *rules.Set, log *slog.Logger, reg *prometheus.Registry) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if set == nil {
		return nil, errors.New("collector: rule set is nil")
	}
	c := &Collector{cfg: cfg, log: log, cat: catalog.Default(), set: set, shards: map[int]*shard{}, reg: reg, live: dashboard.NewLive(nil, dashboard.WithSilentAfter(time.Duration(cfg.HTTP.GatewaySilentAfter)),
		dashboard.WithClockTolerance(time.Duration(cfg.HTTP.GatewayClockTolerance)), dashboard.WithSeqWindow(cfg.DedupWindow)),
		liveLag: liveLag,
		streams: &dashboard.StreamStats{}}
	c.m = metrics{
		ingested:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_ingested_total", Help: "Messages processed, by kind."}, []string{"kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_duplicates_total", Help: "Batches dropped as duplicates of (gateway, seq) or as redeliveries of checkpointed batches; births and deaths not applied because they lie at or behind the asset's recorded (gateway, seq) (within dedup_window, or further behind and before its newest batch, birth or death in ts_gw; a birth or death without a comparable seq, of another gateway or seq 0: before its newest batch, birth or death in ts_gw)."}),
		late:       prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_late_beyond_window_total", Help: "Batches older than the dedup window, accepted unchecked."}),
		malformed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_malformed_total", Help: "Messages rejected, by reason."}, []string{"reason"}),
		published:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_published_total", Help: "Alert and KPI messages accepted by JetStream, by kind."}, []string{"kind"}),
		pubErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_publish_errors_total", Help: "Failed publishes and KV writes (the input is then not acknowledged)."}),
		rejected:   prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_assets_rejected_total", Help: "Messages of new assets skipped because max_assets assets are tracked."}),
		sigRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_signals_refused_total",
			Help: "Readings (kind data) and birth signals (kind birth) of signals an asset does not hold, refused because it holds max_signals_per_asset signals; readings whose signal name or unit breaks the schema's bounds (kind invalid)."}, []string{"kind"}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_partition_acquired_total", Help: "Partitions this replica started to own."}),
		fenced:    prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_checkpoint_conflicts_total", Help: "Checkpoints refused because another replica wrote the asset's state first."}),
		fenceBusy: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_fence_busy_total", Help: "Fenced alert and KPI publishes a replicated stream answered busy (10164: another publish with the same expected subject being stored) and that were sent again after a short wait."}),
		checkpts:  prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_checkpoints_total", Help: "Asset state records written to the state bucket."}),
		owned:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_collector_partitions_owned", Help: "Partitions this replica consumes now."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_cycles_dropped_total",
			Help: "Partition cycles dropped unpublished because this replica lost, or could not confirm, its ownership of the partition, by reason: membership (no heartbeat acknowledged for 3/4 member_timeout since the partition was taken: paused, frozen or cut off) pin (the server pinned another client) or fence (the stream refused an output: another worker fenced the partition since this one restored it); the partition restarts from its newest checkpoint."},
			[]string{"reason"}),
		badState: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_state_records_skipped_total",
			Help: "State records not restored, by reason: unreadable (the asset starts afresh and its next checkpoint replaces the record) or other_partition (the record of an asset another partition owns now: partitions changed)."}, []string{"reason"}),
		partsDrop: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_birth_parts_dropped_total",
			Help: "Parts of split births dropped before their birth completed, by reason: parts (more than ingest.MaxBirthParts announced), bytes (one birth's parts over ingest.MaxBirthPartBytes), evicted (the oldest incomplete birth, for room: 256 births or ingest.MaxBirthPartsHeld bytes per partition), expired (incomplete for ingest.BirthPartsTTL)."}, []string{"reason"}),
		future: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_future_timestamps_total",
			Help: "Readings whose source time, and batches, births and deaths whose ts_gw, lay more than max_future (default 5m) ahead of the collector's clock; their time was replaced by the arrival time."}),
		ahead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_clock_ahead_total",
			Help: "Batches, births and deaths (kind) dated ahead of the collector's clock by less than max_future (a gateway clock running fast, or another gateway of the site); each time later than the arrival (the collector's clock when read; for a backlog, the stream's time of the message) was set to it."}, []string{"kind"}),
		shifted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_clock_shifted_total",
			Help: "Batches, births and deaths (kind) whose ts_gw, and a batch's Modbus and NMEA reading times, were moved by their gateway clock's lead: its Smelter-Sent-At header minus the arrival, ahead beyond clock_shift_tolerance (default 2s) and within max_future (a lead behind moves nothing); spacing kept, so a fast gateway's drained backlog keeps its time axis."}, []string{"kind"}),
		sentAtIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_sent_at_ignored_total",
			Help: "Smelter-Sent-At headers ignored (the message's times not moved), by reason: malformed (not 1-16 digits), before_ts_gw (a publish before the message's ts_gw: forged or broken), beyond_max_future (a lead ahead beyond max_future)."}, []string{"reason"}),
		foreignBirths: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_foreign_births_total",
			Help: "Births applied from a gateway other than the one the asset is alive on (its newest batch's, not dead, not silent): they replace the asset's signal list, ranges and nameplate until its next birth (two gateways configured with the same asset, a moved asset's old gateway, or a forged birth; docs/collector.md, \"Permissions\")."}),
		foreign: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_foreign_partition_messages_total",
			Help: "Messages of another partition delivered to a partition's consumer (its filter not the partition's: created while the server's version was unknown, or edited by hand): not evaluated; the worker restarts and sets the filter again."}),
		workerStops: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_partition_worker_stops_total",
			Help: "Partition workers ended by an error (each logged, \"partition worker stopped\", with its cause) and started again after 1 s; ownership handed over or lost is counted too. A rate that does not fall back to 0 is a worker in a restart loop."}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_events_already_stored_total",
			Help: "Alert events evaluated again after a restart or takeover (messages redelivered) that the restore found on the stream already (read back, same Nats-Msg-Id): not published again, so no subscriber sees them twice, also past the stream's duplicate window."}),
		rateLimited: newRateLimitedMetric(),
		rewatches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_rewatches_total",
			Help: "Watches of the collector's KV buckets that ended while it ran and were set up again, by watch: members (the group's members bucket; watched again with backoff, the bucket created again when a restarted server lost it) or state (a partition's state records while its worker loaded them; the worker starts again). Each is one episode: a broker restart, a lost stream leader, a cut connection."},
			[]string{"watch"}),
		pullDials: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_pull_connections_total",
			Help: "NATS connections set up by partition workers for their pulls (one per partition owned, with the collector's credentials and TLS, to the server its main connection is on), by result: ok, or error (logged at WARN, rate-limited; the worker tries again with its next pull). One per partition at the start and after each broker restart or cut connection (a pull refused by the user's permissions keeps its connection: no dial); a rising error count means the pulls cannot reach the server (connection limits, credentials, TLS), dialed again after 100 ms doubling up to 5 s."},
			[]string{"result"}),
	}
	for _, k := range []telemetry.Kind{telemetry.KindData, telemetry.KindBirth, telemetry.KindDeath} { // present at 0
		c.m.ahead.WithLabelValues(string(k))
		c.m.shifted.WithLabelValues(string(k))
	}
	for _, r := range ingest.SentAtReasons {
		c.m.sentAtIgnored.WithLabelValues(r)
	}
	for _, w := range cfg.SignalBoundWarnings(set, c.cat) {
		log.Warn(w)
	}
	for _, k := range refusedKinds { // present at 0: an alert on increase() sees "never" as 0
		c.m.sigRefused.WithLabelValues(string(k))
	}
	stat := func(name, help string, f func(rules.Stats, kpi.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			n := c.counts()
			return f(n.r, n.k)
		})
	}
	dedupStat := func(name, help string, f func(ingest.DedupStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			return float64(f(c.counts().d))
		})
	}
	cs := []prometheus.Collector{c.m.ingested, c.m.duplicates, c.m.late, c.m.malformed, c.m.published, c.m.pubErrors,
		c.m.rejected, c.m.sigRefused, c.m.takeovers, c.m.fenced, c.m.fenceBusy, c.m.checkpts, c.m.owned, c.m.dropped, c.m.future, c.m.ahead, c.m.shifted, c.m.sentAtIgnored, c.m.foreignBirths, c.m.foreign, c.m.workerStops, c.m.restored, c.m.badState, c.m.partsDrop,
		c.m.rateLimited, c.m.rewatches, c.m.pullDials, c.stalledGauge(),
		stat("smelter_collector_rule_evaluations_total", "Rule evaluations.", func(r rules.Stats, _ kpi.Stats) float64 { return float64(r.Evaluations) }),
		stat("smelter_collector_late_batches_total", "Batches older than their asset's newest, not evaluated.", func(r rules.Stats, _ kpi.Stats) float64 { return float64(r.Late) }),
		stat("smelter_collector_readings_total", "Readings evaluated.", func(r rules.Stats, _ kpi.Stats) float64 { return float64(r.Readings) }),
		stat("smelter_collector_alerts_raised_total", "Alerts raised (rules and KPIs).", func(r rules.Stats, k kpi.Stats) float64 { return float64(r.Raised + k.Raised) }),
		stat("smelter_collector_alerts_cleared_total", "Alerts cleared (rules and KPIs).", func(r rules.Stats, k kpi.Stats) float64 { return float64(r.Cleared + k.Cleared) }),
		stat("smelter_collector_kpi_computations_total", "KPI windows computed.", func(_ rules.Stats, k kpi.Stats) float64 { return float64(k.Windows) }),
		dedupStat("smelter_collector_seq_jumps_total", "Batches whose seq jumped more than the dedup window ahead of every tracked run of their gateway (a new run started).",
			func(d ingest.DedupStats) uint64 { return d.Jumps }),
		dedupStat("smelter_collector_dedup_gateways_evicted_total", "Gateways dropped from deduplication at its bound (ingest.MaxGateways) to make room for a new gateway id.",
			func(d ingest.DedupStats) uint64 { return d.GatewaysEvicted }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "smelter_collector_dashboard_gateways_evicted_total",
			Help: "Gateways dropped from the dashboard's gateway list (/api/v1/gateways) at its bound (dashboard.MaxGateways), the one seen least recently, to make room for a new gateway id."}, func() float64 {
			return float64(c.live.Stats().GatewaysEvicted)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "smelter_collector_dashboard_stream_lag_snapshots_total",
			Help: "Dashboard event streams (gateways=delta) that fell behind the gateway removal log (dashboard.RemovalLog) and were sent a fresh gateway snapshot instead of a delta."}, func() float64 {
			return float64(c.live.Stats().GatewayResyncs)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_dashboard_streams_open",
			Help: "Dashboard event streams (/api/v1/events) open now (limit http.max_streams)."}, func() float64 {
			return float64(c.streams.Open())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "smelter_collector_dashboard_streams_refused_total", ConstLabels: prometheus.Labels{"limit": "max_streams"},
			Help: streamsRefusedHelp}, func() float64 {
			all, one := c.streams.Refused()
			return float64(all - one)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "smelter_collector_dashboard_streams_refused_total", ConstLabels: prometheus.Labels{"limit": "max_streams_per_client"},
			Help: streamsRefusedHelp}, func() float64 {
			_, one := c.streams.Refused()
			return float64(one)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "smelter_collector_dashboard_streams_timed_out_total",
			Help: "Dashboard event streams closed because their client did not take an event within http.stream_write_timeout (a client that stopped reading)."}, func() float64 {
			return float64(c.streams.TimedOut())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_gateways_clock_skewed", ConstLabels: prometheus.Labels{"direction": "ahead"},
			Help: clockSkewedHelp}, func() float64 {
			ahead, _ := c.live.ClockSkewed()
			return float64(ahead)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_gateways_clock_skewed", ConstLabels: prometheus.Labels{"direction": "behind"},
			Help: clockSkewedHelp}, func() float64 {
			_, behind := c.live.ClockSkewed()
			return float64(behind)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_alerts_active", Help: "Active alerts."}, func() float64 {
			return float64(len(c.Alerts(true)))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smelter_collector_assets_tracked", Help: "Assets tracked (limit max_assets)."}, func() float64 {
			return float64(c.trackedAssets()) // from the shards, never an incremental count
		}),
	}
	for _, x := range cs {
		if err := reg.Register(x); err != nil {
			return nil, fmt.Errorf("collector: metrics: %w", err)
		}
	}
	// Every reason of the counters an alert rule takes increase() of exists
	// at 0 from the start: a series created by its first count shows that
	// count as its first sample, not as an increase, and
	// SmelterCollectorOwnershipLost would miss a replica's first ownership
	// loss (review 2, finding 2).
	for _, r := range []string{reasonMembership, reasonPin, reasonFence} {
		c.m.dropped.WithLabelValues(r)
	}
	for _, r := range []string{skippedUnreadable, skippedOtherPartition} {
		c.m.badState.WithLabelValues(r)
	}
	for _, w := range []string{watchMembers, watchState} {
		c.m.rewatches.WithLabelValues(w)
	}
	for _, r := range []string{"ok", "error"} {
		c.m.pullDials.WithLabelValues(r)
	}
	for _, r := range ingest.PartsDropReasons {
		c.m.partsDrop.WithLabelValues(r)
	}
	// malformed_total's every reason, for the shipped rate() > 0 alert
	for _, r := range malformedReasons {
		c.m.malformed.WithLabelValues(r)
	}
	if cfg.History != nil {
		var err error
		if c.histM, err = history.NewMetrics(reg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// shard returns the shard of partition p, creating it.
func (c *Collector) shard(p int) *shard {
	c.mu.Lock()
	defer c.mu.Unlock()
	sh, ok := c.shards[p]
	if !ok {
		sh = c.newShard(p)
		c.shards[p] = sh
	}
	return sh
}

// dropShard forgets a partition's state (released, or its checkpoint
// failed and the bucket is the truth again). Idempotent: a failed commit
// and the end of its worker both drop the same shard. The asset count used
// for max_assets is then recomputed from the shards that remain, so no
// order of drops and late cycles can leave it off (it used to go negative).
func (c *Collector) dropShard(sh *shard) {
	c.mu.Lock()
	dropped := c.shards[sh.p] == sh
	if dropped {
		delete(c.shards, sh.p)
	}
	c.mu.Unlock()
	if dropped {
		c.retire(sh)
	}
	c.tracked.Store(int64(c.trackedAssets()))
}

// shardCounts are the counts the collector's counters sum over shards.
type shardCounts struct {
	r rules.Stats
	k kpi.Stats
	d ingest.DedupStats
}

func (n *shardCounts) add(sh *shard) {
	rs, ks, ds := sh.engine.Stats(), sh.kpis.Stats(), sh.dedup.Stats()
	n.r.Evaluations += rs.Evaluations
	n.r.Late += rs.Late
	n.r.Readings += rs.Readings
	n.r.Raised += rs.Raised
	n.r.Cleared += rs.Cleared
	n.k.Raised += ks.Raised
	n.k.Cleared += ks.Cleared
	n.k.Windows += ks.Windows
	n.d.Jumps += ds.Jumps
	n.d.GatewaysEvicted += ds.GatewaysEvicted
}

// retire adds the counts of a shard no longer listed (dropped or
// replaced) to the retired ones, once; later counts of it are not kept.
func (c *Collector) retire(sh *shard) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gone {
		return
	}
	sh.gone = true
	c.retired.add(sh)
}

// counts are the retired counts and those of the shards listed now, each
// shard counted once: in the sum of its counts until retired, then in
// retired.
func (c *Collector) counts() shardCounts {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	n := c.retired
	for _, sh := range c.shardList() {
		sh.mu.Lock()
		if !sh.gone {
			n.add(sh)
		}
		sh.mu.Unlock()
	}
	return n
}

// trackedAssets counts the assets of the shards this replica holds now.
func (c *Collector) trackedAssets() int {
	n := 0
	for _, s := range c.shardList() {
		s.mu.Lock()
		n += s.engine.Len()
		s.mu.Unlock()
	}
	return n
}

// Handle processes one message from any source on partition 0 (single
// replica mode: the MQTT source, tests) and, when the collector runs,
// publishes its outputs and checkpoints the state it changed before it
// returns. Malformed messages are counted, logged with their subject and
// skipped (nil error). An error means the message must be redelivered.
func (c *Collector) Handle(ctx context.Context, subject string, data []byte) error {
	sh := c.shard(0)
	sh.cycle.Lock()
	defer sh.cycle.Unlock()
	io := c.js.Load()
	if io != nil && !c.ensureLoaded(ctx, io, sh) {
		return errors.New("collector: partition state not loaded")
	}
	var cy cycle
	c.adoptBefore(sh, math.MaxUint64) // no stream order here (MQTT)
	c.process(sh, subject, data, time.Now(), &cy)
	if err := c.commit(ctx, io, sh, &cy); err != nil {
		c.dropShard(sh)
		return err
	}
	return nil
}

// ensureLoaded restores the shard from the bucket once.
func (c *Collector) ensureLoaded(ctx context.Context, io *natsIO, sh *shard) bool {
	sh.mu.Lock()
	ok := sh.loaded
	sh.mu.Unlock()
	if ok {
		return true
	}
	if err := c.load(ctx, io.kv, sh, ""); err != nil {
		c.log.Warn("partition state", "partition", sh.p, "err", err)
		return false
	}
	return true
}

// process evaluates one message into cy; it takes sh.mu. data is the
// caller's: it may change once process returns. arrival is when the
// message arrived (ingest.BoundBatch): now, a live message (MQTT, Sparkplug
// and Handle's messages arrive when received).
func (c *Collector) process(sh *shard, subject string, data []byte, arrival time.Time, cy *cycle) {
	c.processPayload(sh, subject, data, false, arrival, true, arrival.UnixMilli(), "", cy)
}

// processPayload is process; with stable, data does not change before the
// end of the worker's cycle (a view into the pull connection's read chunk,
// which is read into again once the cycle is done: natswire.Conn.Release),
// so a batch's strings are substrings of it instead of a copy: nothing
// kept past the cycle may be one (copy it: strings.Clone; the collector's
// tests run with released chunks made inaccessible, natswire.SetGuard).
// arrival is when the message arrived (arrivedAt), live whether it is a
// live message (not a backlog): only a live batch measures its gateway's
// clock (dashboard.Clock). stored is when the stream stored the message
// (Unix ms: a JetStream message's stored time, live or not; the arrival of
// a message of a source without one): the second clock, beside ts_gw, on
// which the rules find a silence inside a backlog (rules.Engine.Process).
// sentAt is the message's Smelter-Sent-At header
// ("" when none: MQTT, Sparkplug, Handle): the gateway clock's lead it
// measures moves the message's gateway times (shiftLead).
func (c *Collector) processPayload(sh *shard, subject string, data []byte, stable bool, arrival time.Time, live bool, stored int64, sentAt string, cy *cycle) {
	kind := subject[strings.LastIndexByte(subject, '.')+1:]
	switch telemetry.Kind(kind) {
	case telemetry.KindData:
		b := &cy.batch // nothing keeps a batch or its readings past its evaluation
		var err error
		if stable {
			err = telemetry.DecodeBatchStringInto(b, unsafe.String(unsafe.SliceData(data), len(data)))
		} else {
			err = telemetry.DecodeBatchInto(b, data)
		}
		if err != nil {
			c.malformed(subject, err)
			return
		}
		if err := ingest.Check(subject, b, c.cat); err != nil {
			c.rejected(subject, err)
			return
		}
		clk := dashboard.Clock{TSGW: b.TSGW, Arrival: arrival.UnixMilli(), Live: live} // as sent: the gateway's clock
		if tol := time.Duration(c.cfg.MaxFuture); tol > 0 {
			if lead := c.batchLead(sh, subject, b, sentAt, arrival); lead != 0 {
				ingest.ShiftBatch(b, lead)
			}
			was := b.TSGW
			n, gwFuture, ahead := ingest.BoundBatch(b, arrival, tol)
			clk.Bounded = ahead || n > 0 || gwFuture
			if gwFuture { // the batch's ts_gw itself, beyond max_future (review10 F3)
				c.m.future.Inc()
			}
			if n > 0 || gwFuture {
				c.m.future.Add(float64(n))
				c.warnLimited("future", "batch timestamped in the future: its times beyond max_future replaced by the arrival time (gateway clock fast?)",
					"subject", logCut(subject), "gateway", b.Gateway, "seq", b.Seq, "readings", n, "ts_gw", was, "lead_ms", was-b.TSGW, "tolerance", tol)
			}
			if ahead {
				c.aheadOfClock(telemetry.KindData, subject, b.Gateway, b.Seq, was, b.TSGW)
			}
		}
		inTimeOrder(b)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		// the asset's one lookup: its handles into the engine, the KPI
		// tracker, the dashboard store and the dirty list (assetRef)
		ref := sh.refs[[2]string{b.Asset.Site(), b.Asset.ID}]
		if (ref == nil || !sh.bind(ref)) && !c.admit(sh, b.Asset.Site(), b.Asset.ID) {
			return
		}
		defer c.count(sh, sh.engine.Len())
		if sh.engine.Duplicate(b, uint64(c.cfg.DedupWindow)) {
			c.m.duplicates.Inc()
			c.log.Debug("batch already evaluated", "partition", sh.p, "gateway", b.Gateway, "seq", b.Seq, "asset", b.Asset.ID)
			return
		}
		dup, late := sh.dedup.SeenPart(b.Gateway, b.Seq, b.Part, b.Parts)
		if dup {
			c.m.duplicates.Inc()
			c.log.Debug("duplicate batch", "partition", sh.p, "gateway", b.Gateway, "seq", b.Seq, "asset", b.Asset.ID)
			return
		}
		if late {
			c.m.late.Inc()
		}
		// readings whose names or units break the schema's bounds, and
		// readings of signals beyond the asset's bound, go before anything
		// evaluates or stores them; the rest of the batch is evaluated
		invalid, firstInvalid := ingest.DropInvalid(b)
		if r := sh.engine.LimitSignals(b, c.cfg.MaxSignalsPerAsset); r.Refused > 0 {
			c.signalsRefused(b.Asset.Site(), b.Asset.ID, b.Asset.Class, b.Gateway, telemetry.KindData, r)
		}
		if invalid > 0 {
			c.signalsRefused(b.Asset.Site(), b.Asset.ID, b.Asset.Class, b.Gateway, refusedInvalid,
				sh.engine.NoteRefused(b.Asset.Site(), b.Asset.ID, invalid, firstInvalid))
		}
		late0 := sh.engine.Stats().Late
		al := sh.engine.Process(b, stored, sh.scratch[:0])
		if ref == nil { // the asset's first batch here: its key the engine's copies
			ref = sh.ref(b.Asset.Site(), b.Asset.ID)
		}
		if sh.engine.Stats().Late != late0 {
			c.log.Debug("batch older than its asset's newest, not evaluated", "partition", sh.p, "gateway", b.Gateway, "seq", b.Seq, "asset", b.Asset.ID)
			c.live.ObserveBatchAt(&ref.live, b, true, clk) // the asset stays on its newest evaluated message's gateway
		} else {
			c.live.ObserveBatchAt(&ref.live, b, false, clk)
		}
		var res []kpi.Result
		res, al = sh.kpis.ProcessAt(&ref.kpi, b, sh.results[:0], al)
		c.record(sh, al, res, cy)
		sh.scratch, sh.results = al[:0], res[:0]
		// what outlives the batch holds no view into its payload: the
		// ref's copies of the asset's key (a payload kept alive by the
		// dirty list or the cycle would be held until the checkpoint)
		sh.markDirty(ref)
		if c.onCommit != nil {
			k := ref.key
			_, gw, _ := sh.engine.Key(k[0], k[1])
			if gw != b.Gateway {
				gw = strings.Clone(b.Gateway)
			}
			cy.batches = append(cy.batches, BatchRef{Gateway: gw, Seq: b.Seq, Site: k[0], Asset: k[1], TSGW: b.TSGW})
		}
	case telemetry.KindBirth:
		bi, err := telemetry.DecodeBirth(data)
		if err != nil {
			c.malformed(subject, err)
			return
		}
		as := bi.Asset.FromJSON()
		if err := ingest.CheckAsset(subject, bi.Gateway, as, c.cat); err != nil {
			c.rejected(subject, err)
			return
		}
		if err := ingest.CheckBirth(bi, c.cat); err != nil {
			c.rejected(subject, err)
			return
		}
		sh.mu.Lock()
		if !c.admit(sh, as.Site(), as.ID) {
			sh.mu.Unlock()
			return
		}
		if bi.Parts > 0 { // a part of a split birth: wait for the others
			bi, err = sh.births.Add(bi, len(data), time.Now())
			if err != nil || bi == nil {
				sh.mu.Unlock()
				if ingest.ReasonOf(err) != "" {
					c.rejected(subject, err)
				} else if err != nil {
					c.malformed(subject, err)
				}
				return
			}
			if err := ingest.CheckBirthTotals(bi); err != nil {
				sh.mu.Unlock()
				c.rejected(subject, err)
				return
			}
		}
		// after a split birth's parts are merged (they share their ts_gw),
		// by the lead the last part's header measures
		c.shiftLead(telemetry.KindBirth, subject, bi.Gateway, bi.Seq, sentAt, arrival, &bi.TSGW)
		bounded := c.clampFuture(telemetry.KindBirth, subject, bi.Gateway, bi.Seq, arrival, &bi.TSGW)
		if sh.engine.BirthBehind(bi, uint64(c.cfg.DedupWindow)) {
			// at or behind the newest message of its gateway the asset's
			// state includes: redelivered after a restart or takeover, or
			// an older birth replayed behind newer data; or, without a
			// comparable seq (another gateway, seq 0), older in ts_gw than
			// the asset's newest batch, birth or death. Applied, it would
			// set the asset back (its signal list drops what a newer birth
			// and the batches since brought; an old birth would end a newer
			// death); the dashboard skips it too
			sh.mu.Unlock()
			c.m.duplicates.Inc()
			c.log.Debug("birth behind the asset's state, not applied", "partition", sh.p, "gateway", bi.Gateway, "seq", bi.Seq, "asset", as.ID)
			return
		}
		cut, first := ingest.LimitBirth(bi, c.cfg.MaxSignalsPerAsset, c.cat)
		n := sh.engine.Len()
		al := sh.scratch[:0]
		if sh.engine.InForce(bi) {
			// the birth in force again (sent again by the gateway, or a
			// birth of seq 0 redelivered): nothing to apply; applied again
			// it would drop the signals that came since without being
			// listed (rules.Engine.InForce)
			c.log.Debug("birth already in force, not applied again", "partition", sh.p, "gateway", bi.Gateway, "seq", bi.Seq, "asset", as.ID)
			// but it still says the asset answers: a death or silence ends
			al = sh.engine.Revive(bi, stored, al)
		} else {
			if gw, alive := sh.engine.Current(as.Site(), as.ID); alive && gw != bi.Gateway {
				c.foreignBirth(subject, gw, bi)
			}
			al = sh.engine.Birth(bi, stored, al)
			sh.kpis.Birth(bi)
		}
		sh.engine.Mark(as.Site(), as.ID, bi.Gateway, bi.Seq)
		c.count(sh, n)
		if cut > 0 {
			c.signalsRefused(as.Site(), as.ID, as.Class, bi.Gateway, telemetry.KindBirth,
				sh.engine.NoteRefused(as.Site(), as.ID, cut, first))
		}
		c.record(sh, al, nil, cy)
		sh.scratch = al[:0]
		sh.dirtyKey(as.Site(), as.ID)
		sh.mu.Unlock()
		c.live.ObserveBirth(bi)
		if bounded {
			c.live.ObserveClockBounded(bi.Gateway)
		}
	case telemetry.KindDeath:
		var d telemetry.Death
		if err := json.Unmarshal(data, &d); err != nil {
			c.malformed(subject, fmt.Errorf("%w: %w", telemetry.ErrInvalid, err))
			return
		}
		if d.Schema != telemetry.SchemaDeath {
			c.malformed(subject, fmt.Errorf("%w: %q (want %q)", telemetry.ErrSchema, d.Schema, telemetry.SchemaDeath))
			return
		}
		if !telemetry.ValidToken(d.Asset.ID) || !telemetry.ValidToken(d.Asset.Class) {
			c.malformed(subject, fmt.Errorf("%w: death needs asset.id and asset.class tokens", telemetry.ErrInvalid))
			return
		}
		d.Reason = telemetry.CutText(d.Reason, telemetry.MaxSrcLen) // kept per asset (docs/schema.md, "Bounds")
		as := d.Asset.FromJSON()
		if err := ingest.CheckAsset(subject, d.Gateway, as, c.cat); err != nil {
			c.rejected(subject, err)
			return
		}
		c.shiftLead(telemetry.KindDeath, subject, d.Gateway, d.Seq, sentAt, arrival, &d.TSGW)
		bounded := c.clampFuture(telemetry.KindDeath, subject, d.Gateway, d.Seq, arrival, &d.TSGW)
		sh.mu.Lock()
		if !c.admit(sh, as.Site(), as.ID) {
			sh.mu.Unlock()
			return
		}
		if sh.engine.DeathBehind(&d, uint64(c.cfg.DedupWindow)) {
			// older than what the asset's state includes (redelivered after
			// a restart or takeover, with the birth and batches after it
			// already evaluated): applied, it would mark a live asset dead
			// and raise its silence
			sh.mu.Unlock()
			c.m.duplicates.Inc()
			c.log.Debug("death behind the asset's state, not applied", "partition", sh.p, "gateway", d.Gateway, "seq", d.Seq, "asset", as.ID)
			return
		}
		c.live.ObserveDeath(&d)
		if bounded {
			c.live.ObserveClockBounded(d.Gateway)
		}
		n := sh.engine.Len()
		al := sh.engine.Death(&d, sh.scratch[:0])
		sh.engine.Mark(as.Site(), as.ID, d.Gateway, d.Seq)
		c.count(sh, n)
		c.record(sh, al, nil, cy)
		sh.scratch = al[:0]
		sh.dirtyKey(as.Site(), as.ID)
		sh.mu.Unlock()
	case telemetry.KindStatus:
		if !c.observeStatus(subject, data) {
			return
		}
	case telemetry.KindAlert, telemetry.KindKPI:
		if strings.Count(subject, ".") == 5 {
			return // the collector's outputs travel on the same tree
		}
		fallthrough
	default:
		// a subject of another length or kind, such as a 7-token
		// ...data.3 a 2.9 consumer (one filter, smelter.v1.>) receives
		c.m.malformed.WithLabelValues(string(ingest.ReasonSubject)).Inc()
		c.warnLimited("kind", "message on a subject of no known kind skipped", "subject", logCut(subject))
		return
	}
	c.m.ingest(kind)
}

// ingest counts one message of kind in ingested.
func (m *metrics) ingest(kind string) {
	if kind != string(telemetry.KindData) {
		m.ingested.WithLabelValues(kind).Inc()
		return
	}
	p := m.ingestedData.Load()
	if p == nil {
		// two shards may both look it up: WithLabelValues gives both the
		// same counter
		cnt := m.ingested.WithLabelValues(kind)
		p = &cnt
		m.ingestedData.Store(p)
	}
	(*p).Inc()
}

// inTimeOrder puts b's readings in the order of their times (stable: the
// readings of one time keep their order) when they are not already: the
// rules, KPIs and the dashboard take a signal's value from its last
// reading in the batch, and a batch listing one signal's samples newest
// first showed the oldest sample's value with the newest's time (review9
// F3). The schema does not order a batch's readings; smelter-gateway's are
// in order already (one time per cycle), and checking costs one pass.
func inTimeOrder(b *telemetry.Batch) {
	byTS := func(x, y telemetry.Reading) int { return cmp.Compare(x.TS, y.TS) }
	if !slices.IsSortedFunc(b.Readings, byTS) {
		slices.SortStableFunc(b.Readings, byTS)
	}
}

// clampFuture bounds the ts_gw of a birth or death (kind) by the
// collector's clock at arrival (ingest.BoundTSGW): one more than
// max_future ahead is replaced by the arrival time and counted in
// smelter_collector_future_timestamps_total; one ahead inside max_future
// is set to the arrival time and counted in
// smelter_collector_clock_ahead_total; bounded reports either. Births and deaths without a
// comparable seq are ordered on ts_gw against the asset's newest batch,
// birth or death (rules.Engine.BirthBehind, DeathBehind), and nothing
// older than a death ends it: one dated 2100 would hold the asset dead,
// or its signal list and ranges in force, until then (review4 F6); one
// dated a few minutes ahead would date its alert ahead (review6 F4).
func (c *Collector) clampFuture(kind telemetry.Kind, subject, gateway string, seq uint64, arrival time.Time, tsgw *int64) (bounded bool) {
	tol := time.Duration(c.cfg.MaxFuture)
	if tol <= 0 {
		return false
	}
	was := *tsgw
	future, ahead := ingest.BoundTSGW(tsgw, arrival, tol)
	if ahead {
		c.aheadOfClock(kind, subject, gateway, seq, was, *tsgw)
	}
	if !future {
		return ahead
	}
	c.m.future.Inc()
	c.warnLimited("future", "message timestamped in the future: its ts_gw replaced by the arrival time", "kind", kind,
		"subject", logCut(subject), "gateway", gateway, "seq", seq, "ts_gw", was, "tolerance", tol)
	return true
}

// sentAtLead measures the lead of the gateway clock of a message (kind,
// its ts_gw) from its Smelter-Sent-At header (ingest.SentAtLead) and counts
// and logs (at most once a minute) a header it ignores. 0 with max_future
// 0s (times as sent) or without a header.
func (c *Collector) sentAtLead(kind telemetry.Kind, subject, gateway string, seq uint64, sentAt string, tsgw int64, arrival time.Time) int64 {
	mf := time.Duration(c.cfg.MaxFuture)
	if sentAt == "" || mf <= 0 {
		return 0
	}
	lead, reason := ingest.SentAtLead(sentAt, tsgw, arrival, c.cfg.clockShiftTolerance(), mf)
	if reason != "" {
		c.m.sentAtIgnored.WithLabelValues(reason).Inc()
		c.warnLimited("sent-at", "Smelter-Sent-At header ignored: the message's times are not moved by it (forged or broken header, or a clock beyond max_future)",
			"reason", reason, "kind", kind, "subject", logCut(subject), "gateway", gateway, "seq", seq, "sent_at", logCut(sentAt), "ts_gw", tsgw, "arrival", arrival.UnixMilli())
	}
	return lead
}

// shiftLead moves a birth's or death's ts_gw (kind) by the lead of its
// gateway's clock its Smelter-Sent-At header measures (sentAtLead), so it
// stays in place among the gateway's batches, moved the same way; counted
// in smelter_collector_clock_shifted_total.
func (c *Collector) shiftLead(kind telemetry.Kind, subject, gateway string, seq uint64, sentAt string, arrival time.Time, tsgw *int64) {
	lead := c.sentAtLead(kind, subject, gateway, seq, sentAt, *tsgw, arrival)
	if lead == 0 {
		return
	}
	ingest.ShiftTSGW(tsgw, lead)
	c.shifted(kind, subject, gateway, seq, lead)
}

// batchLead is the lead (ms) by which b's gateway times are moved
// (sentAtLead). The parts of a split batch share one ts_gw and seq, and
// the rules engine orders them on ts_gw: each part measured on its own
// could be moved a millisecond further back than the part before it and
// dropped as late, or, its header ignored, not moved at all. So every part
// is moved by the lead measured on the first part the shard saw
// (shard.partLeads), and counted once.
func (c *Collector) batchLead(sh *shard, subject string, b *telemetry.Batch, sentAt string, arrival time.Time) int64 {
	measure := func() int64 {
		lead := c.sentAtLead(telemetry.KindData, subject, b.Gateway, b.Seq, sentAt, b.TSGW, arrival)
		if lead != 0 {
			c.shifted(telemetry.KindData, subject, b.Gateway, b.Seq, lead)
		}
		return lead
	}
	if b.Parts == 0 {
		return measure()
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	k := partKey{b.Gateway, b.Seq, b.Parts}
	lead, seen := sh.partLeads[k]
	if !seen {
		lead = measure()
		if len(sh.partLeads) >= maxPartLeads {
			clear(sh.partLeads) // parts whose last part never came
		}
		k.gateway = strings.Clone(k.gateway) // b's strings may be views into its payload
		sh.partLeads[k] = lead
	}
	if b.Part == b.Parts {
		delete(sh.partLeads, k)
	}
	return lead
}

// shifted counts a message whose times were moved by its gateway clock's
// lead and logs it (at most once a minute).
func (c *Collector) shifted(kind telemetry.Kind, subject, gateway string, seq uint64, lead int64) {
	c.m.shifted.WithLabelValues(string(kind)).Inc()
	c.warnLimited("shift", "message times moved by its gateway clock's lead (Smelter-Sent-At minus arrival): gateway clock wrong",
		"kind", kind, "subject", logCut(subject), "gateway", gateway, "seq", seq, "lead_ms", lead)
}

// foreignBirth counts a birth of gateway bi.Gateway applied to an asset
// alive on gateway cur, and logs it (at most once a minute): the site's
// trust model lets any gateway of the site declare the asset's signals,
// ranges and nameplate (docs/collector.md, "Permissions"); this shows
// when one does over the asset's current gateway (review6 F5).
func (c *Collector) foreignBirth(subject, cur string, bi *telemetry.Birth) {
	c.m.foreignBirths.Inc()
	c.warnLimited("foreign-birth", "birth of another gateway applied over the asset's live gateway: its declarations are in force until the next birth",
		"subject", logCut(subject), "gateway", bi.Gateway, "seq", bi.Seq, "current_gateway", cur)
}

// aheadOfClock counts a message (kind) dated ahead of the collector's
// clock inside max_future, set to the arrival, and logs it (at most once a
// minute): a gateway clock running fast.
func (c *Collector) aheadOfClock(kind telemetry.Kind, subject, gateway string, seq uint64, was, now int64) {
	c.m.ahead.WithLabelValues(string(kind)).Inc()
	c.warnLimited("ahead", "message dated ahead of the collector's clock: its times later than the arrival set to it (gateway clock fast?)",
		"kind", kind, "subject", logCut(subject), "gateway", gateway, "seq", seq, "ts_gw", was, "lead_ms", was-now)
}

// observeStatus feeds a gateway status message of the stream to the
// dashboard; a malformed one is counted and logged (once: showStatus, on
// the subscriptions every replica has besides, does not count it again).
func (c *Collector) observeStatus(subject string, data []byte) bool {
	if err := c.showStatus(subject, data); err != nil {
		c.malformed(subject, err)
		return false
	}
	return true
}

// showStatus feeds a gateway status message to the dashboard, or returns
// why it is malformed (telemetry.ErrInvalid).
func (c *Collector) showStatus(subject string, data []byte) error {
	var st telemetry.Status
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%w: %w", telemetry.ErrInvalid, err)
	}
	ps, err := telemetry.ParseSubject(subject)
	if err != nil || st.Schema != telemetry.SchemaStatus || !telemetry.ValidToken(st.Gateway) {
		return fmt.Errorf("%w: status needs schema %q, a gateway token and a smelter.v1 subject", telemetry.ErrInvalid, telemetry.SchemaStatus)
	}
	c.live.ObserveStatus(ps.Site, &st)
	return nil
}

// admit reports whether the asset is tracked or may be added under
// max_assets; sh.mu is held. A rejection is counted, and logged at most
// once a minute.
func (c *Collector) admit(sh *shard, site, id string) bool {
	if sh.engine.Has(site, id) {
		return true
	}
	if c.tracked.Load() >= int64(c.cfg.MaxAssets) {
		c.m.rejected.Inc()
		now := time.Now().Unix()
		if last := c.full.Load(); now-last >= 60 && c.full.CompareAndSwap(last, now) {
			c.log.Error("asset limit reached: messages of new assets are skipped", "max_assets", c.cfg.MaxAssets,
				"rejected_site", site, "rejected_asset", id)
		}
		return false
	}
	return true
}

// refusedInvalid is the kind label of smelter_collector_signals_refused_total
// for readings refused because their signal name or unit breaks the
// schema's bounds (telemetry.ValidSignal, telemetry.ValidUnit).
const refusedInvalid telemetry.Kind = "invalid"

// refusedKinds are the kind labels of smelter_collector_signals_refused_total,
// each present (at 0) from the start.
var refusedKinds = []telemetry.Kind{telemetry.KindData, telemetry.KindBirth, refusedInvalid}

// signalsRefused counts readings or birth signals refused by
// max_signals_per_asset (kind data or birth), or readings refused because
// their name or unit breaks the schema's bounds (kind invalid), and logs a
// warning when r says one is due (the first refusal of an asset, then at
// most once a minute per asset); sh.mu is held.
func (c *Collector) signalsRefused(site, id, class, gateway string, kind telemetry.Kind, r rules.Refusal) {
	c.m.sigRefused.WithLabelValues(string(kind)).Add(float64(r.Refused))
	if r.Warn {
		sample := r.First // a bad name may be up to a message long
		if len(sample) > 64 {
			sample = strings.ToValidUTF8(sample[:64], "") + "..."
		}
		if kind == refusedInvalid {
			c.log.Warn("readings refused: signal name or unit beyond the schema's bounds (docs/schema.md, \"Bounds\")", "site", site, "asset", id,
				"class", class, "gateway", gateway, "refused", r.Refused, "signal", sample, "refused_total", r.Total)
			return
		}
		c.log.Warn("signals refused: the asset holds max_signals_per_asset signals", "site", site, "asset", id, "class", class,
			"gateway", gateway, "kind", kind, "refused", r.Refused, "signal", sample, "signals", r.Held,
			"max_signals_per_asset", c.cfg.MaxSignalsPerAsset, "refused_total", r.Total)
	}
}

// count adds the assets the engine gained since it held before; sh.mu is held.
func (c *Collector) count(sh *shard, before int) { c.tracked.Add(int64(sh.engine.Len() - before)) }

// malformedReasons are the reason labels of smelter_collector_malformed_total:
// a message that does not decode (schema, invalid), one that ingest.Check
// refuses (its Reasons) and one on a subject outside the partition.
var malformedReasons = []string{"schema", "invalid", "partition", string(ingest.ReasonSeqRange), string(ingest.ReasonUnknownClass),
	string(ingest.ReasonSubject), string(ingest.ReasonBirth), string(ingest.ReasonBounds)}

func (c *Collector) malformed(subject string, err error) {
	reason := "invalid"
	if errors.Is(err, telemetry.ErrSchema) {
		reason = "schema"
	}
	c.m.malformed.WithLabelValues(reason).Inc()
	c.warnLimited("malformed:"+reason, "malformed message skipped", "reason", reason, "subject", logCut(subject), "err", errCut(err))
}

// record updates the shard's alert store and builds outputs; sh.mu is held.
func (c *Collector) record(sh *shard, al []alert.Alert, res []kpi.Result, cy *cycle) {
	if len(al) == 0 && len(res) == 0 {
		return
	}
	for _, a := range al {
		sh.setAlert(a)
		cy.alerts = append(cy.alerts, a)
		sh.dirtyKey(a.Site, a.Asset)
		a.Group = c.cfg.Group // published with its group: a history sink keeps its own
		data, err := json.Marshal(a)
		if err != nil {
			continue
		}
		cy.outs = append(cy.outs, output{subject: telemetry.Subject(a.Site, a.Class, a.Asset, telemetry.KindAlert), data: data,
			msgID: c.cfg.Group + ":" + a.ID + ":" + string(a.State) + ":" + strconv.FormatInt(a.UpdatedAt, 10) + ":" + a.Severity.String()})
	}
	for _, r := range res {
		cy.kpis = append(cy.kpis, r)
		cy.kpis[len(cy.kpis)-1].KPIs = slices.Clone(r.KPIs) // the tracker reuses its buffers
		r.Group = c.cfg.Group
		data, err := json.Marshal(r)
		if err != nil {
			continue
		}
		cy.outs = append(cy.outs, output{subject: telemetry.Subject(r.Site, r.Class, r.Asset, telemetry.KindKPI), data: data,
			msgID: c.cfg.Group + ":kpi:" + r.Site + "." + r.Asset + ":" + strconv.FormatInt(r.Start, 10)})
	}
}

// shown makes a published cycle's alert events and KPI results visible:
// the recent alerts, the dashboard, the log.
func (c *Collector) shown(cy *cycle) {
	if len(cy.alerts) == 0 && len(cy.kpis) == 0 {
		return
	}
	c.live.ObserveAlerts(cy.alerts)
	c.live.ObserveKPIs(cy.kpis)
	for _, a := range cy.alerts {
		c.appendRecent(a)
		c.log.Info("alert", "state", a.State, "severity", a.Severity, "key", a.Key, "message", a.Message)
	}
	clear(cy.alerts)
	clear(cy.kpis)
	cy.alerts, cy.kpis = cy.alerts[:0], cy.kpis[:0]
}

// appendRecent adds an alert event to the recent list (bounded).
func (c *Collector) appendRecent(a alert.Alert) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.recent) == recentCap {
		copy(c.recent, c.recent[1:])
		c.recent = c.recent[:recentCap-1]
	}
	c.recent = append(c.recent, a)
}

// tick raises the silence alerts of one shard as of at (Unix ms: the
// start of the worker's newest fetch that drained its partition, see
// drain), silence counted from no earlier than from (the end of the
// partition's newest disruption, see disruptions), and commits them; own
// (nil: not checked) is the partition worker's hold on it, confirmed
// before the silence is judged and again before publishing.
func (c *Collector) tick(ctx context.Context, sh *shard, own *tenure, at, from int64) error {
	sh.cycle.Lock()
	defer sh.cycle.Unlock()
	if err := own.check(); err != nil {
		return err
	}
	// the partition is drained: every message stored before an event read
	// back at the restore was evaluated again
	c.adoptBefore(sh, math.MaxUint64)
	cy := cycle{own: own}
	sh.mu.Lock()
	al := sh.engine.Tick(nil, at, from)
	c.record(sh, al, nil, &cy)
	sh.mu.Unlock()
	if len(al) == 0 {
		return nil // assets changed by held cycles are checkpointed by their worker
	}
	if err := c.commit(ctx, c.js.Load(), sh, &cy); err != nil {
		c.dropShard(sh)
		return err
	}
	return nil
}

// Ready reports whether the collector is connected and consuming, with no
// partition it should own whose pulls have failed for longer than
// pullGrace (readiness).
func (c *Collector) Ready() bool {
	ok, _ := c.readiness()
	return ok
}

// NATSURL returns the URL of the NATS server in use (the embedded one when
// none is configured); empty before Run connected.
func (c *Collector) NATSURL() string {
	s, _ := c.url.Load().(string)
	return s
}

// HTTPAddr returns the bound HTTP address once Run listens.
func (c *Collector) HTTPAddr() string {
	s, _ := c.httpAddr.Load().(string)
	return s
}

func (c *Collector) natsOptions() ([]nats.Option, error) {
	n := c.cfg.NATS
	auth, err := c.cfg.authOptions("nats", NATSConn{Username: n.Username, PasswordEnv: n.PasswordEnv, PasswordFile: n.PasswordFile,
		TokenFile: n.TokenFile, CredsFile: n.CredsFile, TLS: n.TLS}, c.log)
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	log := c.log // not c.log in the handlers: Run sets it after connecting
	// ReconnectBufSize(-1): a request made while the connection is down
	// fails at once instead of waiting in the client's buffer and reaching
	// the server when it is back, after its caller gave up on it (a
	// consumer created with a filter chosen while the server's version was
	// unknown, a checkpoint put counted as failed: review12 F1).
	return append([]nats.Option{nats.Name("smelter-collector"), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second), nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.disrupted.connection()
			if err != nil {
				log.Warn("NATS connection lost, reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.disrupted.connection() // before the count: tests wait on it
			c.reconnects.Add(1)
			log.Info("NATS connection re-established", "url", secret.RedactURL(nc.ConnectedUrl()))
		}),
		c.asyncErrors(log, "nats")}, auth...), nil
}

// asyncErrors is the nats.ErrorHandler of the connection that field's
// block configures: the server's asynchronous errors (a permissions
// violation, a consumer whose heartbeats stopped, a slow consumer) logged
// at WARN through log, rate-limited per connection and kind of error
// (logLimits), with the subscription's subject. Without it nats.go writes
// a raw line to stderr, which breaks a JSON log (bbtest F4). Neither the
// errors nor the subjects hold a credential.
func (c *Collector) asyncErrors(log *slog.Logger, field string) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		kind := "other"
		switch {
		case errors.Is(err, nats.ErrPermissionViolation):
			kind = "permissions"
		case errors.Is(err, nats.ErrSlowConsumer):
			kind = "slow-consumer"
		case errors.Is(err, nats.ErrConsumerNotActive):
			kind = "consumer-not-active"
		}
		args := []any{"connection", field, "err", errCut(err)}
		if sub != nil {
			args = append(args, "subject", logCut(sub.Subject))
		}
		c.logLim.of("nats-async:"+field+":"+kind).Log(context.Background(), log, slog.LevelWarn, "NATS asynchronous error", args...)
	})
}

// tlsConfig builds the client TLS configuration of a tls: block, with its
// files resolved against the config file's directory.
func (c *Collector) tlsConfig(t *secret.TLS, field string) (*tls.Config, error) {
	rt := *t
	rt.ResolvePaths(c.cfg.dir)
	if rt.InsecureSkipVerify {
		c.log.Warn("TLS server verification disabled", "field", field+".insecure_skip_verify")
	}
	tc, err := rt.Config(field)
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	return tc, nil
}

func (c *Collector) mqttOptions() (*mqtt.ClientOptions, func(), error) {
	m := c.cfg.MQTT
	url := m.URL
	var stop func()
	if url == "" {
		b, err := brokers.StartMQTT(brokers.MQTTOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("collector: embedded mqtt: %w", err)
		}
		url, stop = b.URL(), func() { _ = b.Close() }
		c.log.Info("embedded MQTT broker started", "url", url)
	}
	id := m.ClientID
	if id == "" {
		host, _ := os.Hostname()
		id = "smelter-collector-" + host
	}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(true).SetConnectRetry(true)
	if m.Username != "" {
		o.SetUsername(m.Username)
		if m.PasswordEnv != "" {
			pw, err := secret.FromEnv("mqtt.password_env", m.PasswordEnv)
			if err != nil {
				return nil, stop, fmt.Errorf("collector: %w", err)
			}
			o.SetPassword(pw.Reveal())
		}
	}
	if m.TLS != nil {
		tc, err := c.tlsConfig(m.TLS, "mqtt.tls")
		if err != nil {
			return nil, stop, err
		}
		o.SetTLSConfig(tc)
	}
	return o, stop, nil
}

// Alerts returns the active alerts of the partitions this replica owns
// (sorted by key), or with all the recent alert events too, newest last.
func (c *Collector) Alerts(activeOnly bool) []alert.Alert {
	if !activeOnly {
		c.mu.Lock()
		defer c.mu.Unlock()
		return append([]alert.Alert(nil), c.recent...)
	}
	var out []alert.Alert
	for _, sh := range c.shardList() {
		sh.mu.Lock()
		for _, a := range sh.active {
			out = append(out, a)
		}
		sh.mu.Unlock()
	}
	out = append(out, c.commandAlertsActive()...)
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Assets returns every asset this replica tracks with its latest values.
func (c *Collector) Assets() []rules.AssetView {
	var out []rules.AssetView
	for _, sh := range c.shardList() {
		sh.mu.Lock()
		out = append(out, sh.engine.Assets()...)
		sh.mu.Unlock()
	}
	return out
}

// Asset returns one asset with its latest values.
func (c *Collector) Asset(site, id string) (rules.AssetView, bool) {
	for _, sh := range c.shardList() {
		sh.mu.Lock()
		v, ok := sh.engine.Asset(site, id)
		sh.mu.Unlock()
		if ok {
			return v, true
		}
	}
	return rules.AssetView{}, false
}

// KPIs returns the latest finished KPI window of an asset.
func (c *Collector) KPIs(site, id string) (kpi.Result, bool) {
	for _, sh := range c.shardList() {
		sh.mu.Lock()
		r, ok := sh.kpis.Last(site, id)
		sh.mu.Unlock()
		if ok {
			return r, true
		}
	}
	return kpi.Result{}, false
}

// shardList returns the shards this replica holds, by partition.
func (c *Collector) shardList() []*shard {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*shard, 0, len(c.shards))
	for _, sh := range c.shards {
		out = append(out, sh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].p < out[j].p })
	return out
}

// statusFilter matches every gateway's status subject.
var statusFilter = telemetry.Subject("*", telemetry.GatewayClass, "*", telemetry.KindStatus)

// httpToken reads the API bearer token from http.token_env or
// http.token_file ("" when neither is set). Surrounding white space is
// dropped (a bearer token has none); a blank token is an error, never "no
// authentication".
func (c *Collector) httpToken() (string, error) {
	t, err := c.cfg.viewerToken()
	if err != nil {
		return "", fmt.Errorf("collector: %w", err)
	}
	return t, nil
}

// viewerToken reads the viewers' bearer token (http.token_env or
// token_file; "" with neither); a blank one is an error.
func (c *Config) viewerToken() (string, error) {
	var tok secret.Secret
	var err error
	var src string
	switch {
	case c.HTTP.TokenEnv != "":
		tok, err = secret.FromEnv("http.token_env", c.HTTP.TokenEnv)
		src = "http.token_env: environment variable " + c.HTTP.TokenEnv
	case c.HTTP.TokenFile != "":
		path := c.Path(c.HTTP.TokenFile)
		tok, err = secret.FromFile("http.token_file", path)
		src = "http.token_file: file " + path
	default:
		return "", nil
	}
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(tok.Reveal())
	if t == "" {
		return "", fmt.Errorf("%s is empty: %w", src, secret.ErrMissing)
	}
	return t, nil
}

// Live returns the dashboard's store (history, KPI windows, gateways).
func (c *Collector) Live() *dashboard.Live { return c.live }

// HTTPHandler returns the collector's HTTP handler: /metrics, /healthz,
// /readyz, the JSON API under /api/v1 and the dashboard at /. A non-empty
// token is required as a bearer token on /api (never logged).
func (c *Collector) HTTPHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := c.readiness(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	opts := dashboard.Options{Token: token, Catalog: c.cat, Log: c.log.With("component", "dashboard"), KPI: c.cfg.kpiConfig(),
		Operators: c.operators, RateLimit: c.httpRateLimit(), Streams: c.streams,
		MaxStreams: c.cfg.HTTP.MaxStreams, MaxStreamsPerClient: c.cfg.HTTP.MaxStreamsPerClient,
		StreamWriteTimeout: time.Duration(c.cfg.HTTP.StreamWriteTimeout)}
	if c.cmds != nil {
		opts.Commands = c.cmds
	}
	if h := c.hist.Load(); h != nil {
		opts.History = h
	}
	mux.Handle("/", dashboard.New(c, c.live, opts))
	return mux
}

package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging"
)

// Metrics are the sink's self-metrics (smelter_history_*).
type Metrics struct {
	rows       *prometheus.CounterVec
	batches    prometheus.Counter
	writes     prometheus.Counter
	duplicates prometheus.Counter
	expired    prometheus.Counter
	malformed  prometheus.Counter
	refused    *prometheus.CounterVec
	errors     *prometheus.CounterVec
	lag        prometheus.Gauge
	up         prometheus.Gauge
	seconds    prometheus.Histogram
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rows:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_history_rows_total", Help: "Rows stored in the history database, by table."}, []string{"table"}),
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_history_batches_total", Help: "Data batches stored (new in the ledger)."}),
		writes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_history_writes_total", Help: "Transactions committed (one per fetch of messages)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_history_duplicates_total", Help: "Data batches already stored (redeliveries), skipped."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_history_expired_readings_total",
			Help: "Readings not stored raw: older than the readings retention (their rollups are), or more than a day ahead of the clock."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_history_malformed_total", Help: "Messages that do not decode or that the database refuses, acknowledged and not stored."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_history_refused_total",
			Help: "Not stored because they break the schema's bounds (telemetry's limit table, docs/schema.md \"Bounds\"), as the collector refuses them, by kind: batch and birth (refused whole: asset.path, a birth's names, units, labels or nameplate), reading (signal name or unit; the rest of its batch is stored)."},
			[]string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_history_errors_total", Help: "Failed database operations, by operation (connect, write, retention); writes are retried."}, []string{"op"}),
		lag:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_history_lag_messages", Help: "Messages in the stream not yet stored: pending on the history consumer plus delivered and not acknowledged."}),
		up:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_history_up", Help: "1 while the last database operation succeeded."}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "smelter_history_write_seconds", Help: "Duration of one write transaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
	}
	for _, k := range RefusedKinds { // present at 0 from the start
		m.refused.WithLabelValues(k)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.rows, m.batches, m.writes, m.duplicates, m.expired, m.malformed, m.refused, m.errors, m.lag, m.up, m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("history: metrics: %w", err)
			}
		}
	}
	return m, nil
}

// SinkOptions configure a Sink.
type SinkOptions struct {
	Stream   string // the stream to read (the collector's nats.stream)
	Consumer string // durable consumer name, shared by every replica of the group
	// Filter is the consumer's filter subject (default "smelter.v1.>":
	// every kind, with or without the partition token; kinds the history
	// does not keep are acknowledged and skipped).
	Filter string
	// Batch is the most messages written in one transaction (default
	// 1000); Flush how long a fetch waits to fill it (default 1s).
	Batch int
	Flush time.Duration
	// AckWait: a message delivered to a sink that died (or lost its
	// database and gave up) is redelivered after it (default 30s). A sink
	// retrying a write keeps its messages with in-progress acks.
	AckWait time.Duration
	Log     *slog.Logger
	Metrics *Metrics
}

// Sink feeds a Store from a JetStream durable pull consumer. Every replica
// of a collector group pulls from the same consumer (the server hands each
// message to one of them); writes are idempotent and rollups merge
// commutatively, so replicas need no coordination. A fetch is acknowledged
// only after its transaction committed: while the database is unreachable
// the sink retries the fetch it holds (at most Batch messages) and the rest
// waits in the stream.
type Sink struct {
	store *Store
	js    jetstream.JetStream
	opts  SinkOptions
	log   *slog.Logger
	m     *Metrics

	stored atomic.Int64 // messages acknowledged after a commit
	// refusedLog: one line per 10 s about what the bounds refused (a
	// publisher sending it keeps sending it)
	refusedLog logging.Limiter
}

// NewSink returns a sink; it does no I/O.
func NewSink(store *Store, js jetstream.JetStream, opts SinkOptions) *Sink {
	if opts.Filter == "" {
		opts.Filter = "smelter.v1.>"
	}
	if opts.Batch <= 0 {
		opts.Batch = 1000
	}
	if opts.Flush <= 0 {
		opts.Flush = time.Second
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = NewMetrics(nil)
	}
	return &Sink{store: store, js: js, opts: opts, log: opts.Log, m: opts.Metrics}
}

// Stored returns how many messages the sink acknowledged after a commit.
func (k *Sink) Stored() int64 { return k.stored.Load() }

// retry runs op until it succeeds or ctx ends, backing off 250 ms doubling
// to 5 s; every failure is counted under op and logged (first and then
// every tenth).
func (k *Sink) retry(ctx context.Context, name string, op func(context.Context) error, each func()) error {
	wait := 250 * time.Millisecond
	for n := 0; ; n++ {
		err := op(ctx)
		db := name != "consumer" // a database operation, else NATS
		if err == nil {
			if db {
				k.m.up.Set(1)
			}
			if n > 0 {
				k.log.Info("history sink: "+name+" succeeded after retries", "attempts", n+1)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if db {
			k.m.up.Set(0)
		}
		k.m.errors.WithLabelValues(name).Inc()
		if n%10 == 0 {
			k.log.Warn("history sink: "+name+" failed, retrying", "err", err, "attempt", n+1, "in", wait)
		}
		if each != nil {
			each()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// Run opens the store (retrying while the database is down), creates the
// durable consumer (again when it is deleted), runs retention every
// Retention.Interval and writes until ctx ends; it then returns ctx's error
// or nil.
func (k *Sink) Run(ctx context.Context) error {
	if err := k.retry(ctx, "connect", k.store.Open, nil); err != nil {
		return err // ctx ended
	}
	cc := jetstream.ConsumerConfig{Durable: k.opts.Consumer, FilterSubject: k.opts.Filter, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: k.opts.AckWait, MaxAckPending: 4 * k.opts.Batch, DeliverPolicy: jetstream.DeliverAllPolicy,
		Description: "smelter history sink (PostgreSQL)"}
	var bg sync.WaitGroup
	defer bg.Wait()
	started := false
	for ctx.Err() == nil {
		var cons jetstream.Consumer
		err := k.retry(ctx, "consumer", func(ctx context.Context) (err error) {
			cons, err = k.js.CreateOrUpdateConsumer(ctx, k.opts.Stream, cc)
			if err != nil {
				return fmt.Errorf("history: consumer %s on stream %s: %w", k.opts.Consumer, k.opts.Stream, err)
			}
			return nil
		}, nil)
		if err != nil {
			return err // ctx ended
		}
		if !started {
			started = true
			bg.Go(func() { k.background(ctx, k.opts.Consumer) })
		}
		if err := k.consume(ctx, cons); err != nil && ctx.Err() == nil {
			k.log.Warn("history consumer gone, creating it again (a new consumer delivers the whole stream; the ledger skips what is stored)", "err", err)
		}
	}
	return nil
}

// consume fetches and writes until ctx ends (ctx's error or nil) or the
// consumer is gone (the error).
func (k *Sink) consume(ctx context.Context, cons jetstream.Consumer) error {
	for ctx.Err() == nil {
		b, err := cons.Fetch(k.opts.Batch, jetstream.FetchMaxWait(k.opts.Flush))
		if err != nil {
			if consumerGone(ctx, cons, err) {
				return fmt.Errorf("history: consumer %s: %w", k.opts.Consumer, err)
			}
			k.log.Debug("history fetch", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		var msgs []jetstream.Msg
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			k.log.Debug("history fetch", "err", err)
			if consumerGone(ctx, cons, err) {
				return err
			}
		}
		if len(msgs) == 0 {
			continue
		}
		if err := k.write(ctx, msgs); err != nil {
			return err // ctx ended; the held messages are redelivered
		}
	}
	return nil
}

// consumerGone reports whether a fetch's error means the consumer is gone:
// deleted while a pull waited (409), or, where the pull found nobody to
// answer it (no responders: deleted between two fetches), the consumer no
// longer exists.
func consumerGone(ctx context.Context, cons jetstream.Consumer, err error) bool {
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
		return true
	case errors.Is(err, nats.ErrNoResponders):
		_, ierr := cons.Info(ctx)
		return errors.Is(ierr, jetstream.ErrConsumerNotFound)
	}
	return false
}

// write stores msgs, retrying until it commits or ctx ends, then
// acknowledges them.
func (k *Sink) write(ctx context.Context, msgs []jetstream.Msg) error {
	in := make([]Message, len(msgs))
	for i, m := range msgs {
		in[i] = Message{Subject: m.Subject(), Data: m.Data()}
	}
	var res Result
	err := k.retry(ctx, "write", func(ctx context.Context) error {
		start := time.Now()
		r, err := k.store.Write(ctx, in)
		if err != nil && permanent(err) && len(in) > 1 {
			r, err = k.writeEach(ctx, in)
		}
		if err == nil {
			res = r
			k.m.seconds.Observe(time.Since(start).Seconds())
		}
		return err
	}, func() {
		for _, m := range msgs { // keep them ours while we retry
			_ = m.InProgress()
		}
	})
	if err != nil {
		return err
	}
	for _, m := range msgs {
		_ = m.Ack()
	}
	k.stored.Add(int64(len(msgs)))
	k.m.writes.Inc()
	for t, n := range res.Rows {
		k.m.rows.WithLabelValues(t).Add(float64(n))
	}
	k.m.batches.Add(float64(res.Batches))
	k.m.duplicates.Add(float64(res.Duplicates))
	k.m.expired.Add(float64(res.Expired + res.Future))
	if res.Malformed > 0 {
		k.m.malformed.Add(float64(res.Malformed))
		k.log.Warn("history: malformed messages acknowledged and not stored", "count", res.Malformed, "first", res.Errors[0])
	}
	if r := res.Refused; r != (Refused{}) {
		for i, n := range []int{r.Batches, r.Births, r.Readings} {
			k.m.refused.WithLabelValues(RefusedKinds[i]).Add(float64(n))
		}
		args := []any{"batches", r.Batches, "births", r.Births, "readings", r.Readings}
		if len(res.Refusals) > 0 {
			args = append(args, "first", res.Refusals[0])
		}
		k.refusedLog.Log(ctx, k.log, slog.LevelWarn, "history: beyond the schema's bounds (docs/schema.md, \"Bounds\"): acknowledged and not stored", args...)
	}
	return nil
}

// permanent reports whether a write failed on its data (a value the
// database refuses, such as a NUL byte in text): retrying the same messages
// would fail for ever and hold the stream.
func permanent(err error) bool {
	var pe *pgconn.PgError
	if errors.Is(err, ErrPartitionGone) || !errors.As(err, &pe) {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54": // data exception, integrity, program limit
		return true
	}
	return false
}

// writeEach writes msgs one at a time after a write of all of them failed
// on its data: a message the database refuses is counted malformed (and
// acknowledged by the caller), the others are stored. Any other error ends
// it (the caller retries everything; what was stored is skipped then).
func (k *Sink) writeEach(ctx context.Context, msgs []Message) (Result, error) {
	sum := Result{Rows: map[string]int{}}
	for _, m := range msgs {
		r, err := k.store.Write(ctx, []Message{m})
		if err != nil && permanent(err) {
			sum.Malformed++
			sum.Errors = append(sum.Errors, fmt.Errorf("%s: refused by the database: %w", m.Subject, err))
			continue
		}
		if err != nil {
			return sum, err
		}
		for t, n := range r.Rows {
			sum.Rows[t] += n
		}
		sum.Batches += r.Batches
		sum.Duplicates += r.Duplicates
		sum.Skipped += r.Skipped
		sum.Expired += r.Expired
		sum.Future += r.Future
		sum.Foreign += r.Foreign
		sum.Malformed += r.Malformed
		sum.Errors = append(sum.Errors, r.Errors...)
		sum.Refused.add(r.Refused)
		sum.Refusals = append(sum.Refusals, r.Refusals...)
	}
	return sum, nil
}

// background updates the lag gauge every 5 s and runs retention.
func (k *Sink) background(ctx context.Context, name string) {
	lag := time.NewTicker(5 * time.Second)
	defer lag.Stop()
	keep := time.NewTicker(k.store.opts.Retention.Interval)
	defer keep.Stop()
	k.retain(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-lag.C:
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if cons, err := k.js.Consumer(ictx, k.opts.Stream, name); err == nil {
				if info, err := cons.Info(ictx); err == nil {
					k.m.lag.Set(float64(info.NumPending) + float64(info.NumAckPending))
				}
			}
			cancel()
		case <-keep.C:
			k.retain(ctx)
		}
	}
}

func (k *Sink) retain(ctx context.Context) {
	ex, err := k.store.Retain(ctx)
	if err != nil {
		if ctx.Err() == nil {
			k.m.errors.WithLabelValues("retention").Inc()
			k.log.Warn("history retention failed", "err", err)
		}
		return
	}
	var rows int64
	for _, n := range ex.Rows {
		rows += n
	}
	if len(ex.Partitions) > 0 || rows > 0 {
		k.log.Info("history retention", "partitions_dropped", len(ex.Partitions), "rows_deleted", ex.Rows)
	}
}

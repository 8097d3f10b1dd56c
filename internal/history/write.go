package history

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Message is one stream message: its subject
// (smelter.v1.<site>.<class>.<asset>.<kind>, with or without the partition
// token the collector's stream adds) and body.
type Message struct {
	Subject string
	Data    []byte
}

// Result counts what one Write stored. Rows are by table; Duplicates are
// data batches already in the ledger (a redelivery), Skipped messages of
// kinds the history does not keep (death, status, cmd), Malformed ones
// that do not decode (each with its reason in Errors).
type Result struct {
	Rows       map[string]int
	Batches    int
	Duplicates int
	Skipped    int
	Expired    int // readings older than the readings retention, not stored raw
	Future     int // readings more than MaxFuture ahead of the clock, not stored
	Foreign    int // alerts and KPI results of another collector group (Options.Group), not stored
	Malformed  int
	Errors     []error
	// Refused counts what breaks the schema's bounds (telemetry's limit
	// table, docs/schema.md "Bounds"), applied as the collector applies
	// them: a batch or birth refused whole (asset.path, a birth's strings)
	// and readings refused alone (signal name or unit; the rest of their
	// batch is stored). Texts and srcs beyond their bound are cut, not
	// refused. Refusals holds the reason of each message refused whole.
	Refused  Refused
	Refusals []error
}

// Refused counts what the bounds refused, by kind: RefusedKinds.
type Refused struct {
	Batches, Births, Readings int
}

// RefusedKinds are the kind labels of smelter_history_refused_total.
var RefusedKinds = []string{"batch", "birth", "reading"}

func (r *Refused) add(o Refused) {
	r.Batches += o.Batches
	r.Births += o.Births
	r.Readings += o.Readings
}

// decoded is a Write's input sorted by kind.
type decoded struct {
	batches []*telemetry.Batch
	births  []*telemetry.Birth
	alerts  []alert.Alert
	kpis    []kpi.Result
	audits  []audit
}

type audit struct {
	site, class, asset string
	r                  command.Result
	raw                []byte
}

// decode sorts msgs by kind; alerts and KPI results of another collector
// group than group (when both are set) are counted foreign and dropped.
func decode(msgs []Message, group string, now time.Time, maxFuture time.Duration, res *Result) decoded {
	var d decoded
	bad := func(m Message, err error) {
		res.Malformed++
		res.Errors = append(res.Errors, fmt.Errorf("%s: %w", m.Subject, err))
	}
	refuse := func(m Message, n *int, err error) {
		*n++
		res.Refusals = append(res.Refusals, fmt.Errorf("%s: %w", m.Subject, err))
	}
	for _, m := range msgs {
		t := strings.Split(m.Subject, ".")
		if (len(t) != 6 && len(t) != 7) || t[0] != "smelter" || t[1] != "v1" {
			bad(m, errors.New("not a smelter.v1 subject"))
			continue
		}
		site, class, asset := t[2], t[3], t[4]
		foreign := func(g string) bool {
			if group != "" && g != "" && g != group {
				res.Foreign++
				return true
			}
			return false
		}
		// the payload must name the subject's site, class and asset: a
		// publisher allowed on one site's subjects cannot write another's
		// history (as the collector checks, docs/collector.md)
		mismatch := func(s, c, a string) bool {
			if s != site || (c != "" && c != class) || a != asset {
				bad(m, fmt.Errorf("payload names %s.%s.%s, the subject %s.%s.%s", s, c, a, site, class, asset))
				return true
			}
			return false
		}
		switch telemetry.Kind(t[5]) {
		case telemetry.KindData:
			b, err := telemetry.DecodeBatch(m.Data)
			if err != nil {
				bad(m, err)
				continue
			}
			if mismatch(b.Asset.Site(), b.Asset.Class, b.Asset.ID) {
				continue
			}
			// the schema's bounds, as the collector applies them
			// (ingest.CheckAsset, ingest.DropInvalid)
			if err := telemetry.CheckPath(b.Asset.Path); err != nil {
				refuse(m, &res.Refused.Batches, err)
				continue
			}
			n, _ := ingest.DropInvalid(b)
			res.Refused.Readings += n
			if maxFuture > 0 { // the collector's arrival bound (ingest.BoundBatch)
				ingest.BoundBatch(b, now, maxFuture)
			}
			d.batches = append(d.batches, b)
		case telemetry.KindBirth:
			b, err := telemetry.DecodeBirth(m.Data)
			if err != nil {
				bad(m, err)
				continue
			}
			if mismatch(telemetry.Asset(b.Asset).Site(), b.Asset.Class, b.Asset.ID) {
				continue
			}
			if err := telemetry.CheckPath(b.Asset.Path); err != nil {
				refuse(m, &res.Refused.Births, err)
				continue
			}
			if err := ingest.CheckBirthBounds(b); err != nil {
				refuse(m, &res.Refused.Births, err)
				continue
			}
			if maxFuture > 0 {
				ingest.BoundTSGW(&b.TSGW, now, maxFuture)
			}
			d.births = append(d.births, b)
		case telemetry.KindAlert:
			var a alert.Alert
			if err := json.Unmarshal(m.Data, &a); err != nil || a.Schema != alert.Schema || a.ID == "" {
				bad(m, notA("a "+alert.Schema+" alert", err))
				continue
			}
			if mismatch(a.Site, a.Class, a.Asset) || foreign(a.Group) {
				continue
			}
			d.alerts = append(d.alerts, a)
		case telemetry.KindKPI:
			var r kpi.Result
			if err := json.Unmarshal(m.Data, &r); err != nil || r.Asset == "" {
				bad(m, notA("a KPI result", err))
				continue
			}
			if mismatch(r.Site, r.Class, r.Asset) || foreign(r.Group) {
				continue
			}
			d.kpis = append(d.kpis, r)
		case "audit":
			var r command.Result
			if err := json.Unmarshal(m.Data, &r); err != nil || r.ID == "" || r.Verdict == "" {
				bad(m, notA("a command result", err))
				continue
			}
			if mismatch(site, "", r.Asset) {
				continue
			}
			d.audits = append(d.audits, audit{site: site, class: class, asset: asset, r: r, raw: m.Data})
		default:
			res.Skipped++
		}
	}
	return d
}

// notA says a message is not what its subject announces.
func notA(what string, err error) error {
	if err != nil {
		return fmt.Errorf("not %s: %w", what, err)
	}
	return errors.New("not " + what + ": a required field is missing")
}

type batchKey struct {
	gateway string
	seq     uint64
	part    int
}

type rollKey struct {
	site, asset, signal string
	bucket              int64 // Unix ms
}

type rollAcc struct {
	min, max, sum  float64
	count, good, n int64
}

func (a *rollAcc) add(r *telemetry.Reading) {
	a.n++
	if r.Quality == telemetry.QualityGood {
		a.good++
	}
	if !r.HasValue() {
		return
	}
	if a.count == 0 || r.Value < a.min {
		a.min = r.Value
	}
	if a.count == 0 || r.Value > a.max {
		a.max = r.Value
	}
	a.sum += r.Value
	a.count++
}

// MaxFuture is how far ahead of the store's clock a reading may lie; later
// ones (a gateway with a wrong clock) are counted in Result.Future and not
// stored, so a year-9999 time never creates a partition.
const MaxFuture = 24 * time.Hour

// ErrPartitionGone is wrapped when a row fell outside every partition: a
// partition dropped by retention under a writer; the store forgets the
// partitions it knew and the write may be retried.
var ErrPartitionGone = errors.New("history: no partition for a row")

// Write stores msgs in one transaction: the data batches not yet in the
// ledger (by gateway, seq and part) with their readings (COPY) and their
// share of the 1-minute and 1-hour rollups, and every birth, alert event,
// KPI window and command audit record (each idempotent on its key). Either
// everything is stored or, on error, nothing; the same messages written
// again store nothing twice. Malformed messages are counted in the result
// and skipped (they can never be stored).
func (s *Store) Write(ctx context.Context, msgs []Message) (Result, error) {
	res := Result{Rows: map[string]int{}}
	db := s.db()
	if db == nil {
		return res, ErrNotOpen
	}
	now := s.opts.Now()
	d := decode(msgs, s.opts.Group, now, s.opts.MaxFuture, &res)
	rawFloor := floor(now, s.opts.Retention.Readings)
	// partitions for every row the write may store (cached: usually none)
	f1m, f1h, ceil := floor(now, s.opts.Retention.Rollup1m), floor(now, s.opts.Retention.Rollup1h), now.Add(MaxFuture)
	var dayTS, minTS, hourTS []time.Time
	for _, b := range d.batches {
		for i := range b.Readings {
			t := time.UnixMilli(b.Readings[i].TS).UTC()
			if t.After(ceil) {
				continue // not stored (writeBatches counts it)
			}
			if !t.Before(rawFloor) {
				dayTS = append(dayTS, t)
			}
			if !t.Before(f1m) {
				minTS = append(minTS, t)
			}
			if !t.Before(f1h) {
				hourTS = append(hourTS, t)
			}
		}
	}
	for _, p := range []struct {
		t  series
		ts []time.Time
	}{{timeSeries[0], dayTS}, {timeSeries[1], minTS}, {timeSeries[2], hourTS}} {
		if err := s.ensurePartitions(ctx, db, p.t, p.ts); err != nil {
			return res, err
		}
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		r := Result{Rows: map[string]int{}}
		if err := s.writeBatches(ctx, tx, d.batches, rawFloor, now, &r); err != nil {
			return err
		}
		if err := writeEvents(ctx, tx, d, &r); err != nil {
			return err
		}
		res.Rows, res.Batches, res.Duplicates, res.Expired, res.Future = r.Rows, r.Batches, r.Duplicates, r.Expired, r.Future
		return nil
	})
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23514" && strings.Contains(pe.Message, "no partition") {
			s.parts.Clear()
			return res, fmt.Errorf("%w: %w", ErrPartitionGone, err)
		}
		return res, fmt.Errorf("history: write: %w", err)
	}
	return res, nil
}

// floor is now minus a retention (the zero time for 0: keep for ever).
func floor(now time.Time, keep time.Duration) time.Time {
	if keep <= 0 {
		return time.Time{}
	}
	return now.Add(-keep)
}

func (s *Store) writeBatches(ctx context.Context, tx pgx.Tx, batches []*telemetry.Batch, rawFloor, now time.Time, res *Result) error {
	if len(batches) == 0 {
		return nil
	}
	byKey := make(map[batchKey]*telemetry.Batch, len(batches))
	for _, b := range batches {
		k := batchKey{b.Gateway, b.Seq, b.Part}
		if _, dup := byKey[k]; dup {
			res.Duplicates++
			continue
		}
		byKey[k] = b
	}
	keys := make([]batchKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	// one order for every writer: concurrent replicas lock ledger rows in
	// the same sequence and cannot deadlock
	slices.SortFunc(keys, func(a, b batchKey) int {
		return cmp.Or(strings.Compare(a.gateway, b.gateway), cmp.Compare(a.seq, b.seq), cmp.Compare(a.part, b.part))
	})
	n := len(keys)
	gw, sites, assets := make([]string, n), make([]string, n), make([]string, n)
	seqs, parts, counts := make([]int64, n), make([]int32, n), make([]int32, n)
	tsgw := make([]time.Time, n)
	for i, k := range keys {
		b := byKey[k]
		gw[i], seqs[i], parts[i] = k.gateway, int64(k.seq), int32(k.part)
		sites[i], assets[i], tsgw[i], counts[i] = b.Asset.Site(), b.Asset.ID, time.UnixMilli(b.TSGW).UTC(), int32(len(b.Readings))
	}
	rows, err := tx.Query(ctx, `INSERT INTO batches (gateway, seq, part, site, asset, ts_gw, readings)
		SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::text[], $5::text[], $6::timestamptz[], $7::int4[])
		ON CONFLICT DO NOTHING RETURNING gateway, seq, part`, gw, seqs, parts, sites, assets, tsgw, counts)
	if err != nil {
		return err
	}
	var fresh []*telemetry.Batch
	for rows.Next() {
		var k batchKey
		var seq int64
		var part int32
		if err := rows.Scan(&k.gateway, &seq, &part); err != nil {
			rows.Close()
			return err
		}
		k.seq, k.part = uint64(seq), int(part)
		fresh = append(fresh, byKey[k])
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	res.Duplicates += len(keys) - len(fresh)
	res.Batches = len(fresh)
	res.Rows["batches"] = len(fresh)
	// readings by COPY; rollups accumulated per (signal, bucket)
	var copyRows [][]any
	m1 := map[rollKey]*rollAcc{}
	h1 := map[rollKey]*rollAcc{}
	f1m, f1h, ceil := floor(now, s.opts.Retention.Rollup1m), floor(now, s.opts.Retention.Rollup1h), now.Add(MaxFuture)
	for _, b := range fresh {
		site := b.Asset.Site()
		for i := range b.Readings {
			r := &b.Readings[i]
			t := time.UnixMilli(r.TS).UTC()
			if t.After(ceil) {
				res.Future++
				continue
			}
			if t.Before(rawFloor) {
				res.Expired++
			} else {
				var v, txt any
				if r.HasValue() {
					v = r.Value
				}
				if r.Text != "" {
					txt = r.Text
				}
				copyRows = append(copyRows, []any{site, b.Asset.ID, r.Signal, t, v, txt, int16(r.Quality), int64(r.Status), b.Gateway, int64(b.Seq)})
			}
			if !t.Before(f1m) {
				acc(m1, rollKey{site, b.Asset.ID, r.Signal, r.TS - r.TS%60_000}).add(r)
			}
			if !t.Before(f1h) {
				acc(h1, rollKey{site, b.Asset.ID, r.Signal, r.TS - r.TS%3_600_000}).add(r)
			}
		}
	}
	if len(copyRows) > 0 {
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"readings"}, []string{"site", "asset", "signal", "ts", "value", "txt", "quality", "status", "gateway", "seq"},
			pgx.CopyFromRows(copyRows))
		if err != nil {
			return err
		}
		res.Rows["readings"] = int(n)
	}
	for _, r := range []struct {
		table string
		m     map[rollKey]*rollAcc
	}{{"rollup_1m", m1}, {"rollup_1h", h1}} {
		n, err := upsertRollup(ctx, tx, r.table, r.m)
		if err != nil {
			return err
		}
		res.Rows[r.table] = n
	}
	return nil
}

func acc(m map[rollKey]*rollAcc, k rollKey) *rollAcc {
	a := m[k]
	if a == nil {
		a = &rollAcc{}
		m[k] = a
	}
	return a
}

// upsertRollup merges accumulators into a rollup table: min and max by
// LEAST/GREATEST, sums and counts added. The merge is commutative, so
// replicas writing batches of one bucket in any order agree; only batches
// new in the ledger are merged, so a redelivery adds nothing.
func upsertRollup(ctx context.Context, tx pgx.Tx, table string, m map[rollKey]*rollAcc) (int, error) {
	if len(m) == 0 {
		return 0, nil
	}
	keys := make([]rollKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rollKey) int {
		return cmp.Or(strings.Compare(a.site, b.site), strings.Compare(a.asset, b.asset), strings.Compare(a.signal, b.signal), cmp.Compare(a.bucket, b.bucket))
	})
	n := len(keys)
	sites, assets, signals := make([]string, n), make([]string, n), make([]string, n)
	buckets := make([]time.Time, n)
	mins, maxs := make([]*float64, n), make([]*float64, n)
	sums := make([]float64, n)
	counts, goods, ns := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, k := range keys {
		a := m[k]
		sites[i], assets[i], signals[i], buckets[i] = k.site, k.asset, k.signal, time.UnixMilli(k.bucket).UTC()
		if a.count > 0 {
			mins[i], maxs[i] = &a.min, &a.max
		}
		sums[i], counts[i], goods[i], ns[i] = a.sum, a.count, a.good, a.n
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+table+` AS r (site, asset, signal, bucket, min, max, sum, count, good, n)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[], $6::float8[], $7::float8[], $8::int8[], $9::int8[], $10::int8[])
		ON CONFLICT (site, asset, signal, bucket) DO UPDATE SET min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max),
		sum = r.sum + EXCLUDED.sum, count = r.count + EXCLUDED.count, good = r.good + EXCLUDED.good, n = r.n + EXCLUDED.n`,
		sites, assets, signals, buckets, mins, maxs, sums, counts, goods, ns)
	return n, err
}

// stateRank is an event's place in the lifecycle of its occurrence:
// raised, then updated, then cleared. Events are ordered by it before their
// time: the times come from different clocks (a stale alert is raised at
// detection time and cleared at the time of the fresh reading, which may be
// earlier), so a cleared occurrence must stay cleared whatever its times.
func stateRank(s alert.State) int {
	switch s {
	case alert.Raised:
		return 0
	case alert.Updated:
		return 1
	}
	return 2
}

// stateRankSQL is stateRank in SQL, of the column or expression col.
func stateRankSQL(col string) string {
	return `(CASE ` + col + ` WHEN 'raised' THEN 0 WHEN 'updated' THEN 1 ELSE 2 END)`
}

// alertNewer is true when the incoming row (EXCLUDED) is at least as late
// in the lifecycle as the stored one: a later state (stateRank), or the
// same state at the same time or later.
var alertNewer = `(` + stateRankSQL("EXCLUDED.state") + ` > ` + stateRankSQL("a.state") + ` OR (` +
	stateRankSQL("EXCLUDED.state") + ` = ` + stateRankSQL("a.state") + ` AND EXCLUDED.updated_at >= a.updated_at))`

// writeEvents stores births, alert events and occurrences, KPI windows and
// command audit records, each keyed so a redelivery stores nothing new.
func writeEvents(ctx context.Context, tx pgx.Tx, d decoded, res *Result) error {
	var b pgx.Batch
	var tables []string
	q := func(table, sql string, args ...any) {
		b.Queue(sql, args...)
		tables = append(tables, table)
	}
	for _, x := range d.births {
		sig, _ := json.Marshal(x.Signals)
		var np []byte
		if len(x.Nameplate) > 0 {
			np, _ = json.Marshal(x.Nameplate)
		}
		a := telemetry.Asset(x.Asset)
		q("births", `INSERT INTO births (site, class, asset, gateway, seq, ts_gw, part, protocol, nameplate, signals)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
			a.Site(), a.Class, a.ID, x.Gateway, int64(x.Seq), time.UnixMilli(x.TSGW).UTC(), x.Part, x.Protocol, np, sig)
	}
	// alert events in lifecycle order (stateRank, then time); one upsert per
	// occurrence with its latest state (a statement may not touch a row twice)
	al := slices.Clone(d.alerts)
	slices.SortStableFunc(al, func(x, y alert.Alert) int {
		return cmp.Or(strings.Compare(x.ID, y.ID), cmp.Compare(stateRank(x.State), stateRank(y.State)), cmp.Compare(x.UpdatedAt, y.UpdatedAt))
	})
	for i, a := range al {
		var vals []byte
		if len(a.Values) > 0 {
			vals, _ = json.Marshal(a.Values)
		}
		q("alert_events", `INSERT INTO alert_events (id, state, ts, severity, message, vals) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			a.ID, string(a.State), time.UnixMilli(a.UpdatedAt).UTC(), int16(a.Severity), a.Message, vals)
		if i+1 < len(al) && al[i+1].ID == a.ID {
			continue // a later event of the same occurrence follows
		}
		maxSev := a.Severity
		for j := i; j >= 0 && al[j].ID == a.ID; j-- {
			maxSev = max(maxSev, al[j].Severity)
		}
		var cleared *time.Time
		if a.ClearedAt > 0 {
			t := time.UnixMilli(a.ClearedAt).UTC()
			cleared = &t
		}
		q("alerts", `INSERT INTO alerts AS a (id, key, site, class, asset, rule, kind, signal, state, severity, max_severity, message, vals, raised_at, updated_at, cleared_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
			ON CONFLICT (id) DO UPDATE SET
			state = CASE WHEN `+alertNewer+` THEN EXCLUDED.state ELSE a.state END,
			severity = CASE WHEN `+alertNewer+` THEN EXCLUDED.severity ELSE a.severity END,
			message = CASE WHEN `+alertNewer+` THEN EXCLUDED.message ELSE a.message END,
			vals = CASE WHEN `+alertNewer+` THEN EXCLUDED.vals ELSE a.vals END,
			updated_at = GREATEST(a.updated_at, EXCLUDED.updated_at),
			cleared_at = COALESCE(a.cleared_at, EXCLUDED.cleared_at),
			max_severity = GREATEST(a.max_severity, EXCLUDED.max_severity)`,
			a.ID, a.Key, a.Site, a.Class, a.Asset, a.Rule, a.Kind, a.Signal, string(a.State), int16(a.Severity), int16(maxSev), a.Message, vals,
			time.UnixMilli(a.RaisedAt).UTC(), time.UnixMilli(a.UpdatedAt).UTC(), cleared)
	}
	for _, r := range d.kpis {
		for _, v := range r.KPIs {
			q("kpi_windows", `INSERT INTO kpi_windows (site, class, asset, start, stop, coverage, name, value, unit, ref, lim, status, message)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING`,
				r.Site, r.Class, r.Asset, time.UnixMilli(r.Start).UTC(), time.UnixMilli(r.End).UTC(), r.Coverage, v.Name, v.Value, v.Unit, v.Ref, v.Limit, v.Status, v.Message)
		}
	}
	for _, x := range d.audits {
		at := x.r.At.UTC()
		q("command_audit", `INSERT INTO command_audit (id, verdict, site, class, asset, gateway, signal, requester, reason, at, record)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING`,
			x.r.ID, string(x.r.Verdict), x.site, x.class, x.asset, x.r.Gateway, x.r.Signal, x.r.Requester, x.r.Reason, at, json.RawMessage(x.raw))
	}
	if b.Len() == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, &b)
	for _, t := range tables {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return fmt.Errorf("%s: %w", t, err)
		}
		res.Rows[t] += int(tag.RowsAffected())
	}
	return br.Close()
}

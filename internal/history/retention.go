package history

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Expired is what one retention pass removed: the partitions dropped (or
// TimescaleDB chunks) and rows deleted, by table.
type Expired struct {
	Partitions []string
	Rows       map[string]int64
}

// Retain applies the retention: partitions of readings and rollups whose
// end is older than their retention are dropped whole (TimescaleDB:
// drop_chunks), the batch ledger follows the readings, and rows of the other
// tables older than theirs are deleted (alerts by their clear time, an
// active one is never deleted; births but the newest per asset). It does
// nothing while another replica runs it.
func (s *Store) Retain(ctx context.Context) (Expired, error) {
	out := Expired{Rows: map[string]int64{}}
	db := s.db()
	if db == nil {
		return out, ErrNotOpen
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		return out, fmt.Errorf("history: retention: %w", err)
	}
	defer conn.Release()
	var got bool
	schema := s.opts.Schema
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext($1), $2)", schema, retentionLock).Scan(&got); err != nil || !got {
		return out, err
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext($1), $2)", schema, retentionLock)
	}()
	now, r := s.opts.Now().UTC(), s.opts.Retention
	for i, keep := range []time.Duration{r.Readings, r.Rollup1m, r.Rollup1h} {
		if keep <= 0 {
			continue
		}
		t := timeSeries[i]
		dropped, err := s.dropOlder(ctx, conn.Conn(), t, now.Add(-keep))
		out.Partitions = append(out.Partitions, dropped...)
		if err != nil {
			return out, err
		}
	}
	for _, d := range []struct {
		table string
		keep  time.Duration
		sql   string
	}{
		{"batches", r.Readings, "DELETE FROM batches WHERE stored_at < $1"},
		{"alerts", r.Alerts, "DELETE FROM alerts WHERE cleared_at < $1"},
		{"alert_events", r.Alerts, "DELETE FROM alert_events e WHERE ts < $1 AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = e.id)"},
		{"kpi_windows", r.KPIs, "DELETE FROM kpi_windows WHERE stop < $1"},
		{"births", r.Births, `DELETE FROM births b WHERE ts_gw < $1 AND EXISTS (SELECT 1 FROM births n
			WHERE n.site = b.site AND n.asset = b.asset AND n.ts_gw > b.ts_gw)`},
		{"command_audit", r.Commands, "DELETE FROM command_audit WHERE at < $1"},
	} {
		if d.keep <= 0 {
			continue
		}
		tag, err := conn.Exec(ctx, d.sql, now.Add(-d.keep))
		if err != nil {
			return out, fmt.Errorf("history: retention %s: %w", d.table, err)
		}
		out.Rows[d.table] += tag.RowsAffected()
	}
	return out, nil
}

// dropOlder drops the partitions of t that end at or before floor.
func (s *Store) dropOlder(ctx context.Context, conn *pgx.Conn, t series, floor time.Time) ([]string, error) {
	if s.Mode() == ModeTimescale {
		_, err := conn.Exec(ctx, fmt.Sprintf("SELECT drop_chunks('%s', older_than => $1::timestamptz)", t.table), floor)
		if err != nil {
			return nil, fmt.Errorf("history: retention %s: %w", t.table, err)
		}
		return []string{t.table + " chunks before " + floor.Format(time.RFC3339)}, nil
	}
	names, err := partitionsOf(ctx, conn, t.table)
	if err != nil {
		return nil, err
	}
	var dropped []string
	for _, name := range names {
		from, ok := partitionStart(t, name)
		if !ok {
			continue // not one of ours
		}
		if _, end, _ := t.span(from); end.After(floor) {
			continue
		}
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
			return dropped, fmt.Errorf("history: retention: drop %s: %w", name, err)
		}
		s.parts.Delete(name)
		dropped = append(dropped, name)
		s.log.Info("history partition dropped by retention", "partition", name)
	}
	return dropped, nil
}

// partitionsOf lists the partitions of table in the store's schema.
func partitionsOf(ctx context.Context, conn *pgx.Conn, table string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass ORDER BY c.relname`, table)
	if err != nil {
		return nil, fmt.Errorf("history: partitions of %s: %w", table, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Partitions lists the partitions of a time-series table (readings,
// rollup_1m, rollup_1h), oldest first; none in TimescaleDB mode.
func (s *Store) Partitions(ctx context.Context, table string) ([]string, error) {
	db := s.db()
	if db == nil {
		return nil, ErrNotOpen
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	return partitionsOf(ctx, conn.Conn(), table)
}

// partitionStart parses the start of a partition from its name
// (readings_20261130, rollup_1m_202611, rollup_1h_2026).
func partitionStart(t series, name string) (time.Time, bool) {
	suf, ok := strings.CutPrefix(name, t.table+"_")
	if !ok {
		return time.Time{}, false
	}
	layout := map[int]string{8: "20060102", 6: "200601", 4: "2006"}[len(suf)]
	if layout == "" {
		return time.Time{}, false
	}
	from, err := time.Parse(layout, suf)
	if err != nil {
		return time.Time{}, false
	}
	if f, _, _ := t.span(from); !f.Equal(from) {
		return time.Time{}, false
	}
	return from, true
}

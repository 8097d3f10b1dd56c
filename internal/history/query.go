package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Resolution is the time step of a series: every reading, or a rollup.
type Resolution string

// Resolutions. Auto ("") picks one from the range (PickResolution).
const (
	Auto Resolution = ""
	Raw  Resolution = "raw"
	Min1 Resolution = "1m"
	Hour Resolution = "1h"
)

// ParseResolution parses "", auto, raw, 1m or 1h.
func ParseResolution(s string) (Resolution, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "raw", "1m", "1h":
		return Resolution(s), nil
	}
	return "", fmt.Errorf("%q is not auto, raw, 1m or 1h", s)
}

// Range limits of PickResolution: up to RawSpan every reading, up to
// MinuteSpan 1-minute rollups, beyond that 1-hour rollups (a year is 8,760
// points).
const (
	RawSpan    = 6 * time.Hour
	MinuteSpan = 7 * 24 * time.Hour
	// MaxPoints bounds the points one series answer carries; a longer
	// answer is cut at the end and marked Truncated.
	MaxPoints = 200_000
)

// PickResolution returns the resolution for a range of span.
func PickResolution(span time.Duration) Resolution {
	switch {
	case span <= RawSpan:
		return Raw
	case span <= MinuteSpan:
		return Min1
	}
	return Hour
}

// Table returns the table a resolution reads.
func (r Resolution) Table() string {
	switch r {
	case Min1:
		return "rollup_1m"
	case Hour:
		return "rollup_1h"
	}
	return "readings"
}

// SeriesQuery selects one signal of one asset over [From, To).
type SeriesQuery struct {
	Site, Asset, Signal string
	From, To            time.Time
	Resolution          Resolution // Auto: PickResolution(To - From)
}

// Point is one step of a series. At raw resolution it is one reading:
// Mean = Min = Max = its value (nil without one), Count 1 or 0, Good 1 or
// 0, Quality its quality. Of a rollup: the bucket's start, the mean, min
// and max of the readings with a value, how many had one, and the share of
// good readings (0..1) among all of the bucket's readings.
type Point struct {
	TS      int64    `json:"ts"` // Unix ms UTC
	Mean    *float64 `json:"mean"`
	Min     *float64 `json:"min"`
	Max     *float64 `json:"max"`
	Count   int64    `json:"count"`
	Good    float64  `json:"good"`
	Quality string   `json:"quality,omitempty"`
	Text    string   `json:"text,omitempty"`
}

// Series is a SeriesQuery's answer: the resolution used and the table that
// answered, the signal's unit from its latest birth, and the points in time
// order.
type Series struct {
	Site       string     `json:"site"`
	Asset      string     `json:"asset"`
	Signal     string     `json:"signal"`
	Unit       string     `json:"unit"`
	From       int64      `json:"from"`
	To         int64      `json:"to"`
	Resolution Resolution `json:"resolution"`
	Table      string     `json:"table"`
	Truncated  bool       `json:"truncated,omitempty"`
	Points     []Point    `json:"points"`
}

// Series reads one signal over a range at the resolution asked for or
// picked from the range.
func (s *Store) Series(ctx context.Context, q SeriesQuery) (Series, error) {
	db := s.db()
	if db == nil {
		return Series{}, ErrNotOpen
	}
	if !q.To.After(q.From) {
		return Series{}, errors.New("history: series: to must be after from")
	}
	res := q.Resolution
	if res == Auto {
		res = PickResolution(q.To.Sub(q.From))
	}
	out := Series{Site: q.Site, Asset: q.Asset, Signal: q.Signal, From: q.From.UnixMilli(), To: q.To.UnixMilli(),
		Resolution: res, Table: res.Table(), Points: []Point{}}
	var sql string
	if res == Raw {
		sql = `SELECT ts, value, value, value, CASE WHEN value IS NULL THEN 0 ELSE 1 END,
			CASE WHEN quality = 0 THEN 1.0 ELSE 0.0 END, quality, coalesce(txt, '')
			FROM readings WHERE site = $1 AND asset = $2 AND signal = $3 AND ts >= $4 AND ts < $5 ORDER BY ts LIMIT $6`
	} else {
		sql = `SELECT bucket, CASE WHEN count > 0 THEN sum / count END, min, max, count,
			CASE WHEN n > 0 THEN good::float8 / n ELSE 0 END, -1::smallint, ''
			FROM ` + res.Table() + ` WHERE site = $1 AND asset = $2 AND signal = $3 AND bucket >= $4 AND bucket < $5 ORDER BY bucket LIMIT $6`
	}
	rows, err := db.Query(ctx, sql, q.Site, q.Asset, q.Signal, q.From.UTC(), q.To.UTC(), MaxPoints+1)
	if err != nil {
		return out, fmt.Errorf("history: series: %w", err)
	}
	for rows.Next() {
		var p Point
		var ts time.Time
		var ql int16
		if err := rows.Scan(&ts, &p.Mean, &p.Min, &p.Max, &p.Count, &p.Good, &ql, &p.Text); err != nil {
			rows.Close()
			return out, fmt.Errorf("history: series: %w", err)
		}
		p.TS = ts.UnixMilli()
		if ql >= 0 {
			p.Quality = telemetry.Quality(ql).String()
		}
		out.Points = append(out.Points, p)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("history: series: %w", err)
	}
	if len(out.Points) > MaxPoints {
		out.Points, out.Truncated = out.Points[:MaxPoints], true
	}
	err = db.QueryRow(ctx, `SELECT coalesce(s->>'unit', '') FROM births, jsonb_array_elements(signals) s
		WHERE site = $1 AND asset = $2 AND s->>'signal' = $3 ORDER BY ts_gw DESC LIMIT 1`, q.Site, q.Asset, q.Signal).Scan(&out.Unit)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return out, fmt.Errorf("history: series unit: %w", err)
	}
	return out, nil
}

// AlertQuery filters alert occurrences. Empty fields do not filter;
// Severity keeps occurrences whose highest severity is at least it; State
// is "active" (not cleared) or "cleared"; From and To keep occurrences
// active at some time in [From, To]. Limit defaults to 1,000.
type AlertQuery struct {
	Site, Asset string
	Severity    alert.Severity
	State       string
	From, To    time.Time
	Limit       int
}

// AlertRecord is one stored occurrence with its latest state.
type AlertRecord struct {
	ID          string             `json:"id"`
	Key         string             `json:"key"`
	Site        string             `json:"site"`
	Class       string             `json:"class"`
	Asset       string             `json:"asset"`
	Rule        string             `json:"rule"`
	Kind        string             `json:"kind"`
	Signal      string             `json:"signal,omitempty"`
	State       string             `json:"state"`
	Severity    alert.Severity     `json:"severity"`
	MaxSeverity alert.Severity     `json:"max_severity"`
	Message     string             `json:"message"`
	Values      map[string]float64 `json:"values,omitempty"`
	RaisedAt    int64              `json:"raised_at"`
	UpdatedAt   int64              `json:"updated_at"`
	ClearedAt   int64              `json:"cleared_at,omitempty"`
	Events      []AlertEvent       `json:"events,omitempty"`
}

// AlertEvent is one lifecycle step of an occurrence.
type AlertEvent struct {
	State    string         `json:"state"`
	TS       int64          `json:"ts"`
	Severity alert.Severity `json:"severity"`
	Message  string         `json:"message"`
}

// Alerts returns the occurrences matching q, newest raised first, each with
// its events in time order.
func (s *Store) Alerts(ctx context.Context, q AlertQuery) ([]AlertRecord, error) {
	db := s.db()
	if db == nil {
		return nil, ErrNotOpen
	}
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(args))))
	}
	if q.Site != "" {
		add("site = ?", q.Site)
	}
	if q.Asset != "" {
		add("asset = ?", q.Asset)
	}
	if q.Severity > alert.None {
		add("max_severity >= ?", int16(q.Severity))
	}
	switch q.State {
	case "active":
		where = append(where, "cleared_at IS NULL")
	case "cleared":
		where = append(where, "cleared_at IS NOT NULL")
	}
	if !q.To.IsZero() {
		add("raised_at <= ?", q.To.UTC())
	}
	if !q.From.IsZero() {
		add("(cleared_at IS NULL OR cleared_at >= ?)", q.From.UTC())
	}
	sql := `SELECT id, key, site, class, asset, rule, kind, signal, state, severity, max_severity, message, vals, raised_at, updated_at, cleared_at FROM alerts`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, q.Limit)
	sql += fmt.Sprintf(" ORDER BY raised_at DESC, id LIMIT $%d", len(args))
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("history: alerts: %w", err)
	}
	out := []AlertRecord{}
	idx := map[string]int{}
	for rows.Next() {
		var a AlertRecord
		var sev, maxSev int16
		var vals []byte
		var raised, updated time.Time
		var cleared *time.Time
		if err := rows.Scan(&a.ID, &a.Key, &a.Site, &a.Class, &a.Asset, &a.Rule, &a.Kind, &a.Signal, &a.State, &sev, &maxSev, &a.Message, &vals,
			&raised, &updated, &cleared); err != nil {
			rows.Close()
			return nil, fmt.Errorf("history: alerts: %w", err)
		}
		a.Severity, a.MaxSeverity = alert.Severity(sev), alert.Severity(maxSev)
		if len(vals) > 0 {
			_ = json.Unmarshal(vals, &a.Values)
		}
		a.RaisedAt, a.UpdatedAt = raised.UnixMilli(), updated.UnixMilli()
		if cleared != nil {
			a.ClearedAt = cleared.UnixMilli()
		}
		idx[a.ID] = len(out)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history: alerts: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	ids := make([]string, 0, len(out))
	for _, a := range out {
		ids = append(ids, a.ID)
	}
	rows, err = db.Query(ctx, `SELECT id, state, ts, severity, message FROM alert_events WHERE id = ANY($1)
		ORDER BY id, `+stateRankSQL("state")+`, ts`, ids)
	if err != nil {
		return nil, fmt.Errorf("history: alert events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var e AlertEvent
		var ts time.Time
		var sev int16
		if err := rows.Scan(&id, &e.State, &ts, &sev, &e.Message); err != nil {
			return nil, fmt.Errorf("history: alert events: %w", err)
		}
		e.TS, e.Severity = ts.UnixMilli(), alert.Severity(sev)
		out[idx[id]].Events = append(out[idx[id]].Events, e)
	}
	return out, rows.Err()
}

// KPIQuery selects KPI windows that start in [From, To). With Asset the
// windows of that asset; without, the fleet: per window start and KPI the
// mean, min and max over the assets (of Class, when set) and how many.
// Name, when set, keeps one KPI.
type KPIQuery struct {
	Site, Asset, Class, Name string
	From, To                 time.Time
}

// KPIPoint is one KPI of one window: of one asset, or of the fleet (Asset
// empty, Value the mean over Assets assets, Min and Max their range).
type KPIPoint struct {
	Site     string   `json:"site,omitempty"`
	Asset    string   `json:"asset,omitempty"`
	Name     string   `json:"name"`
	Start    int64    `json:"start"`
	End      int64    `json:"end"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit,omitempty"`
	Status   string   `json:"status,omitempty"`
	Coverage float64  `json:"coverage,omitempty"`
	Assets   int      `json:"assets,omitempty"`
	Min      *float64 `json:"min,omitempty"`
	Max      *float64 `json:"max,omitempty"`
}

// KPIs returns KPI windows in time order per KPI (at most MaxPoints).
func (s *Store) KPIs(ctx context.Context, q KPIQuery) ([]KPIPoint, error) {
	db := s.db()
	if db == nil {
		return nil, ErrNotOpen
	}
	args := []any{q.From.UTC(), q.To.UTC(), q.Name, q.Class, MaxPoints}
	var sql string
	if q.Asset != "" {
		args = append(args, q.Site, q.Asset)
		sql = `SELECT site, asset, name, start, stop, value, unit, status, coverage, 1, NULL::float8, NULL::float8 FROM kpi_windows
			WHERE start >= $1 AND start < $2 AND ($3 = '' OR name = $3) AND ($4 = '' OR class = $4) AND site = $6 AND asset = $7
			ORDER BY name, start LIMIT $5`
	} else {
		sql = `SELECT '', '', name, start, max(stop), avg(value), min(unit), '', avg(coverage), count(*), min(value), max(value) FROM kpi_windows
			WHERE start >= $1 AND start < $2 AND ($3 = '' OR name = $3) AND ($4 = '' OR class = $4)
			GROUP BY name, start ORDER BY name, start LIMIT $5`
	}
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("history: kpis: %w", err)
	}
	defer rows.Close()
	out := []KPIPoint{}
	for rows.Next() {
		var p KPIPoint
		var start, stop time.Time
		var n int64
		if err := rows.Scan(&p.Site, &p.Asset, &p.Name, &start, &stop, &p.Value, &p.Unit, &p.Status, &p.Coverage, &n, &p.Min, &p.Max); err != nil {
			return nil, fmt.Errorf("history: kpis: %w", err)
		}
		p.Start, p.End = start.UnixMilli(), stop.UnixMilli()
		if q.Asset == "" {
			p.Assets = int(n)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

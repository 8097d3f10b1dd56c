package dashboard

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/history"
)

// HistoryStore is what the history API reads: the collector's PostgreSQL
// history (internal/history.Store). Unset in Options: the /api/v1/history
// endpoints answer 404 and the dashboard shows memory only.
type HistoryStore interface {
	Ready() bool
	Mode() history.Mode
	Series(ctx context.Context, q history.SeriesQuery) (history.Series, error)
	Alerts(ctx context.Context, q history.AlertQuery) ([]history.AlertRecord, error)
	KPIs(ctx context.Context, q history.KPIQuery) ([]history.KPIPoint, error)
}

// historyRanges are the names the range parameter takes (the dashboard's
// range selector).
var historyRanges = map[string]time.Duration{
	"1h": time.Hour, "6h": 6 * time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour,
	"30d": 30 * 24 * time.Hour, "90d": 90 * 24 * time.Hour, "1y": 365 * 24 * time.Hour,
}

const historyRangeNames = "1h, 6h, 24h, 7d, 30d, 90d or 1y"

// historyQueryTimeout bounds one history query.
const historyQueryTimeout = 30 * time.Second

// historyRoutes adds the /api/v1/history endpoints (docs/api.md); the
// queries are rate limited (historyTake).
func (s *Server) historyRoutes() {
	s.mux.HandleFunc("GET /api/v1/history/status", s.historyStatus)
	s.mux.HandleFunc("GET /api/v1/history/series", s.historySeries)
	s.mux.HandleFunc("GET /api/v1/history/alerts", s.historyAlerts)
	s.mux.HandleFunc("GET /api/v1/history/kpis", s.historyKPIs)
}

// HistoryStatus is the answer of /api/v1/history/status.
type HistoryStatus struct {
	Ready  bool     `json:"ready"`
	Mode   string   `json:"mode,omitempty"`
	Ranges []string `json:"ranges"`
}

func (s *Server) historyStatus(w http.ResponseWriter, r *http.Request) {
	if q := newQuery(r); !q.ok(w) {
		return
	}
	h := s.opts.History
	writeJSON(w, http.StatusOK, HistoryStatus{Ready: h.Ready(), Mode: string(h.Mode()), Ranges: []string{"1h", "6h", "24h", "7d", "30d", "90d", "1y"}})
}

// historyTime reads a from or to: Unix milliseconds (a bare integer, 0
// included: 1970, not a duration of 0), an RFC 3339 time, or a Go duration
// back from now; never later than history.MaxFuture ahead of now (nothing
// is stored later).
func historyTime(v string, now time.Time) (time.Time, error) {
	var ms int64
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return time.Time{}, fmt.Errorf("%q: Unix milliseconds must not be negative", v)
		}
		ms = n
	} else if ms, err = parseSince(v, now.UnixMilli()); err != nil {
		return time.Time{}, err
	}
	if ms > now.Add(history.MaxFuture).UnixMilli() {
		return time.Time{}, fmt.Errorf("%q: more than %v ahead of now (nothing is stored later)", v, history.MaxFuture)
	}
	return time.UnixMilli(ms), nil
}

// span reads range, or from and to (historyTime); default the last def.
func (q *query) span(now time.Time, def time.Duration) (from, to time.Time) {
	to = now
	if v := q.v.Get("to"); v != "" {
		t, err := historyTime(v, now)
		if err != nil {
			q.fail("to", err.Error())
		}
		to = t
	}
	from = to.Add(-def)
	if v := q.v.Get("range"); v != "" {
		d, ok := historyRanges[v]
		if !ok {
			q.fail("range", fmt.Sprintf("%q is not %s", v, historyRangeNames))
		}
		if q.v.Get("from") != "" {
			q.fail("range", "exclusive with from")
		}
		from = to.Add(-d)
	}
	if v := q.v.Get("from"); v != "" {
		t, err := historyTime(v, now)
		if err != nil {
			q.fail("from", err.Error())
		}
		from = t
	}
	if !to.After(from) {
		q.fail("from", "must be before to")
	}
	return from, to
}

// historyErr answers a store error: 503 "history database unavailable"
// while the database is unreachable (not connected yet, a lost connection,
// a server shutting down, a timeout: history.Unavailable); any other error
// is logged and answered 500.
func (s *Server) historyErr(w http.ResponseWriter, err error) {
	if history.Unavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		writeErr(w, http.StatusServiceUnavailable, "", "history database unavailable")
		return
	}
	s.opts.Log.Warn("history query failed", "err", err)
	writeErr(w, http.StatusInternalServerError, "", "history query failed (logged)")
}

// historyTake answers 503 "history database unavailable" while the store
// is not open (no read: no token, as the audit trail's 503), else takes
// the client's token for the query (take).
func (s *Server) historyTake(w http.ResponseWriter, r *http.Request) bool {
	if !s.opts.History.Ready() {
		s.historyErr(w, history.ErrNotOpen)
		return false
	}
	return s.take(w, r, "history")
}

func (s *Server) historySeries(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "site", "asset", "signal", "from", "to", "range", "resolution", "format")
	sq := history.SeriesQuery{Site: q.token("site"), Asset: q.token("asset"), Signal: q.token("signal")}
	for _, p := range []string{"site", "asset", "signal"} {
		if q.v.Get(p) == "" {
			q.fail(p, "required")
		}
	}
	sq.From, sq.To = q.span(s.live.now(), time.Hour)
	res, err := history.ParseResolution(q.v.Get("resolution"))
	if err != nil {
		q.fail("resolution", err.Error())
	}
	sq.Resolution = res
	format := q.format()
	if !q.ok(w) {
		return
	}
	if !s.historyTake(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyQueryTimeout)
	defer cancel()
	out, err := s.opts.History.Series(ctx, sq)
	if err != nil {
		s.historyErr(w, err)
		return
	}
	if format == "csv" {
		rows := [][]string{{"ts", "time", "mean", "min", "max", "count", "good_share", "quality", "text"}}
		for _, p := range out.Points {
			rows = append(rows, []string{strconv.FormatInt(p.TS, 10), time.UnixMilli(p.TS).UTC().Format(time.RFC3339Nano),
				csvFloat(p.Mean), csvFloat(p.Min), csvFloat(p.Max), strconv.FormatInt(p.Count, 10),
				strconv.FormatFloat(p.Good, 'g', -1, 64), p.Quality, p.Text})
		}
		name := fmt.Sprintf("%s_%s_%s_%s_%s.csv", out.Site, out.Asset, out.Signal, out.Resolution,
			time.UnixMilli(out.From).UTC().Format("20060102T150405Z"))
		w.Header().Set("X-Smelter-Resolution", string(out.Resolution))
		writeCSV(w, name, rows)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (q *query) format() string {
	switch f := q.v.Get("format"); f {
	case "", "json", "csv":
		return f
	default:
		q.fail("format", fmt.Sprintf("%q is not json or csv", f))
	}
	return ""
}

func csvFloat(v *float64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatFloat(*v, 'g', -1, 64)
}

// csvSafe neutralises a cell a spreadsheet would run as a formula: one that
// starts with = + - @, a tab or a carriage return and is not a number gets
// a leading apostrophe (text readings, alert messages and names come from
// devices and rules, not from us).
func csvSafe(cell string) string {
	if cell == "" || !strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
		return cell
	}
	if _, err := strconv.ParseFloat(cell, 64); err == nil {
		return cell // -273.15, +Inf: a number, not a formula
	}
	return "'" + cell
}

// writeCSV answers rows as a CSV download named name, every cell through
// csvSafe.
func writeCSV(w http.ResponseWriter, name string, rows [][]string) {
	var b strings.Builder
	cw := csv.NewWriter(&b)
	for _, r := range rows {
		for i := range r {
			r[i] = csvSafe(r[i])
		}
	}
	_ = cw.WriteAll(rows) // a strings.Builder does not fail
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(b.String()))
}

// HistoryAlerts is the answer of /api/v1/history/alerts.
type HistoryAlerts struct {
	From   int64                 `json:"from"`
	To     int64                 `json:"to"`
	Alerts []history.AlertRecord `json:"alerts"`
}

func (s *Server) historyAlerts(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "site", "asset", "severity", "state", "from", "to", "range", "limit", "format")
	aq := history.AlertQuery{Site: q.token("site"), Asset: q.token("asset"), State: q.v.Get("state")}
	if v := q.v.Get("severity"); v != "" {
		sev, err := alert.ParseSeverity(v)
		if err != nil {
			q.fail("severity", err.Error())
		}
		aq.Severity = sev
	}
	switch aq.State {
	case "", "active", "cleared":
	default:
		q.fail("state", fmt.Sprintf("%q is not active or cleared", aq.State))
	}
	aq.From, aq.To = q.span(s.live.now(), 30*24*time.Hour)
	aq.Limit = q.intRange("limit", 500, 1, 10000)
	format := q.format()
	if !q.ok(w) {
		return
	}
	if !s.historyTake(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyQueryTimeout)
	defer cancel()
	al, err := s.opts.History.Alerts(ctx, aq)
	if err != nil {
		s.historyErr(w, err)
		return
	}
	if format == "csv" {
		rows := [][]string{{"id", "site", "asset", "rule", "signal", "state", "severity", "max_severity", "raised_at", "cleared_at", "message"}}
		for _, a := range al {
			cleared := ""
			if a.ClearedAt > 0 {
				cleared = time.UnixMilli(a.ClearedAt).UTC().Format(time.RFC3339Nano)
			}
			rows = append(rows, []string{a.ID, a.Site, a.Asset, a.Rule, a.Signal, a.State, a.Severity.String(), a.MaxSeverity.String(),
				time.UnixMilli(a.RaisedAt).UTC().Format(time.RFC3339Nano), cleared, a.Message})
		}
		writeCSV(w, "alerts.csv", rows)
		return
	}
	writeJSON(w, http.StatusOK, HistoryAlerts{From: aq.From.UnixMilli(), To: aq.To.UnixMilli(), Alerts: al})
}

// HistoryKPIs is the answer of /api/v1/history/kpis: an asset's KPI
// windows, or without asset the fleet's (mean, min, max over the assets).
type HistoryKPIs struct {
	Site   string             `json:"site,omitempty"`
	Asset  string             `json:"asset,omitempty"`
	Fleet  bool               `json:"fleet"`
	From   int64              `json:"from"`
	To     int64              `json:"to"`
	Points []history.KPIPoint `json:"points"`
}

func (s *Server) historyKPIs(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "site", "asset", "class", "kpi", "from", "to", "range", "format")
	kq := history.KPIQuery{Site: q.token("site"), Asset: q.token("asset"), Class: q.class(s.opts.Catalog), Name: q.token("kpi")}
	if kq.Asset != "" && kq.Site == "" {
		q.fail("site", "required with asset")
	}
	kq.From, kq.To = q.span(s.live.now(), 30*24*time.Hour)
	format := q.format()
	if !q.ok(w) {
		return
	}
	if !s.historyTake(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyQueryTimeout)
	defer cancel()
	pts, err := s.opts.History.KPIs(ctx, kq)
	if err != nil {
		s.historyErr(w, err)
		return
	}
	if format == "csv" {
		rows := [][]string{{"start", "end", "kpi", "value", "unit", "status", "assets", "min", "max"}}
		for _, p := range pts {
			rows = append(rows, []string{time.UnixMilli(p.Start).UTC().Format(time.RFC3339Nano), time.UnixMilli(p.End).UTC().Format(time.RFC3339Nano),
				p.Name, strconv.FormatFloat(p.Value, 'g', -1, 64), p.Unit, p.Status, strconv.Itoa(p.Assets), csvFloat(p.Min), csvFloat(p.Max)})
		}
		writeCSV(w, "kpis.csv", rows)
		return
	}
	writeJSON(w, http.StatusOK, HistoryKPIs{Site: kq.Site, Asset: kq.Asset, Fleet: kq.Asset == "", From: kq.From.UnixMilli(), To: kq.To.UnixMilli(), Points: pts})
}

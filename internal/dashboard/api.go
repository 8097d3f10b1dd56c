package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Source is what the dashboard reads from the collector.
type Source interface {
	Assets() []rules.AssetView
	Asset(site, id string) (rules.AssetView, bool)
	Alerts(activeOnly bool) []alert.Alert
	KPIs(site, id string) (kpi.Result, bool)
}

// Options configure the HTTP handler.
type Options struct {
	// Token, when not empty, is the bearer token every /api request must
	// carry (Authorization: Bearer <token>). It is never logged.
	Token   string
	Catalog *catalog.Catalog // default catalog.Default()
	Log     *slog.Logger
	// Tick is the SSE coalescing period for asset values (default 1s).
	Tick time.Duration
	// KPI is the collector's KPI configuration; the energy page tells
	// which windows are configured and when the first one ends.
	KPI kpi.Config
	// Operators maps operators' bearer tokens to their names: they may
	// send commands (commands.go); viewers (Token) may not. Never logged.
	Operators map[string]string
	// Commands is the command service; nil: no commands, no audit trail.
	Commands Commander
	// History, when set, serves /api/v1/history (historyapi.go).
	History HistoryStore
	// RateLimit limits the audit trail and history queries per client
	// (ratelimit.go); zero: no limit. Its TrustedProxies also name the
	// client of an event stream (MaxStreamsPerClient).
	RateLimit RateLimit
	// MaxStreams caps the event streams open at once (default
	// DefaultMaxStreams), MaxStreamsPerClient those of one client (an
	// address, an IPv6 /64; default DefaultMaxStreamsPerClient): a stream
	// beyond either gets 503 with Retry-After (streams.go).
	MaxStreams, MaxStreamsPerClient int
	// StreamWriteTimeout is how long one write of an event stream may
	// block (a client that does not read) before the stream is closed
	// (default DefaultStreamWriteTimeout).
	StreamWriteTimeout time.Duration
	// Streams receives the event streams' counts (nil: the server's own).
	Streams *StreamStats
}

// Server serves the API, the event stream and the dashboard.
type Server struct {
	src   Source
	live  *Live
	opts  Options
	mux   *http.ServeMux
	limit *limiter // nil: no rate limit
	// refused limits the audit records of refused commands per client
	// (commands.go, refusedAudit)
	refused *refusedAudit
	// newTicker, when set (tests), gives each event stream its tick
	// channel and stop function instead of a ticker of Options.Tick.
	newTicker func() (<-chan time.Time, func())
	// event streams: their slots, and the large events they share
	slots                     streamSlots
	gwList, gwSnap, allAssets sharedEvent
	changes, gwDeltas         changeChain // the assets events after the first, gateways.delta
}

// New builds the handler. It does no I/O.
func New(src Source, live *Live, opts Options) *Server {
	if opts.Catalog == nil {
		opts.Catalog = catalog.Default()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.MaxStreamsPerClient <= 0 {
		opts.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	if opts.StreamWriteTimeout <= 0 {
		opts.StreamWriteTimeout = DefaultStreamWriteTimeout
	}
	if opts.Streams == nil {
		opts.Streams = &StreamStats{}
	}
	s := &Server{src: src, live: live, opts: opts, mux: http.NewServeMux(), limit: newLimiter(opts.RateLimit),
		refused: newRefusedAudit(opts.RateLimit),
		slots:   streamSlots{perClient: map[netip.Addr]int{}}}
	s.mux.HandleFunc("GET /api/v1/assets", s.assets)
	s.mux.HandleFunc("GET /api/v1/assets/{site}/{id}", s.asset)
	s.mux.HandleFunc("GET /api/v1/assets/{site}/{id}/history", s.history)
	s.mux.HandleFunc("GET /api/v1/assets/{site}/{id}/kpis", s.assetKPIs)
	s.mux.HandleFunc("GET /api/v1/alerts", s.alerts)
	s.mux.HandleFunc("GET /api/v1/kpis", s.kpis)
	s.mux.HandleFunc("GET /api/v1/kpis/rollup", s.rollup)
	s.mux.HandleFunc("GET /api/v1/gateways", s.gateways)
	s.mux.HandleFunc("GET /api/v1/catalog", s.catalog)
	s.mux.HandleFunc("GET /api/v1/events", s.events)
	s.mux.HandleFunc("GET /api/v1/session", s.session)
	s.mux.HandleFunc("POST /api/v1/assets/{site}/{id}/commands", s.sendCommand)
	s.mux.HandleFunc("GET /api/v1/assets/{site}/{id}/audit", s.audit) // rate limited (take)
	if opts.History != nil {
		s.historyRoutes()
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "", "no such endpoint "+r.Method+" "+r.URL.Path+" (see docs/api.md)")
	})
	s.mux.Handle("/", staticHandler())
	return s
}

// ServeHTTP applies the security headers and the bearer token check.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer") // a first visit may carry ?token=
	h.Set("X-Frame-Options", "DENY")
	if strings.HasPrefix(r.URL.Path, "/api/") {
		who, ok := s.identify(r)
		if !ok {
			h.Set("WWW-Authenticate", `Bearer realm="smelter"`)
			writeErr(w, http.StatusUnauthorized, "Authorization", "missing or wrong bearer token")
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, who))
	}
	s.mux.ServeHTTP(w, r)
}

// apiError is the body of every 4xx/5xx API answer.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// maxEcho bounds what an error answer repeats of the request: a field name
// and a message (which quotes the value) are cut there, so a 100 KB query
// value is not echoed back.
const maxEcho = 256

// clip cuts s to n bytes at a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("… (%d bytes)", len(s))
}

func writeErr(w http.ResponseWriter, code int, field, msg string) {
	field, msg = clip(field, 64), clip(msg, maxEcho)
	if field != "" {
		msg = field + ": " + msg
	}
	writeJSON(w, code, apiError{Error: msg, Field: field})
}

// writeJSON encodes v before it writes the status, so a value that does
// not encode gives a 500 with a JSON error, never a 200 with an empty body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		code = http.StatusInternalServerError
		_ = enc.Encode(apiError{Error: "encode the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// badParam is a query validation error naming its parameter.
type badParam struct{ field, msg string }

func (e *badParam) Error() string { return e.field + ": " + e.msg }

// query validates the query string against the allowed parameters.
type query struct {
	v   url.Values
	err *badParam
}

func newQuery(r *http.Request, allowed ...string) *query {
	q := &query{v: r.URL.Query()}
	for k, vs := range q.v {
		if !slices.Contains(allowed, k) {
			q.fail(k, fmt.Sprintf("unknown parameter (allowed: %s)", strings.Join(allowed, ", ")))
		} else if len(vs) > 1 {
			q.fail(k, fmt.Sprintf("given %d times; give it once", len(vs)))
		}
	}
	return q
}

func (q *query) fail(field, msg string) {
	if q.err == nil {
		q.err = &badParam{field, msg}
	}
}

func (q *query) token(name string) string {
	s := q.v.Get(name)
	if s != "" && !telemetry.ValidToken(s) {
		q.fail(name, fmt.Sprintf("%q is not a valid token (1-64 of A-Z a-z 0-9 _ -)", s))
		return ""
	}
	return s
}

func (q *query) class(cat *catalog.Catalog) string {
	s := q.v.Get("class")
	if s == "" {
		return ""
	}
	if _, ok := cat.Class(s); !ok {
		q.fail("class", fmt.Sprintf("unknown class %q (want one of %s)", s, strings.Join(cat.ClassNames(), ", ")))
		return ""
	}
	return s
}

func (q *query) boolean(name string) *bool {
	s := q.v.Get(name)
	if s == "" {
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		q.fail(name, fmt.Sprintf("%q is not a boolean (want true or false)", s))
		return nil
	}
	return &b
}

func (q *query) intRange(name string, def, lo, hi int) int {
	s := q.v.Get(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		q.fail(name, fmt.Sprintf("%q is not an integer within %d..%d", s, lo, hi))
		return def
	}
	return n
}

func (q *query) ok(w http.ResponseWriter) bool {
	if q.err != nil {
		writeErr(w, http.StatusBadRequest, q.err.field, q.err.msg)
		return false
	}
	return true
}

// SignalOut is one signal's latest value.
type SignalOut struct {
	Signal  string   `json:"signal"`
	Value   *float64 `json:"value"` // null when the latest reading carries no usable value
	Text    string   `json:"text,omitempty"`
	Unit    string   `json:"unit,omitempty"`
	Quality string   `json:"quality"`
	TS      int64    `json:"ts"`
	AgeMS   int64    `json:"age_ms"`
	// From the catalog, on the asset detail only.
	Description string   `json:"description,omitempty"`
	Min         *float64 `json:"min,omitempty"`
	Max         *float64 `json:"max,omitempty"`
	States      []string `json:"states,omitempty"`
}

// AssetOut is one asset as served by the API.
type AssetOut struct {
	Site    string   `json:"site"`
	ID      string   `json:"id"`
	Class   string   `json:"class"`
	Path    []string `json:"path,omitempty"`
	Status  string   `json:"status"` // ok, warn, alarm, stale
	Running bool     `json:"running"`
	LastTS  int64    `json:"last_ts"`
	AgeMS   int64    `json:"age_ms"` // on the data clock (DataNow - LastTS)
	// DataNow is the asset's data clock (Unix ms) when served, and
	// ClockRate how many data ms pass per wall ms (1 for real equipment,
	// the speed of a simulated plant): a page ages values as
	// DataNow + (wall elapsed) x ClockRate - ts.
	DataNow   int64   `json:"data_now,omitempty"`
	ClockRate float64 `json:"clock_rate,omitempty"`
	// Silent is set when the asset sent nothing for longer than
	// SilentAssetAfter of data time: its status is stale whatever its
	// alerts say.
	Silent    bool               `json:"silent,omitempty"`
	Gateway   string             `json:"gateway,omitempty"`
	Dead      string             `json:"dead,omitempty"`
	Alerts    int                `json:"alerts"`
	Severity  string             `json:"severity,omitempty"` // highest active alert severity
	Signals   []SignalOut        `json:"signals"`
	Nameplate map[string]float64 `json:"nameplate,omitempty"`
	// SignalsRefused counts the readings and birth signals refused since
	// this collector tracks the asset because it held
	// max_signals_per_asset signals (docs/collector.md, "Bounded memory").
	SignalsRefused uint64 `json:"signals_refused,omitempty"`
}

type alertSummary struct {
	n     int
	max   alert.Severity
	stale bool
}

func summarize(active []alert.Alert) map[assetKey]alertSummary {
	m := map[assetKey]alertSummary{}
	for i := range active {
		a := &active[i]
		k := assetKey{a.Site, a.Asset}
		s := m[k]
		s.n++
		s.max = max(s.max, a.Severity)
		if a.Kind == "stale" && a.Signal == "" {
			s.stale = true
		}
		m[k] = s
	}
	return m
}

// Status values of an asset.
const (
	StatusOK    = "ok"
	StatusWarn  = "warn"
	StatusAlarm = "alarm"
	StatusStale = "stale"
)

func statusOf(v *rules.AssetView, s alertSummary) string {
	switch {
	case v.Dead != "" || s.stale:
		return StatusStale
	case s.max >= alert.Alarm:
		return StatusAlarm
	case s.max == alert.Warn:
		return StatusWarn
	}
	return StatusOK
}

// SilentAssetAfter is how long (data time) an asset may send nothing before
// it is shown as stale even without a stale alert: at least two minutes,
// and at least 3 s of wall time at the gateway's clock rate.
const SilentAssetAfter = 2 * time.Minute

func (s *Server) assetOut(v *rules.AssetView, sum alertSummary, wallNow int64, detail bool) AssetOut {
	o := AssetOut{Site: v.Site, ID: v.ID, Class: v.Class, Path: v.Path, Running: v.Running, LastTS: v.LastTS, Dead: v.Dead,
		Alerts: sum.n, Status: statusOf(v, sum), Signals: make([]SignalOut, 0, len(v.Signals)), SignalsRefused: v.SignalsRefused}
	now := wallNow
	if s.live != nil {
		if dn, rate, ok := s.live.DataClock(v.Site, v.ID, wallNow); ok {
			now, o.DataNow, o.ClockRate = dn, dn, rate
		}
	}
	if v.LastTS > 0 {
		o.AgeMS = max(0, now-v.LastTS)
		limit := max(SilentAssetAfter.Milliseconds(), int64(3000*o.ClockRate))
		if o.AgeMS > limit {
			o.Silent, o.Status = true, StatusStale
		}
	}
	if sum.max > alert.None {
		o.Severity = sum.max.String()
	}
	o.Gateway = v.Gateway // the newest evaluated message's, restored from the checkpoint (review4 F7)
	cl, _ := s.opts.Catalog.Class(v.Class)
	for _, sv := range v.Signals {
		so := SignalOut{Signal: sv.Signal, Text: sv.Text, Unit: sv.Unit, Quality: sv.Quality, TS: sv.TS, AgeMS: max(0, now-sv.TS)}
		if sv.Valid && !math.IsNaN(sv.Value) && !math.IsInf(sv.Value, 0) {
			x := sv.Value
			so.Value = &x
		}
		if cl != nil {
			if cs, ok := cl.Signals[sv.Signal]; ok {
				if cs.IsState() && so.Value != nil && so.Text == "" {
					if i := int(*so.Value); i >= 0 && i < len(cs.States) && float64(i) == *so.Value {
						so.Text = cs.States[i]
					}
				}
				if detail {
					so.Description, so.Min, so.Max, so.States = cs.Description, cs.Min, cs.Max, cs.States
				}
			}
		}
		o.Signals = append(o.Signals, so)
	}
	if detail {
		o.Nameplate = v.Nameplate
	}
	return o
}

func (s *Server) now() int64 { return s.live.now().UnixMilli() }

func (s *Server) assets(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "site", "class", "status", "limit", "cursor")
	site, class := q.token("site"), q.class(s.opts.Catalog)
	status := q.v.Get("status")
	switch status {
	case "", StatusOK, StatusWarn, StatusAlarm, StatusStale:
	default:
		q.fail("status", fmt.Sprintf("%q (want ok, warn, alarm or stale)", status))
	}
	after, limit, paged := q.assetPage("assets", s.opts.Catalog)
	if !q.ok(w) {
		return
	}
	sum := summarize(s.src.Alerts(true))
	now := s.now()
	views := s.src.Assets()
	out := make([]AssetOut, 0, len(views))
	for i := range views {
		v := &views[i]
		if site != "" && v.Site != site || class != "" && v.Class != class {
			continue
		}
		o := s.assetOut(v, sum[assetKey{v.Site, v.ID}], now, false)
		if status != "" && o.Status != status {
			continue
		}
		out = append(out, o)
	}
	sortAssets(out)
	page, next := pageOf("assets", out, assetKeyOf, cmpAssetKey, ptrIf(&after, paged), limit)
	writeJSON(w, http.StatusOK, listAnswer(now, "assets", page, len(out), next))
}

func sortAssets(out []AssetOut) {
	slices.SortFunc(out, func(a, b AssetOut) int { return cmpAssetKey(assetKeyOf(&a), assetKeyOf(&b)) })
}

// assetPageKey is the sort key of /assets and /kpis (site, class, asset),
// carried by their cursors.
type assetPageKey struct {
	Site  string `json:"s"`
	Class string `json:"c"`
	ID    string `json:"i"`
}

// assetPage is page for /assets and /kpis (endpoint ep): the cursor's
// class must also be one of the catalog's, as an asset's is.
func (q *query) assetPage(ep string, cat *catalog.Catalog) (after assetPageKey, limit int, paged bool) {
	limit, paged = q.page(ep, &after)
	if paged {
		if _, ok := cat.Class(after.Class); !ok {
			q.fail("cursor", notACursor)
			paged = false
		}
	}
	return after, limit, paged
}

// check: site, class and id are tokens, as an asset's are.
func (k *assetPageKey) check() error {
	if !telemetry.ValidToken(k.Site) || !telemetry.ValidToken(k.Class) || !telemetry.ValidToken(k.ID) {
		return fmt.Errorf("site, class and id must be tokens")
	}
	return nil
}

func assetKeyOf(a *AssetOut) assetPageKey { return assetPageKey{a.Site, a.Class, a.ID} }

func cmpAssetKey(a, b assetPageKey) int {
	return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Class, b.Class), cmp.Compare(a.ID, b.ID))
}

// ptrIf is p when ok, else nil (no cursor: the first page).
func ptrIf[K any](p *K, ok bool) *K {
	if ok {
		return p
	}
	return nil
}

// listAnswer is the answer of a paged list endpoint: generated_at, the
// page under name, total (over all pages) and next (absent on the last
// page).
func listAnswer(now int64, name string, page any, total int, next string) map[string]any {
	out := map[string]any{"generated_at": now, name: page, "total": total}
	if next != "" {
		out["next"] = next
	}
	return out
}

// pathAsset validates {site}/{id} and looks the asset up.
func (s *Server) pathAsset(w http.ResponseWriter, r *http.Request) (rules.AssetView, bool) {
	site, id := r.PathValue("site"), r.PathValue("id")
	for _, p := range [][2]string{{"site", site}, {"id", id}} {
		if !telemetry.ValidToken(p[1]) {
			writeErr(w, http.StatusBadRequest, p[0], fmt.Sprintf("%q is not a valid token (1-64 of A-Z a-z 0-9 _ -)", p[1]))
			return rules.AssetView{}, false
		}
	}
	v, ok := s.src.Asset(site, id)
	if !ok {
		writeErr(w, http.StatusNotFound, "", fmt.Sprintf("no asset %s/%s", site, id))
	}
	return v, ok
}

// AssetDetail is one asset with its alerts and latest KPIs.
type AssetDetail struct {
	AssetOut
	ActiveAlerts []alert.Alert `json:"active_alerts"`
	KPI          *kpi.Result   `json:"kpi,omitempty"`
	// Writable: the signals commands may write, with the gateway's limits
	// (from the birth; docs/commands.md).
	Writable []rules.WritableView `json:"writable,omitempty"`
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r)
	if !q.ok(w) {
		return
	}
	v, ok := s.pathAsset(w, r)
	if !ok {
		return
	}
	var mine []alert.Alert
	for _, a := range s.src.Alerts(true) {
		if a.Site == v.Site && a.Asset == v.ID {
			mine = append(mine, a)
		}
	}
	sortAlerts(mine)
	d := AssetDetail{AssetOut: s.assetOut(&v, summarize(mine)[assetKey{v.Site, v.ID}], s.now(), true), ActiveAlerts: mine, Writable: v.Writable}
	if d.ActiveAlerts == nil {
		d.ActiveAlerts = []alert.Alert{}
	}
	if k, ok := s.src.KPIs(v.Site, v.ID); ok {
		d.KPI = &k
	}
	writeJSON(w, http.StatusOK, d)
}

// parseSince accepts a duration back from now ("15m"), Unix milliseconds
// or an RFC 3339 time.
func parseSince(s string, now int64) (int64, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("%q: a duration back from now must be positive", s)
		}
		if d.Milliseconds() > now {
			return 0, fmt.Errorf("%q: reaches back before 1970", s)
		}
		return now - d.Milliseconds(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%q: Unix milliseconds must not be negative", s)
		}
		return n, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixMilli(), nil
	}
	return 0, fmt.Errorf("%q is not a duration (15m), Unix milliseconds or an RFC 3339 time", s)
}

// HistoryOut is the answer of /history.
type HistoryOut struct {
	Site   string         `json:"site"`
	ID     string         `json:"id"`
	Since  int64          `json:"since"`
	Fine   int64          `json:"fine_resolution_ms"`
	FineS  int64          `json:"fine_span_ms"`
	Coarse int64          `json:"coarse_resolution_ms"`
	Span   int64          `json:"span_ms"`
	Series []SeriesPoints `json:"series"`
}

// SeriesPoints is one signal's history.
type SeriesPoints struct {
	Signal string  `json:"signal"`
	Unit   string  `json:"unit,omitempty"`
	Points []Point `json:"points"`
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "signal", "since")
	// "since=15m" counts back on the asset's data clock (see DataClock)
	now := s.now()
	if dn, _, ok := s.live.DataClock(r.PathValue("site"), r.PathValue("id"), now); ok {
		now = dn
	}
	since := now - CoarseSpan.Milliseconds()
	if v := q.v.Get("since"); v != "" {
		t, err := parseSince(v, now)
		if err != nil {
			q.fail("since", err.Error())
		}
		since = t
	}
	var signals []string
	if v := q.v.Get("signal"); v != "" {
		for _, sig := range strings.Split(v, ",") {
			if !telemetry.ValidToken(sig) {
				q.fail("signal", fmt.Sprintf("%q is not a signal name", sig))
			}
			signals = append(signals, sig)
		}
	}
	if !q.ok(w) {
		return
	}
	v, ok := s.pathAsset(w, r)
	if !ok {
		return
	}
	pts, units, missing, _ := s.live.History(v.Site, v.ID, signals, since)
	if len(missing) > 0 {
		known := make([]string, 0, len(v.Signals))
		for _, sv := range v.Signals {
			known = append(known, sv.Signal)
		}
		writeErr(w, http.StatusBadRequest, "signal", fmt.Sprintf("asset %s/%s has no history for %s (known: %s)",
			v.Site, v.ID, strings.Join(missing, ", "), strings.Join(known, ", ")))
		return
	}
	out := HistoryOut{Site: v.Site, ID: v.ID, Since: since, Fine: FineResolution.Milliseconds(), FineS: FineSpan.Milliseconds(),
		Coarse: CoarseResolution.Milliseconds(), Span: CoarseSpan.Milliseconds(), Series: []SeriesPoints{}}
	for name, p := range pts {
		if p == nil {
			p = []Point{}
		}
		out.Series = append(out.Series, SeriesPoints{Signal: name, Unit: units[name], Points: p})
	}
	slices.SortFunc(out.Series, func(a, b SeriesPoints) int { return strings.Compare(a.Signal, b.Signal) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) assetKPIs(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r)
	if !q.ok(w) {
		return
	}
	v, ok := s.pathAsset(w, r)
	if !ok {
		return
	}
	h := s.live.KPIHistory(v.Site, v.ID)
	if len(h) == 0 {
		// restored or older windows the store did not see
		if k, ok := s.src.KPIs(v.Site, v.ID); ok {
			h = append(h, k)
		}
	}
	if h == nil {
		h = []kpi.Result{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"site": v.Site, "id": v.ID, "windows": h})
}

// AlertOut is one alert occurrence: its latest state.
type AlertOut struct {
	alert.Alert
	Active bool `json:"active"`
}

// sortAlerts puts active alerts first (most severe, then newest raised),
// then cleared ones (newest clear first); key and then id break ties, so
// the order is total and a cursor can resume it.
func sortAlerts(a []alert.Alert) {
	slices.SortFunc(a, func(x, y alert.Alert) int { return cmpAlertKey(alertKeyOf(&x), alertKeyOf(&y)) })
}

// alertPageKey is the sort key of /alerts, carried by its cursor: T is
// the raise time of an active alert, the clear time of a cleared one.
type alertPageKey struct {
	Active   bool   `json:"a"`
	Severity uint8  `json:"s"`
	T        int64  `json:"t"`
	Key      string `json:"k"`
	ID       string `json:"i"`
}

// check: an active alert's severity is info..trip, a cleared one's 0
// (alertKeyOf), the time is not negative, key and id are given.
func (k *alertPageKey) check() error {
	switch {
	case k.Active && (k.Severity < uint8(alert.Info) || k.Severity > uint8(alert.Trip)),
		!k.Active && k.Severity != 0:
		return fmt.Errorf("severity %d out of range", k.Severity)
	case k.T < 0 || k.Key == "" || k.ID == "":
		return fmt.Errorf("time, key or id out of range")
	}
	return nil
}

func alertKeyOf(a *alert.Alert) alertPageKey {
	k := alertPageKey{Active: a.Active(), Key: a.Key, ID: a.ID, T: a.ClearedAt}
	if k.Active {
		k.Severity, k.T = uint8(a.Severity), a.RaisedAt
	}
	return k
}

func cmpAlertKey(x, y alertPageKey) int {
	switch {
	case x.Active != y.Active:
		if x.Active {
			return -1
		}
		return 1
	case x.Active:
		return cmp.Or(cmp.Compare(y.Severity, x.Severity), cmp.Compare(y.T, x.T), cmp.Compare(x.Key, y.Key), cmp.Compare(x.ID, y.ID))
	}
	return cmp.Or(cmp.Compare(y.T, x.T), cmp.Compare(x.Key, y.Key), cmp.Compare(x.ID, y.ID))
}

func (s *Server) alerts(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "active", "severity", "class", "site", "asset", "limit", "cursor")
	active := q.boolean("active")
	var minSev alert.Severity
	if v := q.v.Get("severity"); v != "" {
		sv, err := alert.ParseSeverity(v)
		if err != nil {
			q.fail("severity", err.Error())
		}
		minSev = sv
	}
	class, site, asset := q.class(s.opts.Catalog), q.token("site"), q.token("asset")
	var after alertPageKey
	limit, paged := q.page("alerts", &after)
	if !q.ok(w) {
		return
	}
	// one row per occurrence: active alerts, then the latest event of each
	// recent occurrence
	byID := map[string]alert.Alert{}
	if active == nil || !*active {
		for _, a := range s.src.Alerts(false) {
			byID[a.ID] = a
		}
	}
	for _, a := range s.src.Alerts(true) {
		if old, ok := byID[a.ID]; !ok || old.UpdatedAt <= a.UpdatedAt {
			byID[a.ID] = a
		}
	}
	list := make([]alert.Alert, 0, len(byID))
	for _, a := range byID {
		switch {
		case active != nil && a.Active() != *active,
			a.Severity < minSev,
			class != "" && a.Class != class,
			site != "" && a.Site != site,
			asset != "" && a.Asset != asset:
			continue
		}
		list = append(list, a)
	}
	sortAlerts(list)
	page, next := pageOf("alerts", list, alertKeyOf, cmpAlertKey, ptrIf(&after, paged), limit)
	out := make([]AlertOut, len(page))
	nActive := 0
	for i, a := range page {
		out[i] = AlertOut{Alert: a, Active: a.Active()}
		if a.Active() {
			nActive++
		}
	}
	ans := listAnswer(s.now(), "alerts", out, len(list), next)
	ans["active"] = nActive
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) kpis(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "site", "class", "limit", "cursor")
	site, class := q.token("site"), q.class(s.opts.Catalog)
	after, limit, paged := q.assetPage("kpis", s.opts.Catalog)
	if !q.ok(w) {
		return
	}
	out := []kpi.Result{}
	for _, v := range s.src.Assets() {
		if site != "" && v.Site != site || class != "" && v.Class != class {
			continue
		}
		if k, ok := s.src.KPIs(v.Site, v.ID); ok {
			out = append(out, k)
		}
	}
	keyOf := func(k *kpi.Result) assetPageKey { return assetPageKey{k.Site, k.Class, k.Asset} }
	slices.SortFunc(out, func(a, b kpi.Result) int { return cmpAssetKey(keyOf(&a), keyOf(&b)) })
	page, next := pageOf("kpis", out, keyOf, cmpAssetKey, ptrIf(&after, paged), limit)
	writeJSON(w, http.StatusOK, listAnswer(s.now(), "kpis", page, len(out), next))
}

// Rollup is one class's KPI statistics over the fleet.
type Rollup struct {
	Class string      `json:"class"`
	KPIs  []KPIRollup `json:"kpis"`
}

// KPIRollup is one KPI over every asset of a class with a value.
type KPIRollup struct {
	Name       string      `json:"name"`
	Unit       string      `json:"unit,omitempty"`
	Worse      string      `json:"worse"`         // kpi.WorseHigh, WorseLow or WorseNone: which way it gets worse; the ranking lists the worst first (highest first for none)
	Key        bool        `json:"key,omitempty"` // the class's key KPI (kpi.KeyKPI)
	Count      int         `json:"count"`
	Mean       float64     `json:"mean"`
	Min        float64     `json:"min"`
	Max        float64     `json:"max"`
	OutOfLimit int         `json:"out_of_limit"`
	Ranking    []RankEntry `json:"ranking"` // worst first
}

// RankEntry is one asset in a KPI ranking.
type RankEntry struct {
	Site    string   `json:"site"`
	Asset   string   `json:"asset"`
	Value   float64  `json:"value"`
	Status  string   `json:"status"`
	Ref     *float64 `json:"ref,omitempty"`
	Limit   *float64 `json:"limit,omitempty"`
	Message string   `json:"message,omitempty"`
	End     int64    `json:"end"`
	// Coverage is the fraction of the window that held data: below 1 the
	// window was partial (the first one after a start, or a data gap).
	Coverage float64 `json:"coverage"`
}

func (s *Server) rollup(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "site", "class", "top")
	site, class := q.token("site"), q.class(s.opts.Catalog)
	top := q.intRange("top", 5, 1, 1000)
	if !q.ok(w) {
		return
	}
	type key struct{ class, name string }
	acc := map[key]*KPIRollup{}
	for _, v := range s.src.Assets() {
		if site != "" && v.Site != site || class != "" && v.Class != class {
			continue
		}
		res, ok := s.src.KPIs(v.Site, v.ID)
		if !ok {
			continue
		}
		for _, k := range res.KPIs {
			if k.Status == kpi.StatusNA {
				continue
			}
			kk := key{res.Class, k.Name}
			ro := acc[kk]
			if ro == nil {
				ro = &KPIRollup{Name: k.Name, Unit: k.Unit, Worse: kpi.Worse(k.Name), Min: k.Value, Max: k.Value,
					Key: kpi.KeyKPI(res.Class) == k.Name}
				acc[kk] = ro
			}
			ro.Count++
			ro.Mean += k.Value
			ro.Min, ro.Max = min(ro.Min, k.Value), max(ro.Max, k.Value)
			if k.Status == kpi.StatusHigh || k.Status == kpi.StatusLow {
				ro.OutOfLimit++
			}
			ro.Ranking = append(ro.Ranking, RankEntry{Site: res.Site, Asset: res.Asset, Value: k.Value, Status: k.Status,
				Ref: k.Ref, Limit: k.Limit, Message: k.Message, End: res.End, Coverage: res.Coverage})
		}
	}
	byClass := map[string]*Rollup{}
	for kk, ro := range acc {
		ro.Mean = roundSig(ro.Mean / float64(ro.Count))
		slices.SortFunc(ro.Ranking, func(a, b RankEntry) int {
			c := cmp.Compare(a.Value, b.Value)
			if ro.Worse != kpi.WorseLow {
				c = -c
			}
			return cmp.Or(c, cmp.Compare(a.Asset, b.Asset))
		})
		if len(ro.Ranking) > top {
			ro.Ranking = ro.Ranking[:top]
		}
		c := byClass[kk.class]
		if c == nil {
			c = &Rollup{Class: kk.class}
			byClass[kk.class] = c
		}
		c.KPIs = append(c.KPIs, *ro)
	}
	out := make([]Rollup, 0, len(byClass))
	for _, c := range byClass {
		slices.SortFunc(c.KPIs, func(a, b KPIRollup) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Rollup) int { return strings.Compare(a.Class, b.Class) })
	writeJSON(w, http.StatusOK, map[string]any{"generated_at": s.now(), "classes": out, "windows": s.kpiWindows()})
}

// KPIWindows tells a page the configured KPI windows.
type KPIWindows struct {
	DefaultMS   int64            `json:"default_ms"`
	ByClass     map[string]int64 `json:"by_class,omitempty"`
	MinCoverage float64          `json:"min_coverage"`
}

func (s *Server) kpiWindows() KPIWindows {
	k := s.opts.KPI
	out := KPIWindows{DefaultMS: k.Window.Milliseconds(), MinCoverage: k.MinCoverage}
	if out.DefaultMS == 0 {
		out.DefaultMS = (15 * time.Minute).Milliseconds() // kpi.Config's default
	}
	if out.MinCoverage == 0 {
		out.MinCoverage = 0.5
	}
	for c, w := range k.Windows {
		if out.ByClass == nil {
			out.ByClass = map[string]int64{}
		}
		out.ByClass[c] = w.Milliseconds()
	}
	return out
}

func (s *Server) gateways(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "limit", "cursor")
	var after gatewayPageKey
	limit, paged := q.page("gateways", &after)
	if !q.ok(w) {
		return
	}
	all := s.live.Gateways() // sorted by id
	page, next := pageOf("gateways", all, func(g *GatewayView) gatewayPageKey { return gatewayPageKey{g.ID} },
		func(a, b gatewayPageKey) int { return cmp.Compare(a.ID, b.ID) }, ptrIf(&after, paged), limit)
	out := listAnswer(s.now(), "gateways", page, len(all), next)
	out["silent_after_ms"] = s.live.SilentAfter().Milliseconds()       // what "silent" means in status
	out["clock_tolerance_ms"] = s.live.ClockTolerance().Milliseconds() // what clock_skew means (0: nothing marked)
	writeJSON(w, http.StatusOK, out)
}

// gatewayPageKey is the sort key of /gateways (the id), carried by its cursor.
type gatewayPageKey struct {
	ID string `json:"g"`
}

// check: a gateway id is a token.
func (k *gatewayPageKey) check() error {
	if !telemetry.ValidToken(k.ID) {
		return fmt.Errorf("gateway id must be a token")
	}
	return nil
}

// ClassOut describes a catalog class for the dashboard.
type ClassOut struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Nameplate   []string    `json:"nameplate,omitempty"`
	Signals     []SignalDef `json:"signals"`
}

// RatingDef is a nameplate rating's unit and meaning.
type RatingDef struct {
	Unit        string            `json:"unit"`
	Description string            `json:"description,omitempty"`
	Codes       map[string]string `json:"codes,omitempty"` // a code rating's values and their meaning ("1": "bulk carrier")
}

// SignalDef is a catalog signal.
type SignalDef struct {
	Signal      string   `json:"signal"`
	Unit        string   `json:"unit,omitempty"`
	Min         *float64 `json:"min,omitempty"`
	Max         *float64 `json:"max,omitempty"`
	States      []string `json:"states,omitempty"`
	Description string   `json:"description,omitempty"`
}

func (s *Server) catalog(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r)
	if !q.ok(w) {
		return
	}
	cat := s.opts.Catalog
	out := make([]ClassOut, 0, len(cat.Classes))
	for _, name := range cat.ClassNames() {
		cl, _ := cat.Class(name)
		co := ClassOut{Name: name, Description: cl.Description, Nameplate: cl.Nameplate, Signals: []SignalDef{}}
		for _, sn := range cl.SignalNames() {
			sg := cl.Signals[sn]
			co.Signals = append(co.Signals, SignalDef{Signal: sn, Unit: sg.Unit, Min: sg.Min, Max: sg.Max, States: sg.States, Description: sg.Description})
		}
		out = append(out, co)
	}
	ratings := make(map[string]RatingDef, len(cat.Ratings))
	for n, r := range cat.Ratings {
		rd := RatingDef{Unit: r.Unit, Description: r.Description}
		for code, name := range r.Codes {
			if rd.Codes == nil {
				rd.Codes = map[string]string{}
			}
			rd.Codes[strconv.Itoa(code)] = name
		}
		ratings[n] = rd
	}
	fuels := make(map[string]string, len(cat.Fuels))
	for code, f := range cat.Fuels {
		fuels[strconv.Itoa(code)] = f.Name
	}
	writeJSON(w, http.StatusOK, map[string]any{"classes": out, "ratings": ratings, "fuels": fuels, "kpi_windows": s.kpiWindows()})
}

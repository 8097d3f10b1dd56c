package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// fixture is a real collector fed through Handle with encoded messages,
// served by its own HTTP handler.
type fixture struct {
	t   *testing.T
	col *collector.Collector
	srv *httptest.Server
	seq uint64
	now int64
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	return newFixtureWith(t, token, nil)
}

// newFixtureWith is newFixture with the configuration changed by set
// before the collector starts.
func newFixtureWith(t *testing.T, token string, set func(*collector.Config)) *fixture {
	t.Helper()
	cfg := collector.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = ""
	cfg.KPI.Window = collector.Duration(time.Minute)
	// the fixtures run their own clock ahead of the wall clock (f.now + i
	// s, minutes of data in milliseconds), as smelter-demo's plant does:
	// times are taken as sent (no bound by the arrival time)
	cfg.MaxFuture = 0
	if set != nil {
		set(&cfg)
	}
	rules, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	col, err := collector.New(cfg, rules, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, col: col, now: time.Now().UnixMilli()}
	f.srv = httptest.NewServer(col.HTTPHandler(token))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) handle(subject string, data []byte) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.col.Handle(ctx, subject, data); err != nil {
		f.t.Fatalf("handle %s: %v", subject, err)
	}
}

var compPath = func(site string) []string { return []string{"acme", site, "utilities", "air", "_"} }

func (f *fixture) birth(site, id, class string, np map[string]float64) {
	b := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Asset: telemetry.AssetJSON{ID: id, Class: class, Path: compPath(site)},
		TSGW: f.now, Nameplate: np, Signals: []telemetry.SignalInfo{{Signal: "discharge_temp", Unit: "Cel", IntervalMS: 1000}}}
	data, err := telemetry.MarshalBirth(b)
	if err != nil {
		f.t.Fatal(err)
	}
	f.handle(telemetry.Subject(site, class, id, telemetry.KindBirth), data)
}

// compressor sends one batch of an air compressor at ts.
func (f *fixture) compressor(site, id string, ts int64, temp, power, fad float64, pressureQ telemetry.Quality) {
	f.seq++
	b := &telemetry.Batch{Gateway: "gw-1", Seq: f.seq, TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: compPath(site)},
		Readings: []telemetry.Reading{
			{Signal: "discharge_temp", Value: temp, Unit: "Cel", TS: ts},
			{Signal: "discharge_pressure", Value: 0.70 + float64(f.seq%7)*0.002, Unit: "MPa", TS: ts, Quality: pressureQ},
			{Signal: "input_power", Value: power, Unit: "kW", TS: ts},
			{Signal: "free_air_delivery", Value: fad, Unit: "m3/min", TS: ts},
			{Signal: "load_state", Value: 2, TS: ts},
		}}
	if pressureQ != telemetry.QualityGood {
		b.Readings[1].Value, b.Readings[1].Status = 0, 2
	}
	f.handle(telemetry.AssetSubject(b.Asset, telemetry.KindData), b.AppendJSON(nil))
}

// feed sends n seconds of history for two compressors ending now; ac-1
// runs hot for the last 40 s and has a bad pressure read 100 s ago.
func (f *fixture) feed(n int) {
	f.birth("site1", "ac-1", "air_compressor", map[string]float64{"rated_power": 75, "rated_fad": 13, "rated_specific_power": 6.2})
	f.birth("site1", "ac-2", "air_compressor", map[string]float64{"rated_power": 110, "rated_fad": 19.5, "rated_specific_power": 6.0})
	for i := n; i > 0; i-- {
		ts := f.now - int64(i)*1000
		temp := 82 + float64(i%5)*0.3
		if i <= 40 {
			temp = 125
		}
		q := telemetry.QualityGood
		if i == 100 {
			q = telemetry.QualityBad
		}
		f.compressor("site1", "ac-1", ts, temp, 70+float64(i%3), 11.5, q)
		f.compressor("site1", "ac-2", ts, 84+float64(i%4)*0.25, 110, 13, telemetry.QualityGood)
	}
}

func (f *fixture) get(path, token string) (int, []byte, http.Header) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header
}

func (f *fixture) getJSON(path string, v any) {
	f.t.Helper()
	code, body, _ := f.get(path, "")
	if code != http.StatusOK {
		f.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		f.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

func TestAssetsAndDetail(t *testing.T) {
	f := newFixture(t, "")
	f.feed(300)
	var r struct {
		Assets []dashboard.AssetOut `json:"assets"`
	}
	f.getJSON("/api/v1/assets", &r)
	if len(r.Assets) != 2 {
		t.Fatalf("assets = %d, want 2", len(r.Assets))
	}
	a1, a2 := r.Assets[0], r.Assets[1]
	if a1.ID != "ac-1" || a1.Class != "air_compressor" || a1.Site != "site1" || a1.Gateway != "gw-1" {
		t.Fatalf("first asset %+v", a1)
	}
	if a1.Status != dashboard.StatusAlarm || a1.Severity != "trip" || a1.Alerts == 0 {
		t.Errorf("ac-1 runs at 125 Cel for 40 s: status %q severity %q alerts %d, want alarm/trip", a1.Status, a1.Severity, a1.Alerts)
	}
	// ac-2 needs 8.5 kW/(m3/min), 41 % above its rated 6.0: a KPI warning
	if a2.Status != dashboard.StatusWarn || a2.Severity != "warn" {
		t.Errorf("ac-2 status %q severity %q, want warn", a2.Status, a2.Severity)
	}
	sig := map[string]dashboard.SignalOut{}
	for _, s := range a1.Signals {
		sig[s.Signal] = s
	}
	dt := sig["discharge_temp"]
	if dt.Value == nil || *dt.Value != 125 || dt.Unit != "Cel" || dt.Quality != "good" {
		t.Errorf("discharge_temp %+v", dt)
	}
	// ages run on the data clock: the newest ts_gw (now - 1 s) plus the wall
	// time since it arrived, never wall clock minus source time
	if a1.DataNow < f.now-1000 || dt.AgeMS != a1.DataNow-dt.TS || a1.ClockRate != 1 || a1.Silent {
		t.Errorf("data clock %d (rate %v, silent %v), discharge_temp ts %d age %d", a1.DataNow, a1.ClockRate, a1.Silent, dt.TS, dt.AgeMS)
	}
	if ls := sig["load_state"]; ls.Text != "loaded" {
		t.Errorf("load_state label %q, want loaded (catalog state 2)", ls.Text)
	}

	// filters and their validation
	f.getJSON("/api/v1/assets?status=warn", &r)
	if len(r.Assets) != 1 || r.Assets[0].ID != "ac-2" {
		t.Errorf("status=warn: %+v", r.Assets)
	}
	f.getJSON("/api/v1/assets?class=motor", &r)
	if len(r.Assets) != 0 {
		t.Errorf("class=motor: %d assets", len(r.Assets))
	}
	for _, c := range []struct{ path, field, want string }{
		{"/api/v1/assets?class=furnace", "class", `unknown class "furnace"`},
		{"/api/v1/assets?status=red", "status", `"red" (want ok, warn, alarm or stale)`},
		{"/api/v1/assets?site=a.b", "site", "not a valid token"},
		{"/api/v1/assets?color=1", "color", "unknown parameter"},
		{"/api/v1/alerts?severity=loud", "severity", `unknown severity "loud"`},
		{"/api/v1/alerts?active=maybe", "active", "not a boolean"},
		{"/api/v1/alerts?limit=0", "limit", "within 1..5000"},
		{"/api/v1/assets/site1/ac-1/history?since=yesterday", "since", "not a duration"},
		{"/api/v1/assets/site1/ac-1/history?signal=nope", "signal", `no history for nope`},
		{"/api/v1/assets/site1/ac-1/history?signal=a.b", "signal", "not a signal name"},
		{"/api/v1/kpis/rollup?top=x", "top", "within 1..1000"},
		{"/api/v1/assets?site=a&site=b", "site", "given 2 times"},
		{"/api/v1/assets/site1/ac-1/history?since=1000000h", "since", "before 1970"},
		{"/api/v1/assets?site=" + strings.Repeat("x", 100_000), "site", "bytes)"},
	} {
		code, body, _ := f.get(c.path, "")
		var e struct{ Error, Field string }
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Field != c.field || !strings.Contains(e.Error, c.want) || len(body) > 1024 {
			t.Errorf("GET %.100s: %d %.300s, want 400 field %s containing %q (at most 1 KiB)", c.path, code, body, c.field, c.want)
		}
	}
	if code, body, _ := f.get("/api/v1/assets/site1/ac-9", ""); code != http.StatusNotFound || !strings.Contains(string(body), "no asset site1/ac-9") {
		t.Errorf("unknown asset: %d %s", code, body)
	}
	if code, _, _ := f.get("/api/v1/nothing", ""); code != http.StatusNotFound {
		t.Errorf("unknown endpoint: %d", code)
	}

	var d dashboard.AssetDetail
	f.getJSON("/api/v1/assets/site1/ac-1", &d)
	if d.Nameplate["rated_power"] != 75 || len(d.ActiveAlerts) == 0 || d.KPI == nil {
		t.Fatalf("detail: nameplate %v, %d active alerts, kpi %v", d.Nameplate, len(d.ActiveAlerts), d.KPI)
	}
	if d.ActiveAlerts[0].Rule != "discharge_temp_high" || d.ActiveAlerts[0].Severity.String() != "trip" {
		t.Errorf("most severe active alert first: %+v", d.ActiveAlerts[0])
	}
	for _, s := range d.Signals {
		if s.Signal == "discharge_temp" && (s.Description == "" || s.Max == nil || *s.Max != 130) {
			t.Errorf("detail signal lacks catalog data: %+v", s)
		}
	}
}

func TestHistory(t *testing.T) {
	f := newFixture(t, "")
	f.feed(300)
	var h dashboard.HistoryOut
	f.getJSON("/api/v1/assets/site1/ac-1/history?signal=discharge_temp,discharge_pressure&since=2m", &h)
	if len(h.Series) != 2 || h.Fine != 1000 || h.Coarse != 15000 {
		t.Fatalf("history: %d series, resolutions %d/%d", len(h.Series), h.Fine, h.Coarse)
	}
	byName := map[string][]dashboard.Point{}
	for _, s := range h.Series {
		byName[s.Signal] = s.Points
	}
	temp := byName["discharge_temp"]
	// 2 minutes back at 1 s buckets: the batches of the last 120 s
	if len(temp) < 119 || len(temp) > 121 {
		t.Fatalf("discharge_temp points = %d, want about 120", len(temp))
	}
	last := temp[len(temp)-1]
	if last.V == nil || *last.V != 125 || last.N != 1 || last.T%1000 != 0 {
		t.Errorf("last point %+v", last)
	}
	gaps := 0
	for _, p := range byName["discharge_pressure"] {
		if p.V == nil {
			gaps++
			if p.Bad != 1 || p.Quality != "bad" {
				t.Errorf("gap point %+v", p)
			}
		}
	}
	if gaps != 1 {
		t.Errorf("discharge_pressure gaps = %d, want 1 (the bad read is never interpolated)", gaps)
	}

	// the whole hour: coarse 15 s buckets before the fine tier's 5 minutes
	f.getJSON("/api/v1/assets/site1/ac-1/history?signal=discharge_temp", &h)
	pts := h.Series[0].Points
	for i := 1; i < len(pts); i++ {
		if pts[i].T <= pts[i-1].T {
			t.Fatalf("points not increasing at %d: %d after %d", i, pts[i].T, pts[i-1].T)
		}
	}
	if len(pts) < 295 || len(pts) > 302 {
		t.Errorf("1h of a 300 s feed: %d points, want about 300 fine ones", len(pts))
	}
	// every signal when none is named; since as Unix ms and RFC 3339
	f.getJSON("/api/v1/assets/site1/ac-2/history?since="+time.UnixMilli(f.now-10_000).UTC().Format(time.RFC3339), &h)
	if len(h.Series) != 5 || len(h.Series[0].Points) < 9 || len(h.Series[0].Points) > 11 {
		t.Errorf("ac-2 all signals since 10 s: %d series, %d points", len(h.Series), len(h.Series[0].Points))
	}
}

func TestHistoryBoundAndCoarseTier(t *testing.T) {
	f := newFixture(t, "")
	// 2 h of one reading every 5 s: the fine tier keeps 5 min, the coarse
	// one the last hour in 15 s buckets of 3 readings
	for i := 7200; i > 0; i -= 5 {
		ts := f.now - int64(i)*1000
		f.compressor("s2", "ac-9", ts, 80+float64(i%60)/10, 70, 11, telemetry.QualityGood)
	}
	var h dashboard.HistoryOut
	f.getJSON("/api/v1/assets/s2/ac-9/history?signal=discharge_temp&since=3h", &h)
	pts := h.Series[0].Points
	oldest := f.now - pts[0].T
	if oldest > time.Hour.Milliseconds()+15_000 || oldest < time.Hour.Milliseconds()-30_000 {
		t.Errorf("oldest point %v back, want about 1h (the bound)", time.Duration(oldest)*time.Millisecond)
	}
	// the fine tier holds 300 one-second buckets: at one reading per 5 s
	// they reach 25 min back; coarse buckets of 3 readings before that
	coarse, fine := 0, 0
	for i, p := range pts {
		if p.N == 3 {
			coarse++
			if *p.Min > *p.V || *p.Max < *p.V || i > 0 && p.T-pts[i-1].T != 15_000 {
				t.Fatalf("coarse point %d %+v: want min <= v <= max, 15 s apart", i, p)
			}
		} else {
			fine++
			if p.N != 1 || coarse == 0 {
				t.Fatalf("point %d %+v: want one reading per fine bucket, after the coarse ones", i, p)
			}
		}
	}
	if coarse < 138 || coarse > 142 || fine != 300 {
		t.Errorf("coarse %d (want about 140 = 35 min / 15 s), fine %d (want 300)", coarse, fine)
	}
}

func TestAlertsKPIsRollupGateways(t *testing.T) {
	f := newFixture(t, "")
	f.feed(300)
	type alertsResp struct {
		Total  int                  `json:"total"`
		Active int                  `json:"active"`
		Alerts []dashboard.AlertOut `json:"alerts"`
	}
	var al alertsResp
	f.getJSON("/api/v1/alerts?active=true&severity=alarm", &al)
	if al.Total == 0 || al.Alerts[0].Rule != "discharge_temp_high" || !al.Alerts[0].Active {
		t.Fatalf("active alarm alerts: %+v", al)
	}
	for _, a := range al.Alerts {
		if a.Severity.String() != "alarm" && a.Severity.String() != "trip" {
			t.Errorf("severity=alarm returned %s", a.Severity)
		}
	}
	f.getJSON("/api/v1/alerts?class=motor", &al)
	if al.Total != 0 {
		t.Errorf("class=motor: %d alerts", al.Total)
	}
	// ac-1 cools down: the trip clears and appears as a cleared occurrence
	for i := 1; i <= 60; i++ {
		f.compressor("site1", "ac-1", f.now+int64(i)*1000, 82+float64(i%4)*0.2, 70, 11.5, telemetry.QualityGood)
	}
	f.getJSON("/api/v1/alerts?active=false&asset=ac-1", &al)
	found := false
	for _, a := range al.Alerts {
		if a.Rule == "discharge_temp_high" {
			found = a.ClearedAt > a.RaisedAt && !a.Active && a.State == "cleared"
		}
	}
	if !found {
		t.Errorf("cleared discharge_temp_high occurrence missing: %+v", al.Alerts)
	}

	var k struct {
		KPIs []struct {
			Asset string `json:"asset"`
			KPIs  []struct {
				Name   string  `json:"name"`
				Value  float64 `json:"value"`
				Status string  `json:"status"`
			} `json:"kpis"`
		} `json:"kpis"`
	}
	f.getJSON("/api/v1/kpis?class=air_compressor", &k)
	if len(k.KPIs) != 2 {
		t.Fatalf("kpis for %d assets, want 2", len(k.KPIs))
	}
	var ro struct {
		Classes []dashboard.Rollup `json:"classes"`
	}
	f.getJSON("/api/v1/kpis/rollup", &ro)
	if len(ro.Classes) != 1 || ro.Classes[0].Class != "air_compressor" {
		t.Fatalf("rollup classes %+v", ro.Classes)
	}
	var sp *dashboard.KPIRollup
	for i := range ro.Classes[0].KPIs {
		if ro.Classes[0].KPIs[i].Name == "specific_power" {
			sp = &ro.Classes[0].KPIs[i]
		}
	}
	if sp == nil || sp.Count != 2 || sp.Worse != "high" || !sp.Key || len(sp.Ranking) != 2 {
		t.Fatalf("specific_power rollup %+v", sp)
	}
	// ac-2 needs 110 kW for 13 m3/min (8.46, limit 6.9): worst first
	if sp.Ranking[0].Asset != "ac-2" || sp.Ranking[0].Status != "high" || sp.OutOfLimit != 1 || sp.Max < 8.4 || sp.Min > 6.2 {
		t.Errorf("ranking %+v out_of_limit %d min %v max %v", sp.Ranking, sp.OutOfLimit, sp.Min, sp.Max)
	}
	var kh struct {
		Windows []json.RawMessage `json:"windows"`
	}
	f.getJSON("/api/v1/assets/site1/ac-2/kpis", &kh)
	if len(kh.Windows) < 4 {
		t.Errorf("KPI history of 5 min of 1 min windows: %d windows", len(kh.Windows))
	}

	var gw struct {
		Gateways []dashboard.GatewayView `json:"gateways"`
	}
	f.getJSON("/api/v1/gateways", &gw)
	if len(gw.Gateways) != 1 || gw.Gateways[0].ID != "gw-1" || gw.Gateways[0].LastSeq != f.seq || gw.Gateways[0].Status != "online" ||
		gw.Gateways[0].Assets != 2 || gw.Gateways[0].Births != 2 {
		t.Fatalf("gateways %+v", gw.Gateways)
	}
	st, _ := telemetry.MarshalStatus(&telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-1", Online: false, TSGW: f.now})
	f.handle(telemetry.StatusSubject("site1", "gw-1"), st)
	f.getJSON("/api/v1/gateways", &gw)
	if gw.Gateways[0].Status != "offline" || gw.Gateways[0].Online == nil || *gw.Gateways[0].Online {
		t.Errorf("after an offline status: %+v", gw.Gateways[0])
	}
	f.compressor("site1", "ac-1", f.now+61_000, 82, 70, 11.5, telemetry.QualityGood)
	f.getJSON("/api/v1/gateways", &gw)
	if gw.Gateways[0].Status != "online" {
		t.Errorf("data after the offline status: %s, want online", gw.Gateways[0].Status)
	}
}

func TestTokenAndStatic(t *testing.T) {
	f := newFixture(t, "s3cret-token")
	f.feed(5)
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/api/v1/assets", "", http.StatusUnauthorized},
		{"/api/v1/assets", "wrong", http.StatusUnauthorized},
		{"/api/v1/events", "", http.StatusUnauthorized},
		{"/api/v1/assets", "s3cret-token", http.StatusOK},
		{"/", "", http.StatusOK}, // the shell carries no data; its login prompt asks for the token
		{"/app.js", "", http.StatusOK},
		{"/style.css", "", http.StatusOK},
		{"/healthz", "", http.StatusOK},
		{"/metrics", "", http.StatusOK},
		{"/nope.html", "", http.StatusNotFound},
	} {
		code, body, h := f.get(c.path, c.token)
		if code != c.want {
			t.Errorf("GET %s token %q: %d, want %d", c.path, c.token, code, c.want)
		}
		if code == http.StatusUnauthorized && (h.Get("WWW-Authenticate") == "" || strings.Contains(string(body), "s3cret")) {
			t.Errorf("401 for %s: header %q body %s", c.path, h.Get("WWW-Authenticate"), body)
		}
	}
	code, body, h := f.get("/", "")
	if code != 200 || !strings.Contains(string(body), "<title>Smelter") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") ||
		h.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("index: %d csp %q referrer %q", code, h.Get("Content-Security-Policy"), h.Get("Referrer-Policy"))
	}
	_, js, h := f.get("/app.js", "")
	if !strings.Contains(h.Get("Content-Type"), "javascript") || !strings.Contains(string(js), "/api/v1/events") {
		t.Errorf("app.js content type %q", h.Get("Content-Type"))
	}
}

func TestEventStream(t *testing.T) {
	f := newFixture(t, "tok")
	f.feed(20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	evs := make(chan dashboard.SSEEvent, 64)
	go dashboard.ReadSSE(ctx, resp.Body, evs)
	next := func(typ string, match func(string) bool) dashboard.SSEEvent {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e, ok := <-evs:
				if !ok {
					t.Fatalf("stream ended waiting for %s", typ)
				}
				if e.Type == typ && match(e.Data) {
					return e
				}
			case <-timeout:
				t.Fatalf("no %s event within 10 s", typ)
			}
		}
	}
	// first tick: every asset
	e := next("assets", func(d string) bool { return strings.Contains(d, `"ac-1"`) && strings.Contains(d, `"ac-2"`) })
	var list []dashboard.AssetOut
	if err := json.Unmarshal([]byte(e.Data), &list); err != nil || len(list) != 2 {
		t.Fatalf("assets event: %v %s", err, e.Data)
	}
	// a new batch of ac-2 only: the next tick carries ac-2
	f.compressor("site1", "ac-2", f.now+1000, 99.5, 110, 13, telemetry.QualityGood)
	next("assets", func(d string) bool { return strings.Contains(d, `"ac-2"`) && strings.Contains(d, "99.5") })
	// ac-2 runs hot for 20 s: the alert arrives as its own event with an id
	for i := 2; i <= 22; i++ {
		f.compressor("site1", "ac-2", f.now+int64(i)*1000, 121, 110, 13, telemetry.QualityGood)
	}
	a := next("alert", func(d string) bool {
		return strings.Contains(d, `"asset":"ac-2"`) && strings.Contains(d, `"rule":"discharge_temp_high"`)
	})
	if a.ID == "" {
		t.Error("alert event without id")
	}
	next("gateways", func(d string) bool { return strings.Contains(d, `"gw-1"`) })
	cancel()
	for range evs { // the reader ends with the request
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestShutdownWithOpenStream: an open event stream must not hold the
// collector's shutdown (handlers end with Run's context).
func TestShutdownWithOpenStream(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := collector.Defaults()
	cfg.DataDir, cfg.NATS.URL, cfg.HTTP.Listen = t.TempDir(), ns.URL(), "127.0.0.1:0"
	t.Setenv("SMELTER_TEST_HTTP_TOKEN", "tok-shutdown")
	cfg.HTTP.TokenEnv = "SMELTER_TEST_HTTP_TOKEN"
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	col, err := collector.New(cfg, set, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- col.Run(ctx) }()
	wait.For(t, 10*time.Second, "collector ready", func() bool { return col.Ready() && col.HTTPAddr() != "" })

	req, _ := http.NewRequest(http.MethodGet, "http://"+col.HTTPAddr()+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer tok-shutdown")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q %v", line, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run with an open stream returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s with an open event stream")
	}
}

func TestTokenConfigErrors(t *testing.T) {
	cfg := collector.Defaults()
	cfg.HTTP.TokenEnv, cfg.HTTP.TokenFile = "X", "y"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "http.token_env: exclusive with http.token_file") {
		t.Errorf("both token sources: %v", err)
	}
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	for _, c := range []struct {
		env, file, want string
	}{
		{env: "SMELTER_TEST_EMPTY_TOKEN", want: "http.token_env: environment variable SMELTER_TEST_EMPTY_TOKEN is empty"},
		{file: "missing-token", want: "http.token_file: read "},
	} {
		cfg := collector.Defaults()
		cfg.DataDir, cfg.NATS.URL, cfg.HTTP.Listen = t.TempDir(), ns.URL(), "127.0.0.1:0"
		cfg.HTTP.TokenEnv, cfg.HTTP.TokenFile = c.env, filepath.Join(t.TempDir(), c.file)
		if c.file == "" {
			cfg.HTTP.TokenFile = ""
			t.Setenv(c.env, " ")
		}
		set, _ := cfg.LoadRules(catalog.Default())
		col, err := collector.New(cfg, set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		// a token error stops Run at once; the deadline only keeps a
		// regression (Run serving without a token) from hanging the test
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = col.Run(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Run: %v, want %q", err, c.want)
		}
	}
}

// TestSilentAssetIsNotOK: an asset that stopped reporting while its gateway
// goes on (the data clock advances) is shown as stale and silent once it
// has sent nothing for SilentAssetAfter, not as plain OK.
func TestSilentAssetIsNotOK(t *testing.T) {
	f := newFixture(t, "")
	f.birth("site1", "ac-1", "air_compressor", nil)
	f.birth("site1", "ac-2", "air_compressor", nil)
	base := f.now - 600_000
	for i := range 60 { // both report for a minute
		ts := base + int64(i)*1000
		f.compressor("site1", "ac-1", ts, 80, 60, 10, telemetry.QualityGood)
		f.compressor("site1", "ac-2", ts, 80, 60, 10, telemetry.QualityGood)
	}
	status := func() map[string]dashboard.AssetOut {
		var r struct {
			Assets []dashboard.AssetOut `json:"assets"`
		}
		f.getJSON("/api/v1/assets", &r)
		out := map[string]dashboard.AssetOut{}
		for _, a := range r.Assets {
			out[a.ID] = a
		}
		return out
	}
	if a := status()["ac-1"]; a.Status == dashboard.StatusStale || a.Silent {
		t.Fatalf("reporting ac-1: status %q silent %v", a.Status, a.Silent)
	}
	for i := 60; i < 60+int(dashboard.SilentAssetAfter/time.Second)+30; i++ { // then only ac-2
		f.compressor("site1", "ac-2", base+int64(i)*1000, 80, 60, 10, telemetry.QualityGood)
	}
	st := status()
	if a := st["ac-1"]; a.Status != dashboard.StatusStale || !a.Silent || a.AgeMS < dashboard.SilentAssetAfter.Milliseconds() {
		t.Errorf("ac-1 silent for %d ms: status %q silent %v", a.AgeMS, a.Status, a.Silent)
	}
	if a := st["ac-2"]; a.Status == dashboard.StatusStale || a.Silent {
		t.Errorf("ac-2 still reporting: status %q silent %v", a.Status, a.Silent)
	}
}

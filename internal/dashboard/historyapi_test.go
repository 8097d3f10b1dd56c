package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/history"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
)

// withHistory serves the fixture's collector with a history store.
func (f *fixture) withHistory(h dashboard.HistoryStore) {
	f.srv.Close()
	f.srv = httptest.NewServer(dashboard.New(f.col, f.col.Live(), dashboard.Options{History: h}))
	f.t.Cleanup(f.srv.Close)
}

// TestHistoryAPIParams: the history endpoints check their parameters
// (each error names its field) and answer 503 while the database is not
// connected; without a store they do not exist (TestHistoryAbsentAPI404 in
// the collector).
func TestHistoryAPIParams(t *testing.T) {
	f := newFixture(t, "")
	st, err := history.New(history.Options{DSN: secret.New("postgres://nobody@127.0.0.1:1/none")})
	if err != nil {
		t.Fatal(err)
	}
	f.withHistory(st)
	var status dashboard.HistoryStatus
	f.getJSON("/api/v1/history/status", &status)
	if status.Ready || len(status.Ranges) != 7 {
		t.Fatalf("status %+v", status)
	}
	const ok = "/api/v1/history/series?site=site1&asset=ac-1&signal=discharge_temp"
	for _, c := range []struct {
		path  string
		code  int
		field string
	}{
		{"/api/v1/history/series?site=site1&asset=ac-1", 400, "signal"},
		{ok + "&range=2y", 400, "range"},
		{ok + "&range=1h&from=2h", 400, "range"},
		{ok + "&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 400, "from"},
		{ok + "&resolution=5m", 400, "resolution"},
		{ok + "&format=xml", 400, "format"},
		{ok + "&to=99999999999999999", 400, "to"},
		{ok + "&from=-1", 400, "from"},
		{ok + "&from=0", 503, ""},
		{ok + "&bogus=1", 400, "bogus"},
		{ok + "&range=1y", 503, ""},
		{"/api/v1/history/alerts?severity=bogus", 400, "severity"},
		{"/api/v1/history/alerts?state=open", 400, "state"},
		{"/api/v1/history/alerts?limit=0", 400, "limit"},
		{"/api/v1/history/alerts", 503, ""},
		{"/api/v1/history/kpis?asset=ac-1", 400, "site"},
		{"/api/v1/history/kpis?class=nope", 400, "class"},
		{"/api/v1/history/kpis?range=90d", 503, ""},
	} {
		code, body, _ := f.get(c.path, "")
		var e struct {
			Field string `json:"field"`
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if code != c.code || e.Field != c.field || (code == 503 && e.Error != "history database unavailable") {
			t.Errorf("GET %s: %d %s, want %d field %q", c.path, code, body, c.code, c.field)
		}
	}
}

// historyStore opens a store on SMELTER_PG_DSN in a schema of its own, or
// skips.
func historyStore(t *testing.T) *history.Store {
	t.Helper()
	dsn := os.Getenv("SMELTER_PG_DSN")
	if dsn == "" {
		t.Skip("no PostgreSQL: set SMELTER_PG_DSN (.ci/run creates one)")
	}
	schema := fmt.Sprintf("td_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	st, err := history.New(history.Options{DSN: secret.New(dsn), Schema: schema, Retention: history.DefaultRetention()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		if conn, err := pgx.Connect(context.Background(), dsn); err == nil {
			_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			_ = conn.Close(context.Background())
		}
	})
	return st
}

// fillHistory stores a year of hourly discharge temperatures of ac-1 and
// ac-2 (a seasonal swing), an alert of ac-1 every 20 days, and 60 daily
// specific power windows of both.
func fillHistory(t *testing.T, st *history.Store, now time.Time) {
	t.Helper()
	var msgs []history.Message
	for _, id := range []string{"ac-1", "ac-2"} {
		a := telemetry.Asset{ID: id, Class: "air_compressor", Path: compPath("site1")}
		for h := range 365 * 24 {
			ts := now.Add(-time.Duration(h) * time.Hour).UnixMilli()
			v := 80 + 8*float64((h/24)%90)/90 + float64(h%24)/6
			b := &telemetry.Batch{Gateway: "gw-hist-" + id, Seq: uint64(h + 1), Asset: a, TSGW: ts,
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: v, Unit: "Cel", TS: ts}}}
			msgs = append(msgs, history.Message{Subject: telemetry.AssetSubject(a, telemetry.KindData), Data: b.AppendJSON(nil)})
		}
		for d := range 60 {
			start := now.Add(-time.Duration(d+1) * 24 * time.Hour).UnixMilli()
			r := kpi.Result{Schema: "smelter.kpi/1", Site: "site1", Class: "air_compressor", Asset: id, Start: start, End: start + 86_400_000, Coverage: 1,
				KPIs: []kpi.Value{{Name: "specific_power", Value: 6 + float64(d%7)*0.1 + float64(len(id)%2), Unit: "kW/(m3/min)", Status: kpi.StatusOK}}}
			data, _ := json.Marshal(r)
			msgs = append(msgs, history.Message{Subject: telemetry.AssetSubject(a, telemetry.KindKPI), Data: data})
		}
	}
	for i := range 12 {
		raised := now.Add(-time.Duration(i*20+1) * 24 * time.Hour).UnixMilli()
		for _, st := range []alert.State{alert.Raised, alert.Cleared} {
			a := alert.Alert{Schema: alert.Schema, ID: fmt.Sprintf("site1.ac-1.discharge_temp_high@%d", raised), Key: "site1.ac-1.discharge_temp_high",
				State: st, Site: "site1", Class: "air_compressor", Asset: "ac-1", Rule: "discharge_temp_high", Kind: "threshold", Signal: "discharge_temp",
				Severity: alert.Severity(2 + i%3), Message: "discharge temperature above its limit", RaisedAt: raised, UpdatedAt: raised}
			if st == alert.Cleared {
				a.UpdatedAt, a.ClearedAt = raised+3_600_000, raised+3_600_000
			}
			data, _ := json.Marshal(a)
			msgs = append(msgs, history.Message{Subject: "smelter.v1.site1.air_compressor.ac-1.alert", Data: data})
		}
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		if _, err := st.Write(context.Background(), msgs[:n]); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// TestHistoryInBrowser: with a history database the asset page offers
// ranges up to a year (the year is drawn from the 1-hour rollup, with a
// CSV link), and the History page lists the alert history with filters and
// the KPI trends of an asset and of the fleet.
func TestHistoryInBrowser(t *testing.T) {
	bin := requireChromium(t)
	st := historyStore(t)
	shots := shotsDir(t)
	f := newFixture(t, "")
	f.feed(120)
	fillHistory(t, st, time.UnixMilli(f.now).Truncate(time.Hour))
	f.withHistory(st)
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, f.srv.URL+"/#/asset/site1/ac-1")
	poll(t, jsErrs, 30*time.Second, "the 1y range button", func() bool {
		var n int
		_ = eval(tab, `document.querySelectorAll('#a-win button[data-range]').length`, &n)
		return n == 5
	}, nil)
	if err := eval(tab, `document.querySelector('#a-win button[data-range="1y"]').click()`, nil); err != nil {
		t.Fatal(err)
	}
	var note string
	poll(t, jsErrs, 30*time.Second, "the year of discharge_temp from the 1-hour rollup", func() bool {
		_ = eval(tab, `(document.querySelector('.chart[data-chart="discharge_temp"][data-resolution="1h"] .hist-note') || {}).textContent || ''`, &note)
		return strings.Contains(note, "8760 points")
	}, func() string { return note })
	if !strings.Contains(note, "rollup_1h") || !strings.Contains(note, "CSV") {
		t.Errorf("chart note %q", note)
	}
	screenshot(t, tab, shots, "23-history-asset-1y.png")
	// the chart's CSV link answers the same 8,760 hourly points
	var csvLines int
	if err := eval(tab, `fetch(document.querySelector('.chart[data-chart="discharge_temp"] a[data-csv]').dataset.csv, {headers: headers()})
		.then(r => r.text()).then(t => t.trim().split('\n').length)`, &csvLines); err != nil || csvLines != 8761 {
		t.Errorf("CSV of the year: %d lines, %v (want a header and 8760 points)", csvLines, err)
	}

	if err := eval(tab, `location.hash = '#/history'`, nil); err != nil {
		t.Fatal(err)
	}
	var rows int
	poll(t, jsErrs, 30*time.Second, "the alert history of the last 30 days", func() bool {
		_ = eval(tab, `document.querySelectorAll('#ah-list tr[data-alert-key]').length`, &rows)
		return rows == 2 // raised 1 and 21 days ago
	}, func() string { return fmt.Sprint(rows) })
	if err := eval(tab, `const s = document.querySelector('#ah-filters select[name=range]'); s.value = '1y'; s.dispatchEvent(new Event('change', {bubbles: true}))`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 30*time.Second, "the alert history of a year", func() bool {
		_ = eval(tab, `document.querySelectorAll('#ah-list tr[data-alert-key]').length`, &rows)
		return rows == 12
	}, func() string { return fmt.Sprint(rows) })
	var kpiCharts int
	poll(t, jsErrs, 30*time.Second, "the fleet's specific power trend", func() bool {
		_ = eval(tab, `document.querySelectorAll('#kh-charts .chart[data-kpi-trend="specific_power"] canvas').length`, &kpiCharts)
		return kpiCharts == 1
	}, nil)
	var nav bool
	if err := eval(tab, `!document.getElementById('nav-history').hidden && !!document.querySelector('#ah-csv a[data-csv]')`, &nav); err != nil || !nav {
		t.Errorf("History link shown and CSV link present: %v %v", nav, err)
	}
	screenshot(t, tab, shots, "24-history-page.png")
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// TestHistoryAPITimes: from=0 is Unix millisecond 0 (1970), not a duration
// of 0 back from now; a to far in the future is refused (review of #14,
// finding 6).
func TestHistoryAPITimes(t *testing.T) {
	st := historyStore(t)
	f := newFixture(t, "")
	f.withHistory(st)
	var out dashboard.HistoryAlerts
	f.getJSON("/api/v1/history/alerts?from=0", &out)
	if out.From != 0 || out.To < f.now-60_000 {
		t.Fatalf("from=0: from %d to %d", out.From, out.To)
	}
	if code, body, _ := f.get("/api/v1/history/alerts?from=0&to=99999999999999999", ""); code != 400 || !strings.Contains(string(body), `"to"`) {
		t.Fatalf("to in year 3e6: %d %s", code, body)
	}
}

// TestHistoryCSVNeutralisesFormulas: text readings and alert messages that
// a spreadsheet would run as formulas come out of the CSV export with a
// leading apostrophe; numbers, negative ones included, come out as they
// are (review of #14, finding 2).
func TestHistoryCSVNeutralisesFormulas(t *testing.T) {
	st := historyStore(t)
	f := newFixture(t, "")
	f.withHistory(st)
	now := time.UnixMilli(f.now).Add(-10 * time.Minute).UnixMilli()
	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: compPath("site1")}
	evil := []string{`=HYPERLINK("http://evil/","x")`, `+cmd|' /C calc'!A0`, `@SUM(1)`, "-2+3", "\tx", "plain"}
	b := &telemetry.Batch{Gateway: "gw-csv", Seq: 1, Asset: a, TSGW: now}
	for i, s := range evil {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: "mode", Value: -1.5, Text: s, TS: now + int64(i)})
	}
	al := alert.Alert{Schema: alert.Schema, ID: "site1.ac-1.x@1", Key: "site1.ac-1.x", State: alert.Raised, Site: "site1", Class: "air_compressor",
		Asset: "ac-1", Rule: "x", Kind: "threshold", Severity: alert.Warn, Message: "=1+1", RaisedAt: now, UpdatedAt: now}
	data, _ := json.Marshal(al)
	if _, err := st.Write(context.Background(), []history.Message{
		{Subject: telemetry.AssetSubject(a, telemetry.KindData), Data: b.AppendJSON(nil)},
		{Subject: telemetry.AssetSubject(a, telemetry.KindAlert), Data: data}}); err != nil {
		t.Fatal(err)
	}
	code, body, _ := f.get("/api/v1/history/series?site=site1&asset=ac-1&signal=mode&range=1h&resolution=raw&format=csv", "")
	csv := string(body)
	for _, want := range []string{`"'=HYPERLINK(""http://evil/"",""x"")"`, `'+cmd|' /C calc'!A0`, ",'@SUM(1)", ",'-2+3", ",plain", ",-1.5,-1.5,-1.5,"} {
		if code != 200 || !strings.Contains(csv, want) {
			t.Errorf("series CSV lacks %s: %d\n%s", want, code, csv)
		}
	}
	if strings.Contains(csv, ",=") || strings.Contains(csv, ",@") || strings.Contains(csv, ",+") {
		t.Errorf("a formula left in\n%s", csv)
	}
	code, body, _ = f.get("/api/v1/history/alerts?format=csv", "")
	if code != 200 || !strings.Contains(string(body), ",'=1+1") {
		t.Errorf("alerts CSV: %d\n%s", code, body)
	}
}

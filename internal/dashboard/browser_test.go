package dashboard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/demo"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/fleet"
)

// TestDashboardInBrowser runs the demo wiring (simulator fleet, embedded
// brokers, gateway, collector) and drives the real dashboard in headless
// Chromium (through chromedp): every equipment class shows live
// values, an injected fault appears as an alert. Screenshots go to
// $SMELTER_SCREENSHOTS (or a temporary directory) and are logged.
func TestDashboardInBrowser(t *testing.T) {
	bin := requireChromium(t)
	shots := shotsDir(t)

	ctx, cancel := context.WithCancel(context.Background())
	// as `smelter-demo -speed 10` runs it: a working morning on the plant
	// clock whatever the wall clock says, ten times faster than real time
	start, err := fleet.ParseStart(demo.DefaultStart, time.Now(), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	d := demo.New(demo.Options{FleetPath: "../../configs/sim-fleet.yaml", DataDir: t.TempDir(), Speed: 10, Seed: 1, Start: start})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("demo: %v", err)
		}
	})
	select {
	case <-d.Ready():
	case err := <-done:
		t.Fatalf("demo ended before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("demo not ready within 60 s")
	}
	url := d.URLs().Dashboard
	t.Logf("dashboard %s", url)
	var classes []string
	for _, dev := range d.Fleet().Devices() {
		if !slices.Contains(classes, dev.Class) {
			classes = append(classes, dev.Class)
		}
	}
	sort.Strings(classes)

	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, url)

	// every class shows up with a live value on the fleet page
	type group struct {
		Class  string `json:"cls"`
		Cards  int    `json:"cards"`
		Values int    `json:"values"`
	}
	var groups []group
	poll(t, jsErrs, 90*time.Second, "every class with live values on the fleet page", func() bool {
		groups = nil
		err := eval(tab, `[...document.querySelectorAll('.class-group')].map(g => ({cls: g.dataset.class,
			cards: g.querySelectorAll('.card').length, values: g.querySelectorAll('.card [data-value]').length}))`, &groups)
		if err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, g := range groups {
			seen[g.Class] = g.Cards > 0 && g.Values >= g.Cards
		}
		for _, c := range classes {
			if !seen[c] {
				return false
			}
		}
		return true
	}, func() string { return "groups: " + jsonString(groups) })
	t.Logf("fleet page: %s", jsonString(groups))

	// the values are live: they change through the event stream, no reload
	var before string
	if err := eval(tab, `[...document.querySelectorAll('.card [data-value]')].map(e => e.dataset.value).join(',')`, &before); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 20*time.Second, "values updated by the event stream", func() bool {
		var now, conn string
		_ = eval(tab, `[...document.querySelectorAll('.card [data-value]')].map(e => e.dataset.value).join(',')`, &now)
		_ = eval(tab, `document.getElementById('conn').className`, &conn)
		return now != before && strings.Contains(conn, "live")
	}, nil)
	screenshot(t, tab, shots, "01-fleet.png")

	// a stuck discharge temperature at 125 Cel on ac-1: discharge_temp_high
	// (trip above 118 Cel after 15 s) must show on the alerts page
	v := 125.0
	if _, err := d.Fleet().InjectFault(faults.Spec{Device: "ac-1", Kind: faults.Stuck, Signal: "discharge_temp", Value: &v}); err != nil {
		t.Fatal(err)
	}
	if err := eval(tab, `location.hash = '#/alerts'`, nil); err != nil {
		t.Fatal(err)
	}
	var rows []string
	poll(t, jsErrs, 90*time.Second, "the injected fault as an alert on the alerts page", func() bool {
		rows = nil
		_ = eval(tab, `[...document.querySelectorAll('#al-list tr[data-alert-key]')].map(r => r.dataset.asset + ' ' + r.dataset.rule + ' ' + r.dataset.state)`, &rows)
		for _, r := range rows {
			if strings.HasSuffix(strings.Fields(r)[0], "/ac-1") && strings.Contains(r, "discharge_temp_high") {
				return true
			}
		}
		return false
	}, func() string { return "rows: " + strings.Join(rows, "; ") })
	var msg string
	_ = eval(tab, `[...document.querySelectorAll('#al-list tr[data-rule="discharge_temp_high"] td')].map(td => td.textContent).join(' | ')`, &msg)
	if !strings.Contains(msg, "125 °C") || strings.Contains(msg, " Cel") {
		t.Errorf("alert row %q: want the unit written °C, not the UCUM code Cel", msg)
	}
	screenshot(t, tab, shots, "02-alerts.png")

	// the asset page: status alarm, charts drawn, the alert listed
	if err := eval(tab, `location.hash = '#/asset/demo/ac-1'`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 30*time.Second, "ac-1 asset page with charts and its alert", func() bool {
		var ok bool
		_ = eval(tab, `document.querySelector('#a-status')?.textContent === 'alarm' &&
			document.querySelectorAll('.chart canvas').length >= 5 &&
			[...document.querySelectorAll('#a-alerts tr[data-rule]')].some(r => r.dataset.rule === 'discharge_temp_high')`, &ok)
		return ok
	}, nil)
	screenshot(t, tab, shots, "03-asset-ac-1.png")

	// the boiler: units shown properly (CO in ppm, never a raw UCUM
	// "[ppm]"), nameplate ratings with units and the fuel by name, excess
	// air as a percentage that agrees with its name, the air ratio beside it
	if err := eval(tab, `location.hash = '#/asset/demo/boiler-1'`, nil); err != nil {
		t.Fatal(err)
	}
	var boiler struct {
		Facts, CO, Excess, Note, Text string
	}
	poll(t, jsErrs, 60*time.Second, "boiler-1 with its KPIs", func() bool {
		_ = eval(tab, `({facts: document.querySelector('.facts')?.textContent || '',
			co: document.querySelector('[data-now="flue_co"]')?.textContent || '',
			excess: document.querySelector('.kpi[data-kpi="excess_air"] .big')?.textContent || '',
			note: document.querySelector('.kpi[data-kpi="excess_air"] .small')?.textContent || '',
			text: document.querySelector('main').textContent})`, &boiler)
		return boiler.Excess != ""
	}, func() string { return jsonString(boiler) })
	if strings.Contains(boiler.Text, "[ppm]") || !strings.HasSuffix(boiler.CO, "ppm") {
		t.Errorf("flue CO shown as %q (raw UCUM in page: %v)", boiler.CO, strings.Contains(boiler.Text, "[ppm]"))
	}
	if !strings.Contains(boiler.Facts, "fuel type natural gas") || !strings.Contains(boiler.Facts, "rated steam flow 20.0 t/h") {
		t.Errorf("boiler nameplate %q", boiler.Facts)
	}
	if !strings.HasSuffix(boiler.Excess, " %") || !strings.Contains(boiler.Note, "air ratio λ 1.") {
		t.Errorf("excess air %q (%q): want excess air in %% with the air ratio beside it", boiler.Excess, boiler.Note)
	}
	screenshot(t, tab, shots, "04-asset-boiler-1.png")

	// an OPC UA asset (change-only subscriptions) and a motor's nameplate
	assetCharts := func(id, shot string) {
		t.Helper()
		if err := eval(tab, `location.hash = '#/asset/demo/`+id+`'`, nil); err != nil {
			t.Fatal(err)
		}
		poll(t, jsErrs, 30*time.Second, id+" charts", func() bool {
			var n int
			_ = eval(tab, `document.querySelectorAll('.chart canvas').length`, &n)
			return n >= 5
		}, nil)
		screenshot(t, tab, shots, shot)
	}
	assetCharts("cnc-1", "05-asset-cnc-1.png")
	if err := eval(tab, `location.hash = '#/asset/demo/motor-1'`, nil); err != nil {
		t.Fatal(err)
	}
	var facts string
	poll(t, jsErrs, 30*time.Second, "motor-1 nameplate with units, power factor as a ratio", func() bool {
		_ = eval(tab, `(document.querySelector('.facts')?.textContent || '') + ' | pf ' + (document.querySelector('[data-now="power_factor"]')?.textContent || '')`, &facts)
		return strings.Contains(facts, "poles 4") && strings.Contains(facts, "rated power 160.0 kW") && strings.Contains(facts, "rated voltage 400 V") &&
			strings.Contains(facts, "pf 0.")
	}, func() string { return facts })
	screenshot(t, tab, shots, "06-asset-motor-1.png")
	assetCharts("pv-1", "07-asset-pv-1.png")

	// the ship reads like a voyage report: position in degrees and
	// minutes, speeds in knots, engine load against its MCR and load
	// diagram, fuel per consumer with the fuel's name, the leg's EEOI/CII
	if err := eval(tab, `location.hash = '#/asset/demo/ship-1'`, nil); err != nil {
		t.Fatal(err)
	}
	var voyage map[string]string
	poll(t, jsErrs, 60*time.Second, "ship-1 voyage report", func() bool {
		voyage = nil
		_ = eval(tab, `Object.fromEntries([...document.querySelectorAll('#a-voyage [data-voyage]')].map(e => [e.dataset.voyage, e.textContent]))`, &voyage)
		return strings.Contains(voyage["position"], "′ N") && strings.Contains(voyage["speed"], " kn") &&
			strings.Contains(voyage["load"], " %") && strings.Contains(voyage["fuel-total"], "t/day") &&
			strings.Contains(voyage["cylinders"], "cyl 6")
	}, func() string { return jsonString(voyage) })
	if strings.Contains(voyage["speed"], "[kn_i]") || !strings.Contains(voyage["diagram"], "inside") {
		t.Errorf("voyage report %s", jsonString(voyage))
	}
	// one number format per unit (tonnes whole from 100 t), the ship type
	// by its catalog name, fuel-type signals by the fuel's name
	var ship struct{ Facts, Fuel string }
	poll(t, jsErrs, 30*time.Second, "ship-1 nameplate and fuel type", func() bool {
		_ = eval(tab, `({facts: document.querySelector('.facts')?.textContent || '',
			fuel: document.querySelector('[data-now="me_fuel_type"]')?.textContent || ''})`, &ship)
		return ship.Facts != "" && ship.Fuel != ""
	}, func() string { return jsonString(ship) })
	if !strings.Contains(ship.Facts, "capacity 63,500 t") || !strings.Contains(ship.Facts, "ship type bulk carrier") {
		t.Errorf("ship nameplate %q: want capacity 63,500 t and ship type bulk carrier", ship.Facts)
	}
	if ship.Fuel != "HFO" && ship.Fuel != "MDO/MGO" && ship.Fuel != "LFO" && ship.Fuel != "LNG" {
		t.Errorf("main engine fuel type shown as %q, want the fuel's name", ship.Fuel)
	}
	screenshot(t, tab, shots, "14-voyage-ship-1.png")

	if err := eval(tab, `location.hash = '#/energy'`, nil); err != nil {
		t.Fatal(err)
	}
	var ranked []string
	poll(t, jsErrs, 60*time.Second, "energy page rankings naming the site", func() bool {
		ranked = nil
		_ = eval(tab, `[...document.querySelectorAll('.rank li a')].map(a => a.textContent)`, &ranked)
		return len(ranked) > 0
	}, nil)
	for _, r := range ranked {
		if !strings.HasPrefix(r, "demo/") {
			t.Errorf("ranking entry %q does not name its site", r)
			break
		}
	}
	screenshot(t, tab, shots, "08-energy.png")

	if err := eval(tab, `location.hash = '#/gateways'`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 20*time.Second, "gateway gw-demo-01 online", func() bool {
		var st string
		_ = eval(tab, `document.querySelector('tr[data-gateway="gw-demo-01"] .pill')?.textContent || ''`, &st)
		return st == "online"
	}, nil)
	screenshot(t, tab, shots, "09-gateways.png")

	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// shotsDir is where screenshots go: $SMELTER_SCREENSHOTS (created when
// missing) or a temporary directory.
func shotsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SMELTER_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// poll evaluates cond until it holds or the deadline passes.
func poll(t *testing.T, jsErrs *jsErrors, timeout time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if detail != nil {
				msg = detail()
			}
			if errs := jsErrs.all(); len(errs) > 0 {
				msg += "; JavaScript exceptions: " + strings.Join(errs, "\n")
			}
			t.Fatalf("timed out after %v waiting for %s %s", timeout, what, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestEnergyAndLoginInBrowser serves a real collector fed with an hour-free
// history (1-minute KPI windows) behind a token: the first visit passes
// ?token=, which the page moves to sessionStorage and strips from the URL;
// the energy page ranks the compressors worst first; a visit without the
// token gets the login prompt.
func TestEnergyAndLoginInBrowser(t *testing.T) {
	bin := requireChromium(t)
	shots := shotsDir(t)
	f := newFixture(t, "tok-browser")
	f.feed(300)
	// the same asset id at another site: rankings must tell them apart
	f.birth("lab", "ac-2", "air_compressor", map[string]float64{"rated_specific_power": 6.2})
	for i := 300; i > 0; i-- {
		f.compressor("lab", "ac-2", f.now-int64(i)*1000, 80, 62, 10, telemetry.QualityGood)
	}
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, f.srv.URL+"/?token=tok-browser#/energy")
	var ranking []string
	poll(t, jsErrs, 30*time.Second, "specific power ranking on the energy page", func() bool {
		ranking = nil
		_ = eval(tab, `[...document.querySelectorAll('.panel[data-class="air_compressor"] .kpi-row[data-kpi="specific_power"] li')].map(l => l.dataset.asset + '=' + l.querySelector('a').textContent)`, &ranking)
		return len(ranking) == 3
	}, func() string { return strings.Join(ranking, ",") })
	if ranking[0] != "site1/ac-2=site1/ac-2" || !slices.Contains(ranking, "lab/ac-2=lab/ac-2") {
		t.Errorf("specific power ranking %v: want site1/ac-2 worst, each entry named with its site", ranking)
	}
	var search string
	if err := eval(tab, `location.search + '|' + sessionStorage.getItem('smelter.token')`, &search); err != nil || search != "|tok-browser" {
		t.Errorf("token in URL after load / in sessionStorage: %q %v", search, err)
	}
	screenshot(t, tab, shots, "10-energy-sites.png")

	if err := eval(tab, `location.hash = '#/asset/site1/ac-2'`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 20*time.Second, "KPI trends on the asset page", func() bool {
		var n int
		_ = eval(tab, `document.querySelectorAll('#a-kpis .kpi canvas').length`, &n)
		return n >= 2
	}, nil)
	screenshot(t, tab, shots, "11-asset-kpis.png")

	// without the token: the login prompt, then the fleet after signing in
	if err := eval(tab, `sessionStorage.clear(); location.hash = '#/'; location.reload()`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 20*time.Second, "login prompt", func() bool {
		var open bool
		_ = eval(tab, `document.getElementById('login').open`, &open)
		return open
	}, nil)
	screenshot(t, tab, shots, "12-login.png")
	if err := eval(tab, `document.getElementById('login-token').value = 'tok-browser'; document.getElementById('login-form').requestSubmit()`, nil); err != nil {
		t.Fatal(err)
	}
	poll(t, jsErrs, 20*time.Second, "fleet after signing in", func() bool {
		var n int
		_ = eval(tab, `document.querySelectorAll('.card[data-asset]').length`, &n)
		return n == 3
	}, nil)
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// TestBrowserReportsJSExceptions: the exception log the browser tests
// assert empty does catch an uncaught exception (else their check could
// never fail).
func TestBrowserReportsJSExceptions(t *testing.T) {
	bin := requireChromium(t)
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, `data:text/html,<p id="p">ok</p><script>setTimeout(() => { throw new Error("boom-42") }, 0)</script>`)
	var text string
	if err := eval(tab, `document.getElementById('p').textContent`, &text); err != nil || text != "ok" {
		t.Fatalf("page text %q %v", text, err)
	}
	poll(t, &jsErrors{}, 10*time.Second, "the page's exception in the log", func() bool {
		return slices.ContainsFunc(jsErrs.all(), func(s string) bool { return strings.Contains(s, "boom-42") })
	}, func() string { return strings.Join(jsErrs.all(), "; ") })
	if err := eval(tab, `undefinedFunction()`, nil); err == nil {
		t.Error("eval of a throwing expression returned no error")
	}
}

// TestEnergyEmptyStateInBrowser: before the first KPI window finishes the
// energy page names the configured windows (this collector: 1 min) and when
// the first window of each class with assets ends, instead of a generic text.
func TestEnergyEmptyStateInBrowser(t *testing.T) {
	bin := requireChromium(t)
	shots := shotsDir(t)
	f := newFixture(t, "")
	f.birth("site1", "ac-1", "air_compressor", nil)
	// two samples, 1 s apart, inside one window: nothing finished yet
	start := f.now - f.now%60_000 + 10_000
	f.compressor("site1", "ac-1", start, 80, 60, 10, telemetry.QualityGood)
	f.compressor("site1", "ac-1", start+1000, 80, 60, 10, telemetry.QualityGood)
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, f.srv.URL+"/#/energy")
	var text string
	poll(t, jsErrs, 20*time.Second, "the energy page's empty state", func() bool {
		_ = eval(tab, `document.getElementById('energy-empty')?.textContent || ''`, &text)
		return text != ""
	}, nil)
	if !strings.Contains(text, "tumbling windows of plant time: 1 min") || !strings.Contains(text, "Air compressors (1 min, ends ") {
		t.Errorf("empty state %q: want the configured 1 min window and when the compressors' first one ends", text)
	}
	screenshot(t, tab, shots, "13-energy-empty.png")
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// TestAlertDurationOnItsAssetsClock: a second plant whose data clock runs
// 6 h apart (a fast demo beside a real-time gateway) does not stretch the
// duration of another asset's fresh alert: each active alert's duration
// runs on its own asset's data clock.
func TestAlertDurationOnItsAssetsClock(t *testing.T) {
	bin := requireChromium(t)
	f := newFixture(t, "tok-clock")
	// site1's plant clock runs 6 h behind the lab's (the collector takes no
	// future time, so the lab is the real-time one)
	real := f.now
	f.now -= 6 * time.Hour.Milliseconds()
	f.feed(300) // ac-1 runs at 125 Cel for its last 40 s: discharge_temp_high
	f.now = real
	// the lab's own gateway (the data clock is a gateway's)
	for i := 30; i > 0; i-- {
		ts := real - int64(i)*1000
		b := &telemetry.Batch{Gateway: "gw-lab", Seq: uint64(31 - i), TSGW: ts, Asset: telemetry.Asset{ID: "ac-9", Class: "air_compressor", Path: compPath("lab")},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts}}}
		f.handle(telemetry.AssetSubject(b.Asset, telemetry.KindData), b.AppendJSON(nil))
	}
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, f.srv.URL+"/?token=tok-clock#/alerts")
	var cells []string
	poll(t, jsErrs, 30*time.Second, "ac-1's alert with its duration", func() bool {
		cells = nil
		_ = eval(tab, `[...document.querySelectorAll('#al-list tr[data-rule="discharge_temp_high"][data-asset="site1/ac-1"] td')].map(td => td.textContent)`, &cells)
		return len(cells) > 0
	}, nil)
	if d := cells[len(cells)-1]; strings.Contains(d, "h") {
		t.Errorf("ac-1's alert raised a minute ago lasts %q: measured on the other plant's clock", d)
	}
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// TestPagedListsInBrowser: with more assets and gateways than a page of
// /api/v1/assets and /api/v1/gateways holds (docs/api.md, "Paging"), the
// fleet page shows every asset and the gateways page every gateway: the
// dashboard follows next to the last page.
func TestPagedListsInBrowser(t *testing.T) {
	bin := requireChromium(t)
	f := newFixture(t, "")
	n := dashboard.DefaultPageSize + 20
	for i := range n {
		b := &telemetry.Batch{Gateway: fmt.Sprintf("gw-%04d", i), Seq: 1, TSGW: f.now,
			Asset:    telemetry.Asset{ID: fmt.Sprintf("m-%04d", i), Class: "motor", Path: compPath("site1")},
			Readings: []telemetry.Reading{{Signal: "power", Value: float64(i), Unit: "kW", TS: f.now}}}
		f.handle(telemetry.AssetSubject(b.Asset, telemetry.KindData), b.AppendJSON(nil))
	}
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, f.srv.URL+"/")
	var cards int
	poll(t, jsErrs, 30*time.Second, fmt.Sprintf("%d asset cards on the fleet page", n), func() bool {
		_ = eval(tab, `document.querySelectorAll('.card[data-asset]').length`, &cards)
		return cards == n
	}, func() string { return fmt.Sprintf("(%d cards)", cards) })
	navigate(t, tab, f.srv.URL+"/#/gateways")
	var rows int
	poll(t, jsErrs, 30*time.Second, fmt.Sprintf("%d gateways on the gateways page", n), func() bool {
		_ = eval(tab, `document.querySelectorAll('tr[data-gateway]').length`, &rows)
		return rows == n
	}, func() string { return fmt.Sprintf("(%d rows)", rows) })
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// TestRefusedStreamRetriedInBrowser: a page whose event stream is refused
// (503 beyond http.max_streams_per_client) shows it and opens the stream
// once a place is free, after the answer's Retry-After.
func TestRefusedStreamRetriedInBrowser(t *testing.T) {
	bin := requireChromium(t)
	f := newFixtureWith(t, "", func(c *collector.Config) { c.HTTP.MaxStreamsPerClient = 1 })
	// another stream of this client (127.0.0.1) takes the one place
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/api/v1/events?gateways=delta", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("holding stream: %v %v", err, resp)
	}
	go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, f.srv.URL+"/")
	var text string
	conn := func() bool { _ = eval(tab, `document.getElementById('conn-text').textContent`, &text); return true }
	poll(t, jsErrs, 20*time.Second, "the refused stream shown", func() bool { conn(); return text == "reconnecting" }, func() string { return text })
	cancel()
	_ = resp.Body.Close()
	poll(t, jsErrs, 30*time.Second, "the stream open after Retry-After", func() bool { conn(); return text == "live" }, func() string { return text })
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

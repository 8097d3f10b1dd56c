package dashboard_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/telemetry"
)

// gatewayEventCounter counts the gateway events (gateways,
// gateways.snapshot, gateways.delta) an event stream writes.
type gatewayEventCounter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w gatewayEventCounter) Write(b []byte) (int, error) {
	w.n.Add(int64(bytes.Count(b, []byte("event: gateways"))))
	return w.ResponseWriter.Write(b)
}

func (w gatewayEventCounter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestGatewayTurnsSilentInBrowser: the gateways page shows the stream's
// gateways and turns one silent when the server's clock passes its last
// message by the silence threshold, with no gateway event from the server
// in between. The server's clock runs an hour behind the browser's: a page
// that judged ages on the browser's clock alone would call both gateways
// silent at once. The page says how far counters lag (the snapshot's
// refresh_ms), and the silent gateway's next batch (a change of counters
// and last_recv only, but its clients' last_recv is old) turns it online
// at the next tick. The threshold is not the default 30 s but the store's
// (the collector's http.gateway_silent_after), 20 s: the page takes it
// from the stream and says it.
func TestGatewayTurnsSilentInBrowser(t *testing.T) {
	bin := requireChromium(t)
	shots := shotsDir(t)
	f := newFixture(t, "")  // its collector is the asset source; the gateways are this store's
	var behind atomic.Int64 // ms the server's clock runs behind the wall
	behind.Store(time.Hour.Milliseconds())
	const silent = 20 * time.Second
	live := dashboard.NewLive(func() time.Time { return time.Now().Add(-time.Duration(behind.Load()) * time.Millisecond) },
		dashboard.WithSilentAfter(silent))
	var gwEvents atomic.Int64
	h := dashboard.New(f.col, live, dashboard.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/events" {
			w = gatewayEventCounter{w, &gwEvents}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	publish := func(gw string) {
		ts := time.Now().UnixMilli() - behind.Load()
		live.ObserveBatch(&telemetry.Batch{Gateway: gw, Seq: 1, TSGW: ts,
			Asset:    telemetry.Asset{ID: "m-" + gw, Class: "motor", Path: compPath("site1")},
			Readings: []telemetry.Reading{{Signal: "power", Value: 1, Unit: "kW", TS: ts}}})
	}

	tab, jsErrs := startBrowser(t, bin)
	// gw-aging's last message is 10 s old on the server's clock: silent
	// 10 s from now at the 20 s threshold
	const aged = 10 * time.Second
	behind.Add(aged.Milliseconds())
	publish("gw-aging")
	behind.Add(-aged.Milliseconds())
	publish("gw-fresh")
	silentAt := time.Now().Add(silent - aged)
	navigate(t, tab, srv.URL+"/#/gateways")

	type row struct{ ID, Status, Recv string }
	var rows []row
	read := func() map[string]row {
		rows = nil
		_ = eval(tab, `[...document.querySelectorAll('tr[data-gateway]')].map(tr => ({ID: tr.dataset.gateway,
			Status: tr.children[2].textContent, Recv: tr.querySelector('[data-recv]').textContent}))`, &rows)
		m := map[string]row{}
		for _, r := range rows {
			m[r.ID] = r
		}
		return m
	}
	detail := func() string { return fmt.Sprintf("(rows %+v, %d gateway events)", rows, gwEvents.Load()) }
	poll(t, jsErrs, 15*time.Second, "both gateways online from the stream's snapshot", func() bool {
		m := read()
		return m["gw-aging"].Status == "online" && m["gw-fresh"].Status == "online" && gwEvents.Load() > 0
	}, detail)
	if time.Now().After(silentAt) {
		t.Fatal("the page came up after gw-aging was due to turn silent: the test proves nothing")
	}
	// the snapshot's refresh_ms: the page says how far counters may lag
	var lag string
	_ = eval(tab, `document.getElementById('gw-lag')?.textContent || ''`, &lag)
	if want := fmt.Sprintf("lag by up to %d s", int(dashboard.RefreshInterval.Seconds())); !strings.Contains(lag, want) {
		t.Errorf("gateways page note %q, want it to say counters %s", lag, want)
	}
	// the threshold, from the stream: the page says it
	var note string
	_ = eval(tab, `document.querySelector('#main p.muted')?.textContent || ''`, &note)
	if want := "silent after 20 s without any"; !strings.Contains(note, want) {
		t.Errorf("gateways page note %q, want it to say %q", note, want)
	}
	seen := gwEvents.Load()
	poll(t, jsErrs, silent+15*time.Second, "gw-aging silent", func() bool {
		return read()["gw-aging"].Status == "silent"
	}, detail)
	if time.Now().Before(silentAt) {
		t.Errorf("gw-aging silent at %v, before the server's clock reached its threshold (%v)", time.Now().Format(time.StampMilli), silentAt.Format(time.StampMilli))
	}
	m := read()
	if m["gw-fresh"].Status != "online" || !strings.HasSuffix(m["gw-aging"].Recv, " s ago") {
		t.Errorf("after the threshold: gw-fresh %+v (want online), gw-aging %+v (want its last message seconds ago)", m["gw-fresh"], m["gw-aging"])
	}
	if n := gwEvents.Load(); n != seen {
		t.Errorf("%d gateway events while gw-aging turned silent, want none", n-seen)
	}
	screenshot(t, tab, shots, "14-gateways-silent.png")
	// its next message comes as a delta of that gateway alone: online again
	publish("gw-aging")
	poll(t, jsErrs, 15*time.Second, "gw-aging online again from the delta", func() bool {
		return read()["gw-aging"].Status == "online"
	}, detail)
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

// TestGatewayClockShownInBrowser (review7 F3): the gateways page shows
// each gateway's measured clock offset and marks one beyond the
// collector's tolerance ("clock 4 min 0 s ahead"), so an operator sees
// which gateway's clock to fix; one within it shows its offset unmarked,
// one without a live batch a dash. A gateway whose clock turns out behind
// comes marked in a delta. The note under the table says what the figure
// is and the tolerance, from the stream's snapshot (3 s here, not the
// default 2 s).
func TestGatewayClockShownInBrowser(t *testing.T) {
	bin := requireChromium(t)
	shots := shotsDir(t)
	f := newFixture(t, "")  // its collector is the asset source; the gateways are this store's
	var behind atomic.Int64 // ms the server's clock runs behind the wall
	live := dashboard.NewLive(func() time.Time { return time.Now().Add(-time.Duration(behind.Load()) * time.Millisecond) },
		dashboard.WithClockTolerance(3*time.Second), dashboard.WithSilentAfter(20*time.Second))
	srv := httptest.NewServer(dashboard.New(f.col, live, dashboard.Options{}))
	t.Cleanup(srv.Close)
	seqs := map[string]uint64{}
	publish := func(gw string, lead time.Duration, isLive bool) {
		now := time.Now().UnixMilli() - behind.Load()
		seqs[gw]++
		b := &telemetry.Batch{Gateway: gw, Seq: seqs[gw], TSGW: min(now+lead.Milliseconds(), now),
			Asset:    telemetry.Asset{ID: "m-" + gw, Class: "motor", Path: compPath("site1")},
			Readings: []telemetry.Reading{{Signal: "power", Value: 1, Unit: "kW", TS: now}}}
		live.ObserveBatchClock(b, false, dashboard.Clock{TSGW: now + lead.Milliseconds(), Arrival: now, Live: isLive, Bounded: lead > 0})
	}
	publish("gw-fast", 4*time.Minute, true)
	publish("gw-ok", 40*time.Millisecond, true)
	publish("gw-backlog", -time.Hour, false)
	publish("gw-1970", -time.Duration(time.Now().UnixMilli())*time.Millisecond, true) // no real-time clock: dated 1970

	tab, jsErrs := startBrowser(t, bin)
	navigate(t, tab, srv.URL+"/#/gateways")
	type row struct{ ID, Clock, Title string }
	var rows []row
	read := func() map[string]row {
		rows = nil
		_ = eval(tab, `[...document.querySelectorAll('tr[data-gateway]')].map(tr => ({ID: tr.dataset.gateway,
			Clock: tr.querySelector('[data-clock]').textContent, Title: tr.querySelector('[data-clock] span')?.title || ''}))`, &rows)
		m := map[string]row{}
		for _, r := range rows {
			m[r.ID] = r
		}
		return m
	}
	detail := func() string { return fmt.Sprintf("(rows %+v)", rows) }
	poll(t, jsErrs, 15*time.Second, "the four gateways' clocks", func() bool { return len(read()) == 4 }, detail)
	m := read()
	if c := m["gw-fast"]; c.Clock != "clock 4 min 0 s ahead" || !strings.Contains(c.Title, "1 messages dated ahead") {
		t.Errorf("gw-fast clock cell %+v, want it marked \"clock 4 min 0 s ahead\" with its count of bounded messages", c)
	}
	if c := m["gw-ok"].Clock; c != "+40 ms" {
		t.Errorf("gw-ok clock cell %q, want \"+40 ms\" unmarked (inside the 3 s tolerance)", c)
	}
	if c := m["gw-1970"].Clock; c != "clock 7 d or more behind" { // review10 F7: bounded
		t.Errorf("gw-1970 clock cell %q, want \"clock 7 d or more behind\"", c)
	}
	if c := m["gw-backlog"].Clock; c != "–" {
		t.Errorf("gw-backlog clock cell %q, want a dash (a backlog is no measure of its clock)", c)
	}
	var marked int
	_ = eval(tab, `document.querySelectorAll('td[data-clock] .pill.warn').length`, &marked)
	if marked != 2 {
		t.Errorf("%d clock cells marked, want 2 (gw-fast, gw-1970)", marked)
	}
	var note string
	_ = eval(tab, `document.getElementById('gw-clock-note')?.textContent || ''`, &note)
	if want := "Marked beyond 3.0 s either way"; !strings.Contains(note, want) {
		t.Errorf("clock note %q, want it to say %q (the snapshot's clock_tolerance_ms)", note, want)
	}
	screenshot(t, tab, shots, "14-gateways-clock.png")
	// a gateway 10 min behind comes in a delta, marked
	publish("gw-slow", -10*time.Minute, true)
	poll(t, jsErrs, 15*time.Second, "gw-slow marked behind", func() bool {
		return read()["gw-slow"].Clock == "clock 10 min 0 s behind"
	}, detail)
	// review10 F5: a gateway that reports itself offline, and one that
	// turns silent on the page (its last message 17 s old at the 20 s
	// threshold, marked when it came), show their last offset, unmarked
	publish("gw-off", 4*time.Minute, true)
	live.ObserveStatus("site1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-off", Online: false, TSGW: time.Now().UnixMilli()})
	behind.Store(17_000)
	publish("gw-aging", 4*time.Minute, true)
	behind.Store(0)
	for _, gw := range []string{"gw-off", "gw-aging"} {
		poll(t, jsErrs, 15*time.Second, gw+" shown with its last offset, unmarked", func() bool {
			return read()[gw].Clock == "+4 min 0 s (last)"
		}, detail)
	}
	_ = eval(tab, `document.querySelectorAll('td[data-clock] .pill.warn').length`, &marked)
	if marked != 3 {
		t.Errorf("%d clock cells marked, want 3 (gw-fast, gw-1970, gw-slow)", marked)
	}
	if c := read()["gw-aging"]; !strings.Contains(c.Title, "not current: the gateway is silent") {
		t.Errorf("gw-aging clock cell %+v, want a title saying the offset is not current", c)
	}
	if errs := jsErrs.all(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %s", strings.Join(errs, "\n"))
	}
}

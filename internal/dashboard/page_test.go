package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// fleet is a Source of many assets, alerts and KPI windows (the
// collector's own answers are tested in api_test.go; here the lists need
// thousands of rows).
type fleet struct {
	mu     sync.Mutex
	assets []rules.AssetView
	alerts []alert.Alert
}

func (f *fleet) Assets() []rules.AssetView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.assets)
}

func (f *fleet) Asset(site, id string) (rules.AssetView, bool) {
	for _, a := range f.Assets() {
		if a.Site == site && a.ID == id {
			return a, true
		}
	}
	return rules.AssetView{}, false
}

func (f *fleet) Alerts(activeOnly bool) []alert.Alert {
	var out []alert.Alert
	for _, a := range f.alerts {
		if !activeOnly || a.Active() {
			out = append(out, a)
		}
	}
	return out
}

func (f *fleet) KPIs(site, id string) (kpi.Result, bool) {
	// every asset has a window; its class is in its id's place (newFleetServer)
	var n int
	if _, err := fmt.Sscanf(id, "a%d", &n); err != nil {
		return kpi.Result{}, false
	}
	return kpi.Result{Site: site, Class: fleetClasses[n%len(fleetClasses)], Asset: id}, true
}

var fleetClasses = []string{"motor", "boiler", "air_compressor"}

func newFleetServer(t *testing.T, assets, gateways int) (*fleet, *httptest.Server) {
	t.Helper()
	wall := time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC)
	live := NewLive(func() time.Time { return wall })
	f := &fleet{}
	for i := range assets {
		f.assets = append(f.assets, rules.AssetView{Site: fmt.Sprintf("s%d", i%3), ID: fmt.Sprintf("a%04d", i), Class: fleetClasses[i%len(fleetClasses)]})
	}
	sev := []alert.Severity{alert.Info, alert.Warn, alert.Alarm, alert.Trip}
	for i := range assets {
		a := alert.Alert{ID: fmt.Sprintf("k%d@%d", i%50, i), Key: fmt.Sprintf("k%d", i%50), Site: "s0", Asset: "a0000", Class: "motor",
			Severity: sev[i%4], RaisedAt: int64(1000 + i%7), UpdatedAt: int64(2000 + i), State: alert.Raised}
		if i%3 == 0 {
			a.State, a.ClearedAt = alert.Cleared, int64(5000+i%11)
		}
		f.alerts = append(f.alerts, a)
	}
	for i := range gateways {
		live.ObserveBatch(&telemetry.Batch{Gateway: fmt.Sprintf("g%05d", i), Seq: 1, TSGW: wall.UnixMilli(),
			Asset: telemetry.Asset{ID: "x", Class: "generic", Path: []string{"acme", "s1"}}})
	}
	srv := httptest.NewServer(New(f, live, Options{}))
	t.Cleanup(srv.Close)
	return f, srv
}

type listPage struct {
	Total int               `json:"total"`
	Next  string            `json:"next"`
	Items []json.RawMessage `json:"-"`
}

func getPage(t *testing.T, srv *httptest.Server, path, field string) (listPage, int, string) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	var p listPage
	if resp.StatusCode != http.StatusOK {
		var msg string
		_ = json.Unmarshal(raw["error"], &msg)
		return p, resp.StatusCode, msg
	}
	_ = json.Unmarshal(raw["total"], &p.Total)
	if n, ok := raw["next"]; ok {
		_ = json.Unmarshal(n, &p.Next)
		if p.Next == "" {
			t.Fatalf("%s: next present but empty", path)
		}
	}
	if err := json.Unmarshal(raw[field], &p.Items); err != nil {
		t.Fatalf("%s: %s: %v", path, field, err)
	}
	return p, resp.StatusCode, ""
}

// walk follows next from the first page of path at limit and returns every
// item in order.
func walk(t *testing.T, srv *httptest.Server, path, field string, limit int) []string {
	t.Helper()
	var out []string
	cursor := ""
	for pages := 0; ; pages++ {
		q := fmt.Sprintf("%s?limit=%d", path, limit)
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		p, code, msg := getPage(t, srv, q, field)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, msg)
		}
		if len(p.Items) > limit {
			t.Fatalf("%s: %d items, more than the limit", q, len(p.Items))
		}
		for _, it := range p.Items {
			out = append(out, string(it))
		}
		if p.Next == "" {
			if len(out) != p.Total {
				t.Fatalf("%s: %d items over %d pages, total says %d", path, len(out), pages+1, p.Total)
			}
			return out
		}
		cursor = p.Next
	}
}

// Review (session 6): /api/v1/gateways answered its whole list (up to
// 32,768 gateways) in one body, and /assets, /kpis the whole fleet. Every
// list endpoint that grows with the fleet pages now, one scheme for all:
// limit (default 500, at most 5,000) and a keyset cursor (next).
func TestListEndpointsPage(t *testing.T) {
	f, srv := newFleetServer(t, 1203, 1207)
	for _, ep := range []struct{ path, field string }{
		{"/api/v1/gateways", "gateways"}, {"/api/v1/assets", "assets"}, {"/api/v1/alerts", "alerts"}, {"/api/v1/kpis", "kpis"},
	} {
		t.Run(ep.field, func(t *testing.T) {
			all := walk(t, srv, ep.path, ep.field, MaxPageSize)
			if len(all) < 1203 {
				t.Fatalf("%d items in one page of %d", len(all), MaxPageSize)
			}
			paged := walk(t, srv, ep.path, ep.field, 100)
			if !slices.Equal(all, paged) {
				t.Fatalf("pages of 100 give %d items, not the %d of one page in the same order", len(paged), len(all))
			}
			seen := map[string]bool{}
			for _, it := range paged {
				if seen[it] {
					t.Fatalf("item twice: %s", it)
				}
				seen[it] = true
			}
			first, _, _ := getPage(t, srv, ep.path, ep.field) // default page size
			if len(first.Items) != DefaultPageSize || first.Next == "" || first.Total != len(all) {
				t.Fatalf("default page: %d items, next %q, total %d", len(first.Items), first.Next, first.Total)
			}
		})
	}
	// keyset, not offset: an asset of the first page gone before the
	// second is fetched shifts nothing (an offset would skip one)
	p1, _, _ := getPage(t, srv, "/api/v1/assets?limit=10", "assets")
	want := walk(t, srv, "/api/v1/assets", "assets", MaxPageSize)[10:20]
	f.mu.Lock()
	var gone AssetOut
	_ = json.Unmarshal(p1.Items[0], &gone)
	f.assets = slices.DeleteFunc(f.assets, func(a rules.AssetView) bool { return a.Site == gone.Site && a.ID == gone.ID })
	f.mu.Unlock()
	p2, _, _ := getPage(t, srv, "/api/v1/assets?limit=10&cursor="+p1.Next, "assets")
	for i := range want {
		if string(p2.Items[i]) != want[i] {
			t.Fatalf("page 2 item %d after a removal on page 1: %s, want %s", i, p2.Items[i], want[i])
		}
	}
}

func TestPagingParameterErrors(t *testing.T) {
	_, srv := newFleetServer(t, 20, 20)
	assetCursor := encodeCursor("assets", assetPageKey{"s0", "motor", "a0000"})
	for _, c := range []struct{ path, field, msg string }{
		{"/api/v1/gateways?limit=0", "limit", `"0" is not an integer within 1..5000`},
		{"/api/v1/gateways?limit=5001", "limit", `"5001" is not an integer within 1..5000`},
		{"/api/v1/assets?limit=ten", "limit", `"ten" is not an integer within 1..5000`},
		{"/api/v1/alerts?limit=-1", "limit", "within 1..5000"},
		{"/api/v1/kpis?limit=1&limit=2", "limit", "given 2 times"},
		{"/api/v1/gateways?cursor=%21%21", "cursor", "not a cursor of this endpoint"},
		{"/api/v1/gateways?cursor=" + assetCursor, "cursor", "not a cursor of this endpoint"}, // another endpoint's
		{"/api/v1/alerts?cursor=" + assetCursor, "cursor", "not a cursor of this endpoint"},
		{"/api/v1/assets?cursor=" + strings.Repeat("A", 2000), "cursor", "not a cursor of this endpoint"},
		// review2 F3: /kpis and /assets keys have the same shape; the cursor
		// names its endpoint. Forged keys out of range are refused too.
		{"/api/v1/kpis?cursor=" + assetCursor, "cursor", "not a cursor of this endpoint"},
		{"/api/v1/assets?cursor=" + encodeCursor("kpis", assetPageKey{"s0", "motor", "a0000"}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/assets?cursor=" + encodeCursor("assets", assetPageKey{"s0", "no such", "a0000"}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/kpis?cursor=" + encodeCursor("kpis", assetPageKey{"s0", "nope", "a0000"}), "cursor", "not a cursor of this endpoint"}, // not in the catalog
		{"/api/v1/alerts?cursor=" + encodeCursor("alerts", alertPageKey{Active: true, Severity: 99, Key: "k", ID: "i"}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/alerts?cursor=" + encodeCursor("alerts", alertPageKey{Active: false, Severity: 2, Key: "k", ID: "i"}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/alerts?cursor=" + encodeCursor("alerts", alertPageKey{Active: true, Severity: 2, T: -1, Key: "k", ID: "i"}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/gateways?cursor=" + encodeCursor("gateways", gatewayPageKey{""}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/gateways?cursor=" + encodeCursor("gateways", gatewayPageKey{"a.b"}), "cursor", "not a cursor of this endpoint"},
		{"/api/v1/gateways?offset=10", "offset", "unknown parameter (allowed: limit, cursor)"},
	} {
		_, code, msg := getPage(t, srv, c.path, "")
		if code != http.StatusBadRequest || !strings.Contains(msg, c.field+": ") || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: %d %s, want 400 %s: ...%s", c.path, code, msg, c.field, c.msg)
		}
	}
	// a cursor past the end is an empty last page, not an error
	p, code, _ := getPage(t, srv, "/api/v1/gateways?cursor="+encodeCursor("gateways", gatewayPageKey{"zzz"}), "gateways")
	if code != http.StatusOK || len(p.Items) != 0 || p.Next != "" || p.Total != 20 {
		t.Errorf("cursor past the end: %d, %d items, next %q, total %d", code, len(p.Items), p.Next, p.Total)
	}
}

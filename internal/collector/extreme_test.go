package collector

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Huge finite values (up to ±math.MaxFloat64) keep the history endpoint
// valid JSON with their true extremes, and a reading timestamped beyond
// ingest.MaxFuture gets its arrival time and is counted, so it does not
// pin its signal.
func TestExtremeValuesAndFutureTimestamps(t *testing.T) {
	c := newCollector(t, Defaults())
	h := c.HTTPHandler("")
	ctx := context.Background()
	now := time.Now()
	year2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	for i, v := range []float64{1e200, math.MaxFloat64, math.MaxFloat64, -math.MaxFloat64, 1e160, 5e-324} {
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i + 1), TSGW: now.UnixMilli(), Asset: a,
			Readings: []telemetry.Reading{{Signal: "discharge_pressure", Value: v, Unit: "bar", TS: now.UnixMilli() + int64(i)}}}
		if i == 0 {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: "discharge_temp", Value: 80, Unit: "degC", TS: year2100})
		}
		if err := c.Handle(ctx, "smelter.v1.site1.air_compressor.ac-1.data", b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	get := func(path string, v any) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v: %q", path, err, rec.Body)
		}
	}
	var hist dashboard.HistoryOut
	get("/api/v1/assets/site1/ac-1/history", &hist)
	var pts []dashboard.Point
	for _, s := range hist.Series {
		if s.Signal == "discharge_pressure" {
			pts = s.Points
		}
	}
	if len(pts) == 0 {
		t.Fatalf("no pressure history in %+v", hist)
	}
	var hi, lo float64
	n := 0
	for _, p := range pts {
		if p.V == nil {
			continue
		}
		n += p.N
		if math.IsInf(*p.V, 0) || math.IsNaN(*p.V) {
			t.Fatalf("point %+v", p)
		}
		hi, lo = max(hi, *p.Max), min(lo, *p.Min)
	}
	if n != 6 || hi < 1.79769e308 || lo > -1.79769e308 { // 6 significant digits
		t.Fatalf("history n %d, min %g, max %g; want 6, %g, %g", n, lo, hi, -math.MaxFloat64, math.MaxFloat64)
	}
	var asset dashboard.AssetOut
	get("/api/v1/assets/site1/ac-1", &asset)
	found := false
	for _, s := range asset.Signals {
		if s.Signal == "discharge_temp" {
			found = true
			if s.TS > time.Now().Add(ingest.MaxFuture).UnixMilli() || s.TS < now.UnixMilli() {
				t.Errorf("discharge_temp ts %d, want the arrival time (about %d)", s.TS, now.UnixMilli())
			}
		}
	}
	if !found {
		t.Fatalf("no discharge_temp in %+v", asset)
	}
	if got := testutil.ToFloat64(c.m.future); got != 1 {
		t.Errorf("future timestamps %v, want 1", got)
	}
	// every other answer stays valid JSON too (rules and KPIs saw the values)
	for _, path := range []string{"/api/v1/assets", "/api/v1/alerts", "/api/v1/kpis", "/api/v1/assets/site1/ac-1/kpis", "/api/v1/gateways"} {
		var v any
		get(path, &v)
	}
	for _, al := range c.Alerts(false) {
		if _, err := json.Marshal(al); err != nil {
			t.Errorf("alert %+v does not encode: %v", al, err)
		}
	}
}

// TestClampFuture: within the tolerance a source time is kept.
func TestClampFuture(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	b := &telemetry.Batch{TSGW: now.Add(time.Hour).UnixMilli(), Readings: []telemetry.Reading{
		{TS: now.Add(ingest.MaxFuture).UnixMilli()}, {TS: now.Add(ingest.MaxFuture + time.Millisecond).UnixMilli()}, {TS: now.Add(-time.Hour).UnixMilli()}}}
	if n := ingest.ClampFuture(b, now); n != 1 || b.Readings[0].TS != now.Add(ingest.MaxFuture).UnixMilli() ||
		b.Readings[1].TS != now.UnixMilli() || b.Readings[2].TS != now.Add(-time.Hour).UnixMilli() || b.TSGW != now.UnixMilli() {
		t.Fatalf("n %d, batch %+v", n, b)
	}
}

// TestClampFutureBy: the tolerance is the caller's (the collector's
// max_future); a time within it is kept, one beyond it replaced.
func TestClampFutureBy(t *testing.T) {
	now := time.Now()
	b := &telemetry.Batch{TSGW: now.Add(2 * time.Hour).UnixMilli(), Readings: []telemetry.Reading{
		{TS: now.Add(2 * time.Hour).UnixMilli()}, {TS: now.Add(4 * time.Hour).UnixMilli()}}}
	if n := ingest.ClampFutureBy(b, now, 3*time.Hour); n != 1 || b.Readings[0].TS != now.Add(2*time.Hour).UnixMilli() ||
		b.Readings[1].TS != now.UnixMilli() || b.TSGW != now.Add(2*time.Hour).UnixMilli() {
		t.Fatalf("clamped %d: %+v", n, b)
	}
}

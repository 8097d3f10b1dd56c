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

// TestBoundBatch (review6 F1-F4): a batch's times are bounded by the
// arrival time. Beyond the tolerance a time is replaced by it (counted as
// future); inside it a ts_gw or reading time ahead is set to it, each on
// its own, and a time not ahead is kept (review7 F1: moving every reading
// back by ts_gw's lead dated true device times in the past). Before,
// times inside the tolerance were kept as sent (the old TestClampFuture
// and TestClampFutureBy asserted that).
func TestBoundBatch(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	ms := now.UnixMilli()
	at := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	for _, c := range []struct {
		name       string
		tol        time.Duration
		tsgw       int64
		ts         []int64
		wantTSGW   int64
		wantTS     []int64
		wantFuture int
		wantGW     bool // ts_gw beyond the tolerance
		wantAhead  bool
	}{
		{"ts_gw beyond the tolerance", ingest.MaxFuture, at(time.Hour),
			[]int64{at(ingest.MaxFuture), at(ingest.MaxFuture + time.Millisecond), at(-time.Hour)},
			ms, []int64{ms, ms, at(-time.Hour)}, 1, true, true},
		// review10 F3: ts_gw alone beyond the tolerance, the readings right
		{"ts_gw alone beyond the tolerance", ingest.MaxFuture, at(10 * time.Minute),
			[]int64{at(-time.Second)},
			ms, []int64{at(-time.Second)}, 0, true, false},
		// review7 F1: a time not ahead (a device's SourceTimestamp while only
		// the gateway's clock is fast) is kept, not moved back by ts_gw's lead
		{"times ahead set to the arrival, the others kept", ingest.MaxFuture, at(240 * time.Second),
			[]int64{at(240 * time.Second), at(239 * time.Second), at(-10 * time.Second)},
			ms, []int64{ms, ms, at(-10 * time.Second)}, 0, false, true},
		{"a reading ahead of its ts_gw", ingest.MaxFuture, at(10 * time.Second),
			[]int64{at(20 * time.Second), at(time.Second)},
			ms, []int64{ms, ms}, 0, false, true},
		{"a reading ahead of a ts_gw dated now", ingest.MaxFuture, ms,
			[]int64{at(time.Minute), at(-time.Second)},
			ms, []int64{ms, at(-time.Second)}, 0, false, true},
		{"nothing ahead", ingest.MaxFuture, at(-time.Second),
			[]int64{ms, at(-2 * time.Second)},
			at(-time.Second), []int64{ms, at(-2 * time.Second)}, 0, false, false},
		{"the caller's tolerance", 3 * time.Hour, at(2 * time.Hour),
			[]int64{at(2 * time.Hour), at(4 * time.Hour), at(time.Hour)},
			ms, []int64{ms, ms, ms}, 1, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &telemetry.Batch{TSGW: c.tsgw}
			for _, ts := range c.ts {
				b.Readings = append(b.Readings, telemetry.Reading{TS: ts})
			}
			n, gw, ahead := ingest.BoundBatch(b, now, c.tol)
			if n != c.wantFuture || gw != c.wantGW || ahead != c.wantAhead || b.TSGW != c.wantTSGW {
				t.Errorf("future %d ts_gw future %v ahead %v ts_gw %d, want %d %v %v %d", n, gw, ahead, b.TSGW, c.wantFuture, c.wantGW, c.wantAhead, c.wantTSGW)
			}
			for i, r := range b.Readings {
				if r.TS != c.wantTS[i] {
					t.Errorf("reading %d: ts %d (now%+d), want %d (now%+d)", i, r.TS, r.TS-ms, c.wantTS[i], c.wantTS[i]-ms)
				}
			}
		})
	}
}

// TestBoundTSGW: a birth's or death's ts_gw beyond the tolerance is the
// arrival time (future), inside it ahead of the clock the arrival time
// too (ahead, review6 F4), at or before the clock unchanged.
func TestBoundTSGW(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	ms := now.UnixMilli()
	for _, c := range []struct {
		in, want      int64
		future, ahead bool
	}{
		{ms + 3_600_000, ms, true, false},
		{ms + 290_000, ms, false, true},
		{ms, ms, false, false},
		{ms - 1, ms - 1, false, false},
	} {
		ts := c.in
		future, ahead := ingest.BoundTSGW(&ts, now, ingest.MaxFuture)
		if ts != c.want || future != c.future || ahead != c.ahead {
			t.Errorf("now%+d: got now%+d future %v ahead %v, want now%+d %v %v", c.in-ms, ts-ms, future, ahead, c.want-ms, c.future, c.ahead)
		}
	}
}

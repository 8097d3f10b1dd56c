package collector

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Review 6, F1-F4: a message dated ahead of the collector's clock inside
// max_future (another gateway of the site, or a gateway clock running
// fast, then corrected) kept its times, and everything that judges by
// time followed them: KPI windows, per-signal staleness, the dashboard's
// store and alert times. Now every time is bounded by the collector's
// clock at arrival (ingest.BoundBatch, BoundTSGW).

// kpiBatch is a batch of ac-1 of gateway gw dated ts carrying the air
// compressor's KPI inputs and discharge_temp (not discharge_pressure).
func kpiBatch(gw string, seq uint64, ts int64) spanMsg {
	b := &telemetry.Batch{Gateway: gw, Seq: seq, TSGW: ts, Asset: spanAsset,
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: ts},
			{Signal: "input_power", Value: 62, Unit: "kW", TS: ts},
			{Signal: "free_air_delivery", Value: 11.5, Unit: "m3/min", TS: ts},
			{Signal: "load_state", Value: 2, TS: ts}}}
	return spanMsg{telemetry.KindData, b.AppendJSON(nil)}
}

// TestAheadBatchKeepsKPIWindows (R6-F1): a batch of another gateway dated
// 240 s ahead neither finishes the asset's KPI window before its end nor
// moves the window ahead: the real gateway's next batch, dated now, is
// integrated into the window in progress. Before, the window jumped to
// the forged time (published early), and every real batch of the next
// 240 s lay before it and was dropped: KPI windows missing.
func TestAheadBatchKeepsKPIWindows(t *testing.T) {
	cfg := Defaults()
	cfg.KPI.Window = Duration(time.Minute) // +240 s always crosses a window's end
	col, send := liveAC1Config(t, cfg)
	now := time.Now().UnixMilli()
	send(kpiBatch("gw-1", 3, now-2000))
	send(kpiBatch("gw-1", 4, now-1000))
	send(kpiBatch("gw-2", 1, time.Now().UnixMilli()+240_000))
	tReal := time.Now().UnixMilli()
	send(kpiBatch("gw-1", 5, tReal))
	sh := col.shard(0)
	sh.mu.Lock()
	st, ok := sh.kpis.Snapshot("site1", "ac-1")
	sh.mu.Unlock()
	if !ok {
		t.Fatal("ac-1 has no KPI state")
	}
	if st.LastTS != tReal || st.Start > tReal || st.Start+time.Minute.Milliseconds() <= tReal {
		t.Errorf("KPI window start %d, last batch %d; want the real batch %d integrated into its window (now %+d ms)",
			st.Start, st.LastTS, tReal, st.LastTS-tReal)
	}
	if r, ok := col.KPIs("site1", "ac-1"); ok && r.End > time.Now().UnixMilli() {
		t.Errorf("a KPI window ending at %d published before its end (now %d)", r.End, time.Now().UnixMilli())
	}
	if got := testutil.ToFloat64(col.m.ahead.WithLabelValues("data")); got != 1 {
		t.Errorf("clock_ahead_total{kind=data} %v, want 1", got)
	}
	if got := testutil.ToFloat64(col.m.future); got != 0 {
		t.Errorf("future_timestamps_total %v, want 0 (inside the tolerance)", got)
	}
}

// TestAheadBatchNoFalseStale (R6-F2): a batch dated 240 s ahead carrying
// only some of the asset's signals raises no staleness alert for the
// others while the real gateway's good data flows. Before, the others
// were judged at the forged time: "discharge_pressure has no good value
// for 240 s", raised, then cleared by the next real batch.
func TestAheadBatchNoFalseStale(t *testing.T) {
	col, send := liveAC1(t)
	send(lifeBatch(3, time.Now().UnixMilli(), telemetry.QualityGood))
	send(kpiBatch("gw-2", 1, time.Now().UnixMilli()+240_000)) // no discharge_pressure
	send(lifeBatch(4, time.Now().UnixMilli(), telemetry.QualityGood))
	for _, a := range col.Alerts(false) {
		if a.Asset == "ac-1" && a.Kind == "stale" {
			t.Errorf("false stale alert: %s %s %q raised at %d", a.Signal, a.State, a.Message, a.RaisedAt)
		}
	}
}

// TestFastClockCorrectedShownLive (R6-F3): a gateway whose clock ran
// 4 min fast, then was corrected, shows its asset live at once: status
// not stale, not silent, and no time in the future. Before, the store
// kept the fast times: the asset was stale and silent for the whole lead
// and its signals' times stayed in the future.
func TestFastClockCorrectedShownLive(t *testing.T) {
	col, send := liveAC1(t)
	h := col.HTTPHandler("")
	for i := range uint64(3) { // the fast clock
		send(lifeBatch(3+i, time.Now().UnixMilli()+240_000+int64(i)*500, telemetry.QualityGood))
	}
	for i := range uint64(3) { // corrected
		send(lifeBatch(6+i, time.Now().UnixMilli(), telemetry.QualityGood))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/assets/site1/ac-1", nil))
	var a dashboard.AssetOut
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %q: %v", rec.Code, rec.Body, err)
	}
	now := time.Now().UnixMilli()
	if a.Status == dashboard.StatusStale || a.Silent || a.LastTS > now || a.DataNow > now+1000 {
		t.Errorf("asset status %q silent %v last_ts now%+d data_now now%+d, want live and nothing ahead", a.Status, a.Silent, a.LastTS-now, a.DataNow-now)
	}
	for _, s := range a.Signals {
		if s.TS > now {
			t.Errorf("%s ts %d, %d ms in the future", s.Signal, s.TS, s.TS-now)
		}
	}
	if got := testutil.ToFloat64(col.m.ahead.WithLabelValues("data")); got != 3 {
		t.Errorf("clock_ahead_total{kind=data} %v, want 3", got)
	}
}

// TestAheadDeathAlertTimes (R6-F4): a death of the asset's own gateway
// dated 290 s ahead is raised at its arrival, not in the future, and the
// batch that ends it clears it at that batch's time. Before, both
// raised_at and cleared_at were the death's future ts_gw: a zero-length
// outage that had not happened yet.
func TestAheadDeathAlertTimes(t *testing.T) {
	col, send := liveAC1(t)
	send(spanDeath(t, 3, time.Now().UnixMilli()+290_000))
	arrived := time.Now().UnixMilli()
	a, ok := deathAlert(col)
	if !ok {
		t.Fatal("the death raised no alert")
	}
	if a.RaisedAt > arrived {
		t.Errorf("raised at %d, %d ms after its arrival", a.RaisedAt, a.RaisedAt-arrived)
	}
	clear := time.Now().UnixMilli()
	send(lifeBatch(4, clear, telemetry.QualityGood))
	if a, ok := deathAlert(col); ok {
		t.Fatalf("the death's alert still active: %+v", a)
	}
	var cleared *alert.Alert
	for _, e := range col.Alerts(false) {
		if e.ID == a.ID && e.State == alert.Cleared {
			cleared = &e
		}
	}
	if cleared == nil || cleared.ClearedAt != clear {
		t.Errorf("cleared %+v, want cleared at the batch's time %d", cleared, clear)
	}
	if got := testutil.ToFloat64(col.m.ahead.WithLabelValues("death")); got != 1 {
		t.Errorf("clock_ahead_total{kind=death} %v, want 1", got)
	}
}

// TestForeignBirthCounted (R6-F5): a birth of another gateway of the site
// applied to an asset alive on its gateway is counted and logged (the
// trust model lets it replace the asset's declarations; this shows it).
// The asset's own gateway's rebirth is not counted, and the counter's
// series exist at 0 from the start (clock_ahead_total for every kind too).
func TestForeignBirthCounted(t *testing.T) {
	col, send := liveAC1(t)
	if n := testutil.CollectAndCount(col.m.ahead); n != 3 {
		t.Errorf("clock_ahead_total has %d series at start, want 3", n)
	}
	for _, k := range []string{"data", "birth", "death"} {
		if got := testutil.ToFloat64(col.m.ahead.WithLabelValues(k)); got != 0 {
			t.Errorf("clock_ahead_total{kind=%s} %v at start", k, got)
		}
	}
	send(spanBirth(t, 3, time.Now().UnixMilli(), 1.6, "discharge_temp", "discharge_pressure", "load_state"))
	if got := testutil.ToFloat64(col.m.foreignBirths); got != 0 {
		t.Errorf("foreign births %v after the asset's own gateway's rebirth, want 0", got)
	}
	send(fromGateway(t, spanBirth(t, 1, time.Now().UnixMilli(), 0.5, "discharge_temp", "discharge_pressure"), "gw-2"))
	if got := testutil.ToFloat64(col.m.foreignBirths); got != 1 {
		t.Errorf("foreign births %v, want 1", got)
	}
}

// TestArrivedAt (review7 F2, review9 F1): a JetStream message stored
// liveLag or more before now (a backlog) arrived at the stream's time of
// it (the ack subject's <tm>, v1 and v2 forms) and is not live; a live
// one, or one the server dated ahead of our clock, or one without a time,
// arrives now and is live (a sample of its gateway's clock).
func TestArrivedAt(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	stored := now.Add(-10 * time.Minute)
	ns := func(at time.Time) string { return strconv.FormatInt(at.UnixNano(), 10) }
	for _, c := range []struct {
		reply string
		want  time.Time
	}{
		{"$JS.ACK.SMELTER.c1.1.42.7." + ns(stored) + ".3", stored},
		{"$JS.ACK.hub.ACCHASH.SMELTER.c1.1.42.7." + ns(stored) + ".3.tok", stored},
		{"$JS.ACK.SMELTER.c1.1.42.7." + ns(now.Add(-liveLag)) + ".3", now.Add(-liveLag)},
		// live: a server clock 3 s behind ours does not date it back
		{"$JS.ACK.SMELTER.c1.1.42.7." + ns(now.Add(-3*time.Second)) + ".3", now},
		{"$JS.ACK.SMELTER.c1.1.42.7." + ns(now.Add(time.Second)) + ".3", now}, // the server's clock ahead of ours
		{"$JS.ACK.SMELTER.c1.1.42.7.x.3", now},
		{"_INBOX.abc", now},
		{"", now},
	} {
		got, _, live := arrivedAt(parseAck(c.reply), now, liveLag)
		if !got.Equal(c.want) || live != c.want.Equal(now) {
			t.Errorf("%q: %v live %v, want %v live %v", c.reply, got, live, c.want, c.want.Equal(now))
		}
	}
}

// TestBacklogBoundedByArrival (review7 F2): a backlog read after an
// outage is bounded by when each message arrived, not when it is read. A
// batch of another gateway dated 20 s ahead of its arrival 10 minutes ago
// is no longer ahead of the clock when read; bounded by the read time it
// kept its forged time, and the real gateway's next batch, 1 s after the
// first, was older and dropped as late (review6 F1-F3 again).
func TestBacklogBoundedByArrival(t *testing.T) {
	col := newCollector(t, Defaults())
	sh := col.shard(0)
	subj := telemetry.Subject("site1", "air_compressor", "ac-1", telemetry.KindData)
	arrived := time.Now().Add(-10 * time.Minute)
	at := arrived.UnixMilli()
	var cy cycle
	col.processPayload(sh, subj, kpiBatch("gw-2", 1, at+20_000).data, false, arrived, false, 0, "", &cy)
	col.processPayload(sh, subj, kpiBatch("gw-1", 5, at+1000).data, false, arrived.Add(time.Second), false, 0, "", &cy)
	sh.mu.Lock()
	late := sh.engine.Stats().Late
	defer sh.mu.Unlock()
	if n := sh.engine.Stats().Batches; n != 2 || late != 0 {
		t.Errorf("%d batches evaluated, %d dropped as late; want 2, 0", n, late)
	}
	if got := testutil.ToFloat64(col.m.ahead.WithLabelValues("data")); got != 1 {
		t.Errorf("clock_ahead_total{kind=data} %v, want 1 (the forged batch, ahead of its arrival)", got)
	}
}

// TestFarAheadBatchCounted (review10 F3): a batch whose ts_gw alone lies
// beyond max_future (a gateway clock 10 min fast, its readings' times
// right) was shown in its gateway's clock_ahead_total but counted in
// neither smelter_collector_future_timestamps_total nor clock_ahead_total
// and not logged, while one 4 min ahead was both: the worse fault was the
// less visible. Now it counts in future_timestamps_total and is logged
// with its lead, like a birth's or death's ts_gw beyond max_future.
func TestFarAheadBatchCounted(t *testing.T) {
	var lb logtest.Buffer
	col := newCollectorLog(t, Defaults(), &lb)
	sh := col.shard(0)
	subj := telemetry.Subject("site1", "air_compressor", "ac-1", telemetry.KindData)
	now := time.Now()
	b := &telemetry.Batch{Gateway: "gw-far", Seq: 1, TSGW: now.Add(10 * time.Minute).UnixMilli(), Asset: spanAsset,
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: now.UnixMilli()}}}
	var cy cycle
	col.processPayload(sh, subj, b.AppendJSON(nil), false, now, true, 0, "", &cy)
	if got := testutil.ToFloat64(col.m.future); got != 1 {
		t.Errorf("future_timestamps_total %v, want 1 (the batch's ts_gw)", got)
	}
	if got := testutil.ToFloat64(col.m.ahead.WithLabelValues("data")); got != 0 {
		t.Errorf("clock_ahead_total{kind=data} %v, want 0 (beyond max_future: the other counter)", got)
	}
	if log := lb.String(); !strings.Contains(log, "gw-far") || !strings.Contains(log, "lead_ms=600000") {
		t.Errorf("no WARN naming the gateway and its lead; log:\n%s", log)
	}
	gws := col.live.Gateways()
	if len(gws) != 1 || gws[0].ClockAheadTotal != 1 || gws[0].ClockSkew != "ahead" {
		t.Errorf("gateways %+v, want gw-far with clock_ahead_total 1, marked ahead", gws)
	}
}

// TestSamplesNewestFirst (review9 F3): a batch listing one signal's samples
// newest first leaves the signal at its newest sample's value and time;
// before, it showed the oldest value (last in the batch) with the newest
// time.
func TestSamplesNewestFirst(t *testing.T) {
	col, send := liveAC1(t)
	now := time.Now().UnixMilli()
	b := &telemetry.Batch{Gateway: "gw-1", Seq: 3, TSGW: now, Asset: spanAsset, Readings: []telemetry.Reading{
		{Signal: "discharge_temp", Value: 106, Unit: "Cel", TS: now - 1000},
		{Signal: "discharge_temp", Value: 70, Unit: "Cel", TS: now - 3000},
		{Signal: "discharge_temp", Value: 88, Unit: "Cel", TS: now - 2000}}}
	send(spanMsg{telemetry.KindData, b.AppendJSON(nil)})
	a, ok := col.Asset("site1", "ac-1")
	if !ok {
		t.Fatal("ac-1 not tracked")
	}
	for _, s := range a.Signals {
		if s.Signal == "discharge_temp" && (s.Value != 106 || s.TS != now-1000) {
			t.Errorf("discharge_temp %v at %+d ms, want 106 at -1000 ms (the newest sample)", s.Value, s.TS-now)
		}
	}
}

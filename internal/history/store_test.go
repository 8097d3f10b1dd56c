package history

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
)

// DSNEnv names the variable that gives the tests a PostgreSQL to use
// (libpq string or URL); without it they skip.
const DSNEnv = "SMELTER_PG_DSN"

var schemaSeq atomic.Int64

// testDSN returns the DSN or skips.
func testDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(DSNEnv)
	if dsn == "" {
		t.Skipf("no PostgreSQL: set %s (e.g. postgres://smelter:smelter@127.0.0.1:5432/smelter_test; .ci/run creates it)", DSNEnv)
	}
	return dsn
}

// testStore opens a store on dsn in a schema of its own, dropped at the end.
func testStore(t testing.TB, dsn string, mod func(*Options)) *Store {
	t.Helper()
	schema := fmt.Sprintf("t_%s_%d_%d", strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())), os.Getpid(), schemaSeq.Add(1))
	if len(schema) > 63 {
		schema = schema[len(schema)-63:]
		schema = "t" + schema[1:]
	}
	opts := Options{DSN: secret.New(dsn), Schema: schema, Retention: DefaultRetention()}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		conn, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			_ = conn.Close(context.Background())
		}
	})
	return s
}

func batchMsg(t testing.TB, b *telemetry.Batch) Message {
	t.Helper()
	return Message{Subject: telemetry.AssetSubject(b.Asset, telemetry.KindData), Data: b.AppendJSON(nil)}
}

func jsonMsg(t testing.TB, subject string, v any) Message {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return Message{Subject: subject, Data: data}
}

var testAsset = telemetry.Asset{ID: "comp_1", Class: "air_compressor", Path: []string{"acme", "plant1", "_", "_", "_"}}

// TestWriteExactValuesRoundTrip: every reading written comes back from the
// raw table with the same value (bit for bit), quality, text and time, the
// rollups hold the exact min, max, count and good share, and alerts, KPI
// windows, births and the command audit come back as written.
func TestWriteExactValuesRoundTrip(t *testing.T) {
	s := testStore(t, testDSN(t), nil)
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour).UnixMilli()
	vals := []float64{0.1, -273.15, 1e-300, math.MaxFloat64, 3.141592653589793, 42}
	b := &telemetry.Batch{Gateway: "gw1", Seq: 7, Asset: testAsset, TSGW: t0 + 5000}
	for i, v := range vals {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: "pressure", Value: v, Unit: "bar", Quality: telemetry.QualityGood, TS: t0 + int64(i)*1000, Status: 0})
	}
	// a bad reading (no value), an uncertain one, and a text one
	b.Readings = append(b.Readings,
		telemetry.Reading{Signal: "pressure", Quality: telemetry.QualityBad, TS: t0 + 6000, Status: 0x80320000},
		telemetry.Reading{Signal: "pressure", Value: 5, Quality: telemetry.QualityUncertain, TS: t0 + 61_000, Status: 0x40000000},
		telemetry.Reading{Signal: "state", Value: 2, Text: "loaded", Quality: telemetry.QualityGood, TS: t0})
	birth := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw1", Seq: 1, TSGW: t0 - 1000, Protocol: "modbus",
		Asset:     telemetry.AssetJSON(testAsset),
		Signals:   []telemetry.SignalInfo{{Signal: "pressure", Unit: "bar"}, {Signal: "state", Enum: []string{"off", "idle", "loaded"}}},
		Nameplate: map[string]float64{"rated_power_kw": 55}}
	raised := alert.Alert{Schema: alert.Schema, ID: "plant1.comp_1.high@1", Key: "plant1.comp_1.high", State: alert.Raised, Site: "plant1",
		Class: testAsset.Class, Asset: testAsset.ID, Rule: "high", Kind: "threshold", Signal: "pressure", Severity: alert.Warn, Message: "high",
		Values: map[string]float64{"pressure": 9.5}, RaisedAt: t0, UpdatedAt: t0}
	updated := raised
	updated.State, updated.Severity, updated.UpdatedAt, updated.Message = alert.Updated, alert.Alarm, t0+10_000, "higher"
	cleared := updated
	cleared.State, cleared.Severity, cleared.UpdatedAt, cleared.ClearedAt, cleared.Message = alert.Cleared, alert.Warn, t0+20_000, t0+20_000, "back"
	ref := 7.5
	kr := kpi.Result{Schema: "smelter.kpi/1", Site: "plant1", Class: testAsset.Class, Asset: testAsset.ID, Start: t0, End: t0 + 900_000, Coverage: 0.98,
		KPIs: []kpi.Value{{Name: "specific_power", Value: 6.25, Unit: "kW/(m3/min)", Ref: &ref, Status: kpi.StatusOK}}}
	old, nw := 1.5, 2.5
	cr := command.Result{Schema: "smelter.command-result/1", ID: "cmd-1", Gateway: "gw1", Asset: testAsset.ID, Signal: "setpoint",
		Requester: "ops", Verdict: command.Verified, Old: &old, New: &nw, At: time.UnixMilli(t0 + 30_000).UTC()}
	subj := func(k telemetry.Kind) string { return telemetry.AssetSubject(testAsset, k) }
	msgs := []Message{batchMsg(t, b), jsonMsg(t, subj(telemetry.KindBirth), birth),
		// the cleared event arrives before the raise: order does not matter
		jsonMsg(t, subj(telemetry.KindAlert), cleared), jsonMsg(t, subj(telemetry.KindAlert), raised), jsonMsg(t, subj(telemetry.KindAlert), updated),
		jsonMsg(t, subj(telemetry.KindKPI), kr), jsonMsg(t, subj("audit"), cr),
		{Subject: subj(telemetry.KindDeath), Data: []byte(`{}`)}, {Subject: subj(telemetry.KindData), Data: []byte(`{"nope"`)},
		// a batch of another site's asset on this asset's subject is refused
		{Subject: subj(telemetry.KindData), Data: (&telemetry.Batch{Gateway: "gw9", Seq: 1, TSGW: t0,
			Asset: telemetry.Asset{ID: testAsset.ID, Class: testAsset.Class, Path: []string{"acme", "plant2"}}}).AppendJSON(nil)}}
	res, err := s.Write(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Batches != 1 || res.Rows["readings"] != 9 || res.Skipped != 1 || res.Malformed != 2 || res.Rows["alert_events"] != 3 ||
		res.Rows["alerts"] != 1 || res.Rows["kpi_windows"] != 1 || res.Rows["births"] != 1 || res.Rows["command_audit"] != 1 {
		t.Fatalf("result %+v", res)
	}
	from, to := time.UnixMilli(t0-time.Hour.Milliseconds()), time.UnixMilli(t0+time.Hour.Milliseconds())
	raw, err := s.Series(ctx, SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "pressure", From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if raw.Resolution != Raw || raw.Table != "readings" || raw.Unit != "bar" || len(raw.Points) != 8 {
		t.Fatalf("raw series %+v", raw)
	}
	for i, v := range vals {
		p := raw.Points[i]
		if p.TS != t0+int64(i)*1000 || p.Mean == nil || math.Float64bits(*p.Mean) != math.Float64bits(v) || p.Quality != "good" || p.Good != 1 {
			t.Fatalf("point %d: %+v, want %v at %d", i, p, v, t0+int64(i)*1000)
		}
	}
	if p := raw.Points[6]; p.Mean != nil || p.Quality != "bad" || p.Count != 0 || p.Good != 0 {
		t.Fatalf("bad reading came back as %+v", p)
	}
	if p := raw.Points[7]; *p.Mean != 5 || p.Quality != "uncertain" {
		t.Fatalf("uncertain reading came back as %+v", p)
	}
	st, err := s.Series(ctx, SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "state", From: from, To: to, Resolution: Raw})
	if err != nil || len(st.Points) != 1 || st.Points[0].Text != "loaded" || *st.Points[0].Mean != 2 {
		t.Fatalf("state series %+v %v", st, err)
	}
	m1, err := s.Series(ctx, SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "pressure", From: from, To: to, Resolution: Min1})
	if err != nil {
		t.Fatal(err)
	}
	if m1.Table != "rollup_1m" || len(m1.Points) != 2 {
		t.Fatalf("1m series %+v", m1)
	}
	p := m1.Points[0]
	var sum float64
	for _, v := range vals {
		sum += v
	}
	if p.TS != t0 || *p.Min != -273.15 || *p.Max != math.MaxFloat64 || p.Count != 6 || p.Good != 6.0/7 || *p.Mean != sum/6 {
		t.Fatalf("1m bucket %+v (mean %v min %v max %v)", p, *p.Mean, *p.Min, *p.Max)
	}
	h1, err := s.Series(ctx, SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "pressure", From: from, To: to, Resolution: Hour})
	if err != nil || len(h1.Points) != 1 || h1.Points[0].Count != 7 || *h1.Points[0].Max != math.MaxFloat64 || h1.Points[0].Good != 6.0/8 {
		t.Fatalf("1h series %+v %v", h1, err)
	}
	al, err := s.Alerts(ctx, AlertQuery{Asset: "comp_1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(al) != 1 || al[0].State != "cleared" || al[0].ClearedAt != t0+20_000 || al[0].MaxSeverity != alert.Alarm || al[0].Severity != alert.Warn ||
		al[0].Message != "back" || al[0].RaisedAt != t0 || len(al[0].Events) != 3 || al[0].Events[1].State != "updated" || al[0].Events[1].Severity != alert.Alarm {
		t.Fatalf("alerts %+v", al)
	}
	if al, _ := s.Alerts(ctx, AlertQuery{State: "active"}); len(al) != 0 {
		t.Fatalf("active alerts %+v", al)
	}
	if al, _ := s.Alerts(ctx, AlertQuery{Severity: alert.Trip}); len(al) != 0 {
		t.Fatalf("trip alerts %+v", al)
	}
	if al, _ := s.Alerts(ctx, AlertQuery{From: time.UnixMilli(t0 + 30_000), To: to}); len(al) != 0 {
		t.Fatalf("alerts after the clear %+v", al)
	}
	k, err := s.KPIs(ctx, KPIQuery{Site: "plant1", Asset: "comp_1", From: from, To: to})
	if err != nil || len(k) != 1 || k[0].Value != 6.25 || k[0].Start != t0 || k[0].End != t0+900_000 || k[0].Unit != "kW/(m3/min)" || k[0].Status != "ok" {
		t.Fatalf("kpis %+v %v", k, err)
	}
	var rec []byte
	if err := s.db().QueryRow(ctx, "SELECT record FROM command_audit WHERE id = 'cmd-1'").Scan(&rec); err != nil {
		t.Fatal(err)
	}
	var back command.Result
	if err := json.Unmarshal(rec, &back); err != nil || *back.Old != 1.5 || *back.New != 2.5 || back.Verdict != command.Verified || !back.At.Equal(cr.At) {
		t.Fatalf("audit record %s %v", rec, err)
	}
	var np []byte
	if err := s.db().QueryRow(ctx, "SELECT nameplate FROM births WHERE asset = 'comp_1'").Scan(&np); err != nil || string(np) != `{"rated_power_kw": 55}` {
		t.Fatalf("nameplate %s %v", np, err)
	}
}

// TestRedeliveryStoresNothingTwice writes the same messages three times
// (also twice within one call, and with partitioned subjects) and over two
// concurrent writers: rows, rollup counts and events are those of one
// write; the two parts of a split batch are two batches.
func TestRedeliveryStoresNothingTwice(t *testing.T) {
	s := testStore(t, testDSN(t), nil)
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute).UnixMilli()
	var msgs []Message
	for seq := uint64(1); seq <= 20; seq++ {
		b := &telemetry.Batch{Gateway: "gw1", Seq: seq, Asset: testAsset, TSGW: t0 + int64(seq)*1000}
		b.Readings = []telemetry.Reading{{Signal: "pressure", Value: float64(seq), TS: t0 + int64(seq)*1000}}
		msgs = append(msgs, batchMsg(t, b))
	}
	// a batch split in two parts: same gateway and seq, both kept
	for part := 1; part <= 2; part++ {
		b := &telemetry.Batch{Gateway: "gw1", Seq: 100, Part: part, Parts: 2, Asset: testAsset, TSGW: t0,
			Readings: []telemetry.Reading{{Signal: fmt.Sprintf("s%d", part), Value: 1, TS: t0}}}
		msgs = append(msgs, batchMsg(t, b))
	}
	a := alert.Alert{Schema: alert.Schema, ID: "x@1", Key: "x", State: alert.Raised, Site: "plant1", Class: testAsset.Class, Asset: "comp_1", Rule: "r",
		Kind: "k", Severity: alert.Warn, RaisedAt: t0, UpdatedAt: t0}
	msgs = append(msgs, jsonMsg(t, telemetry.AssetSubject(testAsset, telemetry.KindAlert), a))
	res, err := s.Write(ctx, append(slices.Clone(msgs), msgs[:5]...))
	if err != nil {
		t.Fatal(err)
	}
	if res.Batches != 22 || res.Duplicates != 5 || res.Rows["readings"] != 22 {
		t.Fatalf("first write %+v", res)
	}
	// the redelivery as a partitioned stream stores it (a 7th token)
	for i := range msgs {
		msgs[i].Subject += ".3"
	}
	res, err = s.Write(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Batches != 0 || res.Duplicates != 22 || res.Rows["readings"] != 0 || res.Rows["alert_events"] != 0 {
		t.Fatalf("redelivery %+v", res)
	}
	// two writers at once with overlapping batches (as two replicas after
	// a redelivery)
	errc := make(chan error, 2)
	for range 2 {
		go func() { _, err := s.Write(ctx, msgs); errc <- err }()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	var n, cnt int64
	if err := s.db().QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n); err != nil || n != 22 {
		t.Fatalf("readings %d %v", n, err)
	}
	if err := s.db().QueryRow(ctx, "SELECT sum(count) FROM rollup_1m").Scan(&cnt); err != nil || cnt != 22 {
		t.Fatalf("rollup count %d %v", cnt, err)
	}
	if err := s.db().QueryRow(ctx, "SELECT count(*) FROM alert_events").Scan(&n); err != nil || n != 1 {
		t.Fatalf("alert events %d %v", n, err)
	}
}

// TestYearRangeAnswersFromRollups: a year-long range is answered from the
// 1-hour rollup (the answer names the table, and the plan reads only
// rollup_1h partitions), a week from the 1-minute one, an hour from raw.
func TestYearRangeAnswersFromRollups(t *testing.T) {
	s := testStore(t, testDSN(t), nil)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Hour)
	// one reading an hour over the last 300 days: readings older than the
	// raw retention are not kept, their rollups are
	var msgs []Message
	for h := range 300 * 24 {
		ts := now.Add(-time.Duration(h) * time.Hour).UnixMilli()
		b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(h + 1), Asset: testAsset, TSGW: ts,
			Readings: []telemetry.Reading{{Signal: "pressure", Value: float64(h % 24), TS: ts}}}
		msgs = append(msgs, batchMsg(t, b))
	}
	res, err := s.Write(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows["readings"] != 30*24 || res.Expired != len(msgs)-30*24 || res.Rows["rollup_1h"] != len(msgs) {
		t.Fatalf("write %+v (expired %d)", res.Rows, res.Expired)
	}
	for _, c := range []struct {
		span  time.Duration
		res   Resolution
		table string
	}{{365 * 24 * time.Hour, Hour, "rollup_1h"}, {7 * 24 * time.Hour, Min1, "rollup_1m"}, {time.Hour, Raw, "readings"}} {
		q := SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "pressure", From: now.Add(time.Second - c.span), To: now.Add(time.Second)}
		ser, err := s.Series(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if ser.Resolution != c.res || ser.Table != c.table {
			t.Fatalf("%v: answered at %s from %s, want %s from %s", c.span, ser.Resolution, ser.Table, c.res, c.table)
		}
		if c.res == Hour && (len(ser.Points) != 300*24 || ser.Points[0].TS != now.Add(-(300*24-1)*time.Hour).UnixMilli()) {
			t.Fatalf("year: %d points", len(ser.Points))
		}
		// the plan touches only the answering table's partitions
		var plan []string
		rows, err := s.db().Query(ctx, "EXPLAIN SELECT * FROM "+ser.Table+" WHERE site = 'plant1' AND asset = 'comp_1' AND signal = 'pressure' AND "+
			map[string]string{"readings": "ts"}[ser.Table]+map[bool]string{true: "bucket", false: ""}[ser.Table != "readings"]+" >= $1", q.From)
		if err != nil {
			t.Fatal(err)
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		joined := strings.Join(plan, "\n")
		for _, other := range []string{"readings_", "rollup_1m_", "rollup_1h_"} {
			if strings.Contains(joined, other) != strings.HasPrefix(other, ser.Table+"_") {
				t.Fatalf("%v plan:\n%s", c.span, joined)
			}
		}
	}
}

// TestRetentionDropsPartitions: with the clock moved 40 days on, the raw
// partitions older than 30 days are dropped whole, the ledger emptied, the
// rollups kept.
func TestRetentionDropsPartitions(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	s := testStore(t, testDSN(t), func(o *Options) { o.Now = func() time.Time { return time.UnixMilli(clock.Load()) } })
	ctx := context.Background()
	t0 := time.UnixMilli(clock.Load()).UTC().Add(-48 * time.Hour)
	var msgs []Message
	for d := range 3 {
		ts := t0.Add(time.Duration(d) * 24 * time.Hour).UnixMilli()
		msgs = append(msgs, batchMsg(t, &telemetry.Batch{Gateway: "gw1", Seq: uint64(d + 1), Asset: testAsset, TSGW: ts,
			Readings: []telemetry.Reading{{Signal: "pressure", Value: 1, TS: ts}}}))
	}
	if _, err := s.Write(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	parts, err := s.Partitions(ctx, "readings")
	if err != nil || len(parts) != 3 {
		t.Fatalf("partitions %v %v", parts, err)
	}
	if ex, err := s.Retain(ctx); err != nil || len(ex.Partitions) != 0 {
		t.Fatalf("retention now: %+v %v", ex, err)
	}
	clock.Add((40 * 24 * time.Hour).Milliseconds())
	ex, err := s.Retain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Partitions) != 3 || ex.Rows["batches"] != 3 {
		t.Fatalf("retention: %+v", ex)
	}
	if parts, _ := s.Partitions(ctx, "readings"); len(parts) != 0 {
		t.Fatalf("partitions left %v", parts)
	}
	if parts, _ := s.Partitions(ctx, "rollup_1h"); len(parts) == 0 {
		t.Fatal("rollup partitions dropped")
	}
	// a write after the drop recreates what it needs
	clock.Store(time.Now().UnixMilli())
	ts := time.Now().UnixMilli()
	if _, err := s.Write(ctx, []Message{batchMsg(t, &telemetry.Batch{Gateway: "gw1", Seq: 99, Asset: testAsset, TSGW: ts,
		Readings: []telemetry.Reading{{Signal: "pressure", Value: 1, TS: ts}}})}); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationsApplyOnce: a second Open on the same schema applies
// nothing, the version table holds every file once.
func TestMigrationsApplyOnce(t *testing.T) {
	dsn := testDSN(t)
	s := testStore(t, dsn, nil)
	s2, err := New(Options{DSN: secret.New(dsn), Schema: s.Schema()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ms, _ := migrations(ModePartitions)
	var n, v int
	if err := s2.db().QueryRow(context.Background(), "SELECT count(*), max(version) FROM schema_version").Scan(&n, &v); err != nil || n != len(ms) || v != ms[len(ms)-1].version {
		t.Fatalf("schema_version: %d rows, max %d, %v", n, v, err)
	}
	if s2.Mode() != ModePartitions {
		t.Fatalf("mode %s", s2.Mode())
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{Schema: "Bad-Schema", PoolSize: -1, Timescale: "yes", Retention: Retention{Readings: time.Hour, Alerts: -time.Hour}}
	err := o.Validate()
	want := []string{"schema: \"Bad-Schema\"", "pool_size: -1", "timescaledb: \"yes\"", "retention.readings: 1h0m0s shorter than 24h", "retention.alerts: -1h0m0s must not be negative"}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Fatalf("Validate() = %v, want %q", err, w)
		}
	}
	if _, err := New(Options{DSN: secret.New("host=/nonexistent user=x password=secretpw")}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{DSN: secret.New("postgres://u:secretpw@[::1")}); err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("New with a bad DSN: %v", err)
	}
}

// TestCheckDSN: an unparsable DSN is refused with the parser's reason and
// never its password or user info (review of #14, finding 8).
func TestCheckDSN(t *testing.T) {
	for dsn, reason := range map[string]string{
		"postgres://u:secretpw@host:notaport/db":          "invalid port",
		"host=h password=secretpw sslmode=bogus":          "sslmode is invalid",
		"host=h password='secret pw' port=abc":            "invalid port",
		"postgres://u:secretpw@h/db?pool_max_conns=x":     "pool_max_conns",
		"postgres://secretpw:secretpw@h:secretpw/db":      "",
		"host=h user=u password=secretpw sslmode=require": "-",
	} {
		err := CheckDSN(secret.New(dsn))
		if reason == "-" {
			if err != nil {
				t.Errorf("%s: %v", dsn, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "not a valid PostgreSQL connection string or URL") || !strings.Contains(err.Error(), reason) ||
			strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v, want the reason %q and no secret", dsn, err, reason)
		}
	}
}

// TestAlertClearedBeforeRaisedTime: a stale alert is raised at detection
// time and cleared at the fresh reading's time, which may be earlier. The
// occurrence is cleared whichever write carries which event, and its events
// come back in lifecycle order (review of #14, finding 1).
func TestAlertClearedBeforeRaisedTime(t *testing.T) {
	s := testStore(t, testDSN(t), nil)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour).UnixMilli()
	subj := telemetry.AssetSubject(testAsset, telemetry.KindAlert)
	occ := func(id string) (raised, cleared alert.Alert) {
		raised = alert.Alert{Schema: alert.Schema, ID: id, Key: "plant1.comp_1.stale", State: alert.Raised, Site: "plant1", Class: testAsset.Class,
			Asset: testAsset.ID, Rule: "stale", Kind: "stale", Severity: alert.Warn, Message: "stale", RaisedAt: t0, UpdatedAt: t0}
		cleared = raised
		cleared.State, cleared.Message, cleared.UpdatedAt, cleared.ClearedAt = alert.Cleared, "fresh", t0-2600, t0-2600
		return raised, cleared
	}
	write := func(as ...alert.Alert) {
		t.Helper()
		var msgs []Message
		for _, a := range as {
			msgs = append(msgs, jsonMsg(t, subj, a))
		}
		if _, err := s.Write(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	r1, c1 := occ("plant1.comp_1.stale@1")
	write(r1, c1) // one write
	r2, c2 := occ("plant1.comp_1.stale@2")
	write(r2) // raised, then cleared in a later write
	write(c2)
	r3, c3 := occ("plant1.comp_1.stale@3")
	write(c3) // cleared, then the raise redelivered
	write(r3)
	al, err := s.Alerts(ctx, AlertQuery{Asset: "comp_1"})
	if err != nil || len(al) != 3 {
		t.Fatalf("alerts %+v %v", al, err)
	}
	for _, a := range al {
		if a.State != "cleared" || a.ClearedAt != t0-2600 || a.Message != "fresh" || len(a.Events) != 2 ||
			a.Events[0].State != "raised" || a.Events[1].State != "cleared" {
			t.Errorf("%s: %+v", a.ID, a)
		}
	}
	if al, err := s.Alerts(ctx, AlertQuery{State: "active"}); err != nil || len(al) != 0 {
		t.Fatalf("active alerts %+v %v", al, err)
	}
}

// TestMigrationClearsStoredOccurrences: migration 2 clears occurrences a
// store of version 1 left raised although their cleared event is stored.
func TestMigrationClearsStoredOccurrences(t *testing.T) {
	dsn := testDSN(t)
	s := testStore(t, dsn, nil)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour)
	db := s.db()
	if _, err := db.Exec(ctx, `INSERT INTO alerts (id, key, site, class, asset, rule, kind, signal, state, severity, max_severity, message, raised_at, updated_at)
		VALUES ('k@1', 'k', 'plant1', 'c', 'comp_1', 'stale', 'stale', '', 'raised', 2, 2, 'stale', $1, $1)`, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO alert_events (id, state, ts, severity, message) VALUES ('k@1', 'raised', $1, 2, 'stale'), ('k@1', 'cleared', $2, 2, 'fresh')`,
		t0, t0.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, "DELETE FROM schema_version WHERE version >= 2"); err != nil {
		t.Fatal(err)
	}
	s2, err := New(Options{DSN: secret.New(dsn), Schema: s.Schema()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	al, err := s2.Alerts(ctx, AlertQuery{Asset: "comp_1"})
	if err != nil || len(al) != 1 || al[0].State != "cleared" || al[0].ClearedAt != t0.Add(-time.Second).UnixMilli() || al[0].Message != "fresh" {
		t.Fatalf("alerts %+v %v", al, err)
	}
}

// TestOtherGroupsNotStored: with Options.Group, alerts and KPI results of
// another collector group are counted foreign and not stored; this group's
// and those without a group (older collectors) are (review of #14,
// finding 3).
func TestOtherGroupsNotStored(t *testing.T) {
	s := testStore(t, testDSN(t), func(o *Options) { o.Group = "plant" })
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour).UnixMilli()
	var msgs []Message
	for i, g := range []string{"plant", "other", ""} {
		a := alert.Alert{Schema: alert.Schema, ID: fmt.Sprintf("plant1.comp_1.high@%d", i), Key: "plant1.comp_1.high", State: alert.Raised, Site: "plant1",
			Class: testAsset.Class, Asset: testAsset.ID, Rule: "high", Kind: "threshold", Severity: alert.Warn, RaisedAt: t0, UpdatedAt: t0, Group: g}
		k := kpi.Result{Schema: "smelter.kpi/1", Site: "plant1", Class: testAsset.Class, Asset: testAsset.ID, Start: t0 + int64(i)*900_000,
			End: t0 + int64(i+1)*900_000, KPIs: []kpi.Value{{Name: "specific_power", Value: 6, Status: kpi.StatusOK}}, Group: g}
		msgs = append(msgs, jsonMsg(t, telemetry.AssetSubject(testAsset, telemetry.KindAlert), a), jsonMsg(t, telemetry.AssetSubject(testAsset, telemetry.KindKPI), k))
	}
	res, err := s.Write(ctx, msgs)
	if err != nil || res.Foreign != 2 || res.Rows["alerts"] != 2 || res.Rows["kpi_windows"] != 2 {
		t.Fatalf("write %+v %v", res, err)
	}
	al, err := s.Alerts(ctx, AlertQuery{Asset: "comp_1"})
	if err != nil || len(al) != 2 || slices.ContainsFunc(al, func(a AlertRecord) bool { return a.ID == "plant1.comp_1.high@1" }) {
		t.Fatalf("alerts %+v %v", al, err)
	}
}

package history

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestMigrationsTemplate: plain mode partitions the time-series tables by
// range, TimescaleDB mode leaves them plain for create_hypertable; versions
// are numbered from 1 without gaps.
func TestMigrationsTemplate(t *testing.T) {
	plain, err := migrations(ModePartitions)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := migrations(ModeTimescale)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range plain {
		if m.version != i+1 {
			t.Fatalf("migration %s: version %d, want %d", m.name, m.version, i+1)
		}
	}
	if n := strings.Count(plain[0].sql, "PARTITION BY RANGE"); n != 3 {
		t.Fatalf("plain: %d partitioned tables, want 3 (readings, rollup_1m, rollup_1h)", n)
	}
	if strings.Contains(ts[0].sql, "PARTITION BY") || strings.Contains(ts[0].sql, "{{") {
		t.Fatalf("timescaledb mode SQL still partitions or holds a placeholder")
	}
}

// FuzzDecode: any subject and body decode to stored rows or a counted
// malformed message, never a panic; every message is accounted for once.
func FuzzDecode(f *testing.F) {
	b := &telemetry.Batch{Gateway: "gw1", Seq: 1, Asset: testAsset, TSGW: 1, Readings: []telemetry.Reading{{Signal: "p", Value: 1, TS: 1}}}
	f.Add("smelter.v1.plant1.air_compressor.comp_1.data", string(b.AppendJSON(nil)))
	f.Add("smelter.v1.plant1.air_compressor.comp_1.alert.3", `{"schema":"smelter.alert/1","id":"x","site":"plant1","class":"air_compressor","asset":"comp_1"}`)
	f.Add("smelter.v1.plant1.air_compressor.comp_1.kpi", `{"site":"plant1","class":"air_compressor","asset":"comp_1","kpis":[{}]}`)
	f.Add("smelter.v1.plant1.air_compressor.comp_1.audit", `{"id":"c","verdict":"verified","asset":"comp_1"}`)
	f.Add("smelter.v1.plant1.air_compressor.comp_1.birth", `{"schema":"smelter.birth/1"}`)
	f.Add("x.y", "")
	f.Fuzz(func(t *testing.T, subject, body string) {
		var res Result
		d := decode([]Message{{Subject: subject, Data: []byte(body)}}, "", time.Now(), 5*time.Minute, &res)
		n := len(d.batches) + len(d.births) + len(d.alerts) + len(d.kpis) + len(d.audits) + res.Skipped + res.Malformed
		if n != 1 || len(res.Errors) != res.Malformed {
			t.Fatalf("%q %q: accounted %d times (%+v)", subject, body, n, res)
		}
	})
}

// TestDecodeBoundsAheadTimes (review6): with the collector's max_future, a
// batch dated ahead of the store's clock is stored at the times the
// collector evaluated (each time ahead set to the clock) and a birth
// ahead at the clock; with 0 the times are stored as sent.
func TestDecodeBoundsAheadTimes(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	at := now.UnixMilli()
	b := &telemetry.Batch{Gateway: "gw1", Seq: 1, Asset: testAsset, TSGW: at + 240_000, Readings: []telemetry.Reading{
		{Signal: "p", Value: 1, TS: at + 239_000}, {Signal: "q", Value: 2, TS: at + 240_000}}}
	birth := `{"schema":"smelter.birth/1","gateway":"gw1","seq":2,"asset":{"id":"comp_1","class":"air_compressor","path":["acme","plant1","_","_","_"]},"ts_gw":` +
		strconv.FormatInt(at+240_000, 10) + `,"signals":[{"signal":"p","unit":"bar"}]}`
	msgs := []Message{{Subject: "smelter.v1.plant1.air_compressor.comp_1.data", Data: b.AppendJSON(nil)},
		{Subject: "smelter.v1.plant1.air_compressor.comp_1.birth", Data: []byte(birth)}}
	for _, tc := range []struct {
		tol      time.Duration
		gw, p, q int64
	}{
		{5 * time.Minute, at, at, at},
		{0, at + 240_000, at + 239_000, at + 240_000},
	} {
		var res Result
		d := decode(msgs, "", now, tc.tol, &res)
		if len(d.batches) != 1 || len(d.births) != 1 {
			t.Fatalf("max_future %v: %d batches (%+v)", tc.tol, len(d.batches), res)
		}
		got := d.batches[0]
		if got.TSGW != tc.gw || got.Readings[0].TS != tc.p || got.Readings[1].TS != tc.q {
			t.Errorf("max_future %v: ts_gw %d, readings %d %d; want %d, %d %d", tc.tol, got.TSGW-at,
				got.Readings[0].TS-at, got.Readings[1].TS-at, tc.gw-at, tc.p-at, tc.q-at)
		}
		if d.births[0].TSGW != tc.gw {
			t.Errorf("max_future %v: birth ts_gw %+d, want %+d", tc.tol, d.births[0].TSGW-at, tc.gw-at)
		}
	}
}

package history

import (
	"strings"
	"testing"

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
		d := decode([]Message{{Subject: subject, Data: []byte(body)}}, "", &res)
		n := len(d.batches) + len(d.births) + len(d.alerts) + len(d.kpis) + len(d.audits) + res.Skipped + res.Malformed
		if n != 1 || len(res.Errors) != res.Malformed {
			t.Fatalf("%q %q: accounted %d times (%+v)", subject, body, n, res)
		}
	})
}

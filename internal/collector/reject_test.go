package collector

import (
	"context"
	"encoding/json"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Batches with an out-of-range seq or an unknown class are counted with
// their reason and skipped: they reach neither the dedup state nor the
// rules, and the gateway's later batches are still deduplicated.
func TestHandleRejectsSeqAndClass(t *testing.T) {
	cfg := Defaults()
	cfg.Rules.Files = nil
	c := newCollector(t, cfg)
	ctx := context.Background()
	handle := func(seq uint64, class, id string) {
		t.Helper()
		b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: 1_763_812_345_000 + int64(seq%1000)*1000,
			Asset:    telemetry.Asset{ID: id, Class: class, Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel"}}}
		if err := c.Handle(ctx, "smelter.v1.site1."+class+"."+id+".data", b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	handle(10, "air_compressor", "ac-1")
	handle(math.MaxUint64, "air_compressor", "ac-1")
	handle(0, "air_compressor", "ac-1")
	handle(11, "foo_class", "x-1")
	// a batch whose payload speaks for another site than its subject
	forged := &telemetry.Batch{Gateway: "gw-1", Seq: 12, TSGW: 1_763_812_345_000,
		Asset:    telemetry.Asset{ID: "ac-9", Class: "air_compressor", Path: []string{"acme", "site2", "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel"}}}
	if err := c.Handle(ctx, "smelter.v1.site1.air_compressor.ac-9.data", forged.AppendJSON(nil)); err != nil {
		t.Fatal(err)
	}
	// births and deaths of an unknown class create no asset either
	bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Asset: telemetry.AssetJSON{ID: "x-2", Class: "foo_class", Path: []string{"acme", "site1"}},
		TSGW: 1, Signals: []telemetry.SignalInfo{{Signal: "power", Unit: "kW"}}}
	if err := c.Handle(ctx, "smelter.v1.site1.foo_class.x-2.birth", mustJSON(t, bi)); err != nil {
		t.Fatal(err)
	}
	if err := c.Handle(ctx, "smelter.v1.site1.foo_class.x-3.death",
		[]byte(`{"schema":"smelter.death/1","gateway":"gw-1","asset":{"id":"x-3","class":"foo_class","path":["acme","site1"]},"ts_gw":1,"reason":"timeout"}`)); err != nil {
		t.Fatal(err)
	}
	// a 7-token subject (a 2.9 consumer's single filter receives it): counted, not ignored
	if err := c.Handle(ctx, "smelter.v1.site1.air_compressor.ac-1.data.3", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// the collector's own outputs on the same tree are not errors
	if err := c.Handle(ctx, "smelter.v1.site1.air_compressor.ac-1.alert", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for s := uint64(11); s < 40; s++ {
		handle(s, "air_compressor", "ac-1")
		handle(s, "air_compressor", "ac-1") // redelivered: a duplicate
	}
	for reason, want := range map[string]float64{"seq_range": 2, "unknown_class": 3, "subject": 2} {
		if got := counterValue(t, c.m.malformed.WithLabelValues(reason)); got != want {
			t.Errorf("malformed{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := counterValue(t, c.m.duplicates); got != 29 {
		t.Errorf("duplicates = %v, want 29 (every redelivery caught)", got)
	}
	if got := counterValue(t, c.m.late); got != 0 {
		t.Errorf("late = %v, want 0", got)
	}
	if got := counterValue(t, c.m.ingested.WithLabelValues("data")); got != 30 {
		t.Errorf("ingested data = %v, want 30", got)
	}
	for _, a := range c.Assets() {
		if a.Class == "foo_class" || a.ID == "ac-9" {
			t.Errorf("asset of a refused message tracked: %+v", a)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

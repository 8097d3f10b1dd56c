package collector

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// Signal names beyond the schema's bounds (review1 sec. 3: 60 kB names
// grew the collector to 430 MB and the assets API to 77 MB) are refused
// reading by reading, end to end through JetStream: counted under
// signals_refused{kind="invalid"}, logged once, never held, stored,
// checkpointed or served; the batch's valid readings are evaluated. A
// birth naming one is refused whole (malformed{reason="bounds"}).
func TestLongSignalNamesRefusedEndToEnd(t *testing.T) {
	const batches, perBatch, nameLen = 5, 12, 60000
	ns, cfg := embeddedConfig(t)
	var lb logtest.Buffer
	c := newCollectorLog(t, cfg, &lb)
	// every kind of refusal is present at 0 before any refusal
	for _, k := range refusedKinds {
		if n, err := testutil.GatherAndCount(c.reg, "smelter_collector_signals_refused_total"); err != nil || n != len(refusedKinds) {
			t.Fatalf("signals_refused series at start: %d, %v; want %d", n, err, len(refusedKinds))
		}
		if v := counterVec(c.m.sigRefused, string(k)); v != 0 {
			t.Fatalf("kind %s at %v", k, v)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait.For(t, 10*time.Second, "collector ready", c.Ready)

	js := jsClient(t, ns.URL())
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	pub := func(subject string, data []byte) {
		t.Helper()
		if _, err := js.Publish(pctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	as := telemetry.Asset{ID: "long-1", Class: "generic", Path: []string{"acme", "s1", "_", "_", "_"}}
	t0 := time.Now().UnixMilli() - 60_000
	bi := telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-l", Asset: as.ToJSON(), TSGW: t0,
		Signals: []telemetry.SignalInfo{{Signal: "ok_1", Unit: "Cel"}, {Signal: strings.Repeat("b", nameLen), Unit: "Cel"}}}
	pub(telemetry.AssetSubject(as, telemetry.KindBirth), mustJSON(t, bi))
	for i := range batches {
		ts := t0 + int64(i+1)*1000
		b := telemetry.Batch{Gateway: "gw-l", Seq: uint64(i + 1), TSGW: ts, Asset: as}
		b.Readings = append(b.Readings, telemetry.Reading{Signal: "ok_1", Value: float64(i), Unit: "Cel", TS: ts},
			telemetry.Reading{Signal: "ok_2", Value: 1, Unit: strings.Repeat("u", 1000), TS: ts}) // unit beyond the bound
		for k := range perBatch - 2 {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("%d_%d_%s", i, k, strings.Repeat("x", nameLen)), Value: 1, TS: ts})
		}
		pub(telemetry.AssetSubject(as, telemetry.KindData), b.AppendJSON(nil))
	}
	wait.For(t, 30*time.Second, "every batch evaluated", func() bool {
		return counterVec(c.m.ingested, "data") == batches
	})
	if got, want := counterVec(c.m.sigRefused, "invalid"), float64(batches*(perBatch-1)); got != want {
		t.Errorf("readings refused as invalid: %v, want %v", got, want)
	}
	if got := counterVec(c.m.malformed, "bounds"); got != 1 {
		t.Errorf("births refused for their bounds: %v, want 1", got)
	}
	if got := counterVec(c.m.sigRefused, "data"); got != 0 {
		t.Errorf("readings refused by the signal bound: %v, want 0 (invalid ones go first)", got)
	}
	v, ok := c.Asset("s1", "long-1")
	if !ok || len(v.Signals) != 1 || v.Signals[0].Signal != "ok_1" || v.Signals[0].Value != batches-1 {
		t.Fatalf("asset holds %+v, want ok_1 = %d", v.Signals, batches-1)
	}
	if v.SignalsRefused != uint64(batches*(perBatch-1)) {
		t.Errorf("asset view: %d refused", v.SignalsRefused)
	}
	rec := httptest.NewRecorder()
	c.HTTPHandler("").ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/assets", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() > 10_000 || strings.Contains(rec.Body.String(), "xxxxxxxx") {
		t.Errorf("GET /api/v1/assets: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	// logged once (the first refusal), with the name cut
	wait.For(t, 10*time.Second, "refusal logged", func() bool {
		return strings.Contains(lb.String(), `msg="readings refused: signal name or unit beyond`)
	})
	logs := grepLines(lb.String(), "readings refused")
	if strings.Count(logs, "level=WARN") != 1 || !strings.Contains(logs, "asset=long-1 class=generic gateway=gw-l refused=11") ||
		strings.Contains(logs, strings.Repeat("x", 65)) {
		t.Errorf("logged:\n%s", logs)
	}
	if strings.Contains(lb.String(), strings.Repeat("b", 65)) {
		t.Error("the birth's long name was logged whole")
	}
	// a death's reason is kept per asset: cut to its bound
	d := telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw-l", Seq: batches + 1, Asset: as.ToJSON(),
		TSGW: t0 + 100_000, Reason: strings.Repeat("r", 100_000)}
	pub(telemetry.AssetSubject(as, telemetry.KindDeath), mustJSON(t, d))
	wait.For(t, 30*time.Second, "the death evaluated", func() bool { return counterVec(c.m.ingested, "death") == 1 })
	if v, _ := c.Asset("s1", "long-1"); len(v.Dead) != telemetry.MaxSrcLen {
		t.Errorf("death reason held: %d bytes, want %d", len(v.Dead), telemetry.MaxSrcLen)
	}
}

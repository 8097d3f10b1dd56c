package collector

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// Review 3 A and B end to end, through JetStream with a 1 MiB max_payload:
//   - the review's births (256 signals, each with 64 enum and 64 allowed
//     labels of 64 bytes now, the per-signal bound; 256 in the review),
//     split in parts under 1 MB, are refused whole for the label totals per
//     birth (malformed{reason="bounds"}) and hold nothing;
//   - a birth of 1024 signals with every label the totals allow, split in
//     parts, is applied and its record checkpointed (under max_payload);
//   - 60 parts of a birth announcing 1,000,000 parts are refused and counted
//     (birth_parts_dropped{reason="parts"});
//   - the refusals log one line per reason, not one per message.
func TestBirthLabelsAndPartsBoundedEndToEnd(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfg.MaxSignalsPerAsset = MaxSignalsPerAssetLimit
	var lb logtest.Buffer
	c := newCollectorLog(t, cfg, &lb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait.For(t, 10*time.Second, "collector ready", c.Ready)

	js := jsClient(t, ns.URL())
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	published := 0
	pubBirth := func(bi *telemetry.Birth, limit int) {
		t.Helper()
		parts, dropped, err := telemetry.SplitBirth(bi, limit)
		if err != nil || len(dropped) > 0 {
			t.Fatalf("split: %v, dropped %v", err, dropped)
		}
		for i := range parts {
			data, err := telemetry.MarshalBirth(&parts[i])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(pctx, telemetry.Subject("s1", bi.Asset.Class, bi.Asset.ID, telemetry.KindBirth), data); err != nil {
				t.Fatal(err)
			}
			published++
		}
	}
	t0 := time.Now().UnixMilli() - 60_000
	// the review's shape, at the per-signal bound: 32,768 labels a birth
	for a := range 3 {
		bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-e", Seq: uint64(a + 1), TSGW: t0,
			Asset: telemetry.AssetJSON{ID: fmt.Sprintf("en%d", a), Class: "generic", Path: []string{"acme", "s1", "_", "_", "_"}}}
		for i := range 256 {
			s := telemetry.SignalInfo{Signal: fmt.Sprintf("sig_%d", i), Write: &telemetry.WriteLimits{}}
			for l := range telemetry.MaxLabels {
				lbl := fmt.Sprintf("%064d", l)
				s.Enum = append(s.Enum, lbl)
				s.Write.Allowed = append(s.Write.Allowed, lbl)
			}
			bi.Signals = append(bi.Signals, s)
		}
		pubBirth(bi, 900<<10)
	}
	refused := published
	// every label the totals allow, on 1024 signals, in parts of 256 KiB
	pubBirth(labelBirth("generic", "lab-1", "point_", MaxSignalsPerAssetLimit, t0), 256<<10)
	// a birth announcing a million parts
	for p := range 60 {
		bi := telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-p", Seq: 7, TSGW: t0, Part: p + 1, Parts: 1_000_000,
			Asset: telemetry.AssetJSON{ID: "parts-1", Class: "generic", Path: []string{"acme", "s1", "_", "_", "_"}}}
		for i := range 100 {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("p%d_%d", p, i), Src: strings.Repeat("s", 200)})
		}
		if _, err := js.Publish(pctx, telemetry.Subject("s1", "generic", "parts-1", telemetry.KindBirth), mustJSON(t, bi)); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 30*time.Second, "every birth part handled", func() bool {
		return counterVec(c.m.malformed, "bounds") >= float64(refused+60) && counterVec(c.m.ingested, "birth") >= 1
	})
	if got := counterVec(c.m.malformed, "bounds"); got != float64(refused+60) {
		t.Errorf("malformed{bounds} %v, want %d (every part of the review's births, 60 of parts-1)", got, refused+60)
	}
	if got := counterVec(c.m.partsDrop, ingest.PartsDropParts); got != 60 {
		t.Errorf("birth_parts_dropped{parts} %v, want 60", got)
	}
	for _, id := range []string{"en0", "en1", "en2", "parts-1"} {
		if v, ok := c.Asset("s1", id); ok && (len(v.Signals) > 0 || len(v.Writable) > 0) {
			t.Errorf("%s holds %d signals, %d writable", id, len(v.Signals), len(v.Writable))
		}
	}
	v, ok := c.Asset("s1", "lab-1")
	if !ok || len(v.Writable) != MaxSignalsPerAssetLimit { // every signal has write.allowed labels (labelBirth)
		t.Fatalf("lab-1 has %d writable signals (%v), want %d", len(v.Writable), ok, MaxSignalsPerAssetLimit)
	}
	kv, err := js.KeyValue(pctx, cfg.stateBucket())
	if err != nil {
		t.Fatal(err)
	}
	var size int
	wait.For(t, 20*time.Second, "lab-1 checkpointed", func() bool {
		keys, err := kv.ListKeys(pctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys.Keys() {
			if strings.HasSuffix(k, ".s1.lab-1") {
				e, err := kv.Get(pctx, k)
				if err != nil {
					t.Fatal(err)
				}
				size = len(e.Value())
				return true
			}
		}
		return false
	})
	t.Logf("lab-1: %d signals, labels at the totals: record %d bytes", MaxSignalsPerAssetLimit, size)
	if e := counter(c.m.pubErrors); e != 0 {
		t.Errorf("%v publish errors (a record over max_payload?)", e)
	}
	if n := strings.Count(lb.String(), `msg="batch rejected"`); n != 1 {
		t.Errorf("%d 'batch rejected' lines for %d refused parts, want 1", n, refused+60)
	}
}

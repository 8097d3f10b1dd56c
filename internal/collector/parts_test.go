package collector

import (
	"context"
	"fmt"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestSplitBirthAndBatchParts: a birth split into parts reaches the rules
// engine once, whole, when its last part arrives; the parts of a split
// batch are all processed (not dropped as duplicates of part 1), and a part
// delivered twice is a duplicate.
func TestSplitBirthAndBatchParts(t *testing.T) {
	c := newCollector(t, func() Config { cfg := Defaults(); cfg.DataDir = t.TempDir(); return cfg }())
	ctx := context.Background()
	asset := telemetry.Asset{ID: "m-9", Class: "motor", Path: []string{"acme", "site1", "_", "_", "_"}}
	birth := &telemetry.Birth{Gateway: "gw-1", Seq: 1, TSGW: 1, Asset: asset.ToJSON(), Nameplate: map[string]float64{"rated_power": 7.5}}
	for i := range 40 {
		birth.Signals = append(birth.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("extra_%02d", i), Src: "opcua:ns=2;s=a.very.long.node.id.to.make.the.birth.large"})
	}
	parts, _, err := telemetry.SplitBirth(birth, 1024)
	if err != nil || len(parts) < 3 {
		t.Fatalf("%d parts, %v", len(parts), err)
	}
	bsubj := telemetry.AssetSubject(asset, telemetry.KindBirth)
	for i := len(parts) - 1; i >= 0; i-- { // last part first
		data, err := telemetry.MarshalBirth(&parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Handle(ctx, bsubj, data); err != nil {
			t.Fatal(err)
		}
		_, known := c.Asset("site1", "m-9")
		if known != (i == 0) {
			t.Fatalf("after part %d of %d the asset is known: %v", i+1, len(parts), known)
		}
	}
	if a, _ := c.Asset("site1", "m-9"); a.Nameplate["rated_power"] != 7.5 {
		t.Fatalf("nameplate %v after the merged birth", a.Nameplate)
	}

	b := &telemetry.Batch{Gateway: "gw-1", Seq: 2, TSGW: 2, Asset: asset}
	for i := range 40 {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("extra_%02d", i), Value: float64(i), TS: 2})
	}
	bparts, _ := b.Split(700, nil)
	if len(bparts) < 2 {
		t.Fatalf("%d batch parts", len(bparts))
	}
	dsubj := telemetry.AssetSubject(asset, telemetry.KindData)
	for i := range bparts {
		if err := c.Handle(ctx, dsubj, bparts[i].AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Handle(ctx, dsubj, bparts[1].AppendJSON(nil)); err != nil {
		t.Fatal(err)
	}
	if d := counterValue(t, c.m.duplicates); d != 1 {
		t.Fatalf("%v duplicates, want 1 (the part sent twice)", d)
	}
	a, _ := c.Asset("site1", "m-9")
	seen := 0
	for _, s := range a.Signals {
		if s.TS == 2 && s.Value == float64(seen) {
			seen++
		}
	}
	if seen != 40 {
		t.Fatalf("%d signals updated by the parts, want 40", seen)
	}
}

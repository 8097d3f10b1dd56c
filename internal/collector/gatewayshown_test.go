package collector

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/telemetry"
)

// TestAssetGatewayShown (review4 F7): the API's `gateway` of an asset is
// the gateway of its newest evaluated message. ac-1 moved from gw-1 to
// gw-2 (birth, data, death); gw-1's backlog batch dated before, older than
// the newest and not evaluated, leaves it on gw-2 (before, it showed gw-1
// until gw-2's next message). After a restart the restored asset shows
// the gateway of its record (before: none until its next message).
func TestAssetGatewayShown(t *testing.T) {
	ctx := context.Background()
	c := newCollector(t, Defaults())
	send := func(c *Collector, m spanMsg) {
		t.Helper()
		if err := c.Handle(ctx, telemetry.Subject("site1", "air_compressor", "ac-1", m.kind), m.data); err != nil {
			t.Fatal(err)
		}
	}
	shown := func(c *Collector) string {
		t.Helper()
		rec := httptest.NewRecorder()
		c.HTTPHandler("").ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/assets/site1/ac-1", nil))
		var a dashboard.AssetOut
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &a) != nil {
			t.Fatalf("asset: %d %s", rec.Code, rec.Body)
		}
		return a.Gateway
	}
	t0 := time.Now().UnixMilli() - 3_600_000
	at := func(i int) int64 { return t0 + int64(i)*1000 }
	send(c, spanBirth(t, 10, at(1), 1.6, "discharge_temp", "discharge_pressure"))
	send(c, lifeBatch(11, at(2), telemetry.QualityGood))
	for _, m := range []spanMsg{spanBirth(t, 5, at(100), 1.6, "discharge_temp", "discharge_pressure"),
		lifeBatch(6, at(101), telemetry.QualityGood), spanDeath(t, 7, at(110))} {
		send(c, fromGateway(t, m, "gw-2"))
	}
	if gw := shown(c); gw != "gw-2" {
		t.Fatalf("gateway %q after gw-2's messages, want gw-2", gw)
	}
	send(c, lifeBatch(12, at(3), telemetry.QualityGood)) // gw-1's backlog
	if gw := shown(c); gw != "gw-2" {
		t.Errorf("gateway %q after the old gateway's late batch, want gw-2", gw)
	}
	rec := assetRecord(t, c.shard(0), "site1", "ac-1")
	c2 := newCollector(t, Defaults())
	sh2 := c2.shard(0)
	sh2.mu.Lock()
	err := sh2.restore(rec, 1, 0)
	sh2.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if gw := shown(c2); gw != "gw-2" {
		t.Errorf("restored asset's gateway %q, want gw-2 (its record's)", gw)
	}
}

// assetRecord returns the binary checkpoint record sh writes now for
// site/asset (marked changed first), as a checkpoint would store it.
func assetRecord(t *testing.T, sh *shard, site, asset string) []byte {
	t.Helper()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.dirtyKey(site, asset)
	w, err := sh.snapshot(nil, 0, false, nil)
	if err != nil || len(w) != 1 {
		t.Fatalf("snapshot: %d records, %v", len(w), err)
	}
	return w[0].data
}

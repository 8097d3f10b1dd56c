package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// gwBatch is a batch of gateway gw for asset id of site1 dated tsgw.
func gwBatch(gw, id string, seq uint64, tsgw int64) []byte {
	b := &telemetry.Batch{Gateway: gw, Seq: seq, TSGW: tsgw,
		Asset:    telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: tsgw}}}
	return b.AppendJSON(nil)
}

// TestGatewayClockOffsetShown (review7 F3): the collector bounded the
// times of a gateway whose clock ran 240 s fast, but nothing said which
// gateway it was: the counter has no gateway label and /api/v1/gateways
// showed the corrected times. Now the gateway list carries each gateway's
// measured clock offset (clock_offset_ms, clock_skew, clock_ahead_total)
// and the metrics count the gateways marked. Over a real embedded NATS:
// a backlog read after the collector was down (stored more than liveLag
// before it was read) does not distort the estimate: gw-fast's backlog
// was dated 10 min ahead of when it was stored (its clock before it was
// half corrected), its live batches 240 s ahead; the estimate is 240 s,
// not 10 min, and gw-old, seen only in the backlog, has none.
func TestGatewayClockOffsetShown(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	const lag = 2 * time.Second // liveLag, shortened: a backlog without a 10 s wait
	shorten := func(c *Collector) { c.liveLag = lag }
	r := startWith(t, cfg, shorten) // creates the stream
	r.stop()

	js := jsClient(t, ns.URL())
	ctx := context.Background()
	pub := func(gw, id string, seq uint64, tsgw int64) {
		t.Helper()
		if _, err := js.Publish(ctx, telemetry.Subject("site1", "air_compressor", id, telemetry.KindData), gwBatch(gw, id, seq, tsgw)); err != nil {
			t.Fatal(err)
		}
	}
	// the backlog, while no collector reads
	for seq := range uint64(3) {
		pub("gw-fast", "ac-1", seq+1, time.Now().Add(10*time.Minute).UnixMilli())
	}
	pub("gw-old", "ac-2", 1, time.Now().UnixMilli())
	stored := time.Now()
	wait.For(t, 10*time.Second, "the backlog older than liveLag", func() bool { return time.Since(stored) > lag+100*time.Millisecond })

	r = startWith(t, cfg, shorten)
	get := func(path string) string { return httpBody(t, r.c, path) }
	var list struct {
		ClockToleranceMS int64                   `json:"clock_tolerance_ms"`
		Gateways         []dashboard.GatewayView `json:"gateways"`
	}
	gws := func() map[string]dashboard.GatewayView {
		t.Helper()
		body := get("/api/v1/gateways")
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("/api/v1/gateways: %v: %s", err, body)
		}
		m := map[string]dashboard.GatewayView{}
		for _, g := range list.Gateways {
			m[g.ID] = g
		}
		return m
	}
	show := func(g dashboard.GatewayView) string {
		off := "absent"
		if g.ClockOffsetMS != nil {
			off = fmt.Sprint(*g.ClockOffsetMS)
		}
		return fmt.Sprintf("%s: %d batches, clock_offset_ms %s, clock_skew %q, clock_ahead_total %d", g.ID, g.Batches, off, g.ClockSkew, g.ClockAheadTotal)
	}
	// live batches 240 s ahead, one more per poll (one read more than
	// liveLag after it was stored, on a loaded machine, is no sample)
	const lead = 240_000
	seq := uint64(10)
	var m map[string]dashboard.GatewayView
	wait.For(t, 30*time.Second, "gw-fast's live batches measured", func() bool {
		pub("gw-fast", "ac-1", seq, time.Now().UnixMilli()+lead)
		seq++
		m = gws()
		g := m["gw-fast"]
		return g.Batches > 3 && g.ClockOffsetMS != nil && *g.ClockOffsetMS >= lead-lag.Milliseconds()
	})
	fast, old := m["gw-fast"], m["gw-old"]
	if off := fast.ClockOffsetMS; *off > lead || fast.ClockSkew != "ahead" || fast.ClockAheadTotal < 4 {
		t.Errorf("%s; want an offset of at most %d (the live batches' lead less their delivery, not the backlog's 600000), "+
			"marked ahead, and every batch counted (3 of the backlog, beyond max_future, and the live ones)", show(fast), lead)
	}
	if old.ID != "gw-old" || old.Batches != 1 || old.ClockOffsetMS != nil || old.ClockSkew != "" {
		t.Errorf("%s; want its backlog batch listed and no clock estimate from it", show(old))
	}
	if list.ClockToleranceMS != 2000 {
		t.Errorf("clock_tolerance_ms %d, want the default 2000", list.ClockToleranceMS)
	}
	metrics := get("/metrics")
	for _, want := range []string{`smelter_collector_gateways_clock_skewed{direction="ahead"} 1`, `smelter_collector_gateways_clock_skewed{direction="behind"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

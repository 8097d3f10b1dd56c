package gateway

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/catalog"
	smcollector "github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestWipedSpoolLosesNothingDownstream: a gateway publishes batches, its
// spool directory is wiped (new disk, reinstall) while its id stays, and
// the gateway started again publishes more within the stream's duplicate
// window (2 min). The new spool's seqs continue above the old ones
// (spool.SeqFloor), so every batch of the second run is stored in the
// stream (JetStream would otherwise drop it as a duplicate of the first
// run's Nats-Msg-Id <gateway>-<seq>, and the gateway would commit it as
// sent) and a collector reading the stream evaluates every one of them
// (its dedup on (gateway, seq) and its per-asset redelivery check would
// otherwise drop them). Before the floor, the second run restarted at seq 1:
// the stream held none of its batches.
func TestWipedSpoolLosesNothingDownstream(t *testing.T) {
	r := newRelRig(t, false)
	cfg := r.config(t, relConfig{devices: 2, interval: "50ms", nats: true})
	const perRun = 30

	// first run: perRun records confirmed, then a graceful stop (drained)
	rg := startGateway(t, cfg, nil)
	wait.For(t, 15*time.Second, "first run's records acknowledged", func() bool {
		return rg.uplink("nats").LastSeq >= r.first+perRun-1
	})
	rg.stop(t)
	last1 := rg.seq()
	if l := rg.uplink("nats").LagRecords; l != 0 {
		t.Fatalf("%d records unsent after a graceful stop", l)
	}
	n1 := last1 - r.first + 1

	// the spool directory is lost; the gateway keeps its id and config
	if err := os.RemoveAll(cfg.Raw.Spool.Dir); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	rg2 := startGateway(t, cfg, nil)
	wait.For(t, 15*time.Second, "second run's records acknowledged", func() bool {
		return metric(t, rg2.reg, "smelter_gateway_published_total", "uplink", "nats") >= perRun
	})
	rg2.stop(t)
	if l := rg2.uplink("nats").LagRecords; l != 0 {
		t.Fatalf("%d records unsent after a graceful stop", l)
	}
	if d := time.Since(started); d > 100*time.Second {
		t.Fatalf("the second run took %v: not within the stream's 2 min duplicate window, the test proves nothing", d)
	}
	n2 := uint64(metric(t, rg2.reg, "smelter_spool_appended_records_total"))
	last2 := rg2.seq()
	if last2-n2 <= last1 {
		t.Errorf("second run's seqs %d..%d do not continue above the first run's last %d", last2-n2+1, last2, last1)
	}
	if dups := metric(t, rg2.reg, "smelter_uplink_publish_duplicates_total", "uplink", "nats"); dups != 0 {
		t.Errorf("JetStream acknowledged %v of the second run's messages as duplicates: never stored", dups)
	}

	// the stream holds every record of both runs, each once, each with the
	// dedup id of its seq
	ds := readStream(t, r.nats.URL())
	rep := checkDelivery(t, "nats", ds, r.first, true)
	stored2 := uint64(0)
	for _, d := range ds {
		if d.seq > last1 {
			stored2++
		}
	}
	if rep.duplicates != 0 || uint64(rep.distinct) != n1+n2 || stored2 != n2 {
		t.Fatalf("stream: %d distinct (want %d + %d), %d of the second run, %d duplicates", rep.distinct, n1, n2, stored2, rep.duplicates)
	}

	// a collector reading the stream evaluates every batch of both runs
	ccfg := smcollector.Defaults()
	ccfg.Rules.Files = nil
	ccfg.DataDir = t.TempDir()
	set, err := ccfg.LoadRules(catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	creg := prometheus.NewRegistry()
	c, err := smcollector.New(ccfg, set, slog.New(slog.NewTextHandler(io.Discard, nil)), creg)
	if err != nil {
		t.Fatal(err)
	}
	var newest int64 // the newest ts_gw of a data batch of the second run
	for _, d := range ds {
		if err := c.Handle(context.Background(), d.subject, d.data); err != nil {
			t.Fatal(err)
		}
		if d.seq > last1 && d.kind == string(telemetry.KindData) {
			newest = max(newest, d.tsGW)
		}
	}
	if dups := metric(t, creg, "smelter_collector_duplicates_total"); dups != 0 {
		t.Errorf("the collector dropped %v batches as duplicates of (gateway, seq)", dups)
	}
	for _, id := range []string{"ac-1", "ac-2"} {
		a, ok := c.Asset("plant1", id)
		if !ok || a.Gateway != relGateway {
			t.Fatalf("collector: asset %s not tracked (%v) or of gateway %q", id, ok, a.Gateway)
		}
		if newest == 0 || a.LastTS < newest-time.Second.Milliseconds() {
			t.Errorf("collector: asset %s last evaluated at %d, the second run's newest batch is of %d", id, a.LastTS, newest)
		}
	}
	t.Logf("first run seqs %d..%d, second run %d records from %d; stream %d messages",
		r.first, last1, n2, last2-n2+1, len(ds))
}

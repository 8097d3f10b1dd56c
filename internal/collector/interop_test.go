package collector

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// Against the machine's NATS (2.9, JetStream, 127.0.0.1:4222): partitions
// are refused with an error naming the version needed, and single replica
// mode works there, state checkpoint included. Runs with SMELTER_INTEROP=1.
func TestInteropNATS29SingleReplicaAndPartitionsRefused(t *testing.T) {
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test: set SMELTER_INTEROP=1 with NATS (JetStream) on 127.0.0.1:4222")
	}
	const url = "nats://127.0.0.1:4222"
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the cleanup below deletes what the test created (a defer would close it first)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	group := "it-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	_, err = js.Stream(ctx, "SMELTER")
	created := errors.Is(err, jetstream.ErrStreamNotFound)
	t.Cleanup(func() {
		_ = js.DeleteConsumer(ctx, "SMELTER", group)
		_ = js.DeleteKeyValue(ctx, group+"_state")
		_ = js.DeleteKeyValue(ctx, group+"_members")
		if created {
			_ = js.DeleteStream(ctx, "SMELTER")
		}
	})
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir, cfg.Group = url, "", t.TempDir(), group

	part := cfg
	part.Cluster.Partitions = 4
	var buf logtest.Buffer
	err = newCollectorLog(t, part, &buf).Run(ctx)
	if !errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), "nats-server >= 2.11") {
		t.Fatalf("partitions on %s: %v", nc.ConnectedServerVersion(), err)
	}

	r := startCfg(t, cfg)
	site, asset := "it"+group[3:], "ac-it"
	t0 := time.Now().UnixMilli() - 60_000
	for i := range 30 {
		ts := t0 + int64(i)*1000
		b := &telemetry.Batch{Gateway: "gw-" + group, Seq: uint64(i + 1), TSGW: ts, Asset: telemetry.Asset{ID: asset, Class: "air_compressor", Path: []string{"acme", site, "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
		if _, err := js.Publish(ctx, telemetry.Subject(site, "air_compressor", asset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 60*time.Second, "alarm raised on 2.9", func() bool {
		for _, a := range r.c.Alerts(true) {
			if a.Asset == asset && a.Rule == "discharge_temp_high" {
				return true
			}
		}
		return false
	})
	kv, err := js.KeyValue(ctx, group+"_state")
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "state checkpointed", func() bool {
		_, err := kv.Get(ctx, stateKey(0, site, asset))
		return err == nil
	})
}

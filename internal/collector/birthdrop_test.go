package collector

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// The review's reproduction: a gateway restarts with a configuration
// without dew_point. Its new birth drops the signal: the stale alert the
// signal had is cleared once ("removed from its gateway's configuration"),
// the API no longer lists the signal, no stale alert follows, and a
// collector killed (-9) and restarted after the birth restores the asset
// from its checkpoint without the signal: no second clear, no new raise.
func TestBirthRemovingSignalAcrossRestart(t *testing.T) {
	for _, format := range []string{"binary", "json"} {
		t.Run(format, func(t *testing.T) { birthRemovingSignal(t, format) })
	}
}

func birthRemovingSignal(t *testing.T, format string) {
	rig, startFormat := newRestartRig(t, "127.0.0.1:0")
	js, log := rig.js, rig.log
	start := func() *running { return startFormat(format) }
	ctx := context.Background()
	t0 := time.Now().UnixMilli() - 600_000
	asset := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}}
	seq := uint64(0)
	// publish sends a message the gateway numbered seq
	publish := func(subject string, data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data, jetstream.WithMsgID("gw-1-"+strconv.FormatUint(seq, 10))); err != nil {
			t.Fatal(err)
		}
	}
	// batches at 1 s; withDew: dew_point is in the gateway's configuration (bad after the third)
	batches := func(from, to int, withDew bool) {
		for i := from; i < to; i++ {
			ts := t0 + int64(i)*1000
			seq++
			b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: asset,
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80 + float64(i%5)*0.1, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
					{Signal: "discharge_pressure", Value: 0.7 + float64(i%7)*0.001, Unit: "MPa", TS: ts}}}
			if withDew {
				dew := telemetry.Reading{Signal: "dew_point", Quality: telemetry.QualityBad, Status: 2, TS: ts}
				if i < 3 {
					dew = telemetry.Reading{Signal: "dew_point", Value: 3, Unit: "Cel", TS: ts}
				}
				b.Readings = append(b.Readings, dew)
			}
			publish(subj, b.AppendJSON(nil))
		}
	}
	birth := func(at int, sigs ...string) {
		seq++
		bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: seq, TSGW: t0 + int64(at)*1000,
			Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: asset.Path}}
		for _, s := range sigs {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: s, IntervalMS: 1000})
		}
		data, err := telemetry.MarshalBirth(bi)
		if err != nil {
			t.Fatal(err)
		}
		publish("smelter.v1.site1.air_compressor.ac-1.birth", data)
	}
	apiSignals := func(r *running) []string {
		t.Helper()
		resp, err := http.Get("http://" + r.c.HTTPAddr() + "/api/v1/assets/site1/ac-1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var d dashboard.AssetDetail
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatalf("asset detail: %v: %.300s", err, body)
		}
		var out []string
		for _, s := range d.Signals {
			out = append(out, s.Signal)
		}
		slices.Sort(out)
		return out
	}
	const stale = "site1.ac-1.stale.dew_point"
	const removed = "cleared: air_compressor ac-1 dew_point removed from its gateway's configuration"

	r := start()
	birth(0, "discharge_temp", "load_state", "discharge_pressure", "dew_point")
	batches(0, 20, true)
	wait.For(t, 10*time.Second, "stale dew_point raised", func() bool { return len(log.byKey(stale)) == 1 })
	if got := apiSignals(r); !slices.Contains(got, "dew_point") {
		t.Fatalf("API before the new birth: %v", got)
	}
	// the gateway restarts without dew_point
	birth(20, "discharge_temp", "load_state", "discharge_pressure")
	batches(20, 40, false)
	wait.For(t, 10*time.Second, "batches after the new birth evaluated", func() bool {
		av, ok := r.c.Asset("site1", "ac-1")
		return ok && av.LastTS >= t0+39*1000
	})
	wait.For(t, 10*time.Second, "the stale alert's clear published", func() bool { return len(log.byKey(stale)) >= 2 })
	if got := log.byKey(stale); len(got) != 2 || got[1].State != alert.Cleared || got[1].Message != removed {
		t.Fatalf("want raised then one clear naming the removal, got %+v", got)
	}
	if got := apiSignals(r); !slices.Equal(got, []string{"discharge_pressure", "discharge_temp", "load_state"}) {
		t.Fatalf("API after the new birth: %v", got)
	}
	// the checkpoint record reflects the drop: no dew_point, no active alert
	kv, err := js.KeyValue(ctx, "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	// checkpointed waits for the record of the batch at second at
	// (a cycle's alerts are published before its record is written)
	checkpointed := func(at int) (rec record) {
		t.Helper()
		wait.For(t, 15*time.Second, "the record of second "+strconv.Itoa(at), func() bool {
			e, err := kv.Get(ctx, "p0.site1.ac-1")
			if err != nil {
				return false
			}
			if rec, err = decodeRecord(e.Value()); err != nil {
				t.Fatal(err)
			}
			return rec.Rules.LastTSGW >= t0+int64(at)*1000
		})
		return rec
	}
	rec := checkpointed(39)
	for _, ss := range rec.Rules.Signals {
		if ss.Name == "dew_point" {
			t.Fatalf("record keeps dew_point: %+v", ss)
		}
	}
	if len(rec.Alerts) != 0 || slices.ContainsFunc(rec.Rules.Birth, func(si telemetry.SignalInfo) bool { return si.Signal == "dew_point" }) {
		t.Fatalf("record: alerts %+v, birth %+v", rec.Alerts, rec.Rules.Birth)
	}

	r.kill()
	r2 := start()
	batches(40, 60, false)
	if rec := checkpointed(59); len(rec.Alerts) != 0 {
		t.Fatalf("record after the restart: alerts %+v", rec.Alerts)
	}
	if got := log.byKey(stale); len(got) != 2 {
		t.Fatalf("after the restart: want the raise and the one clear, got %+v", got)
	}
	if got := apiSignals(r2); !slices.Equal(got, []string{"discharge_pressure", "discharge_temp", "load_state"}) {
		t.Fatalf("API after the restart: %v", got)
	}
	if act := r2.c.Alerts(true); len(act) != 0 {
		t.Fatalf("active after restart: %+v", act)
	}
}

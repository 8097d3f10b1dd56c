package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Nothing the collector keeps past a cycle is a view into a pull's read
// chunk (natswire: a message's payload, reply and headers are views into
// a 256 KiB chunk, which one kept string would keep alive, as a kept view
// kept its own message's payload before): births, data batches that raise
// alerts (the cycle then checkpoints: TestHeldMessagesKeepNoPayload holds
// them), deaths, of many assets and gateways, with Smelter-Sent-At
// headers, evaluated in one cycle; once the messages and the cycle's
// reused batch are dropped, no chunk is alive. (The chunks are the Go
// heap's here, not guarded ones: the garbage collector is the judge.)
func TestNothingKeptViewsAPullChunk(t *testing.T) {
	heapChunks(t)
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.AckWait = Duration(2 * time.Minute)
	c := newCollector(t, cfg)
	ctx := context.Background()
	io := collectorIO(t, c, ns.URL())
	nc, js := io.nc, io.js
	t0 := time.Now().UnixMilli() - 10_000
	pub := func(subject string, data []byte) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(telemetry.SentAtHeader, string(telemetry.AppendSentAt(nil, time.Now().UnixMilli())))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	const assets = 24
	n := 0
	for a := range assets {
		site, gw, id := fmt.Sprintf("site%d", a%3+1), fmt.Sprintf("gw-%d", a%4), fmt.Sprintf("ac-%02d", a)
		path := []string{"acme", site, "_", "_", "_"}
		b, err := json.Marshal(telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: gw, Seq: uint64(a*10 + 1), TSGW: t0,
			Asset:   telemetry.AssetJSON{ID: id, Class: "air_compressor", Path: path},
			Signals: []telemetry.SignalInfo{{Signal: "discharge_temp", Unit: "Cel"}, {Signal: "load_state"}, {Signal: "discharge_pressure", Unit: "MPa"}}})
		if err != nil {
			t.Fatal(err)
		}
		pub(telemetry.Subject(site, "air_compressor", id, telemetry.KindBirth), b)
		n++
		for s := range 4 {
			ts := t0 + int64(s+1)*1000
			bt := &telemetry.Batch{Gateway: gw, Seq: uint64(a*10 + s + 2), TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: path},
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
					{Signal: "discharge_pressure", Value: 0.7, Unit: "MPa", TS: ts}}}
			pub(telemetry.Subject(site, "air_compressor", id, telemetry.KindData), bt.AppendJSON(nil))
			n++
		}
		if a%2 == 0 {
			d, err := json.Marshal(telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: gw, Seq: uint64(a*10 + 6), TSGW: t0 + 6000,
				Asset: telemetry.AssetJSON{ID: id, Class: "air_compressor", Path: path}, Reason: "offline"})
			if err != nil {
				t.Fatal(err)
			}
			pub(telemetry.Subject(site, "air_compressor", id, telemetry.KindDeath), d)
			n++
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, cfg.NATS.Stream, jetstream.ConsumerConfig{Durable: "views", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	msgs, err := fetch(nc, cfg.NATS.Stream, "views", n, 5*time.Second)
	if err != nil || len(msgs) != n {
		t.Fatalf("fetched %d of %d: %v", len(msgs), n, err)
	}
	chunks := map[weak.Pointer[byte]]bool{}
	for _, m := range msgs {
		chunks[weak.Make(&m.Data[0])] = true
	}
	sh := c.newShard(0)
	var cy cycle
	var h held
	if err := c.cycle(ctx, io, sh, msgs, &cy, &h, false, false); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(c.m.ingested.WithLabelValues("data")); got != 4*assets {
		t.Fatalf("%v data messages evaluated, want %d", got, 4*assets)
	}
	if len(c.Alerts(false)) == 0 {
		t.Fatal("no alert raised: the test evaluates less than it should")
	}
	clear(msgs)
	cy.batch = telemetry.Batch{} // the next cycle's decode replaces it
	runtime.GC()
	runtime.GC()
	alive := 0
	for p := range chunks {
		if p.Value() != nil {
			alive++
		}
	}
	if alive > 0 {
		t.Fatalf("%d pull chunks still alive after the cycle: something kept is a view into one", alive)
	}
}

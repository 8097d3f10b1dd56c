package collector

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// A publisher that names the partition itself (a 7-token subject, stored as
// sent because the transform only rewrites 6-token subjects) must not give
// the asset an owner in another partition: those messages are refused and
// counted with reason "partition"; the 6-token publish, partitioned by the
// server, is evaluated, which also proves partitionOf matches the server.
// The stream the collector creates stores exact 6-token subjects only
// (TestPartitionTokenNotStored); this test runs on a stream from before
// the audit stream (smelter.v1.>, create_stream off), which still does.
func TestPartitionTokenOfPublisherRefused(t *testing.T) {
	ns, js := embeddedJS(t)
	const parts = 4
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMELTER", Subjects: []string{"smelter.v1.>"},
		SubjectTransform: partitionTransform(parts), Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	cfg.NATS.CreateStream = false
	cfg.Cluster.Partitions = parts
	r := startCfg(t, cfg)
	t0 := time.Now().UnixMilli() - 60_000
	batch := func(seq uint64) []byte {
		b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: t0 + int64(seq)*1000,
			Asset:    telemetry.Asset{ID: "ac-5", Class: "air_compressor", Path: []string{"acme", "s1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel"}}}
		return b.AppendJSON(nil)
	}
	subj := telemetry.Subject("s1", "air_compressor", "ac-5", telemetry.KindData)
	if _, err := js.Publish(ctx, subj, batch(1)); err != nil {
		t.Fatal(err)
	}
	own := partitionOf("s1", "ac-5", parts)
	for p := range parts {
		if _, err := js.Publish(ctx, subj+"."+strconv.Itoa(p), batch(uint64(2+p))); err != nil {
			t.Fatal(err)
		}
	}
	ingested := func() float64 { return counterValue(t, r.c.m.ingested.WithLabelValues("data")) }
	refused := func() float64 { return counterValue(t, r.c.m.malformed.WithLabelValues("partition")) }
	wait.For(t, 10*time.Second, "every message handled", func() bool { return ingested()+refused() >= parts+1 })
	if got := refused(); got != parts-1 {
		t.Errorf("malformed{reason=partition} = %v, want %d (every 7-token subject but partition %d's)", got, parts-1, own)
	}
	if got := ingested(); got != 2 {
		t.Errorf("ingested data = %v, want 2 (the 6-token publish and the one naming partition %d)", got, own)
	}
	owners := 0
	r.c.mu.Lock()
	for _, sh := range r.c.shards {
		sh.mu.Lock()
		if sh.engine.Has("s1", "ac-5") {
			owners++
		}
		sh.mu.Unlock()
	}
	r.c.mu.Unlock()
	if owners != 1 {
		t.Errorf("asset tracked by %d partitions, want 1", owners)
	}
}

// TestPartitionTokenNotStored: the stream the collector creates captures
// the exact 6-token telemetry kinds only, so a publisher cannot name a
// partition (a 7th token) at all, and .cmd and .audit are not stored.
func TestPartitionTokenNotStored(t *testing.T) {
	ns, js := embeddedJS(t)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	cfg.Cluster.Partitions = 4
	startCfg(t, cfg)
	var err error
	ctx := context.Background()
	var s jetstream.Stream
	wait.For(t, 10*time.Second, "the stream", func() bool { s, err = js.Stream(ctx, "SMELTER"); return err == nil })
	if got := s.CachedInfo().Config.Subjects; !slices.Equal(got, append(telemetry.TelemetryStreamSubjects("*"), fenceFilter(cfg.Group))) {
		t.Fatalf("stream subjects %v", got)
	}
	base := telemetry.Subject("s1", "air_compressor", "ac-5", telemetry.KindData)
	for _, subj := range []string{base + ".2", telemetry.Subject("s1", "air_compressor", "ac-5", telemetry.KindCommand),
		telemetry.Subject("s1", "air_compressor", "ac-5", telemetry.KindAudit)} {
		if _, err := js.Publish(ctx, subj, []byte("{}")); !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Errorf("publish %s: %v, want no stream", subj, err)
		}
	}
}

// TestLegacyStreamNarrowed: a stream from before the audit stream
// (smelter.v1.>) is narrowed to the telemetry kinds when create_stream is
// on, keeping its messages, so that the audit stream can exist.
func TestLegacyStreamNarrowed(t *testing.T) {
	ns, js := embeddedJS(t)
	ctx := context.Background()
	other := fenceFilter("other-group") // another collector group's fences on the shared stream stay
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMELTER", Subjects: []string{"smelter.v1.>", other}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "smelter.v1.s1.motor.m-1.audit", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	startCfg(t, cfg)
	wait.For(t, 10*time.Second, "the stream narrowed", func() bool {
		s, err := js.Stream(ctx, "SMELTER")
		return err == nil && slices.Equal(s.CachedInfo().Config.Subjects, append(telemetry.TelemetryStreamSubjects("*"), fenceFilter(cfg.Group), other))
	})
	s, err := js.Stream(ctx, "SMELTER")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetLastMsgForSubject(ctx, "smelter.v1.s1.motor.m-1.audit"); err != nil || m.Sequence != 1 {
		t.Fatalf("the legacy stream's message after narrowing: %v %v", m, err) // kept (the fences come after it)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: telemetry.AuditStream, Subjects: telemetry.AuditStreamSubjects("*")}); err != nil {
		t.Fatalf("audit stream beside the narrowed stream: %v", err)
	}
}

// embeddedJS starts an embedded NATS JetStream server and a client of it.
func embeddedJS(t *testing.T) (*brokers.NATS, jetstream.JetStream) {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return ns, jsClient(t, ns.URL())
}

// jsClient connects a JetStream client to url, closed with the test.
func jsClient(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/streams"
	"github.com/smelterio/smelter/internal/telemetry"
)

// TestStreamsOnARealServer creates both streams on an embedded nats-server
// and checks what they do, not only what they say: a batch republished with
// the same Nats-Msg-Id within the window is stored once, and an audit record
// can be neither deleted nor purged.
func TestStreamsOnARealServer(t *testing.T) {
	n, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tel, err := js.CreateStream(ctx, streams.Telemetry(telemetry.TelemetryStream, telemetry.TelemetryStreamSubjects("*"), 1, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c := tel.CachedInfo().Config; c.Duplicates != streams.DuplicateWindow || c.MaxAge != time.Hour || c.Storage != jetstream.FileStorage {
		t.Fatalf("telemetry stream stored as %+v", c)
	}
	subj := "smelter.v1.s1.gw1.m1.data"
	for i := 0; i < 2; i++ {
		ack, err := js.Publish(ctx, subj, []byte(`{}`), jetstream.WithMsgID("gw1-42"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != (i == 1) {
			t.Fatalf("publish %d: duplicate %v", i, ack.Duplicate)
		}
	}
	if info, err := tel.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("telemetry stream holds %v messages (%v), want 1", info.State.Msgs, err)
	}

	aud, err := js.CreateStream(ctx, streams.Audit(telemetry.AuditStream, telemetry.AuditStreamSubjects("*"), 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "smelter.v1.s1.gw1.m1.audit", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := aud.DeleteMsg(ctx, ack.Sequence); err == nil {
		t.Fatal("an audit record was deleted")
	}
	if err := aud.Purge(ctx); err == nil {
		t.Fatal("the audit stream was purged")
	}
	if info, err := aud.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("audit stream holds %v messages (%v), want 1", info.State.Msgs, err)
	}
	if d := aud.CachedInfo().Config.Duplicates; d != streams.AuditDuplicateWindow {
		t.Errorf("audit stream duplicate window %v, want %v", d, streams.AuditDuplicateWindow)
	}
}

package natsjs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestAuditStreamCreated: EnsureAuditStream creates SMELTER_AUDIT on the
// audit subjects (file storage, audit_max_age, append only) beside the
// telemetry stream, which no longer captures .audit or .cmd: an audit
// record lands in the audit stream only, a command in none.
func TestAuditStreamCreated(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	ctx := context.Background()
	if err := r.u.EnsureAuditStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.u.EnsureAuditStream(ctx); err != nil { // existing: checked
		t.Fatalf("second check: %v", err)
	}
	_, js := client(t, srv.URL())
	s, err := js.Stream(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if !slices.Equal(c.Subjects, []string{"smelter.v1.*.*.*.audit"}) || c.Storage != jetstream.FileStorage ||
		c.MaxAge != DefaultAuditMaxAge || !c.DenyDelete || !c.DenyPurge {
		t.Fatalf("audit stream config = subjects %v storage %v max_age %v deny delete %v purge %v",
			c.Subjects, c.Storage, c.MaxAge, c.DenyDelete, c.DenyPurge)
	}
	if _, err := js.Publish(ctx, "smelter.v1.p.motor.m-1.audit", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "smelter.v1.p.motor.m-1.cmd", []byte(`{}`)); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("a command was stored or answered by JetStream: %v", err)
	}
	for name, want := range map[string]uint64{DefaultStream: 0, DefaultAuditStream: 1} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Msgs; n != want {
			t.Errorf("stream %s holds %d messages, want %d", name, n, want)
		}
	}
}

// TestAuditStreamLegacyTelemetryStream: a telemetry stream from before the
// audit stream (SMELTER on smelter.v1.>) still carries telemetry, but
// EnsureAuditStream fails with ErrStream naming the exact change; after
// the operator narrows the stream the next check creates the audit
// stream.
func TestAuditStreamLegacyTelemetryStream(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	_, js := client(t, srv.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"smelter.v1.>"}}); err != nil {
		t.Fatal(err)
	}
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready on the legacy stream", r.u.Ready)
	publish(t, r.u, envelopes("gw-test", 1, 3, 10))
	err := r.u.EnsureAuditStream(ctx)
	want := "nats stream edit SMELTER --subjects '" + strings.Join(telemetry.TelemetryStreamSubjects("*"), ",") + "'"
	if !errors.Is(err, ErrStream) || !strings.Contains(err.Error(), want) {
		t.Fatalf("EnsureAuditStream on a legacy stream = %v, want ErrStream with %q", err, want)
	}
	if _, err := js.Stream(ctx, DefaultAuditStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("audit stream exists (%v)", err)
	}
	// the operator's fix; the next check sees it
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: telemetry.TelemetryStreamSubjects("*")}); err != nil {
		t.Fatal(err)
	}
	if err := r.u.EnsureAuditStream(ctx); err != nil {
		t.Fatalf("after narrowing: %v", err)
	}
}

// TestAuditStreamOverlapOnCreate: another stream on the audit subjects
// (not the telemetry stream) makes creation fail with ErrStream, not a
// bare API error.
func TestAuditStreamOverlapOnCreate(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	_, js := client(t, srv.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"smelter.v1.*.*.*.audit"}}); err != nil {
		t.Fatal(err)
	}
	r := runUplink(t, Config{URL: srv.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	err := r.u.EnsureAuditStream(ctx)
	if !errors.Is(err, ErrStream) || !strings.Contains(err.Error(), "another stream captures") {
		t.Fatalf("EnsureAuditStream = %v, want ErrStream naming the overlap", err)
	}
}

package natsjs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// interopURL returns the machine's NATS server, or skips.
func interopURL(t *testing.T) string {
	t.Helper()
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test against the machine's nats-server: set SMELTER_INTEROP=1 (and SMELTER_NATS_URL, default nats://127.0.0.1:4222)")
	}
	if u := os.Getenv("SMELTER_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func uniqueToken(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "it" + hex.EncodeToString(b)
}

// TestInteropJetStream runs the uplink against the installed nats-server
// (Debian ships 2.9): stream creation, exact payloads, dedup. The stream and
// its subjects are unique to the run and deleted afterwards.
func TestInteropJetStream(t *testing.T) {
	url := interopURL(t)
	tok := uniqueToken(t)
	stream := "SMELTER_" + strings.ToUpper(tok)
	site := tok
	_, js := client(t, url)
	audit := stream + "_AUDIT"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range []string{stream, audit} {
			if err := js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("cleanup: delete stream %s: %v", s, err)
			}
		}
	})
	r := runUplink(t, Config{URL: url, Stream: stream, Subjects: telemetry.TelemetryStreamSubjects(site),
		AuditStream: audit, AuditSubjects: telemetry.AuditStreamSubjects(site), MaxAge: time.Hour}, nil)
	wait.For(t, 10*time.Second, "uplink ready against the machine's nats-server", r.u.Ready)
	t.Logf("server version %s", r.u.cur.Load().nc.ConnectedServerVersion())

	msgs := envelopes("gw-"+tok, 1, 300, 2000)
	for i := range msgs {
		msgs[i].Subject = telemetry.Subject(site, "motor", "m-1", telemetry.KindData)
	}
	publish(t, r.u, msgs)
	publish(t, r.u, msgs[:100]) // duplicates within the window
	checkStream(t, readStream(t, js, stream), msgs)
	if got := metricValue(r.m.Duplicates); got != 100 {
		t.Fatalf("duplicates = %v, want 100", got)
	}
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.Duplicates != DuplicateWindow || c.Storage != jetstream.FileStorage {
		t.Fatalf("stream config %+v", c)
	}
	// the audit stream beside it (2.9 knows DenyDelete/DenyPurge)
	if err := r.u.EnsureAuditStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), telemetry.Subject(site, "motor", "m-1", telemetry.KindAudit), []byte(`{}`))
	if err != nil || ack.Stream != audit {
		t.Fatalf("audit record: ack %+v, %v; want stored in %s", ack, err, audit)
	}
	as, err := js.Stream(context.Background(), audit)
	if err != nil {
		t.Fatal(err)
	}
	if c := as.CachedInfo().Config; !c.DenyDelete || !c.DenyPurge || c.MaxAge != DefaultAuditMaxAge {
		t.Fatalf("audit stream config %+v", c)
	}
}

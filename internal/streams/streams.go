// Package streams holds the one definition of the JetStream streams that
// Smelter creates: the telemetry stream (batches, births, deaths, KPIs,
// alerts) and the command audit stream. The gateway's NATS uplink, the
// collector (create_stream) and the tests create them from here, so a stream
// is the same whichever side made it first (docs/operations.md, "Streams").
package streams

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DuplicateWindow is the telemetry stream's message-ID dedup window
// (Nats-Msg-Id): a republished batch within it is stored once. Two minutes
// is JetStream's own default, kept explicit so that a max_age below it can
// be refused by configuration.
const DuplicateWindow = 2 * time.Minute

// MaxCommandLifetime bounds a gateway's commands.max_lifetime and
// MaxCommandSkew its commands.max_skew (internal/command): no acceptable
// command is valid longer than MaxCommandLifetime + 2 x MaxCommandSkew
// after a gateway first accepted it.
const (
	MaxCommandLifetime = time.Hour
	MaxCommandSkew     = 5 * time.Minute
)

// AuditDuplicateWindow is the audit stream's message-ID dedup window:
// MaxCommandLifetime + 2 x MaxCommandSkew (70 min). A command's
// `accepted` record carries the same Nats-Msg-Id on every gateway (its
// asset and id), so a second gateway configured with the same asset that
// gets a retry of the command while it is still valid finds it stored and
// refuses it (docs/commands.md, "One gateway per asset"); a shorter window
// would let such a retry be written twice. Commands are few: the ids kept
// cost the server little.
const AuditDuplicateWindow = MaxCommandLifetime + 2*MaxCommandSkew

// Telemetry returns the telemetry stream's configuration: limits retention
// discarding the oldest, file storage, replicas copies (1, 3 or 5 in a
// cluster), messages kept maxAge (0: for ever) and a DuplicateWindow dedup
// window. subjects are the kinds it captures (telemetry.TelemetryStreamSubjects);
// the collector adds its partition transform itself.
func Telemetry(name string, subjects []string, replicas int, maxAge time.Duration) jetstream.StreamConfig {
	c := kept(name, "Smelter telemetry", subjects, replicas, maxAge)
	c.Duplicates = DuplicateWindow
	return c
}

// Audit returns the command audit stream's configuration: append only (no
// message delete, no purge), limits retention, file storage, replicas
// copies, records kept maxAge, an AuditDuplicateWindow dedup window
// (docs/commands.md, "Audit").
func Audit(name string, subjects []string, replicas int, maxAge time.Duration) jetstream.StreamConfig {
	c := kept(name, "Smelter command audit (docs/commands.md)", subjects, replicas, maxAge)
	c.DenyDelete, c.DenyPurge = true, true
	c.Duplicates = AuditDuplicateWindow
	return c
}

// kept is what both streams share: limits retention discarding the
// oldest, file storage, replicas copies, messages kept maxAge.
func kept(name, description string, subjects []string, replicas int, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      maxAge,
	}
}

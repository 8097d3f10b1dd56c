package telemetry

import (
	"fmt"
	"strings"
)

// Kind is the last token of a subject: what the message is.
type Kind string

// Message kinds.
const (
	KindData   Kind = "data"
	KindBirth  Kind = "birth"
	KindDeath  Kind = "death"
	KindAlert  Kind = "alert"
	KindKPI    Kind = "kpi"
	KindStatus Kind = "status"
)

// SubjectPrefix is the first two tokens of every Smelter subject.
const SubjectPrefix = "smelter.v1"

// GatewayClass is the class token used for a gateway's own status subject.
const GatewayClass = "_gateway"

// Subject returns the NATS subject smelter.v1.<site>.<class>.<asset>.<kind>.
func Subject(site, class, asset string, kind Kind) string {
	var b strings.Builder
	b.Grow(len(SubjectPrefix) + len(site) + len(class) + len(asset) + len(kind) + 4)
	b.WriteString(SubjectPrefix)
	b.WriteByte('.')
	b.WriteString(site)
	b.WriteByte('.')
	b.WriteString(class)
	b.WriteByte('.')
	b.WriteString(asset)
	b.WriteByte('.')
	b.WriteString(string(kind))
	return b.String()
}

// AssetSubject returns the subject of kind for asset a.
func AssetSubject(a Asset, kind Kind) string { return Subject(a.Site(), a.Class, a.ID, kind) }

// StatusSubject returns the subject of a gateway's online/offline status.
func StatusSubject(site, gateway string) string {
	return Subject(site, GatewayClass, gateway, KindStatus)
}

// Topic converts a NATS subject to the MQTT topic that mirrors it
// ("smelter.v1.a.b.c.data" -> "smelter/v1/a/b/c/data").
func Topic(subject string) string { return strings.ReplaceAll(subject, ".", "/") }

// SubjectFromTopic converts an MQTT topic back to a subject.
func SubjectFromTopic(topic string) string { return strings.ReplaceAll(topic, "/", ".") }

// ParsedSubject is a subject split into its tokens.
type ParsedSubject struct {
	Site, Class, Asset string
	Kind               Kind
}

// ParseSubject splits a subject of the smelter.v1 layout. The tokens are
// views into s; it allocates only for an error (the collector's ingest
// check calls it once per message).
func ParseSubject(s string) (ParsedSubject, error) {
	var t [6]string
	rest, ok := s, true
	for i := range len(t) - 1 {
		if t[i], rest, ok = strings.Cut(rest, "."); !ok {
			break
		}
	}
	if !ok || strings.IndexByte(rest, '.') >= 0 || t[0] != "smelter" || t[1] != "v1" {
		return ParsedSubject{}, fmt.Errorf("%w: subject %q is not smelter.v1.<site>.<class>.<asset>.<kind>", ErrInvalid, s)
	}
	return ParsedSubject{Site: t[2], Class: t[3], Asset: t[4], Kind: Kind(rest)}, nil
}

// Kinds of the command path (docs/commands.md): a command request and
// the gateway's audit records of it.
const (
	KindCommand Kind = "cmd"
	KindAudit   Kind = "audit"
)

// TelemetryKinds are the kinds the telemetry stream stores: everything
// gateways and collectors publish except commands (never stored) and
// audit records (stored in the audit stream).
var TelemetryKinds = []Kind{KindData, KindBirth, KindDeath, KindStatus, KindAlert, KindKPI}

// Default JetStream stream names (docs/operations.md, "Streams").
const (
	// TelemetryStream stores TelemetryKinds, on TelemetryStreamSubjects.
	TelemetryStream = "SMELTER"
	// AuditStream stores the command audit records, on
	// AuditStreamSubjects, for years; it must not overlap the telemetry
	// stream (JetStream refuses overlapping streams).
	AuditStream = "SMELTER_AUDIT"
)

// KindFilter returns the subject filter of kind on site ("*" for every
// site): smelter.v1.<site>.*.*.<kind>.
func KindFilter(site string, kind Kind) string { return Subject(site, "*", "*", kind) }

// TelemetryStreamSubjects returns the telemetry stream's subjects for site
// ("*" for every site): one KindFilter per TelemetryKinds entry, so the
// stream never captures .cmd or .audit.
func TelemetryStreamSubjects(site string) []string {
	out := make([]string, len(TelemetryKinds))
	for i, k := range TelemetryKinds {
		out[i] = KindFilter(site, k)
	}
	return out
}

// AuditStreamSubjects returns the audit stream's subjects for site ("*"
// for every site): [smelter.v1.<site>.*.*.audit].
func AuditStreamSubjects(site string) []string { return []string{KindFilter(site, KindAudit)} }

// SubjectsCollide reports whether some subject matches both filters a and
// b ('*' one token, '>' the rest): JetStream refuses two streams whose
// subjects collide.
func SubjectsCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) || i == len(bt):
			return len(at) == len(bt)
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] != "*" && bt[i] != "*" && at[i] != bt[i]:
			return false
		}
	}
}

// AnyCovers reports whether one of the filters matches every subject that
// subject (which may end in '>') matches.
func AnyCovers(filters []string, subject string) bool {
	for _, f := range filters {
		if Covers(f, subject) {
			return true
		}
	}
	return false
}

// Covers reports whether filter matches every subject that subject (which
// may end in '>' or hold '*') matches.
func Covers(filter, subject string) bool {
	ft := strings.Split(filter, ".")
	st := strings.Split(subject, ".")
	for i, f := range ft {
		if f == ">" {
			return true
		}
		if i >= len(st) {
			return false
		}
		s := st[i]
		switch {
		case s == ">":
			return false // the subject has more depths than f matches
		case f == "*":
			// matches any single literal or '*'
		case f != s:
			return false
		}
	}
	return len(ft) == len(st)
}

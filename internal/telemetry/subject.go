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

// ParseSubject splits a subject of the smelter.v1 layout.
func ParseSubject(s string) (ParsedSubject, error) {
	t := strings.Split(s, ".")
	if len(t) != 6 || t[0] != "smelter" || t[1] != "v1" {
		return ParsedSubject{}, fmt.Errorf("%w: subject %q is not smelter.v1.<site>.<class>.<asset>.<kind>", ErrInvalid, s)
	}
	return ParsedSubject{Site: t[2], Class: t[3], Asset: t[4], Kind: Kind(t[5])}, nil
}

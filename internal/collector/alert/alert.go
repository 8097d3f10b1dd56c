// Package alert is the collector's alert model: severities, the alert record
// published on smelter.v1.<site>.<class>.<asset>.alert, and the latch that
// turns a noisy condition into state changes with on/off delays.
package alert

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Schema is the schema identifier of published alert messages.
const Schema = "smelter.alert/1"

// Severity ranks an alert. The zero value means "no alert".
type Severity uint8

// Severities, in increasing order.
const (
	None Severity = iota
	Info
	Warn
	Alarm
	Trip
)

var severityNames = [...]string{"none", "info", "warn", "alarm", "trip"}

// String returns the wire name.
func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "severity(" + strconv.Itoa(int(s)) + ")"
}

// ParseSeverity parses a wire name (info, warn, alarm, trip).
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if i > 0 && n == s {
			return Severity(i), nil
		}
	}
	return None, fmt.Errorf("unknown severity %q (want info, warn, alarm or trip)", s)
}

// MarshalText writes the wire name (a JSON string, as encoding/json
// quotes it).
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON reads the wire name.
func (s *Severity) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return err
	}
	if str == "none" {
		*s = None
		return nil
	}
	v, err := ParseSeverity(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// State is the lifecycle step an alert event reports.
type State string

// Alert lifecycle states.
const (
	Raised  State = "raised"  // became active
	Updated State = "updated" // still active, severity changed
	Cleared State = "cleared" // no longer active
)

// Alert is one alert occurrence. Key identifies the condition (the same key
// is raised and cleared many times); ID identifies one occurrence.
type Alert struct {
	Schema    string             `json:"schema"`
	ID        string             `json:"id"`
	Key       string             `json:"key"`
	State     State              `json:"state"`
	Site      string             `json:"site"`
	Class     string             `json:"class"`
	Asset     string             `json:"asset"`
	Rule      string             `json:"rule"`
	Kind      string             `json:"kind"`
	Signal    string             `json:"signal,omitempty"`
	Severity  Severity           `json:"severity"`
	Message   string             `json:"message"`
	Values    map[string]float64 `json:"values,omitempty"`
	RaisedAt  int64              `json:"raised_at"`
	UpdatedAt int64              `json:"updated_at"`
	ClearedAt int64              `json:"cleared_at,omitempty"`
	// Group is the collector group that published the event (set on
	// publication; absent from collectors before it was added): a history
	// sink keeps only its own group's (docs/history.md).
	Group string `json:"group,omitempty"`
}

// Active reports whether the alert is raised and not cleared.
func (a *Alert) Active() bool { return a.State != Cleared }

// MakeKey builds the condition key "<site>.<asset>.<rule>[.<signal>]". Every
// part is a subject token, so the key is also a valid JetStream KV key.
func MakeKey(site, asset, rule, signal string) string {
	k := site + "." + asset + "." + rule
	if signal != "" {
		k += "." + signal
	}
	return k
}

// MakeID builds an occurrence id from a key and the raise time.
func MakeID(key string, raisedAt int64) string { return key + "@" + strconv.FormatInt(raisedAt, 10) }

// Latch debounces a condition into state changes. Step is fed the target
// severity the condition asks for now; the latch moves to it only after the
// target has held for the on delay (raising or escalating) or the off delay
// (lowering or clearing). The zero Latch is clear.
type Latch struct {
	Level   Severity // current state
	pending Severity
	since   int64 // when the current move towards pending started; 0 = none
	dir     int8
	Raised  int64 // raise time of the active occurrence
	prev    int64 // raise time of the newest occurrence, active or not
}

// Step feeds the target at time ts (ms) and reports whether Level changed.
func (l *Latch) Step(target Severity, ts, onDelay, offDelay int64) bool {
	if target == l.Level {
		l.since, l.dir = 0, 0
		return false
	}
	dir := int8(1)
	delay := onDelay
	if target < l.Level {
		dir, delay = -1, offDelay
	}
	if l.dir != dir || l.since == 0 {
		l.dir, l.since = dir, ts
	}
	l.pending = target
	if ts-l.since < delay {
		return false
	}
	if l.Level == None {
		// a new occurrence is raised after the previous one's raise: its
		// id (key@raised_at) would otherwise be the previous one's when
		// both were raised and cleared within one ms of data time (a
		// backlog's times set to its arrival), and their messages would
		// share a Nats-Msg-Id (review12 F4)
		l.Raised = ts
		if l.Raised <= l.prev {
			l.Raised = l.prev + 1
		}
		l.prev = l.Raised
	}
	l.Level = target
	l.since, l.dir = 0, 0
	return true
}

// At returns the time to give a change of the latch's active occurrence
// that happens at ts (Unix ms): ts, or the occurrence's raise time when ts
// is before it. An alert is raised on the clock of what raised it (a
// batch's ts_gw, a death's, the collector's clock for a silence) and may
// be lowered or cleared by data on another (a gateway's backlog after an
// uplink outage, replayed oldest first, carries ts_gw before a silence
// raised during the outage): cleared_at and updated_at are never before
// raised_at. A clear latch returns ts.
func (l *Latch) At(ts int64) int64 {
	if l.Level != None && ts < l.Raised {
		return l.Raised
	}
	return ts
}

// Restore sets the latch to an active level without an event, used when the
// alert state is reloaded after a restart.
func (l *Latch) Restore(level Severity, raised int64) {
	l.Level, l.Raised, l.since, l.dir = level, raised, 0, 0
	l.prev = max(l.prev, raised)
}

// LatchState is the persisted form of a Latch (JetStream KV checkpoint): the
// level, the pending move and when it started, so an on/off delay that was
// running when a collector stopped keeps running in the one that takes over.
type LatchState struct {
	Level   Severity `json:"l,omitempty"`
	Pending Severity `json:"p,omitempty"`
	Since   int64    `json:"s,omitempty"` // ms; 0: no move in progress
	Dir     int8     `json:"d,omitempty"`
	Raised  int64    `json:"r,omitempty"` // raise time of the active occurrence, ms
}

// State returns the latch's persisted form.
func (l *Latch) State() LatchState {
	return LatchState{Level: l.Level, Pending: l.pending, Since: l.since, Dir: l.dir, Raised: l.Raised}
}

// SetState restores a latch from its persisted form, without an event.
func (l *Latch) SetState(s LatchState) {
	l.Level, l.pending, l.since, l.dir, l.Raised = s.Level, s.Pending, s.Since, s.Dir, s.Raised
}

// Zero reports whether the latch is clear with no move in progress (nothing
// worth persisting).
func (l *Latch) Zero() bool { return l.Level == None && l.since == 0 }

// Idle reports whether the latch is clear and no move is under way, so that
// Step(None, ...) would change nothing in it: a caller that knows its
// target is None may skip that Step.
func (l *Latch) Idle() bool { return l.Level == None && l.since == 0 && l.dir == 0 }

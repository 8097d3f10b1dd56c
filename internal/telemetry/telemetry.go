// Package telemetry is Smelter's normalized data model: the batch of readings
// one asset produced in one acquisition cycle, its birth and death notices,
// and the subject layout they travel on. It is the contract between the
// gateway and everything downstream; docs/schema.md documents it.
//
// The package depends on the standard library only.
package telemetry

import (
	"errors"
	"fmt"
)

// Schema identifiers. A consumer accepts every message whose schema has the
// prefix it knows ("smelter.telemetry/") and the major version it supports.
const (
	SchemaTelemetry = "smelter.telemetry/1"
	SchemaBirth     = "smelter.birth/1"
	SchemaDeath     = "smelter.death/1"
	SchemaStatus    = "smelter.status/1"
)

// Quality says how far a reading can be trusted. The raw protocol code is kept
// in Reading.Status.
type Quality uint8

// Qualities, in order of decreasing trust.
const (
	QualityGood Quality = iota
	QualityUncertain
	QualityBad
	QualityStale
)

var qualityNames = [...]string{"good", "uncertain", "bad", "stale"}

// String returns the wire name of q.
func (q Quality) String() string {
	if int(q) < len(qualityNames) {
		return qualityNames[q]
	}
	return fmt.Sprintf("quality(%d)", uint8(q))
}

// HasValue reports whether a reading of quality q carries a value.
// Bad and stale readings never do: a bad read is never replaced by a last
// good value.
func (q Quality) HasValue() bool { return q <= QualityUncertain }

// ParseQuality parses a wire name.
func ParseQuality(s string) (Quality, error) {
	for i, n := range qualityNames {
		if n == s {
			return Quality(i), nil
		}
	}
	return 0, fmt.Errorf("unknown quality %q (want good, uncertain, bad or stale)", s)
}

// Asset identifies the equipment a batch belongs to.
type Asset struct {
	ID    string   // unique per site, a subject token
	Class string   // equipment class from the catalog, e.g. "air_compressor"
	Path  []string // ISA-95 path: enterprise, site, area, line, cell ("_" where unused)
}

// Site returns the site token of the asset path ("_" when the path is short).
func (a Asset) Site() string {
	if len(a.Path) > 1 && a.Path[1] != "" {
		return a.Path[1]
	}
	return "_"
}

// Reading is one normalized value of one signal.
//
// The fields are ordered so that the small ones share a word: 88 bytes,
// not 104 (a gateway holds a cycle's readings per device in flight: 20
// devices of 1,000 nodes ~1.8 MB; issue 17).
type Reading struct {
	Signal  string  // canonical signal name from the catalog
	Text    string  // enum label or string value; empty when none
	Unit    string  // UCUM code of the canonical unit ("" for dimensionless counts and states)
	Src     string  // where the value came from, e.g. "modbus:3:hr:40001"
	Value   float64 // in Unit; meaningful only when HasValue()
	TS      int64   // source time, Unix ms UTC
	Status  uint32  // raw protocol code (OPC UA StatusCode, Modbus exception, see docs/schema.md)
	Quality Quality
	NoValue bool // set for text-only readings (string data types)
}

// HasValue reports whether the reading carries a numeric value.
func (r *Reading) HasValue() bool { return r.Quality.HasValue() && !r.NoValue }

// Batch is every reading one asset produced in one acquisition cycle.
type Batch struct {
	Gateway    string
	Seq        uint64 // per gateway, monotonic, persisted across restarts
	Asset      Asset
	TSGW       int64 // gateway time, Unix ms UTC
	Historical bool  // replayed from the spool behind live data
	// Part and Parts are set when the batch was split to fit a broker's
	// message size limit: part Part (1-based) of Parts messages that carry
	// the same gateway, seq, asset and ts_gw and together hold the
	// readings, in order. Both are 0 for a whole batch. See Split.
	Part, Parts int
	Readings    []Reading
}

// Follows reports whether b comes after the message (gateway, seq) in its
// gateway's sequence: the same gateway, both numbered (seq 0 has no place
// in the sequence) and b's seq above seq. seq orders one gateway's
// messages whatever their ts_gw (docs/schema.md), so such a batch is the
// gateway's newest even when dated before the other: its clock stepped
// back (NTP correcting a fast clock, an RTC-less box restoring a saved
// time). The one rule the collector's rules (an asset's time order) and
// its dashboard (a gateway's data clock) both follow.
func (b *Batch) Follows(gateway string, seq uint64) bool {
	return b.Seq != 0 && seq != 0 && b.Gateway == gateway && b.Seq > seq
}

// MsgID is the deduplication identity of the batch: "<gateway>-<seq>", and
// for a part of a split batch "<gateway>-<seq>-p<part>of<parts>".
func (b *Batch) MsgID() string {
	if b.Parts > 0 {
		return PartMsgID(b.Gateway, b.Seq, b.Part, b.Parts)
	}
	return MsgID(b.Gateway, b.Seq)
}

// MsgID formats a deduplication identity.
func MsgID(gateway string, seq uint64) string {
	return gateway + "-" + itoa(seq)
}

// PartMsgID formats the deduplication identity of part (1-based) of parts
// of a split batch: "<gateway>-<seq>-p<part>of<parts>". The count is part of
// the identity, so parts of two different splits of one batch (after the
// broker's limit changed) are never taken for each other.
func PartMsgID(gateway string, seq uint64, part, parts int) string {
	return MsgID(gateway, seq) + "-p" + itoa(uint64(part)) + "of" + itoa(uint64(parts))
}

func itoa(u uint64) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	return string(buf[i:])
}

// SignalInfo describes one signal of an asset in its birth notice.
type SignalInfo struct {
	Signal     string   `json:"signal"`
	Unit       string   `json:"unit,omitempty"`
	Min        *float64 `json:"min,omitempty"`
	Max        *float64 `json:"max,omitempty"`
	IntervalMS int64    `json:"interval_ms,omitempty"`
	Src        string   `json:"src,omitempty"`
	Enum       []string `json:"enum,omitempty"` // labels for state signals, index = value
	// Write is set when commands may write the signal (docs/commands.md):
	// the limits the gateway enforces, in the canonical unit (Unit). Absent
	// on read-only signals and in births of gateways before it existed.
	Write *WriteLimits `json:"write,omitempty"`
}

// WriteLimits are a writable signal's command limits, as the gateway
// enforces them: Min/Max (canonical units) for a numeric signal, Allowed
// (state labels) for a state signal; MaxStep is the largest change of one
// command from the value read before writing (0: none), MinIntervalMS the
// least time between two writes in ms (0: none).
type WriteLimits struct {
	Min           *float64 `json:"min,omitempty"`
	Max           *float64 `json:"max,omitempty"`
	Allowed       []string `json:"allowed,omitempty"`
	MaxStep       float64  `json:"max_step,omitempty"`
	MinIntervalMS int64    `json:"min_interval_ms,omitempty"`
}

// Birth announces an asset: its signals, units, ranges and nameplate ratings.
// It is published when the gateway starts and whenever the asset's
// configuration changes.
type Birth struct {
	Schema    string             `json:"schema"`
	Gateway   string             `json:"gateway"`
	Seq       uint64             `json:"seq,omitempty"`
	Asset     AssetJSON          `json:"asset"`
	TSGW      int64              `json:"ts_gw"`
	Signals   []SignalInfo       `json:"signals"`
	Nameplate map[string]float64 `json:"nameplate,omitempty"`
	Protocol  string             `json:"protocol,omitempty"`
	// Part and Parts are set when the birth was split to fit a broker's
	// message size limit: part Part (1-based) of Parts, each with the same
	// header and nameplate and a share of the signals. See SplitBirth and
	// MergeBirth.
	Part  int `json:"part,omitempty"`
	Parts int `json:"parts,omitempty"`
}

// Death says an asset stopped answering (or the gateway stopped polling it).
type Death struct {
	Schema  string    `json:"schema"`
	Gateway string    `json:"gateway"`
	Seq     uint64    `json:"seq,omitempty"`
	Asset   AssetJSON `json:"asset"`
	TSGW    int64     `json:"ts_gw"`
	Reason  string    `json:"reason"`
}

// Status is the gateway's own online/offline notice (the MQTT LWT payload).
type Status struct {
	Schema  string `json:"schema"`
	Gateway string `json:"gateway"`
	Seq     uint64 `json:"seq,omitempty"` // set when the notice went through the spool
	Online  bool   `json:"online"`
	TSGW    int64  `json:"ts_gw"`
}

// AssetJSON is the wire form of Asset.
type AssetJSON struct {
	ID    string   `json:"id"`
	Class string   `json:"class"`
	Path  []string `json:"path,omitempty"`
}

// ToJSON converts an Asset to its wire form.
func (a Asset) ToJSON() AssetJSON { return AssetJSON(a) }

// FromJSON converts the wire form back.
func (a AssetJSON) FromJSON() Asset { return Asset(a) }

// Validation errors; use errors.Is.
var (
	ErrSchema  = errors.New("unsupported schema")
	ErrInvalid = errors.New("invalid message")
)

// ValidToken reports whether s can be a subject token: 1-64 characters of
// letters, digits, '_' and '-' (`^[A-Za-z0-9_-]{1,64}$`; a loop, not a
// regexp: every batch checks several tokens). Such tokens are safe in NATS
// subjects and MQTT topics alike.
func ValidToken(s string) bool { return len(s) <= 64 && tokenChars(s) }

// Validate checks the invariants every consumer relies on.
func (b *Batch) Validate() error {
	switch {
	case !ValidToken(b.Gateway):
		return fmt.Errorf("%w: gateway %q is not a valid token", ErrInvalid, b.Gateway)
	case !ValidToken(b.Asset.ID):
		return fmt.Errorf("%w: asset.id %q is not a valid token", ErrInvalid, b.Asset.ID)
	case !ValidToken(b.Asset.Class):
		return fmt.Errorf("%w: asset.class %q is not a valid token", ErrInvalid, b.Asset.Class)
	case b.TSGW <= 0:
		return fmt.Errorf("%w: ts_gw must be positive", ErrInvalid)
	case b.Parts < 0 || b.Parts > MaxParts:
		return fmt.Errorf("%w: parts %d is outside 0..%d", ErrInvalid, b.Parts, MaxParts)
	case b.Parts == 0 && b.Part != 0:
		return fmt.Errorf("%w: part %d without parts", ErrInvalid, b.Part)
	case b.Parts > 0 && (b.Part < 1 || b.Part > b.Parts):
		return fmt.Errorf("%w: part %d is outside 1..%d", ErrInvalid, b.Part, b.Parts)
	}
	for i := range b.Readings {
		r := &b.Readings[i]
		if r.Signal == "" {
			return fmt.Errorf("%w: readings[%d].signal is empty", ErrInvalid, i)
		}
		if r.Quality > QualityStale {
			return fmt.Errorf("%w: readings[%d].quality %d out of range", ErrInvalid, i, r.Quality)
		}
		if r.HasValue() && (r.Value != r.Value || r.Value > maxFinite || r.Value < -maxFinite) {
			return fmt.Errorf("%w: readings[%d].value is not finite", ErrInvalid, i)
		}
	}
	return nil
}

const maxFinite = 1.7976931348623157e308

// MaxParts bounds how many parts one batch may be split into.
const MaxParts = 1 << 20

// Envelope is one message ready for a broker: the NATS subject (MQTT topics
// mirror it with '/'), the deduplication id (JetStream Nats-Msg-Id) and the
// encoded payload. Retained marks status messages MQTT should retain.
type Envelope struct {
	Subject  string
	MsgID    string
	Data     []byte
	Retained bool
}

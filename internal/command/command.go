// Package command is the wire format of Smelter commands (docs/commands.md):
// a signed request to write one signal of one asset, its canonical signed
// encoding, its verification against trusted NATS NKeys (Ed25519), the
// result the gateway answers, and a bounded, persisted record of recent
// command ids that makes commands idempotent across restarts.
//
// It is shared by the edge (smelter-gateway verifies and executes) and by
// whatever sends commands (smelter-gateway command today, the collector
// later): it imports no driver or uplink; Send is the one use of a NATS
// connection.
package command

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
)

// Schema is the schema tag of a command.
const Schema = "smelter.command/1"

// ResultSchema is the schema tag of a command's result (the reply and the
// audit records).
const ResultSchema = "smelter.command-result/1"

// Command is one request to write a value to one signal of one asset, as
// sent on smelter.v1.<site>.<class>.<asset>.cmd. Asset names the target as
// "<site>.<class>.<asset>" (the subject's three tokens): it is signed, so a
// command cannot be moved to another asset or site.
type Command struct {
	Schema    string    `json:"schema"`
	ID        string    `json:"id"`        // unique per command; retries reuse it
	Asset     string    `json:"asset"`     // <site>.<class>.<asset>
	Signal    string    `json:"signal"`    // catalog signal
	Value     Value     `json:"value"`     // a number, or a state label
	Unit      string    `json:"unit"`      // UCUM unit of a number ("" = the signal's canonical unit)
	Requester string    `json:"requester"` // who asks (person or service), for the audit
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Signature string    `json:"signature"` // base64url (no padding) Ed25519 signature of Canonical()
}

// Value is a command's value: a number or a state label.
type Value struct {
	Num     float64
	Label   string
	IsLabel bool
}

// Num returns a numeric value.
func Num(v float64) Value { return Value{Num: v} }

// Label returns a state label value.
func Label(s string) Value { return Value{Label: s, IsLabel: true} }

// MarshalJSON writes a number or a string.
func (v Value) MarshalJSON() ([]byte, error) {
	if v.IsLabel {
		return json.Marshal(v.Label)
	}
	if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
		return nil, fmt.Errorf("command value %v is not a finite number", v.Num)
	}
	return strconv.AppendFloat(nil, v.Num, 'g', -1, 64), nil
}

// UnmarshalJSON reads a number or a string.
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = Label(s)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("value: want a number or a state label: %w", err)
	}
	*v = Num(f)
	return nil
}

// String formats the value for logs and the audit.
func (v Value) String() string {
	if v.IsLabel {
		return v.Label
	}
	return strconv.FormatFloat(v.Num, 'g', -1, 64)
}

// Errors of Decode and Verify.
var (
	ErrInvalid   = errors.New("invalid command")
	ErrUnsigned  = errors.New("command is not signed")
	ErrSignature = errors.New("signature does not verify with any trusted key")
)

// Size limits of a command (docs/commands.md, "Wire format"): what an
// unsigned sender can make the gateway store in the audit stream, log and
// answer is bounded by them.
const (
	MaxRequestBytes = 4096 // the whole request, JSON
	MaxID           = 128
	MaxAsset        = 200
	MaxSignal       = 64
	MaxUnit         = 32
	MaxRequester    = 128
	MaxLabel        = 64
	MaxSignature    = 128
)

// Decode parses a command strictly (unknown fields are errors) and checks
// its shape: at most MaxRequestBytes, schema, id (1..MaxID printable
// characters), asset with three tokens, signal, unit, requester and label
// within their limits, issued_at and expires_at set and ordered. Errors
// wrap ErrInvalid and quote no more than 64 bytes of what was sent; the
// command returned beside a check error has its fields clipped to their
// limits (for the audit), nil when it does not parse.
func Decode(data []byte) (*Command, error) {
	if len(data) > MaxRequestBytes {
		return nil, fmt.Errorf("%w: request of %d bytes exceeds %d (sha256 %s)", ErrInvalid, len(data), MaxRequestBytes, Digest(data))
	}
	var c Command
	if err := DecodeJSON(data, &c); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, Clip(err.Error(), 200))
	}
	if err := c.check(); err != nil {
		c.clip()
		return &c, err
	}
	return &c, nil
}

// DecodeJSON decodes data as exactly one JSON value into v: unknown
// fields and anything but white space after the value are errors.
func DecodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// clip cuts every free-text field to its limit.
func (c *Command) clip() {
	c.Schema, c.ID, c.Asset = Clip(c.Schema, 32), Clip(c.ID, MaxID), Clip(c.Asset, MaxAsset)
	c.Signal, c.Unit, c.Requester = Clip(c.Signal, MaxSignal), Clip(c.Unit, MaxUnit), Clip(c.Requester, MaxRequester)
	c.Value.Label, c.Signature = Clip(c.Value.Label, MaxLabel), Clip(c.Signature, MaxSignature)
}

// Clip cuts s to at most n bytes (at a rune start), marking a cut with
// "…", for records, messages and logs of untrusted text.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// Digest is the first 16 hex digits of data's SHA-256: names an oversized
// request in the audit without storing it.
func Digest(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:8])
}

func (c *Command) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Schema != Schema:
		return bad("schema %q, want %q", Clip(c.Schema, 32), Schema)
	case c.ID == "" || len(c.ID) > MaxID || strings.ContainsFunc(c.ID, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return bad("id must be 1..%d printable characters without spaces", MaxID)
	case len(c.Asset) > MaxAsset || len(strings.Split(c.Asset, ".")) != 3:
		return bad("asset %q is not <site>.<class>.<asset> (at most %d bytes)", Clip(c.Asset, 64), MaxAsset)
	case c.Signal == "":
		return bad("signal missing")
	case len(c.Signal) > MaxSignal:
		return bad("signal longer than %d bytes", MaxSignal)
	case len(c.Unit) > MaxUnit:
		return bad("unit longer than %d bytes", MaxUnit)
	case c.Requester == "":
		return bad("requester missing")
	case len(c.Requester) > MaxRequester:
		return bad("requester longer than %d bytes", MaxRequester)
	case len(c.Value.Label) > MaxLabel:
		return bad("state label longer than %d bytes", MaxLabel)
	case len(c.Signature) > MaxSignature:
		return bad("signature longer than %d characters", MaxSignature)
	case c.IssuedAt.IsZero() || c.ExpiresAt.IsZero():
		return bad("issued_at and expires_at are required")
	case !c.ExpiresAt.After(c.IssuedAt):
		return bad("expires_at %s is not after issued_at %s", c.ExpiresAt.Format(time.RFC3339Nano), c.IssuedAt.Format(time.RFC3339Nano))
	case !c.Value.IsLabel && (math.IsNaN(c.Value.Num) || math.IsInf(c.Value.Num, 0)):
		return bad("value is not a finite number")
	}
	return nil
}

// Canonical returns the bytes a command's signature covers: every field but
// the signature, in a fixed order, each as <length>:<bytes>; (netstring
// style, so no field can spill into the next): schema, id, asset, signal,
// value ("n:" and the shortest decimal that round-trips, or "s:" and the
// label), unit, requester, issued_at and expires_at (CanonicalTime: UTC,
// nine fraction digits, trailing zeros kept).
func (c *Command) Canonical() []byte {
	var b []byte
	field := func(s string) {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
		b = append(b, ';')
	}
	field(c.Schema)
	field(c.ID)
	field(c.Asset)
	field(c.Signal)
	if c.Value.IsLabel {
		field("s:" + c.Value.Label)
	} else {
		field("n:" + strconv.FormatFloat(c.Value.Num, 'g', -1, 64))
	}
	field(c.Unit)
	field(c.Requester)
	field(c.IssuedAt.UTC().Format(CanonicalTime))
	field(c.ExpiresAt.UTC().Format(CanonicalTime))
	return b
}

// CanonicalTime is the layout of issued_at and expires_at in the canonical
// encoding: UTC, always nine fraction digits (trailing zeros kept), "Z".
const CanonicalTime = "2006-01-02T15:04:05.000000000Z"

// Sign signs the command with kp (a user nkey made from its seed) and sets
// Signature.
func (c *Command) Sign(kp nkeys.KeyPair) error {
	sig, err := kp.Sign(c.Canonical())
	if err != nil {
		return fmt.Errorf("sign command: %w", err)
	}
	c.Signature = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// Verify checks the signature against the trusted public keys and returns
// the key that signed. ErrUnsigned: no signature; ErrSignature: none of the
// keys verifies it (an empty trusted list verifies nothing).
func (c *Command) Verify(trusted []nkeys.KeyPair) (string, error) {
	if c.Signature == "" {
		return "", ErrUnsigned
	}
	sig, err := base64.RawURLEncoding.DecodeString(c.Signature)
	if err != nil {
		return "", fmt.Errorf("%w: signature is not base64url: %w", ErrSignature, err)
	}
	data := c.Canonical()
	for _, k := range trusted {
		if k.Verify(data, sig) == nil {
			pub, err := k.PublicKey()
			if err != nil {
				return "", fmt.Errorf("trusted key: %w", err)
			}
			return pub, nil
		}
	}
	return "", ErrSignature
}

// Verdict is where a command ended (or stands, in the audit).
type Verdict string

// Verdicts. The reply carries the final one; the audit stream records
// "received" at first contact, "accepted" before a write, then the outcome.
const (
	Received Verdict = "received" // first contact, before any check (audit only)
	Accepted Verdict = "accepted" // checks passed; about to write (audit only)
	Rejected Verdict = "rejected" // refused before anything was written (Reason)
	Written  Verdict = "written"  // the device took the write, the read-back differs or failed (Reason)
	Verified Verdict = "verified" // written and read back equal within the point's precision
	Failed   Verdict = "failed"   // the write failed: device exception (Code) or no answer (Reason)
)

// Result is the gateway's answer to a command and one record of the audit
// stream. Values are in the signal's canonical unit (Unit).
type Result struct {
	Schema    string  `json:"schema"`
	ID        string  `json:"id"`
	Gateway   string  `json:"gateway"`
	Asset     string  `json:"asset"`
	Signal    string  `json:"signal"`
	Requester string  `json:"requester,omitempty"`
	Signer    string  `json:"signer,omitempty"` // public key that signed, when verified
	Verdict   Verdict `json:"verdict"`
	Reason    string  `json:"reason,omitempty"`
	// Code is the device's exception code (Modbus 1..255) of a failed
	// write, Status the driver's full status (docs/schema.md).
	Code   int    `json:"code,omitempty"`
	Status uint32 `json:"status,omitempty"`
	// Requested: the command's value as sent (with RequestedUnit).
	Requested     string   `json:"requested,omitempty"`
	RequestedUnit string   `json:"requested_unit,omitempty"`
	Unit          string   `json:"unit,omitempty"`
	Old           *float64 `json:"old,omitempty"` // read just before writing
	// New is the value the device holds after the write (verified,
	// written), the value about to be written in an accepted record; a
	// failed or rejected record has none: Target is what was asked.
	New *float64 `json:"new,omitempty"`
	// Target is the requested value in the canonical unit, as the gateway
	// would write it, in failed records (the device's value is unknown,
	// or it refused it) and rejected ones past the limit checks.
	Target   *float64 `json:"target,omitempty"`
	ReadBack *float64 `json:"read_back,omitempty"` // read after writing
	OldLabel string   `json:"old_label,omitempty"` // state signals
	NewLabel string   `json:"new_label,omitempty"`
	// Duplicate: the id was seen before; this is the earlier outcome and
	// nothing was written again.
	Duplicate bool      `json:"duplicate,omitempty"`
	IssuedAt  time.Time `json:"issued_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	At        time.Time `json:"at"` // when the gateway reached this verdict
}

// OutcomeUnknown starts the reason of a failed write whose request may
// have reached the device: its reply was lost, timed out, could not be
// tied to the request, or the gateway stopped before it came. The device
// may hold the new value: read the point before sending a new command.
const OutcomeUnknown = "outcome unknown"

// Final reports whether v ends a command (everything but Received and
// Accepted).
func (v Verdict) Final() bool { return v != Accepted && v != Received }

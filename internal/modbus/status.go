package modbus

import (
	"errors"
	"strconv"
)

// Status is the outcome of one Modbus read, published as a reading's status
// (sample.Sample.Status, telemetry.Reading.Status). It is an error: match it
// with errors.Is(err, StatusTimeout), errors.Is(err, Status(2)) or
// errors.Is(err, StatusQuarantined), as gopcua's ua.StatusCode.
//
// Layout (docs/schema.md, "Modbus status codes"):
//
//	bits 0-15   the code: 0 good; 1..255 a Modbus exception code exactly as
//	            the device sent it; 0x100.. the gateway's own conditions below
//	bit 16      FlagQuarantined (0x10000): the address is quarantined after
//	            an exception; the low byte keeps the last exception code
type Status uint32

// Codes. Exception codes (1 illegal function, 2 illegal data address, 3
// illegal data value, 4 server device failure, 5 acknowledge, 6 busy, 8
// memory parity error, 10 gateway path unavailable, 11 gateway target failed
// to respond) are Status(code).
const (
	StatusGood Status = 0

	// StatusTimeout: no complete reply within the timeout, or the device is
	// backing off after timeouts. Silence.
	StatusTimeout Status = 0x100
	// StatusConnection: connect failed, connection lost, or reconnect
	// backoff in progress. Silence.
	StatusConnection Status = 0x101
	// StatusFraming: a malformed or incomplete reply (unknown function code,
	// bad MBAP header, not hex, missing CR LF, frame cut short, a line that
	// never falls quiet).
	StatusFraming Status = 0x102
	// StatusBadLength: the reply's byte count is not what the request asked
	// for (ReplyError gives both).
	StatusBadLength Status = 0x103
	// 0x104 was "quarantined" before the quarantine became FlagQuarantined;
	// it is no longer produced.

	// StatusNotFinite: a float register holds NaN or ±Inf.
	StatusNotFinite Status = 0x105
	// StatusCanceled: the read's context ended first.
	StatusCanceled Status = 0x106
	// StatusTransactionMismatch: a Modbus TCP reply carries another
	// transaction id than the request (ReplyError gives both).
	StatusTransactionMismatch Status = 0x107
	// StatusWrongUnit: the reply comes from another unit than the one asked
	// (ReplyError gives both).
	StatusWrongUnit Status = 0x108
	// StatusWrongFunction: the reply's function code is not the request's
	// (ReplyError gives both).
	StatusWrongFunction Status = 0x109
	// StatusChecksum: the reply's CRC (RTU) or LRC (ASCII) is wrong
	// (ReplyError gives the received and the computed value).
	StatusChecksum Status = 0x10A
	// StatusBadEcho: a write reply (FC5, 6, 15, 16, 22) does not echo the
	// request's address, value or quantity (ReplyError.Detail gives both).
	StatusBadEcho Status = 0x10B
	// StatusUntied: the device's answers of this cycle cannot be tied to
	// their requests: on an RTU or ASCII line a frame came during the cycle
	// that proves a reply was not its request's (a second frame after an
	// accepted reply, a frame from the asked unit with the wrong function or
	// byte count): another master on the line, an echoing link or
	// converter, or a unit answering an earlier request. Every answer of the
	// cycle is discarded. Silence.
	StatusUntied Status = 0x10C

	// StatusQuarantined is the flag bit (0x10000) of a quarantined
	// address; the low byte keeps the address's last exception code, so a
	// point quarantined after "illegal data address" reports 0x10002.
	// errors.Is(s, StatusQuarantined) tests the flag.
	StatusQuarantined Status = FlagQuarantined

	// FlagQuarantined is the quarantine flag bit of a Status.
	FlagQuarantined = 0x10000

	codeMask = 0xFFFF
)

// Code returns s without its flags.
func (s Status) Code() Status { return s & codeMask }

// Exception returns the Modbus exception code carried by s (with or without
// the quarantine flag), and whether there is one.
func (s Status) Exception() (uint8, bool) {
	c := s.Code()
	if c >= 1 && c <= 0xFF {
		return uint8(c), true
	}
	return 0, false
}

// Quarantined reports whether the quarantine flag is set.
func (s Status) Quarantined() bool { return s&FlagQuarantined != 0 }

// Is makes errors.Is(s, target) true when target is s, when target is s's
// code without flags (errors.Is(0x10002, Status(2))), and for the
// StatusQuarantined flag on any quarantined status.
func (s Status) Is(target error) bool {
	t, ok := target.(Status)
	if !ok {
		return false
	}
	switch {
	case t == s:
		return true
	case t == StatusQuarantined:
		return s.Quarantined()
	case t&^codeMask == 0:
		return s.Code() == t && s != StatusGood
	}
	return false
}

// Silent reports whether s means the device said nothing this cycle (its
// samples are Bad + Silent): a timeout, a connection failure, a reply that
// cannot be tied to the request (wrong transaction id, unit, function, byte
// count, checksum, malformed), or exception 10 or 11, a Modbus gateway
// saying that its target is unreachable or did not respond (TargetSilent).
// Any other exception, a quarantined address and a non-finite value are
// answers.
func (s Status) Silent() bool {
	if _, ok := s.Exception(); ok {
		return s.TargetSilent()
	}
	return s != StatusGood && s != StatusNotFinite
}

// TargetSilent reports whether s is exception 10 (gateway path unavailable)
// or 11 (gateway target device failed to respond), with or without the
// quarantine flag: the reply comes from a Modbus gateway (a TCP-to-RTU
// converter), not from the device, and says the device was not heard
// (MODBUS Application Protocol Specification V1.1b3, section 7). The
// gateway is alive; the device is silent.
func (s Status) TargetSilent() bool {
	c, ok := s.Exception()
	return ok && (c == 10 || c == 11)
}

var exceptionNames = [...]string{1: "illegal function", 2: "illegal data address", 3: "illegal data value",
	4: "server device failure", 5: "acknowledge", 6: "server device busy", 8: "memory parity error",
	10: "gateway path unavailable", 11: "gateway target device failed to respond"}

var codeText = map[Status]string{
	StatusGood:                "good",
	StatusTimeout:             "timeout",
	StatusConnection:          "connection failure",
	StatusFraming:             "malformed reply",
	StatusBadLength:           "wrong byte count",
	StatusNotFinite:           "value is NaN or infinite",
	StatusCanceled:            "read canceled",
	StatusTransactionMismatch: "transaction id mismatch",
	StatusWrongUnit:           "reply from the wrong unit",
	StatusWrongFunction:       "wrong function code in reply",
	StatusChecksum:            "checksum mismatch",
	StatusBadEcho:             "write reply does not echo the request",
	StatusUntied:              "reply could not be tied to its request",
}

// Error returns "modbus: timeout", "modbus: exception 2 (illegal data
// address)", "modbus: exception 2 (illegal data address), address quarantined".
func (s Status) Error() string {
	var msg string
	if code, ok := s.Exception(); ok {
		name := "unknown exception"
		if int(code) < len(exceptionNames) && exceptionNames[code] != "" {
			name = exceptionNames[code]
		}
		msg = "modbus: exception " + strconv.Itoa(int(code)) + " (" + name + ")"
	} else if t, ok := codeText[s.Code()]; ok {
		msg = "modbus: " + t
	} else {
		msg = "modbus: status 0x" + strconv.FormatUint(uint64(s.Code()), 16)
	}
	if s.Quarantined() {
		msg += ", address quarantined"
	}
	return msg
}

// Kind is the error-kind label of s in smelter_modbus_errors_total and
// smelter_modbus_requests_total: ok, exception, timeout, connection,
// framing, bad_length, not_finite, canceled, transaction_mismatch,
// wrong_unit, wrong_function, checksum, bad_echo, untied.
func (s Status) Kind() string { return kindNames[s.kind()] }

// kind is s's index into kindNames.
func (s Status) kind() int {
	if _, ok := s.Exception(); ok {
		return kindException
	}
	switch s.Code() {
	case StatusGood:
		return kindOK
	case StatusTimeout:
		return kindTimeout
	case StatusConnection:
		return kindConnection
	case StatusBadLength:
		return kindBadLength
	case StatusNotFinite:
		return kindNotFinite
	case StatusCanceled:
		return kindCanceled
	case StatusTransactionMismatch:
		return kindTransaction
	case StatusWrongUnit:
		return kindWrongUnit
	case StatusWrongFunction:
		return kindWrongFunction
	case StatusChecksum:
		return kindChecksum
	case StatusBadEcho:
		return kindBadEcho
	case StatusUntied:
		return kindUntied
	}
	return kindFraming
}

const (
	kindOK = iota
	kindException
	kindTimeout
	kindConnection
	kindFraming
	kindBadLength
	kindNotFinite
	kindCanceled
	kindTransaction
	kindWrongUnit
	kindWrongFunction
	kindChecksum
	kindBadEcho
	kindUntied
	kindCount
)

var kindNames = [kindCount]string{"ok", "exception", "timeout", "connection", "framing", "bad_length", "not_finite",
	"canceled", "transaction_mismatch", "wrong_unit", "wrong_function", "checksum", "bad_echo", "untied"}

// StatusOf returns the Status carried by err: StatusGood for nil, the Status
// in err's chain, StatusCanceled for a context error, otherwise
// StatusConnection.
func StatusOf(err error) Status {
	if err == nil {
		return StatusGood
	}
	var s Status
	if errors.As(err, &s) {
		return s
	}
	return StatusConnection
}

// ReplyError is a reply that cannot be the answer to the request: a wrong
// transaction id, unit, function code, byte count or checksum, or a
// malformed frame. Status says which; Want and Got are the request's and the
// reply's values (transaction ids, units, function codes, byte counts, or
// the computed and received checksum). errors.Is(err, StatusWrongUnit) works
// through Unwrap.
type ReplyError struct {
	Status Status
	Want   int
	Got    int
	Detail string // for StatusFraming: what was malformed
}

func (e *ReplyError) Error() string {
	switch e.Status {
	case StatusTransactionMismatch:
		return "modbus: transaction id mismatch: reply " + strconv.Itoa(e.Got) + " to request " + strconv.Itoa(e.Want)
	case StatusWrongUnit:
		return "modbus: reply from unit " + strconv.Itoa(e.Got) + " to a request for unit " + strconv.Itoa(e.Want)
	case StatusWrongFunction:
		return "modbus: reply function " + strconv.Itoa(e.Got) + " to request function " + strconv.Itoa(e.Want)
	case StatusBadLength:
		return "modbus: reply byte count " + strconv.Itoa(e.Got) + ", request wants " + strconv.Itoa(e.Want)
	case StatusBadEcho:
		return "modbus: write reply does not echo the request: " + e.Detail
	case StatusChecksum:
		return "modbus: checksum mismatch: received " + strconv.FormatUint(uint64(e.Got), 16) +
			", computed " + strconv.FormatUint(uint64(e.Want), 16)
	}
	if e.Detail != "" {
		return "modbus: malformed reply: " + e.Detail
	}
	return e.Status.Error()
}

// Unwrap returns e.Status.
func (e *ReplyError) Unwrap() error { return e.Status }

func malformed(detail string) error { return &ReplyError{Status: StatusFraming, Detail: detail} }

// Package nmea parses NMEA 0183 (IEC 61162-1) sentences of the navigation
// equipment on board a ship: RMC (GNSS position, speed and course over
// ground), VTG (course and speed over ground), VHW (heading and speed
// through water), HDT (true heading) and DPT (depth).
//
// A sentence is "$" + talker (2 characters, e.g. GP, GN, HE, VW, SD, II) +
// type (3 letters) + comma-separated fields + "*" + checksum (two hex
// digits, the XOR of every byte between "$" and "*") + CR LF. Parse checks
// the frame and the checksum; the typed decoders check every field they
// read. Errors are usable with errors.Is: ErrChecksum and ErrMalformed mark
// a bad sentence (the caller counts and skips it), ErrUnsupported a valid
// frame of a type this package does not decode (GGA, GSV, proprietary
// $P..., AIS !AIVDM), which a caller skips without counting it as bad.
//
// Parse, the decoders and Values are pure (no I/O, no state). Source is
// the gateway's acquisition of one NMEA device over TCP or UDP, and
// Driver (driver.go) its configuration block and points.
package nmea

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors of Parse and the decoders.
var (
	ErrChecksum    = errors.New("nmea: checksum mismatch")
	ErrMalformed   = errors.New("nmea: malformed sentence")
	ErrUnsupported = errors.New("nmea: unsupported sentence")
)

// MaxLen is the longest sentence Parse accepts, from "$" to the checksum
// without CR LF: NMEA 0183 (IEC 61162-1) allows 82 characters including
// CR LF. A device's nmea block may raise it (max_length) for a talker that
// does not conform.
const MaxLen = 80

// MaxLenLimit is the highest max_length a device may configure.
const MaxLenLimit = 1024

// Sentence is one framed sentence with a verified checksum.
type Sentence struct {
	Talker string   // GP, GN, HE, VW, SD, II ...
	Type   string   // RMC, VTG, VHW, HDT, DPT ...
	Fields []string // the data fields after the type, possibly empty strings
}

// Parse checks the frame of one sentence (leading "$", talker and type,
// "*hh" checksum; trailing CR/LF and surrounding spaces are ignored) and
// splits its fields. A missing checksum is malformed: IEC 61162-1 requires
// one on every sentence.
func Parse(line string) (Sentence, error) { return ParseMax(line, MaxLen) }

// ParseMax is Parse with another length limit (characters without CR LF);
// a longer line is ErrMalformed.
func ParseMax(line string, maxLen int) (Sentence, error) {
	line = strings.TrimRight(line, "\r\n ")
	line = strings.TrimLeft(line, " ")
	if len(line) > maxLen {
		return Sentence{}, fmt.Errorf("%w: %d characters, more than %d (NMEA 0183 allows 82 with CR LF)", ErrMalformed, len(line), maxLen)
	}
	if line == "" {
		return Sentence{}, fmt.Errorf("%w: empty line", ErrMalformed)
	}
	if line[0] == '!' {
		return Sentence{}, fmt.Errorf("%w: encapsulated sentence %.6q", ErrUnsupported, line)
	}
	if line[0] != '$' {
		return Sentence{}, fmt.Errorf("%w: does not start with $: %.12q", ErrMalformed, line)
	}
	star := strings.LastIndexByte(line, '*')
	if star < 0 {
		return Sentence{}, fmt.Errorf("%w: no checksum", ErrMalformed)
	}
	if len(line)-star != 3 {
		return Sentence{}, fmt.Errorf("%w: checksum %q is not two hex digits", ErrMalformed, line[star+1:])
	}
	want, err := strconv.ParseUint(line[star+1:], 16, 8)
	if err != nil {
		return Sentence{}, fmt.Errorf("%w: checksum %q is not two hex digits", ErrMalformed, line[star+1:])
	}
	body := line[1:star]
	var sum byte
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c < 0x20 || c > 0x7e || c == '$' || c == '*' || c == '!' {
			return Sentence{}, fmt.Errorf("%w: invalid character %q at %d", ErrMalformed, c, i+1)
		}
		sum ^= c
	}
	if sum != byte(want) {
		return Sentence{}, fmt.Errorf("%w: computed %02X, sentence says %02X", ErrChecksum, sum, want)
	}
	addr, rest, _ := strings.Cut(body, ",")
	if len(addr) > 0 && addr[0] == 'P' {
		return Sentence{}, fmt.Errorf("%w: proprietary sentence %s", ErrUnsupported, addr)
	}
	if len(addr) != 5 || !isAlnum(addr[:2]) || !isUpper(addr[2:]) {
		return Sentence{}, fmt.Errorf("%w: address field %q is not talker (2) + type (3)", ErrMalformed, addr)
	}
	s := Sentence{Talker: addr[:2], Type: addr[2:]}
	if strings.Contains(body, ",") {
		s.Fields = strings.Split(rest, ",")
	}
	return s, nil
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Opt is an optional number: NMEA leaves a field empty when the talker has
// no value for it.
type Opt struct {
	V  float64
	OK bool
}

// fields reads the fields of a sentence with the first error kept.
type fields struct {
	s   *Sentence
	err error
}

func (f *fields) fail(i int, format string, a ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("%w: %s%s field %d: %s", ErrMalformed, f.s.Talker, f.s.Type, i+1, fmt.Sprintf(format, a...))
	}
}

func (f *fields) str(i int) string {
	if i < len(f.s.Fields) {
		return f.s.Fields[i]
	}
	return ""
}

// num reads an optional decimal number in lo..hi.
func (f *fields) num(i int, lo, hi float64) Opt {
	v := f.str(i)
	if v == "" {
		return Opt{}
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || strings.ContainsAny(v, "eExXnNiI_") {
		f.fail(i, "%q is not a decimal number", v)
		return Opt{}
	}
	if x < lo || x > hi {
		f.fail(i, "%v outside %v..%v", x, lo, hi)
		return Opt{}
	}
	return Opt{V: x, OK: true}
}

// unit checks a unit or reference letter field: want, or empty when the
// value before it is empty.
func (f *fields) unit(i int, want string, valueOK bool) {
	v := f.str(i)
	if v == want || v == "" && !valueOK {
		return
	}
	f.fail(i, "%q, want %q", v, want)
}

// minFields requires at least n fields.
func (f *fields) minFields(n int) bool {
	if len(f.s.Fields) < n {
		f.fail(len(f.s.Fields), "%d fields, want at least %d", len(f.s.Fields), n)
		return false
	}
	return true
}

// coord reads ddmm.mmmm (latitude, degDigits 2) or dddmm.mmmm (longitude,
// 3) and its hemisphere letter (pos, neg) into signed decimal degrees.
func (f *fields) coord(i, degDigits int, pos, neg byte, limit float64) Opt {
	v, h := f.str(i), f.str(i+1)
	if v == "" && h == "" {
		return Opt{}
	}
	dot := strings.IndexByte(v, '.')
	if dot < 0 {
		dot = len(v)
	}
	if dot != degDigits+2 || !isDigits(v[:dot]) || dot < len(v) && !isDigits(v[dot+1:]) {
		f.fail(i, "%q is not %smm.mm", v, strings.Repeat("d", degDigits))
		return Opt{}
	}
	deg, _ := strconv.Atoi(v[:degDigits])
	mins, err := strconv.ParseFloat(v[degDigits:], 64)
	if err != nil || mins >= 60 {
		f.fail(i, "%q: minutes must be below 60", v)
		return Opt{}
	}
	x := float64(deg) + mins/60
	if x > limit {
		f.fail(i, "%q is beyond %v degrees", v, limit)
		return Opt{}
	}
	switch {
	case len(h) == 1 && h[0] == pos:
	case len(h) == 1 && h[0] == neg:
		x = -x
	default:
		f.fail(i+1, "hemisphere %q, want %c or %c", h, pos, neg)
		return Opt{}
	}
	return Opt{V: x, OK: true}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

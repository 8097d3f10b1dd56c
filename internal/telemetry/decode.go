package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// DecodeBatch parses and validates the wire form of a telemetry batch.
// Errors wrap ErrSchema for a message of another schema or major version and
// ErrInvalid for anything malformed.
//
// It is a hand-written single-pass decoder: the payload is copied once into
// a string and every name, unit and source without escapes is a substring of
// it, so a batch costs three allocations whatever its size. It accepts what
// encoding/json accepts for the batch schema (unknown fields are skipped,
// null leaves a field empty, invalid UTF-8 becomes U+FFFD), except that
// field names match exactly and nothing but white space may follow the
// batch.
func DecodeBatch(data []byte) (*Batch, error) {
	b := &Batch{Readings: make([]Reading, 0, bytes.Count(data, signalKey))}
	if err := decodeBatch(b, string(data)); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodeBatchInto is DecodeBatch into b, reusing the arrays of b.Readings
// and b.Asset.Path (nothing else of b is kept): one allocation per batch,
// the payload's string, for a caller that decodes one batch after another
// and keeps neither b, its readings nor its path past the next call. After
// an error b holds whatever was decoded.
func DecodeBatchInto(b *Batch, data []byte) error {
	return DecodeBatchStringInto(b, string(data))
}

// DecodeBatchStringInto is DecodeBatchInto from a string: the batch's
// strings are substrings of s, so a batch costs no allocation once b's
// readings and path arrays are large enough.
func DecodeBatchStringInto(b *Batch, s string) error {
	path := b.Asset.Path[:0]
	*b = Batch{Readings: b.Readings[:0]}
	return decodeBatchPath(b, s, true, path)
}

func decodeBatch(b *Batch, data string) error {
	return decodeBatchWith(b, data, true)
}

// decodeBatchWith is decodeBatch; fast tries readingFast on every element
// of readings first (the tests compare both ways).
func decodeBatchWith(b *Batch, data string, fast bool) error {
	return decodeBatchPath(b, data, fast, nil)
}

// decodeBatchPath is decodeBatchWith with an array for the asset's path
// (nil: a new one).
func decodeBatchPath(b *Batch, data string, fast bool, path []string) error {
	d := batchDecoder{s: data, fast: fast, path: path}
	var schema string
	var haveSeq bool
	err := d.object(func(key string) error {
		var err error
		switch key {
		case "schema":
			schema, err = d.str()
		case "gateway":
			b.Gateway, err = d.str()
		case "seq":
			var ok bool
			b.Seq, ok, err = d.uint64()
			haveSeq = ok
		case "asset":
			err = d.asset(&b.Asset)
		case "ts_gw":
			b.TSGW, err = d.int64()
		case "historical":
			b.Historical, err = d.boolean()
		case "part":
			b.Part, err = d.count()
		case "parts":
			b.Parts, err = d.count()
		case "readings":
			err = d.readings(b)
		default:
			err = d.skip()
		}
		return err
	})
	if err == nil {
		d.ws()
		if d.i < len(d.s) {
			err = d.errf("unexpected data after the batch")
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if schema != SchemaTelemetry {
		return fmt.Errorf("%w: %q (want %q)", ErrSchema, schema, SchemaTelemetry)
	}
	if !haveSeq {
		return fmt.Errorf("%w: seq is missing", ErrInvalid)
	}
	return b.Validate()
}

var signalKey = []byte(`"signal"`)

type batchDecoder struct {
	s    string
	i    int
	fast bool     // try readingFast first
	path []string // the array for the asset's path, reused (nil: make one)
}

func (d *batchDecoder) errf(format string, a ...any) error {
	return fmt.Errorf("offset %d: %s", d.i, fmt.Sprintf(format, a...))
}

func (d *batchDecoder) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// null consumes a literal null and reports whether it was there.
func (d *batchDecoder) null() bool {
	d.ws()
	if strings.HasPrefix(d.s[d.i:], "null") {
		d.i += 4
		return true
	}
	return false
}

// object parses {"key": value, ...}, calling field for each key with the
// position at the value. null is an empty object.
func (d *batchDecoder) object(field func(key string) error) error {
	if d.null() {
		return nil
	}
	if d.i >= len(d.s) || d.s[d.i] != '{' {
		return d.errf("expected an object")
	}
	d.i++
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return nil
	}
	for {
		d.ws()
		key, err := d.str()
		if err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return d.errf("expected : after object key")
		}
		d.i++
		d.ws()
		if err := field(key); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.s) {
			return d.errf("unexpected end of input in object")
		}
		switch d.s[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.errf("expected , or } in object")
		}
	}
}

// array parses [v, ...], calling elem for each element. null is empty.
func (d *batchDecoder) array(elem func() error) error {
	if d.null() {
		return nil
	}
	if d.i >= len(d.s) || d.s[d.i] != '[' {
		return d.errf("expected an array")
	}
	d.i++
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		return nil
	}
	for {
		d.ws()
		if err := elem(); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.s) {
			return d.errf("unexpected end of input in array")
		}
		switch d.s[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.errf("expected , or ] in array")
		}
	}
}

// str parses a JSON string (or null, giving ""). Strings without escapes
// and with valid UTF-8 are substrings of the input.
func (d *batchDecoder) str() (string, error) {
	if d.null() {
		return "", nil
	}
	if d.i >= len(d.s) || d.s[d.i] != '"' {
		return "", d.errf("expected a string")
	}
	start := d.i + 1
	for j := start; j < len(d.s); j++ {
		c := d.s[j]
		switch {
		case c == '"':
			d.i = j + 1
			return d.s[start:j], nil
		case c == '\\' || c >= utf8.RuneSelf:
			return d.strSlow(start)
		case c < 0x20:
			d.i = j
			return "", d.errf("control character in string")
		}
	}
	d.i = len(d.s)
	return "", d.errf("unterminated string")
}

func (d *batchDecoder) strSlow(start int) (string, error) {
	var sb strings.Builder
	j := start
	for j < len(d.s) {
		c := d.s[j]
		switch {
		case c == '"':
			d.i = j + 1
			return sb.String(), nil
		case c < 0x20:
			d.i = j
			return "", d.errf("control character in string")
		case c == '\\':
			if j+1 >= len(d.s) {
				d.i = j
				return "", d.errf("unterminated escape")
			}
			e := d.s[j+1]
			j += 2
			switch e {
			case '"', '\\', '/':
				sb.WriteByte(e)
			case 'b':
				sb.WriteByte('\b')
			case 'f':
				sb.WriteByte('\f')
			case 'n':
				sb.WriteByte('\n')
			case 'r':
				sb.WriteByte('\r')
			case 't':
				sb.WriteByte('\t')
			case 'u':
				r, ok := hex4(d.s, j)
				if !ok {
					d.i = j
					return "", d.errf("bad \\u escape")
				}
				j += 4
				if utf16.IsSurrogate(r) {
					r2, ok := rune(-1), false
					if j+6 <= len(d.s) && d.s[j] == '\\' && d.s[j+1] == 'u' {
						r2, ok = hex4(d.s, j+2)
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						j += 6
						r = dec
					} else {
						r = utf8.RuneError
					}
				}
				sb.WriteRune(r)
			default:
				d.i = j - 1
				return "", d.errf("bad escape \\%c", e)
			}
		case c < utf8.RuneSelf:
			sb.WriteByte(c)
			j++
		default:
			r, size := utf8.DecodeRuneInString(d.s[j:])
			if r == utf8.RuneError && size == 1 {
				sb.WriteString("\ufffd")
			} else {
				sb.WriteString(d.s[j : j+size])
			}
			j += size
		}
	}
	d.i = len(d.s)
	return "", d.errf("unterminated string")
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number returns the text of a JSON number, checked against the grammar.
func (d *batchDecoder) number() (string, error) {
	start := d.i
	j := d.i
	if j < len(d.s) && d.s[j] == '-' {
		j++
	}
	switch {
	case j < len(d.s) && d.s[j] == '0':
		j++
	case j < len(d.s) && d.s[j] >= '1' && d.s[j] <= '9':
		for j < len(d.s) && d.s[j] >= '0' && d.s[j] <= '9' {
			j++
		}
	default:
		return "", d.errf("expected a number")
	}
	if j < len(d.s) && d.s[j] == '.' {
		j++
		k := j
		for j < len(d.s) && d.s[j] >= '0' && d.s[j] <= '9' {
			j++
		}
		if j == k {
			return "", d.errf("bad number")
		}
	}
	if j < len(d.s) && (d.s[j] == 'e' || d.s[j] == 'E') {
		j++
		if j < len(d.s) && (d.s[j] == '+' || d.s[j] == '-') {
			j++
		}
		k := j
		for j < len(d.s) && d.s[j] >= '0' && d.s[j] <= '9' {
			j++
		}
		if j == k {
			return "", d.errf("bad number exponent")
		}
	}
	d.i = j
	return d.s[start:j], nil
}

func (d *batchDecoder) int64() (int64, error) {
	if d.null() {
		return 0, nil
	}
	t, err := d.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, d.errf("%s is not an int64", t)
	}
	return v, nil
}

// count parses an integer into an int (the range is checked by Validate).
func (d *batchDecoder) count() (int, error) {
	v, err := d.int64()
	return int(v), err
}

func (d *batchDecoder) uint64() (uint64, bool, error) {
	if d.null() {
		return 0, false, nil
	}
	t, err := d.number()
	if err != nil {
		return 0, false, err
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, false, d.errf("%s is not a uint64", t)
	}
	return v, true, nil
}

func (d *batchDecoder) boolean() (bool, error) {
	if d.null() {
		return false, nil
	}
	switch {
	case strings.HasPrefix(d.s[d.i:], "true"):
		d.i += 4
		return true, nil
	case strings.HasPrefix(d.s[d.i:], "false"):
		d.i += 5
		return false, nil
	}
	return false, d.errf("expected true or false")
}

// skip consumes any JSON value.
func (d *batchDecoder) skip() error {
	d.ws()
	if d.i >= len(d.s) {
		return d.errf("unexpected end of input")
	}
	switch c := d.s[d.i]; {
	case c == '{':
		return d.object(func(string) error { return d.skip() })
	case c == '[':
		return d.array(d.skip)
	case c == '"':
		_, err := d.str()
		return err
	case c == 't' || c == 'f':
		_, err := d.boolean()
		return err
	case c == 'n':
		if d.null() {
			return nil
		}
	case c == '-' || c >= '0' && c <= '9':
		_, err := d.number()
		return err
	}
	return d.errf("unexpected character %q", d.s[d.i])
}

func (d *batchDecoder) asset(a *Asset) error {
	return d.object(func(key string) error {
		var err error
		switch key {
		case "id":
			a.ID, err = d.str()
		case "class":
			a.Class, err = d.str()
		case "path":
			a.Path = nil
			if d.null() {
				return nil
			}
			a.Path, d.path = d.path, nil // a second "path" key gets its own
			if a.Path == nil {
				a.Path = make([]string, 0, 5)
			}
			err = d.array(func() error {
				p, err := d.str()
				a.Path = append(a.Path, p)
				return err
			})
		default:
			err = d.skip()
		}
		return err
	})
}

func (d *batchDecoder) readings(b *Batch) error {
	b.Readings = b.Readings[:0]
	return d.array(func() error {
		if d.fast { // straight into the next slot: no copies of the reading
			n := len(b.Readings)
			b.Readings = append(b.Readings, Reading{})
			if d.readingFast(&b.Readings[n]) {
				return nil
			}
			b.Readings = b.Readings[:n]
		}
		var r Reading
		var quality string
		var raw string
		haveValue := false
		if d.null() { // a null element is a zero reading, as encoding/json does
			quality = ""
		} else if err := d.object(func(key string) error {
			var err error
			switch key {
			case "signal":
				r.Signal, err = d.str()
			case "value":
				if d.null() {
					haveValue, raw = false, ""
					return nil
				}
				start := d.i
				if err = d.skip(); err == nil {
					raw, haveValue = d.s[start:d.i], true
				}
			case "text":
				r.Text, err = d.str()
			case "unit":
				r.Unit, err = d.str()
			case "quality":
				quality, err = d.str()
			case "ts":
				r.TS, err = d.int64()
			case "status":
				var v uint64
				v, _, err = d.uint64()
				if err == nil && v > math.MaxUint32 {
					err = d.errf("status %d overflows uint32", v)
				}
				r.Status = uint32(v)
			case "src":
				r.Src, err = d.str()
			default:
				err = d.skip()
			}
			return err
		}); err != nil {
			return err
		}
		i := len(b.Readings)
		q, err := ParseQuality(quality)
		if err != nil {
			return fmt.Errorf("readings[%d]: %w", i, err)
		}
		r.Quality = q
		if !haveValue {
			r.NoValue = true
		} else {
			v, err := strconv.ParseFloat(raw, 64)
			if err != nil {
				return fmt.Errorf("readings[%d].value %s is not a number", i, raw)
			}
			r.Value = v
		}
		if !q.HasValue() {
			r.NoValue = false
		}
		b.Readings = append(b.Readings, r)
		return nil
	})
}

// readingFast decodes one element of readings at d.i when it is in the
// form Reading.appendJSON writes: the keys in that order, no white space,
// strings without escapes or bytes beyond ASCII, a numeric value, a known
// quality, integers that parse. For anything else it reports false and
// leaves d.i and r alone: the general path then decodes the element (and
// reports its error), and for an element this accepts it gives the same
// reading (FuzzReadingFast). It spares the general path's work per key:
// white space, null checks, the key's string and its lookup. r must be
// zero; after false it holds garbage.
func (d *batchDecoder) readingFast(out *Reading) bool {
	s, i := d.s, d.i
	var ok bool
	if !strings.HasPrefix(s[i:], `{"signal":"`) {
		return false
	}
	if out.Signal, i, ok = plainString(s, i+len(`{"signal":"`)); !ok {
		return false
	}
	var raw string // a number scanNumber does not take
	value := false
	if strings.HasPrefix(s[i:], `,"value":`) {
		i += len(`,"value":`)
		var j int
		if out.Value, j, value = scanNumber(s, i); !value {
			if j = numberEnd(s, i); j == i {
				return false
			}
			raw = s[i:j]
		}
		i = j
	}
	if strings.HasPrefix(s[i:], `,"text":"`) {
		if out.Text, i, ok = plainString(s, i+len(`,"text":"`)); !ok {
			return false
		}
	}
	if strings.HasPrefix(s[i:], `,"unit":"`) {
		if out.Unit, i, ok = plainString(s, i+len(`,"unit":"`)); !ok {
			return false
		}
	}
	if !strings.HasPrefix(s[i:], `,"quality":"`) {
		return false
	}
	var quality string
	if quality, i, ok = plainString(s, i+len(`,"quality":"`)); !ok {
		return false
	}
	q, err := ParseQuality(quality)
	if err != nil {
		return false
	}
	out.Quality = q
	if !strings.HasPrefix(s[i:], `,"ts":`) {
		return false
	}
	i += len(`,"ts":`)
	if out.TS, i, ok = fastInt(s, i); !ok {
		return false
	}
	if strings.HasPrefix(s[i:], `,"status":`) {
		var v int64
		i += len(`,"status":`)
		if i < len(s) && s[i] == '-' { // even -0 is not a uint64
			return false
		}
		if v, i, ok = fastInt(s, i); !ok || v > math.MaxUint32 {
			return false
		}
		out.Status = uint32(v)
	}
	if strings.HasPrefix(s[i:], `,"src":"`) {
		if out.Src, i, ok = plainString(s, i+len(`,"src":"`)); !ok {
			return false
		}
	}
	if i >= len(s) || s[i] != '}' {
		return false
	}
	if raw != "" {
		if out.Value, err = strconv.ParseFloat(raw, 64); err != nil {
			return false
		}
	} else if !value {
		out.NoValue = true
	}
	if !q.HasValue() {
		out.NoValue = false
	}
	d.i = i + 1
	return true
}

// fastInt parses the integer of at most 18 digits (no fraction, no
// exponent, no leading zero) at s[i:] and returns the index after it: what
// strconv.ParseInt gives for it, without its generality. ok is false for
// anything else, which the general path handles.
func fastInt(s string, i int) (v int64, next int, ok bool) {
	j := i
	neg := j < len(s) && s[j] == '-'
	if neg {
		j++
	}
	k := j
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		v = v*10 + int64(s[j]-'0')
		j++
	}
	n := j - k
	if n == 0 || n > 18 || (n > 1 && s[k] == '0') {
		return 0, i, false
	}
	if j < len(s) && (s[j] == '.' || s[j] == 'e' || s[j] == 'E') {
		return 0, i, false
	}
	if neg {
		v = -v
	}
	return v, j, true
}

// pow10 are the powers of ten a float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// fastFloat converts a JSON number of at most 19 digits without exponent
// (how a gateway writes scaled register values and float64 readings) to
// the value strconv.ParseFloat gives; ok is false for any other number.
func fastFloat(t string) (float64, bool) {
	v, next, ok := scanNumber(t, 0)
	return v, ok && next == len(t)
}

// scanNumber reads the JSON number at s[i:] as batchDecoder.number does
// and converts it, in one pass: next is where number ends it. ok is false
// (and the number left to number and strconv.ParseFloat) when there is no
// number there, it has an exponent or more than 19 digits. Up to 15
// digits, the digits as an integer and the power of ten below 1e16 are
// both exact in a float64, so their quotient is the correctly rounded
// value; from 16 to 19 digits (a float64 printed in full takes 17)
// longDecimal divides exactly in integers.
func scanNumber(s string, i int) (v float64, next int, ok bool) {
	j := i
	neg := j < len(s) && s[j] == '-'
	if neg {
		j++
	}
	var mant uint64
	k := j
	switch {
	case j < len(s) && s[j] == '0':
		j++
	case j < len(s) && s[j] >= '1' && s[j] <= '9':
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			mant = mant*10 + uint64(s[j]-'0')
			j++
		}
	default:
		return 0, i, false
	}
	digits, places := j-k, 0
	if j < len(s) && s[j] == '.' {
		j++
		k := j
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			mant = mant*10 + uint64(s[j]-'0')
			j++
		}
		if places = j - k; places == 0 {
			return 0, i, false
		}
		digits += places
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		return 0, i, false
	}
	switch {
	case digits <= 15:
		v = float64(mant) / pow10[places]
	case digits <= 19: // mant did not overflow
		v = longDecimal(mant, places)
	default:
		return 0, i, false
	}
	if neg {
		v = -v
	}
	return v, j, true
}

// tens are the powers of ten a uint64 holds.
var tens = [...]uint64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// longDecimal returns m / 10^places (m < 10^19, places <= 19) rounded to
// the nearest float64, ties to even: what strconv.ParseFloat gives for the
// decimal. m, shifted so its top bit is bit 63 and then by the bit length
// of d = 10^places less one, divided by d in 128 bits gives a quotient q
// of 63 or 64 bits and a remainder; q's bits below the 53 kept, with the
// remainder as the sticky bit, decide the rounding exactly. The value lies
// between 1e-19 and 1e19, far from the float64 subnormals and overflow, so
// the result is assembled from its exponent and mantissa bits directly.
func longDecimal(m uint64, places int) float64 {
	if m == 0 {
		return 0
	}
	d := tens[places]
	lz := bits.LeadingZeros64(m)
	sh := bits.Len64(d) - 1 // 0..63
	m <<= uint(lz)
	// (m << sh) as hi:lo (hi is 0 for sh 0: Go shifts by 64 to 0);
	// hi < 2^sh <= d, so the quotient fits 64 bits
	hi, lo := m>>(64-uint(sh)), m<<uint(sh)
	q, r := bits.Div64(hi, lo, d)
	drop := uint(bits.Len64(q) - 53) // 10 or 11
	mant := q >> drop
	rest := q & (1<<drop - 1)
	half := uint64(1) << (drop - 1)
	if rest > half || rest == half && (r != 0 || mant&1 == 1) {
		mant++
	}
	// value = mant * 2^(drop - lz - sh)
	exp := int(drop) - lz - sh
	if mant == 1<<53 {
		mant >>= 1
		exp++
	}
	return math.Float64frombits(uint64(exp+52+1023)<<52 | mant&(1<<52-1))
}

// plainString returns the string that starts at s[i] (after its opening
// quote) and the index after its closing quote; ok is false when it has
// an escape, a control character or a byte beyond ASCII before the quote
// (those take the general path), or no closing quote.
func plainString(s string, i int) (str string, next int, ok bool) {
	j := i
	// 8 bytes at a time while none of them is a quote, a backslash, a
	// control character or a byte beyond ASCII (each test below is exact
	// about whether such a byte is in the word; bit tricks from "Bit
	// Twiddling Hacks", haszero and hasless); the word that has one is
	// looked at byte by byte
	for ; j+8 <= len(s); j += 8 {
		t := s[j : j+8] // one load
		w := uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24 |
			uint64(t[4])<<32 | uint64(t[5])<<40 | uint64(t[6])<<48 | uint64(t[7])<<56
		if (w|hasZero(w^quotes)|hasZero(w^backslashes)|((w-spaces)&^w))&highBits != 0 {
			break
		}
	}
	for ; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i:j], j + 1, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return "", i, false
		}
	}
	return "", i, false
}

const (
	lowBits     = 0x0101010101010101
	highBits    = 0x8080808080808080
	quotes      = '"' * lowBits
	backslashes = '\\' * lowBits
	spaces      = 0x20 * lowBits // the first byte that is no control character
)

// hasZero has the high bit of a byte set (the lowest such byte exactly, the
// ones above it perhaps not) when w has a zero byte, and no high bit set
// when it has none (bits other than the high ones are garbage).
func hasZero(w uint64) uint64 { return (w - lowBits) &^ w }

// numberEnd returns the index after the JSON number that starts at s[i],
// or i when there is none (the grammar of batchDecoder.number).
func numberEnd(s string, i int) int {
	d := batchDecoder{s: s, i: i}
	if _, err := d.number(); err != nil {
		return i
	}
	return d.i
}

// DecodeBirth parses a birth notice. A birth in the form MarshalBirth
// writes is decoded by decodeBirthFast; anything else by encoding/json,
// which gives the same result for what both take (FuzzDecodeBirthFast).
func DecodeBirth(data []byte) (*Birth, error) {
	var b Birth
	if !decodeBirthFast(string(data), &b) {
		b = Birth{}
		if err := json.Unmarshal(data, &b); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return checkBirth(&b)
}

// checkBirth validates a decoded birth notice.
func checkBirth(b *Birth) (*Birth, error) {
	if b.Schema != SchemaBirth {
		return nil, fmt.Errorf("%w: %q (want %q)", ErrSchema, b.Schema, SchemaBirth)
	}
	if !ValidToken(b.Gateway) || !ValidToken(b.Asset.ID) || !ValidToken(b.Asset.Class) {
		return nil, fmt.Errorf("%w: birth needs gateway, asset.id and asset.class tokens", ErrInvalid)
	}
	if b.Parts < 0 || b.Parts > MaxParts || (b.Parts == 0) != (b.Part == 0) || b.Part > b.Parts {
		return nil, fmt.Errorf("%w: birth part %d of %d", ErrInvalid, b.Part, b.Parts)
	}
	return b, nil
}

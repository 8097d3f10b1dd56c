package telemetry

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the wire form of b to dst. It allocates nothing beyond
// growing dst, so a caller that reuses its buffer encodes without garbage.
func (b *Batch) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"schema":"`+SchemaTelemetry+`","gateway":`...)
	dst = appendString(dst, b.Gateway)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, b.Seq, 10)
	dst = append(dst, `,"asset":{"id":`...)
	dst = appendString(dst, b.Asset.ID)
	dst = append(dst, `,"class":`...)
	dst = appendString(dst, b.Asset.Class)
	if len(b.Asset.Path) > 0 {
		dst = append(dst, `,"path":[`...)
		for i, p := range b.Asset.Path {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, p)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `},"ts_gw":`...)
	dst = strconv.AppendInt(dst, b.TSGW, 10)
	if b.Historical {
		dst = append(dst, `,"historical":true`...)
	}
	if b.Parts > 0 {
		dst = append(dst, `,"part":`...)
		dst = strconv.AppendInt(dst, int64(b.Part), 10)
		dst = append(dst, `,"parts":`...)
		dst = strconv.AppendInt(dst, int64(b.Parts), 10)
	}
	dst = append(dst, `,"readings":[`...)
	var ts lastTS
	for i := range b.Readings {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = b.Readings[i].appendJSON(dst, &ts)
	}
	return append(dst, "]}"...)
}

// lastTS keeps the digits of the last timestamp written: a batch's
// readings mostly carry their cycle's timestamp, written once and copied
// for the rest.
type lastTS struct {
	ts     int64
	n      int // length of the digits in buf; 0: none yet
	digits [20]byte
}

func (c *lastTS) append(dst []byte, ts int64) []byte {
	if c.n == 0 || ts != c.ts {
		c.ts, c.n = ts, len(strconv.AppendInt(c.digits[:0], ts, 10))
	}
	return append(dst, c.digits[:c.n]...)
}

// appendJSON appends r's wire form; ts carries the last timestamp's
// digits from one reading to the next.
func (r *Reading) appendJSON(dst []byte, ts *lastTS) []byte {
	dst = append(dst, `{"signal":`...)
	dst = appendString(dst, r.Signal)
	if r.HasValue() {
		dst = append(dst, `,"value":`...)
		dst = appendFloat(dst, r.Value)
	}
	if r.Text != "" && r.Quality.HasValue() {
		dst = append(dst, `,"text":`...)
		dst = appendString(dst, r.Text)
	}
	if r.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = appendString(dst, r.Unit)
	}
	dst = append(dst, `,"quality":"`...)
	dst = append(dst, r.Quality.String()...)
	dst = append(dst, `","ts":`...)
	dst = ts.append(dst, r.TS)
	if r.Status != 0 {
		dst = append(dst, `,"status":`...)
		dst = strconv.AppendUint(dst, uint64(r.Status), 10)
	}
	if r.Src != "" {
		dst = append(dst, `,"src":`...)
		dst = appendString(dst, r.Src)
	}
	return append(dst, '}')
}

// appendFloat writes v in the shortest form that round-trips. Non-finite
// values cannot be represented in JSON; the normalizer never lets them
// through, and they are written as 0 here rather than as invalid JSON.
func appendFloat(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, '0')
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendInt(dst, int64(v), 10)
	}
	if out, ok := appendShortDecimal(dst, v); ok {
		return out
	}
	abs := math.Abs(v)
	if abs < 1e-6 || abs >= 1e21 {
		return strconv.AppendFloat(dst, v, 'e', -1, 64)
	}
	return strconv.AppendFloat(dst, v, 'f', -1, 64)
}

// fastDecimals is how many decimal places appendShortDecimal tries; a
// register scaled by 0.1, 0.01 or 0.001 needs one to three.
const fastDecimals = 4

var (
	pow10f = [fastDecimals + 1]float64{1, 1e1, 1e2, 1e3, 1e4}
	pow10u = [fastDecimals + 1]uint64{1, 1e1, 1e2, 1e3, 1e4}
	zeros  = [fastDecimals]byte{'0', '0', '0', '0'}
)

// appendShortDecimal is appendFloat's fast path for a finite, non-integer
// v whose shortest round-trip form has at most fastDecimals decimal places
// (1234.5, -0.25, 0.003): it writes exactly what
// strconv.AppendFloat(dst, v, 'f', -1, 64) writes, and reports false,
// writing nothing, whenever it cannot be sure of that. Reporting false is
// always correct (appendFloat then asks strconv), so every shortcut below
// that gives up is safe; only the case it answers needs the argument.
//
// Why the output is strconv's: let a = |v| and m = round(a * 10^d). The
// check float64(m)/10^d == a holds exactly when the decimal c = m/10^d
// parses back to a (m < 2^50 and 10^d are exact doubles, so the division
// is correctly rounded, as ParseFloat is; c is never a tie, for if 5^d
// divides m then c has at most 50 significant bits and is itself a
// double). With a*10^d < 2^50 the values that parse to a span less than
// 10^-d/4, so c is the only decimal with at most d places among them, and
// every other decimal that parses to a has more places and (the span
// crossing no power of ten: that power would be such a decimal) more
// significant digits. If m does not end in 0, c is therefore the unique
// shortest form, which is what strconv prints. An m that ends in 0 is never
// written (a shorter decimal might round-trip): the next d is tried, and
// it costs no division (1001 x 0.1 = 100.10000000000001 fails at d = 1,
// then skips d = 2..4 at the cost of a multiplication each).
//
// The shortcut: a value whose shortest form has at most fastDecimals
// places is within rounding error (relative 2^-52) of a whole number once
// scaled by 10^fastDecimals, so a value that is not (most values with 17
// significant digits) gives up at once.
func appendShortDecimal(dst []byte, v float64) ([]byte, bool) {
	a := math.Abs(v)
	if !(a >= 1e-6) { // below 1e-6 (and NaN) appendFloat uses the e format
		return dst, false
	}
	if x := a * pow10f[fastDecimals]; x < 1<<52 && math.Abs(x-float64(uint64(x+0.5))) > x*(1.0/(1<<50)) {
		return dst, false
	}
	for d := 1; d <= fastDecimals; d++ {
		x := a * pow10f[d]
		if x >= 1<<50 {
			return dst, false
		}
		m := uint64(x + 0.5)
		if m%10 == 0 || float64(m)/pow10f[d] != a {
			continue
		}
		if v < 0 {
			dst = append(dst, '-')
		}
		dst = strconv.AppendUint(dst, m/pow10u[d], 10)
		dst = append(dst, '.')
		frac := m % pow10u[d]
		n := len(dst)
		dst = append(dst, zeros[:d]...)
		for i := n + d - 1; frac > 0; i-- {
			dst[i] = byte('0' + frac%10)
			frac /= 10
		}
		return dst, true
	}
	return dst, false
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 with U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// MarshalBirth returns the wire form of a birth notice.
func MarshalBirth(b *Birth) ([]byte, error) {
	b.Schema = SchemaBirth
	return json.Marshal(b)
}

// MarshalDeath returns the wire form of a death notice.
func MarshalDeath(d *Death) ([]byte, error) {
	d.Schema = SchemaDeath
	return json.Marshal(d)
}

// MarshalStatus returns the wire form of a gateway status notice.
func MarshalStatus(s *Status) ([]byte, error) {
	s.Schema = SchemaStatus
	return json.Marshal(s)
}

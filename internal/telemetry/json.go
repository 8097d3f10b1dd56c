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
	for i := range b.Readings {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = b.Readings[i].appendJSON(dst)
	}
	return append(dst, "]}"...)
}

func (r *Reading) appendJSON(dst []byte) []byte {
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
	dst = strconv.AppendInt(dst, r.TS, 10)
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
	abs := math.Abs(v)
	if abs < 1e-6 || abs >= 1e21 {
		return strconv.AppendFloat(dst, v, 'e', -1, 64)
	}
	return strconv.AppendFloat(dst, v, 'f', -1, 64)
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

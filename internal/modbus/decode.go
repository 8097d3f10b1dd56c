package modbus

import (
	"math"
	"math/bits"
	"strings"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// good returns a good sample of num.
func good(num float64) sample.Sample { return sample.Sample{Num: num} }

// bad returns a Bad sample with status s, Silent when s is silence.
func bad(s Status) sample.Sample {
	return sample.Sample{Quality: telemetry.QualityBad, Status: uint32(s), Silent: s.Silent()}
}

// Decode turns the bytes of one point, as received, into a value. For a
// register table data holds the point's registers (2 bytes each, in wire
// order); for a bit table data[0] bit 0 is the point's coil or input. A wrong
// length gives a Bad sample with StatusBadLength, a NaN or infinite float a
// Bad sample with StatusNotFinite (never passed on as a number). Index and TS
// are left 0.
func Decode(p Point, data []byte) sample.Sample {
	if p.Table.IsBit() {
		if len(data) < 1 {
			return bad(StatusBadLength)
		}
		return good(float64(data[0] & 1))
	}
	n := p.Registers()
	if n == 0 || len(data) != 2*n {
		return bad(StatusBadLength)
	}
	switch p.Type {
	case Bool:
		if data[0]|data[1] != 0 {
			return good(1)
		}
		return good(0)
	case Bit:
		return good(float64(word(data, p.Order, 1) >> p.Bit & 1))
	case Int16:
		return good(float64(int16(word(data, p.Order, 1))))
	case Uint16:
		return good(float64(uint16(word(data, p.Order, 1))))
	case Int32:
		return good(float64(int32(word(data, p.Order, 2))))
	case Uint32:
		return good(float64(uint32(word(data, p.Order, 2))))
	case Int64:
		return good(float64(int64(word(data, p.Order, 4))))
	case Uint64:
		return good(float64(word(data, p.Order, 4)))
	case Float32:
		return finite(float64(math.Float32frombits(uint32(word(data, p.Order, 2)))))
	case Float64:
		return finite(math.Float64frombits(word(data, p.Order, 4)))
	case String:
		return sample.Sample{Str: decodeString(data, p.Order), IsStr: true}
	}
	return bad(StatusBadLength)
}

func finite(f float64) sample.Sample {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return bad(StatusNotFinite)
	}
	return good(f)
}

// word assembles n registers from data into one big-endian integer, undoing
// the order's word reversal and byte swap.
func word(data []byte, o Order, n int) uint64 {
	var v uint64
	for i := 0; i < n; i++ {
		j := i
		if o&orderWordSwap != 0 {
			j = n - 1 - i
		}
		w := uint16(data[2*j])<<8 | uint16(data[2*j+1])
		if o&orderByteSwap != 0 {
			w = bits.ReverseBytes16(w)
		}
		v = v<<16 | uint64(w)
	}
	return v
}

// decodeString reads characters two per register, high byte first (or low
// byte first with a byte-swapping order), and trims trailing NULs and spaces.
// Word reversal does not apply to strings.
func decodeString(data []byte, o Order) string {
	end := len(data)
	at := func(i int) byte {
		if o&orderByteSwap != 0 {
			return data[i^1]
		}
		return data[i]
	}
	for end > 0 {
		if c := at(end - 1); c != 0 && c != ' ' {
			break
		}
		end--
	}
	if o&orderByteSwap == 0 {
		return string(data[:end])
	}
	var b strings.Builder
	b.Grow(end)
	for i := 0; i < end; i++ {
		b.WriteByte(at(i))
	}
	return b.String()
}

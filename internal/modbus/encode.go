package modbus

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Writes: the inverse of the read path. Encode turns a device value (what
// Decode returns as sample.Sample.Num, before the point's scale and unit
// conversion) into the bytes of the point's registers, in wire order;
// writePDU frames them as the one write request the point's table and type
// call for (Modbus Application Protocol V1.1b3, 6.5, 6.6, 6.11, 6.12, 6.16):
//
//	coil                     FC5  write single coil (FC15 with WriteMultiple)
//	holding, 1 register      FC6  write single register (FC16 with WriteMultiple)
//	holding, 2..4 registers  FC16 write multiple registers
//	holding, type bit        FC22 mask write register (the other 15 bits kept by the device)
//
// Discrete inputs and input registers are read-only by the protocol; type
// string is not writable (commands carry numbers).

// ErrNotWritable is returned for a point the protocol or the driver cannot
// write: a discrete input, an input register, a string.
var ErrNotWritable = errors.New("modbus: point is not writable")

// ErrValueRange is returned when a value does not fit the point's type (an
// int16 above 32767, a negative uint, a float32 beyond ±3.4e38, NaN or ±Inf).
var ErrValueRange = errors.New("modbus: value does not fit the point's type")

// Encode returns the register bytes (2 per register, wire order, the
// point's word order applied) that Decode reads back as v. Integer types
// round v to the nearest integer (half away from zero); bool and coils
// write 1 for any non-zero v. For type bit the result is the one register
// with only the point's bit set or clear (writePDU turns it into a mask
// write). Errors: ErrNotWritable, ErrValueRange (wrapped with the value and
// the type).
func Encode(p Point, v float64) ([]byte, error) {
	if p.Table == DiscreteInputs || p.Table == InputRegisters || p.Type == String {
		return nil, fmt.Errorf("%w: %s %s", ErrNotWritable, p.Table, p.Type)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("%w: %v", ErrValueRange, v)
	}
	if p.Table == Coils {
		if v != 0 {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	}
	n := p.Type.words()
	var u uint64
	switch p.Type {
	case Bool:
		if v != 0 {
			u = 1
		}
	case Bit:
		if v != 0 {
			u = 1 << p.Bit
		}
	case Int16, Int32, Int64:
		lim := math.Ldexp(1, 16*n-1) // 2^15, 2^31, 2^63
		r := math.Round(v)
		if r < -lim || r >= lim {
			return nil, fmt.Errorf("%w: %v outside %s", ErrValueRange, v, p.Type)
		}
		u = uint64(int64(r)) & (math.MaxUint64 >> (64 - 16*n))
	case Uint16, Uint32, Uint64:
		r := math.Round(v)
		if r < 0 || r >= math.Ldexp(1, 16*n) {
			return nil, fmt.Errorf("%w: %v outside %s", ErrValueRange, v, p.Type)
		}
		u = uint64(r)
	case Float32:
		if math.Abs(v) > math.MaxFloat32 {
			return nil, fmt.Errorf("%w: %v outside float32", ErrValueRange, v)
		}
		u = uint64(math.Float32bits(float32(v)))
	case Float64:
		u = math.Float64bits(v)
	default:
		return nil, fmt.Errorf("%w: type %s", ErrNotWritable, p.Type)
	}
	return unword(make([]byte, 2*n), u, p.Order, n), nil
}

// unword is the inverse of word: it spreads the big-endian integer v over
// n registers of dst, applying the order's word reversal and byte swap.
func unword(dst []byte, v uint64, o Order, n int) []byte {
	for i := 0; i < n; i++ {
		w := uint16(v >> (16 * (n - 1 - i)))
		if o&orderByteSwap != 0 {
			w = bits.ReverseBytes16(w)
		}
		j := i
		if o&orderWordSwap != 0 {
			j = n - 1 - i
		}
		dst[2*j], dst[2*j+1] = byte(w>>8), byte(w)
	}
	return dst
}

// writePDU appends to dst the request PDU writing data (Encode's result)
// to p. multiple forces FC15/FC16 for a single coil or register (devices
// that implement only the multiple forms).
func writePDU(dst []byte, p Point, data []byte, multiple bool) []byte {
	a := p.Address
	switch {
	case p.Table == Coils && multiple:
		return append(dst, 15, byte(a>>8), byte(a), 0, 1, 1, data[0]&1)
	case p.Table == Coils:
		var on byte
		if data[0]&1 != 0 {
			on = 0xFF
		}
		return append(dst, 5, byte(a>>8), byte(a), on, 0)
	case p.Type == Bit:
		// FC22: result = (current AND and) OR (or AND NOT and), on the
		// register as the device holds it: data is already in wire order,
		// the AND mask is swapped like it
		and := ^uint16(1 << p.Bit)
		if p.Order&orderByteSwap != 0 {
			and = bits.ReverseBytes16(and)
		}
		or := uint16(data[0])<<8 | uint16(data[1])
		return append(dst, 22, byte(a>>8), byte(a), byte(and>>8), byte(and), byte(or>>8), byte(or))
	case len(data) == 2 && !multiple:
		return append(dst, 6, byte(a>>8), byte(a), data[0], data[1])
	}
	n := len(data) / 2
	dst = append(dst, 16, byte(a>>8), byte(a), byte(n>>8), byte(n), byte(len(data)))
	return append(dst, data...)
}

// echoOf returns what a write reply's PDU must be: the request itself for
// FC5, FC6 and FC22, its function, address and quantity for FC15 and FC16;
// nil for a read.
func echoOf(pdu []byte) []byte {
	switch pdu[0] {
	case 5, 6, 22:
		return pdu
	case 15, 16:
		return pdu[:5]
	}
	return nil
}

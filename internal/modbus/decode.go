package modbus

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Status codes kept in Value.Status and carried into telemetry.Reading.Status.
// 0 is a good read. 1..255 is a Modbus exception code exactly as the device
// sent it (1 illegal function, 2 illegal data address, 3 illegal data value,
// 4 server device failure, 6 busy, 10/11 gateway path / target, ...). The
// gateway's own conditions sit above the exception range:
const (
	StatusGood uint32 = 0

	StatusTimeout     uint32 = 0x100 // 256: no (complete) response within the timeout, or device backing off after timeouts
	StatusConnection  uint32 = 0x101 // 257: could not connect, connection lost, or reconnect backoff in progress
	StatusFraming     uint32 = 0x102 // 258: CRC or LRC mismatch, malformed frame, wrong unit id or function in the reply
	StatusBadLength   uint32 = 0x103 // 259: reply carried a different number of registers/bytes than requested
	StatusQuarantined uint32 = 0x104 // 260: address quarantined after an exception; retried alone after a backoff
	StatusNotFinite   uint32 = 0x105 // 261: float register holds NaN or ±Inf
	StatusCanceled    uint32 = 0x106 // 262: the read's context ended before this point was read
)

// Sentinel errors of Value.Err, matched with errors.Is. A Modbus exception is
// an Exception value.
var (
	ErrTimeout     = errors.New("modbus: timeout")
	ErrConnection  = errors.New("modbus: connection failure")
	ErrFraming     = errors.New("modbus: framing error")
	ErrBadLength   = errors.New("modbus: bad response length")
	ErrQuarantined = errors.New("modbus: address quarantined after exception")
	ErrNotFinite   = errors.New("modbus: value is NaN or infinite")
	ErrCanceled    = errors.New("modbus: read canceled")
)

// Exception is a Modbus exception code returned by a device.
type Exception uint8

func (e Exception) Error() string {
	name := "unknown exception"
	switch e {
	case 1:
		name = "illegal function"
	case 2:
		name = "illegal data address"
	case 3:
		name = "illegal data value"
	case 4:
		name = "server device failure"
	case 5:
		name = "acknowledge"
	case 6:
		name = "server device busy"
	case 8:
		name = "memory parity error"
	case 10:
		name = "gateway path unavailable"
	case 11:
		name = "gateway target device failed to respond"
	}
	return "modbus: exception " + strconv.Itoa(int(e)) + " (" + name + ")"
}

// statusError returns the error that goes with a status code.
func statusError(status uint32) error {
	switch status {
	case StatusGood:
		return nil
	case StatusTimeout:
		return ErrTimeout
	case StatusConnection:
		return ErrConnection
	case StatusFraming:
		return ErrFraming
	case StatusBadLength:
		return ErrBadLength
	case StatusQuarantined:
		return ErrQuarantined
	case StatusNotFinite:
		return ErrNotFinite
	case StatusCanceled:
		return ErrCanceled
	}
	if status < 0x100 {
		return Exception(status)
	}
	return errors.New("modbus: status " + strconv.FormatUint(uint64(status), 10))
}

// Value is the outcome of reading one point. Err == nil means a good value in
// Num (or Str when IsStr); otherwise Status holds the code and Err the reason.
type Value struct {
	Num    float64
	Str    string
	IsStr  bool
	Status uint32
	Err    error
}

// Good reports whether v holds a value.
func (v Value) Good() bool { return v.Err == nil }

func badValue(status uint32) Value { return Value{Status: status, Err: statusError(status)} }

// Decode turns the bytes of one point, as received, into a value. For a
// register table data holds the point's registers (2 bytes each, in wire
// order); for a bit table data[0] bit 0 is the point's coil or input. A wrong
// length gives StatusBadLength, a NaN or infinite float StatusNotFinite.
func Decode(p Point, data []byte) Value {
	if p.Table.IsBit() {
		if len(data) < 1 {
			return badValue(StatusBadLength)
		}
		return Value{Num: float64(data[0] & 1)}
	}
	n := p.Registers()
	if n == 0 || len(data) != 2*n {
		return badValue(StatusBadLength)
	}
	switch p.Type {
	case Bool:
		if data[0]|data[1] != 0 {
			return Value{Num: 1}
		}
		return Value{}
	case Bit:
		return Value{Num: float64(word(data, p.Order, 1) >> p.Bit & 1)}
	case Int16:
		return Value{Num: float64(int16(word(data, p.Order, 1)))}
	case Uint16:
		return Value{Num: float64(uint16(word(data, p.Order, 1)))}
	case Int32:
		return Value{Num: float64(int32(word(data, p.Order, 2)))}
	case Uint32:
		return Value{Num: float64(uint32(word(data, p.Order, 2)))}
	case Int64:
		return Value{Num: float64(int64(word(data, p.Order, 4)))}
	case Uint64:
		return Value{Num: float64(word(data, p.Order, 4))}
	case Float32:
		return finite(float64(math.Float32frombits(uint32(word(data, p.Order, 2)))))
	case Float64:
		return finite(math.Float64frombits(word(data, p.Order, 4)))
	case String:
		return Value{Str: decodeString(data, p.Order), IsStr: true}
	}
	return badValue(StatusBadLength)
}

func finite(f float64) Value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return badValue(StatusNotFinite)
	}
	return Value{Num: f}
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

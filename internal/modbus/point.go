// Package modbus is the gateway's Modbus client driver: point definitions,
// register decoding, a request planner that merges points into few requests,
// and sources (Pool.Source) that poll groups of points over TCP, RTU or
// ASCII (serial or tunnelled over TCP) with one request in flight per
// connection, reconnect with backoff, isolation and quarantine of addresses
// that raise exceptions, and typed statuses (Status, *ReplyError).
//
// The package frames requests and replies itself (frame.go, after the Modbus
// Application Protocol V1.1b3 and Modbus over Serial Line V1.02) and owns
// the rule that a reply without a transaction id is trusted only when the
// line was silent before the request (link.go).
package modbus

import (
	"fmt"
	"strconv"
)

// Table is one of the four Modbus data tables.
type Table uint8

// The four Modbus tables.
const (
	Coils Table = iota + 1
	DiscreteInputs
	HoldingRegisters
	InputRegisters
)

var tableNames = [...]string{Coils: "coil", DiscreteInputs: "discrete", HoldingRegisters: "holding", InputRegisters: "input"}
var tableShort = [...]string{Coils: "co", DiscreteInputs: "di", HoldingRegisters: "hr", InputRegisters: "ir"}

// ParseTable parses a configuration name: coil, discrete, holding or input.
func ParseTable(s string) (Table, error) {
	for t := Coils; t <= InputRegisters; t++ {
		if tableNames[t] == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown table %q (want coil, discrete, holding or input)", s)
}

func (t Table) valid() bool { return t >= Coils && t <= InputRegisters }

// String returns the configuration name of t.
func (t Table) String() string {
	if !t.valid() {
		return "table(" + strconv.Itoa(int(t)) + ")"
	}
	return tableNames[t]
}

// IsBit reports whether t holds single bits (coils, discrete inputs).
func (t Table) IsBit() bool { return t == Coils || t == DiscreteInputs }

// Type is the data type of a point.
type Type uint8

// Point data types.
const (
	Bool Type = iota + 1
	Bit
	Int16
	Uint16
	Int32
	Uint32
	Int64
	Uint64
	Float32
	Float64
	String
)

var typeNames = [...]string{Bool: "bool", Bit: "bit", Int16: "int16", Uint16: "uint16", Int32: "int32",
	Uint32: "uint32", Int64: "int64", Uint64: "uint64", Float32: "float32", Float64: "float64", String: "string"}

// ParseType parses a configuration name (bool, bit, int16, ..., float64, string).
func ParseType(s string) (Type, error) {
	for t := Bool; t <= String; t++ {
		if typeNames[t] == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown type %q (want bool, bit, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string)", s)
}

func (t Type) valid() bool { return t >= Bool && t <= String }

// String returns the configuration name of t.
func (t Type) String() string {
	if !t.valid() {
		return "type(" + strconv.Itoa(int(t)) + ")"
	}
	return typeNames[t]
}

// words is the fixed register count of t (0 for string, whose length is configured).
func (t Type) words() int {
	switch t {
	case Bool, Bit, Int16, Uint16:
		return 1
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	}
	return 0
}

// Order is the byte and word order of a multi-byte value. It is two flags:
// bytes swapped within each 16-bit register, and registers in reverse order.
// The four-letter names describe a 32-bit value, the eight-letter names the
// same swaps on a 64-bit value; either name works on either width, and a
// 16-bit value honours only the byte swap.
type Order uint8

// Word orders. The zero value is ABCD, big endian as the protocol sends it.
const (
	ABCD Order = 0                             // big endian; ABCDEFGH for 64-bit
	BADC Order = orderByteSwap                 // bytes swapped in each register; BADCFEHG
	CDAB Order = orderWordSwap                 // registers reversed, little-endian word order; GHEFCDAB
	DCBA Order = orderByteSwap | orderWordSwap // little endian; HGFEDCBA

	orderByteSwap = 1
	orderWordSwap = 2
)

var orderNames = [...]string{ABCD: "ABCD", BADC: "BADC", CDAB: "CDAB", DCBA: "DCBA"}
var orderNames64 = [...]string{ABCD: "ABCDEFGH", BADC: "BADCFEHG", CDAB: "GHEFCDAB", DCBA: "HGFEDCBA"}

// ParseOrder parses a word order name; "" means ABCD.
func ParseOrder(s string) (Order, error) {
	if s == "" {
		return ABCD, nil
	}
	for o := ABCD; o <= DCBA; o++ {
		if orderNames[o] == s || orderNames64[o] == s {
			return o, nil
		}
	}
	return 0, fmt.Errorf("unknown order %q (want ABCD, DCBA, BADC, CDAB or for 64-bit ABCDEFGH, HGFEDCBA, BADCFEHG, GHEFCDAB)", s)
}

// String returns the four-letter name of o.
func (o Order) String() string {
	if o > DCBA {
		return "order(" + strconv.Itoa(int(o)) + ")"
	}
	return orderNames[o]
}

// Point is one value read from a device.
type Point struct {
	Table   Table
	Address uint16 // 0-based protocol address
	Type    Type
	Order   Order
	Bit     uint8  // type bit: bit 0..15 of the register
	Length  uint16 // type string: number of registers
}

// Registers returns how many registers (or bits, on a bit table) p spans.
func (p Point) Registers() int {
	if p.Table.IsBit() {
		return 1
	}
	if p.Type == String {
		return int(p.Length)
	}
	return p.Type.words()
}

// Validate checks p on its own; NewPlan adds the per-device request caps.
func (p Point) Validate() error {
	if !p.Table.valid() {
		return fmt.Errorf("table: %s is not coil, discrete, holding or input", p.Table)
	}
	if !p.Type.valid() {
		return fmt.Errorf("type: %s is not a known type", p.Type)
	}
	if p.Table.IsBit() && p.Type != Bool {
		return fmt.Errorf("type: %s needs a register table, not %s", p.Type, p.Table)
	}
	if p.Order > DCBA {
		return fmt.Errorf("order: %s is not a known order", p.Order)
	}
	if p.Type == Bit {
		if p.Bit > 15 {
			return fmt.Errorf("bit: %d out of range 0..15", p.Bit)
		}
	} else if p.Bit != 0 {
		return fmt.Errorf("bit: %d set on type %s (only type bit has a bit)", p.Bit, p.Type)
	}
	if p.Type == String {
		if p.Length == 0 || p.Length > maxRegisters {
			return fmt.Errorf("length: %d registers out of range 1..%d for type string", p.Length, maxRegisters)
		}
	} else if p.Length != 0 {
		return fmt.Errorf("length: %d set on type %s (only type string has a length)", p.Length, p.Type)
	}
	if end := int(p.Address) + p.Registers() - 1; end > 0xFFFF {
		return fmt.Errorf("address: %d + %d registers runs past 65535", p.Address, p.Registers())
	}
	return nil
}

// Src returns the reading source "modbus:<unit>:<co|di|hr|ir>:<address>".
func (p Point) Src(unit uint8) string {
	short := "??"
	if p.Table.valid() {
		short = tableShort[p.Table]
	}
	b := make([]byte, 0, 24)
	b = append(b, "modbus:"...)
	b = strconv.AppendUint(b, uint64(unit), 10)
	b = append(b, ':')
	b = append(b, short...)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(p.Address), 10)
	return string(b)
}

package modbus

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

func hr(t Type, o Order) Point { return Point{Table: HoldingRegisters, Type: t, Order: o} }

func TestDecodeGolden(t *testing.T) {
	str := func(n uint16, o Order) Point {
		return Point{Table: HoldingRegisters, Type: String, Length: n, Order: o}
	}
	bit := func(b uint8, o Order) Point { return Point{Table: HoldingRegisters, Type: Bit, Bit: b, Order: o} }
	cases := []struct {
		name string
		p    Point
		data []byte
		num  float64
		str  string
	}{
		{"coil on", Point{Table: Coils, Type: Bool}, []byte{0x01}, 1, ""},
		{"coil off", Point{Table: Coils, Type: Bool}, []byte{0x00}, 0, ""},
		{"discrete only bit 0 counts", Point{Table: DiscreteInputs, Type: Bool}, []byte{0xFE}, 0, ""},
		{"bool register zero", hr(Bool, ABCD), []byte{0, 0}, 0, ""},
		{"bool register nonzero", hr(Bool, ABCD), []byte{0, 5}, 1, ""},
		{"bit 15", bit(15, ABCD), []byte{0x80, 0x01}, 1, ""},
		{"bit 0", bit(0, ABCD), []byte{0x80, 0x01}, 1, ""},
		{"bit 1", bit(1, ABCD), []byte{0x80, 0x01}, 0, ""},
		{"bit 15 byte-swapped", bit(15, BADC), []byte{0x01, 0x80}, 1, ""},
		{"bit 8 byte-swapped", bit(8, BADC), []byte{0x80, 0x01}, 1, ""},
		{"bit 0 byte-swapped", bit(0, BADC), []byte{0x80, 0x01}, 0, ""},
		{"int16 ABCD", hr(Int16, ABCD), []byte{0xFF, 0x38}, -200, ""},
		{"int16 BADC", hr(Int16, BADC), []byte{0x38, 0xFF}, -200, ""},
		{"int16 CDAB", hr(Int16, CDAB), []byte{0xFF, 0x38}, -200, ""},
		{"int16 DCBA", hr(Int16, DCBA), []byte{0x38, 0xFF}, -200, ""},
		{"uint16 ABCD", hr(Uint16, ABCD), []byte{0xFF, 0x38}, 65336, ""},
		{"uint16 BADC", hr(Uint16, BADC), []byte{0x34, 0x12}, 0x1234, ""},
		{"int32 ABCD", hr(Int32, ABCD), []byte{0xF8, 0xA4, 0x32, 0xEB}, -123456789, ""},
		{"int32 DCBA", hr(Int32, DCBA), []byte{0xEB, 0x32, 0xA4, 0xF8}, -123456789, ""},
		{"int32 BADC", hr(Int32, BADC), []byte{0xA4, 0xF8, 0xEB, 0x32}, -123456789, ""},
		{"int32 CDAB", hr(Int32, CDAB), []byte{0x32, 0xEB, 0xF8, 0xA4}, -123456789, ""},
		{"uint32 ABCD", hr(Uint32, ABCD), []byte{0x01, 0x02, 0x03, 0x04}, 16909060, ""},
		{"uint32 CDAB", hr(Uint32, CDAB), []byte{0x03, 0x04, 0x01, 0x02}, 16909060, ""},
		{"uint32 max", hr(Uint32, ABCD), []byte{0xFF, 0xFF, 0xFF, 0xFF}, 4294967295, ""},
		{"float32 ABCD", hr(Float32, ABCD), []byte{0x42, 0xF6, 0xE9, 0x79}, float64(float32(123.456)), ""},
		{"float32 DCBA", hr(Float32, DCBA), []byte{0x79, 0xE9, 0xF6, 0x42}, float64(float32(123.456)), ""},
		{"float32 BADC", hr(Float32, BADC), []byte{0xF6, 0x42, 0x79, 0xE9}, float64(float32(123.456)), ""},
		{"float32 CDAB", hr(Float32, CDAB), []byte{0xE9, 0x79, 0x42, 0xF6}, float64(float32(123.456)), ""},
		{"float32 negative zero", hr(Float32, ABCD), []byte{0x80, 0, 0, 0}, 0, ""},
		{"int64 ABCDEFGH", hr(Int64, ABCD), []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE}, -2, ""},
		{"int64 HGFEDCBA", hr(Int64, DCBA), []byte{0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, -2, ""},
		{"uint64 ABCDEFGH", hr(Uint64, ABCD), []byte{1, 2, 3, 4, 5, 6, 7, 8}, 0x0102030405060708, ""},
		{"uint64 HGFEDCBA", hr(Uint64, DCBA), []byte{8, 7, 6, 5, 4, 3, 2, 1}, 0x0102030405060708, ""},
		{"uint64 BADCFEHG", hr(Uint64, BADC), []byte{2, 1, 4, 3, 6, 5, 8, 7}, 0x0102030405060708, ""},
		{"uint64 GHEFCDAB", hr(Uint64, CDAB), []byte{7, 8, 5, 6, 3, 4, 1, 2}, 0x0102030405060708, ""},
		{"float64 ABCDEFGH", hr(Float64, ABCD), []byte{0x40, 0x93, 0x4A, 0x45, 0x6D, 0x5C, 0xFA, 0xAD}, 1234.5678, ""},
		{"float64 HGFEDCBA", hr(Float64, DCBA), []byte{0xAD, 0xFA, 0x5C, 0x6D, 0x45, 0x4A, 0x93, 0x40}, 1234.5678, ""},
		{"float64 BADCFEHG", hr(Float64, BADC), []byte{0x93, 0x40, 0x45, 0x4A, 0x5C, 0x6D, 0xAD, 0xFA}, 1234.5678, ""},
		{"float64 GHEFCDAB", hr(Float64, CDAB), []byte{0xFA, 0xAD, 0x6D, 0x5C, 0x4A, 0x45, 0x40, 0x93}, 1234.5678, ""},
		{"string NUL padded", str(4, ABCD), []byte("PUMP-7\x00\x00"), 0, "PUMP-7"},
		{"string space padded", str(3, ABCD), []byte("AB    "), 0, "AB"},
		{"string full", str(2, ABCD), []byte("ABCD"), 0, "ABCD"},
		{"string empty", str(2, ABCD), []byte{0, 0, 0, 0}, 0, ""},
		{"string byte-swapped", str(4, BADC), []byte("UPPM7-\x00\x00"), 0, "PUMP-7"},
		{"string byte-swapped odd", str(2, BADC), []byte("BA\x00C"), 0, "ABC"},
		{"string keeps inner space", str(3, ABCD), []byte("A B \x00\x00"), 0, "A B"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Decode(c.p, c.data)
			if v.Quality != telemetry.QualityGood || v.Status != 0 {
				t.Fatalf("Decode = %+v, want good", v)
			}
			if c.p.Type == String {
				if !v.IsStr || v.Str != c.str {
					t.Fatalf("Decode = %q (IsStr %v), want %q", v.Str, v.IsStr, c.str)
				}
				return
			}
			if v.IsStr || v.Num != c.num {
				t.Fatalf("Decode = %v, want %v", v.Num, c.num)
			}
		})
	}
}

func TestDecodeBad(t *testing.T) {
	cases := []struct {
		name   string
		p      Point
		data   []byte
		status Status
	}{
		{"float32 NaN", hr(Float32, ABCD), []byte{0x7F, 0xC0, 0, 0}, StatusNotFinite},
		{"float32 +Inf", hr(Float32, ABCD), []byte{0x7F, 0x80, 0, 0}, StatusNotFinite},
		{"float32 -Inf swapped", hr(Float32, CDAB), []byte{0, 0, 0xFF, 0x80}, StatusNotFinite},
		{"float64 NaN", hr(Float64, ABCD), []byte{0x7F, 0xF8, 0, 0, 0, 0, 0, 1}, StatusNotFinite},
		{"float64 -Inf", hr(Float64, ABCD), []byte{0xFF, 0xF0, 0, 0, 0, 0, 0, 0}, StatusNotFinite},
		{"int32 short", hr(Int32, ABCD), []byte{1, 2}, StatusBadLength},
		{"int16 long", hr(Int16, ABCD), []byte{1, 2, 3}, StatusBadLength},
		{"coil empty", Point{Table: Coils, Type: Bool}, nil, StatusBadLength},
		{"string length 0", Point{Table: HoldingRegisters, Type: String}, nil, StatusBadLength},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Decode(c.p, c.data)
			if Status(v.Status) != c.status || v.Quality != telemetry.QualityBad {
				t.Fatalf("Decode = %+v, want bad with %v", v, c.status)
			}
			if c.status == StatusNotFinite && v.Silent {
				t.Fatal("a non-finite value is the device's answer, not silence")
			}
			if v.Num != 0 || v.Str != "" {
				t.Fatalf("bad value carries a value: %+v", v)
			}
		})
	}
}

func TestParseNames(t *testing.T) {
	for _, s := range []string{"coil", "discrete", "holding", "input"} {
		tb, err := ParseTable(s)
		if err != nil || tb.String() != s {
			t.Errorf("ParseTable(%q) = %v, %v", s, tb, err)
		}
	}
	for _, s := range []string{"bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"} {
		ty, err := ParseType(s)
		if err != nil || ty.String() != s {
			t.Errorf("ParseType(%q) = %v, %v", s, ty, err)
		}
	}
	orders := map[string]Order{"": ABCD, "ABCD": ABCD, "DCBA": DCBA, "BADC": BADC, "CDAB": CDAB,
		"ABCDEFGH": ABCD, "HGFEDCBA": DCBA, "BADCFEHG": BADC, "GHEFCDAB": CDAB}
	for s, want := range orders {
		if o, err := ParseOrder(s); err != nil || o != want {
			t.Errorf("ParseOrder(%q) = %v, %v; want %v", s, o, err, want)
		}
	}
	for _, bad := range []string{"holdings", "HR", ""} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) accepted", bad)
		}
	}
	if _, err := ParseType("float"); err == nil || !strings.Contains(err.Error(), `"float"`) {
		t.Errorf("ParseType(float) = %v", err)
	}
	if _, err := ParseOrder("ABDC"); err == nil {
		t.Error("ParseOrder(ABDC) accepted")
	}
}

func TestPointValidate(t *testing.T) {
	cases := []struct {
		p   Point
		err string
	}{
		{Point{Table: Coils, Type: Float32}, "type: float32 needs a register table, not coil"},
		{Point{Table: DiscreteInputs, Type: Bit}, "type: bit needs a register table, not discrete"},
		{Point{Table: HoldingRegisters, Type: Bit, Bit: 16}, "bit: 16 out of range 0..15"},
		{Point{Table: HoldingRegisters, Type: Int16, Bit: 3}, "bit: 3 set on type int16"},
		{Point{Table: HoldingRegisters, Type: String}, "length: 0 registers out of range 1..125"},
		{Point{Table: HoldingRegisters, Type: Int16, Length: 2}, "length: 2 set on type int16"},
		{Point{Table: HoldingRegisters, Type: Float64, Address: 65533}, "address: 65533 + 4 registers runs past 65535"},
		{Point{Table: 0, Type: Int16}, "table:"},
		{Point{Table: InputRegisters, Type: 0}, "type:"},
		{Point{Table: InputRegisters, Type: Int16, Order: 7}, "order:"},
	}
	for _, c := range cases {
		err := c.p.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.err) {
			t.Errorf("%+v: Validate = %v, want prefix %q", c.p, err, c.err)
		}
	}
	good := []Point{
		{Table: Coils, Type: Bool, Address: 65535},
		{Table: HoldingRegisters, Type: Float64, Address: 65532},
		{Table: InputRegisters, Type: String, Length: 125},
		{Table: HoldingRegisters, Type: Bit, Bit: 15},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	if got := (Point{Table: HoldingRegisters, Address: 40}).Src(3); got != "modbus:3:hr:40" {
		t.Errorf("Src = %q", got)
	}
	if got := (Point{Table: DiscreteInputs, Address: 7}).Src(255); got != "modbus:255:di:7" {
		t.Errorf("Src = %q", got)
	}
}

func TestStatusError(t *testing.T) {
	q := Status(2) | StatusQuarantined
	cases := []struct {
		s      Status
		text   string
		is     []Status
		isNot  []Status
		kind   string
		silent bool
	}{
		{Status(2), "modbus: exception 2 (illegal data address)", []Status{Status(2)}, []Status{StatusQuarantined, Status(3)}, "exception", false},
		{q, "modbus: exception 2 (illegal data address), address quarantined", []Status{Status(2), StatusQuarantined, q}, []Status{Status(3), StatusTimeout}, "exception", false},
		{StatusTimeout, "modbus: timeout", []Status{StatusTimeout}, []Status{StatusConnection, StatusQuarantined}, "timeout", true},
		{StatusTransactionMismatch, "modbus: transaction id mismatch", []Status{StatusTransactionMismatch}, nil, "transaction_mismatch", true},
		{StatusNotFinite, "modbus: value is NaN or infinite", []Status{StatusNotFinite}, nil, "not_finite", false},
		{Status(42), "modbus: exception 42 (unknown exception)", []Status{Status(42)}, nil, "exception", false},
	}
	for _, c := range cases {
		if c.s.Error() != c.text {
			t.Errorf("%#x: %q, want %q", uint32(c.s), c.s.Error(), c.text)
		}
		wrapped := fmt.Errorf("read holding 0+1 unit 1: %w", c.s)
		for _, target := range c.is {
			if !errors.Is(wrapped, target) {
				t.Errorf("%#x: errors.Is(%#x) false", uint32(c.s), uint32(target))
			}
		}
		for _, target := range c.isNot {
			if errors.Is(wrapped, target) {
				t.Errorf("%#x: errors.Is(%#x) true", uint32(c.s), uint32(target))
			}
		}
		if c.s.Kind() != c.kind || c.s.Silent() != c.silent || StatusOf(wrapped) != c.s {
			t.Errorf("%#x: kind %s silent %v StatusOf %#x", uint32(c.s), c.s.Kind(), c.s.Silent(), uint32(StatusOf(wrapped)))
		}
	}
	if uint32(q) != 0x10002 {
		t.Fatalf("quarantined exception 2 = %#x, want 0x10002 (docs/schema.md)", uint32(q))
	}
	re := fmt.Errorf("read holding 0+4 unit 3: %w", &ReplyError{Status: StatusWrongUnit, Want: 3, Got: 1})
	if !errors.Is(re, StatusWrongUnit) || StatusOf(re) != StatusWrongUnit ||
		re.Error() != "read holding 0+4 unit 3: modbus: reply from unit 1 to a request for unit 3" {
		t.Fatalf("reply error: %v", re)
	}
}

// FuzzDecode checks that Decode never panics, never returns a non-finite
// number, and that a good value of a fixed-size type needs exactly its bytes.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(HoldingRegisters), uint8(Float32), uint8(0), uint8(0), uint16(0), []byte{0x42, 0xF6, 0xE9, 0x79})
	f.Add(uint8(HoldingRegisters), uint8(Float64), uint8(3), uint8(0), uint16(0), []byte{0x7F, 0xF8, 0, 0, 0, 0, 0, 1})
	f.Add(uint8(InputRegisters), uint8(String), uint8(1), uint8(0), uint16(3), []byte("AB\x00 CD"))
	f.Add(uint8(Coils), uint8(Bool), uint8(0), uint8(0), uint16(0), []byte{1})
	f.Add(uint8(HoldingRegisters), uint8(Bit), uint8(0), uint8(9), uint16(0), []byte{2, 0})
	f.Fuzz(func(t *testing.T, table, typ, order, bit uint8, length uint16, data []byte) {
		p := Point{Table: Table(table), Type: Type(typ), Order: Order(order), Bit: bit, Length: length}
		v := Decode(p, data)
		if v.Quality == telemetry.QualityGood {
			if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
				t.Fatalf("good non-finite value %v", v.Num)
			}
			if v.Status != 0 {
				t.Fatalf("good value with status %d", v.Status)
			}
			if p.Validate() == nil && !p.Table.IsBit() && len(data) != 2*p.Registers() {
				t.Fatalf("good value from %d bytes for %d registers", len(data), p.Registers())
			}
		} else if v.Status == 0 || v.Quality != telemetry.QualityBad {
			t.Fatalf("not good but %+v", v)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	points := []struct {
		p    Point
		data []byte
	}{
		{hr(Float32, CDAB), []byte{0xE9, 0x79, 0x42, 0xF6}},
		{hr(Int16, ABCD), []byte{0xFF, 0x38}},
		{hr(Uint64, DCBA), []byte{8, 7, 6, 5, 4, 3, 2, 1}},
		{Point{Table: HoldingRegisters, Type: Bit, Bit: 3}, []byte{0, 8}},
	}
	b.ReportAllocs()
	var sum float64
	for b.Loop() {
		for _, c := range points {
			sum += Decode(c.p, c.data).Num
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(points)), "ns/point")
	_ = sum
}

// BenchmarkDecodeInto decodes one 100-register reply into a group's
// samples, as every poll of the gateway benchmark's devices does.
func BenchmarkDecodeInto(b *testing.B) {
	pts := make([]Point, 100)
	for i := range pts {
		pts[i] = Point{Table: HoldingRegisters, Address: uint16(i), Type: Uint16}
	}
	plan, err := NewPlan(pts, Config{})
	if err != nil {
		b.Fatal(err)
	}
	r := &plan.reqs[0]
	data := make([]byte, 2*r.count)
	for i := range data {
		data[i] = byte(i * 7)
	}
	out := make([]sample.Sample, len(pts))
	b.ReportAllocs()
	for b.Loop() {
		plan.decodeInto(r, data, out)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pts)), "ns/point")
}

// TestDecodeIntoMatchesDecode: decodeInto's shortcut for plain 16-bit
// registers gives what Decode gives, for every type and order of a 16-bit
// point and every value of a register.
func TestDecodeIntoMatchesDecode(t *testing.T) {
	for _, typ := range []Type{Uint16, Int16, Bool, Bit} {
		for _, ord := range []Order{ABCD, CDAB, BADC, DCBA} {
			pts := []Point{{Table: HoldingRegisters, Address: 0, Type: typ, Order: ord},
				{Table: HoldingRegisters, Address: 1, Type: typ, Order: ord}}
			if typ == Bit {
				pts[0].Bit, pts[1].Bit = 5, 15
			}
			plan, err := NewPlan(pts, Config{})
			if err != nil {
				t.Fatal(err)
			}
			r := &plan.reqs[0]
			out := make([]sample.Sample, 2)
			for v := range 1 << 16 {
				data := []byte{byte(v >> 8), byte(v), byte(v), byte(v >> 8)}
				plan.decodeInto(r, data, out)
				for i, p := range plan.points {
					off := int(p.Address) - int(r.start)
					if want := Decode(p, data[2*off:2*off+2]); out[i] != want {
						t.Fatalf("%v %v register %#04x: decodeInto %+v, Decode %+v", typ, ord, v, out[i], want)
					}
				}
			}
		}
	}
}

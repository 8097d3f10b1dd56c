package modbus

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
)

var allOrders = []Order{ABCD, BADC, CDAB, DCBA}

// sampleFor returns a random value that fits t.
func sampleFor(r *rand.Rand, t Type) float64 {
	switch t {
	case Bool:
		return float64(r.IntN(2))
	case Bit:
		return float64(r.IntN(2))
	case Int16:
		return float64(r.IntN(1<<16) - 1<<15)
	case Uint16:
		return float64(r.IntN(1 << 16))
	case Int32:
		return float64(int32(r.Uint32()))
	case Uint32:
		return float64(r.Uint32())
	case Int64:
		return float64(int64(r.Uint64()))
	case Uint64:
		return math.Ldexp(r.Float64(), 64) // < 2^64
	case Float32:
		return float64(float32(r.NormFloat64() * 1e4))
	case Float64:
		return r.NormFloat64() * 1e12
	}
	return 0
}

// TestEncodeRoundTrip: for every type and word order, Decode(Encode(v)) is
// v exactly for values the type holds, and the nearest representable value
// for others (integers rounded, float32 to float32 precision).
func TestEncodeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for typ := Bool; typ <= Float64; typ++ {
		for _, o := range allOrders {
			p := Point{Table: HoldingRegisters, Address: 7, Type: typ, Order: o}
			if typ == Bit {
				p.Bit = uint8(r.IntN(16))
			}
			for range 500 {
				v := sampleFor(r, typ)
				data, err := Encode(p, v)
				if err != nil {
					t.Fatalf("%s %s: Encode(%v): %v", typ, o, v, err)
				}
				got := Decode(p, data)
				if got.Quality != telemetry.QualityGood || got.Num != v {
					t.Fatalf("%s %s bit %d: Decode(Encode(%v)) = %+v (% X)", typ, o, p.Bit, v, got, data)
				}
			}
			// a value between integers comes back rounded; a float64 into
			// float32 within float32 precision
			v := 12.6
			data, err := Encode(p, v)
			if err != nil {
				t.Fatalf("%s %s: Encode(%v): %v", typ, o, v, err)
			}
			got := Decode(p, data).Num
			want := map[Type]float64{Bool: 1, Bit: 1, Float32: float64(float32(v)), Float64: v}[typ]
			if want == 0 {
				want = 13
			}
			if got != want {
				t.Errorf("%s %s: Decode(Encode(%v)) = %v, want %v", typ, o, v, got, want)
			}
		}
	}
	coil := Point{Table: Coils, Address: 3, Type: Bool}
	for _, v := range []float64{0, 1, 5} {
		data, err := Encode(coil, v)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := Decode(coil, data).Num, math.Min(v, 1); got != want {
			t.Errorf("coil %v: %v, want %v", v, got, want)
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	cases := []struct {
		p    Point
		v    float64
		want error
	}{
		{Point{Table: InputRegisters, Type: Uint16}, 1, ErrNotWritable},
		{Point{Table: DiscreteInputs, Type: Bool}, 1, ErrNotWritable},
		{Point{Table: HoldingRegisters, Type: String, Length: 4}, 1, ErrNotWritable},
		{Point{Table: HoldingRegisters, Type: Int16}, 32767.6, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Int16}, -32768.6, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Uint16}, -1, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Uint32}, 1 << 32, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Int64}, 1 << 63, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Uint64}, 1 << 64, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Float32}, 1e39, ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Float64}, math.NaN(), ErrValueRange},
		{Point{Table: HoldingRegisters, Type: Float64}, math.Inf(1), ErrValueRange},
	}
	for _, c := range cases {
		if _, err := Encode(c.p, c.v); !errors.Is(err, c.want) {
			t.Errorf("Encode(%s %s, %v) = %v, want %v", c.p.Table, c.p.Type, c.v, err, c.want)
		}
	}
	// the edges themselves fit
	for _, c := range []struct {
		typ Type
		v   float64
	}{{Int16, 32767}, {Int16, -32768}, {Uint16, 65535}, {Int32, math.MinInt32}, {Uint32, math.MaxUint32}} {
		if _, err := Encode(Point{Table: HoldingRegisters, Type: c.typ}, c.v); err != nil {
			t.Errorf("Encode(%s, %v): %v", c.typ, c.v, err)
		}
	}
}

// TestWritePDUGolden pins the request PDUs against the examples of the
// Modbus Application Protocol V1.1b3 (6.5 FC5 coil 173 ON, 6.6 FC6 register
// 2 = 3, 6.12 FC16 registers 2..3 = 000A 0102, 6.16 FC22 register 4 with
// masks) and the word orders of a float32 (1.0 = 3F80 0000).
func TestWritePDUGolden(t *testing.T) {
	hr := func(addr uint16, typ Type, o Order) Point {
		return Point{Table: HoldingRegisters, Address: addr, Type: typ, Order: o}
	}
	cases := []struct {
		name     string
		p        Point
		v        float64
		multiple bool
		want     []byte
	}{
		{"fc5 on", Point{Table: Coils, Address: 172, Type: Bool}, 1, false, []byte{5, 0x00, 0xAC, 0xFF, 0x00}},
		{"fc5 off", Point{Table: Coils, Address: 172, Type: Bool}, 0, false, []byte{5, 0x00, 0xAC, 0x00, 0x00}},
		{"fc15 one coil", Point{Table: Coils, Address: 19, Type: Bool}, 1, true, []byte{15, 0x00, 0x13, 0x00, 0x01, 0x01, 0x01}},
		{"fc6", hr(1, Uint16, ABCD), 3, false, []byte{6, 0x00, 0x01, 0x00, 0x03}},
		{"fc6 int16 -2 badc", hr(1, Int16, BADC), -2, false, []byte{6, 0x00, 0x01, 0xFE, 0xFF}},
		{"fc16 one register", hr(1, Uint16, ABCD), 3, true, []byte{16, 0x00, 0x01, 0x00, 0x01, 0x02, 0x00, 0x03}},
		{"fc16 uint32", hr(1, Uint32, ABCD), 0x000A0102, false, []byte{16, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02}},
		{"fc16 float32 abcd", hr(100, Float32, ABCD), 1, false, []byte{16, 0, 100, 0, 2, 4, 0x3F, 0x80, 0x00, 0x00}},
		{"fc16 float32 cdab", hr(100, Float32, CDAB), 1, false, []byte{16, 0, 100, 0, 2, 4, 0x00, 0x00, 0x3F, 0x80}},
		{"fc16 float32 badc", hr(100, Float32, BADC), 1, false, []byte{16, 0, 100, 0, 2, 4, 0x80, 0x3F, 0x00, 0x00}},
		{"fc16 float32 dcba", hr(100, Float32, DCBA), 1, false, []byte{16, 0, 100, 0, 2, 4, 0x00, 0x00, 0x80, 0x3F}},
		{"fc16 int64 -1 cdab", hr(0, Int64, CDAB), -1, false, []byte{16, 0, 0, 0, 4, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
		{"fc22 set bit 5", Point{Table: HoldingRegisters, Address: 4, Type: Bit, Bit: 5}, 1, false, []byte{22, 0x00, 0x04, 0xFF, 0xDF, 0x00, 0x20}},
		{"fc22 clear bit 9", Point{Table: HoldingRegisters, Address: 4, Type: Bit, Bit: 9}, 0, false, []byte{22, 0x00, 0x04, 0xFD, 0xFF, 0x00, 0x00}},
		{"fc22 set bit 1 badc", Point{Table: HoldingRegisters, Address: 4, Type: Bit, Bit: 1, Order: BADC}, 1, false, []byte{22, 0x00, 0x04, 0xFD, 0xFF, 0x02, 0x00}},
	}
	for _, c := range cases {
		data, err := Encode(c.p, c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := writePDU(nil, c.p, data, c.multiple); !bytes.Equal(got, c.want) {
			t.Errorf("%s: % X, want % X", c.name, got, c.want)
		}
	}
}

// TestWriteReplyEcho: a write reply must echo the request; anything else is
// StatusBadEcho, an exception its Status.
func TestWriteReplyEcho(t *testing.T) {
	req := []byte{6, 0x00, 0x01, 0x00, 0x03}
	want := expectFor(1, req)
	if _, err := checkReply(append([]byte{1}, req...), want); err != nil {
		t.Fatalf("honest echo: %v", err)
	}
	for _, bad := range [][]byte{{6, 0x00, 0x02, 0x00, 0x03}, {6, 0x00, 0x01, 0x00, 0x04}, {6, 0x00, 0x01}} {
		_, err := checkReply(append([]byte{1}, bad...), want)
		var re *ReplyError
		if !errors.As(err, &re) || re.Status != StatusBadEcho || !errors.Is(err, StatusBadEcho) {
			t.Errorf("reply % X: %v, want StatusBadEcho", bad, err)
		}
	}
	multi := []byte{16, 0x00, 0x01, 0x00, 0x02, 0x04, 0, 10, 1, 2}
	if _, err := checkReply([]byte{1, 16, 0x00, 0x01, 0x00, 0x02}, expectFor(1, multi)); err != nil {
		t.Errorf("fc16 echo: %v", err)
	}
	if _, err := checkReply([]byte{1, 16, 0x00, 0x01, 0x00, 0x01}, expectFor(1, multi)); !errors.Is(err, StatusBadEcho) {
		t.Errorf("fc16 wrong quantity: %v", err)
	}
	if _, err := checkReply([]byte{1, 0x86, 2}, want); !errors.Is(err, Status(2)) {
		t.Errorf("exception: %v", err)
	}
}

// TestWritePoint writes every writable type through a real Modbus TCP
// server (a stack we did not write) and reads it back through the same
// source; exceptions come back as their Status, read-only tables are
// refused without a request.
func TestWritePoint(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	var pts []Point
	addr := uint16(0)
	for typ := Bool; typ <= Float64; typ++ {
		if typ == Bit {
			continue // FC22: the server does not implement it
		}
		for _, o := range allOrders {
			p := Point{Table: HoldingRegisters, Address: addr, Type: typ, Order: o}
			pts = append(pts, p)
			addr += uint16(p.Registers())
		}
	}
	pts = append(pts, Point{Table: Coils, Address: 9, Type: Bool}, Point{Table: InputRegisters, Address: 0, Type: Uint16})
	idx := make([]int, len(pts))
	for i := range idx {
		idx[i] = 100 + i
	}
	for _, multiple := range []bool{false, true} {
		pool := NewPool(testLogger(t), nil)
		cfg := testConfig(TCP, srv.Addr, 1)
		cfg.WriteMultiple = multiple
		src, err := pool.Source("w", cfg, []Group{{Interval: time.Second, Points: pts, Index: idx}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		r := rand.New(rand.NewPCG(3, 4))
		for i, p := range pts[:len(pts)-1] {
			v := sampleFor(r, p.Type)
			if w, err := src.WritePoint(ctx, idx[i], v); err != nil || w != v {
				t.Fatalf("write %s %s: %v returned %v (%v)", p.Type, p.Order, v, w, err)
			}
			got, err := src.ReadPoint(ctx, idx[i])
			if err != nil || got.Num != v {
				t.Fatalf("%s %s: wrote %v, read %v (%v)", p.Type, p.Order, v, got.Num, err)
			}
		}
		bank.ResetRequests()
		if _, err := src.WritePoint(ctx, idx[len(idx)-1], 1); !errors.Is(err, ErrNotWritable) {
			t.Errorf("input register: %v", err)
		}
		if _, err := src.WritePoint(ctx, 5, 1); err == nil {
			t.Error("unknown index written")
		}
		if n := len(bank.Requests()); n != 0 {
			t.Errorf("%d requests for refused writes", n)
		}
		bank.SetException(modbustest.HoldingRegisters, 0, 3)
		_, err = src.WritePoint(ctx, idx[0], 1)
		if !errors.Is(err, Status(3)) {
			t.Errorf("exception: %v, want exception 3", err)
		}
		bank.SetException(modbustest.HoldingRegisters, 0, 0)
		_ = pool.Close()
	}
	wrote := false
	for _, rq := range bank.Requests() {
		wrote = wrote || rq.Write
	}
	if !wrote {
		t.Error("the exception test sent no write request")
	}
}

// FuzzEncode: any value for any point either fails with ErrNotWritable or
// ErrValueRange or decodes back to the value the type holds.
func FuzzEncode(f *testing.F) {
	f.Add(uint8(Int16), uint8(0), uint8(0), 12.5)
	f.Add(uint8(Float32), uint8(CDAB), uint8(0), -1e39)
	f.Add(uint8(Uint64), uint8(DCBA), uint8(0), 1.8446744073709552e19)
	f.Add(uint8(Bit), uint8(BADC), uint8(15), 1.0)
	f.Fuzz(func(t *testing.T, typ, order, bit uint8, v float64) {
		p := Point{Table: HoldingRegisters, Type: Type(typ%uint8(Float64)) + 1, Order: Order(order % 4)}
		if p.Type == Bit {
			p.Bit = bit % 16
		}
		data, err := Encode(p, v)
		if err != nil {
			if !errors.Is(err, ErrValueRange) && !errors.Is(err, ErrNotWritable) {
				t.Fatalf("Encode(%s, %v): untyped error %v", p.Type, v, err)
			}
			return
		}
		if len(data) != 2*p.Registers() {
			t.Fatalf("Encode(%s, %v): %d bytes", p.Type, v, len(data))
		}
		got := Decode(p, data)
		var want float64
		switch p.Type {
		case Bool, Bit:
			want = 0
			if v != 0 {
				want = 1
			}
		case Float32:
			want = float64(float32(v))
		case Float64:
			want = v
		default:
			want = math.Round(v)
		}
		if got.Num != want && !(want == 0 && got.Num == 0) {
			t.Fatalf("%s %s: Decode(Encode(%v)) = %v, want %v", p.Type, p.Order, v, got.Num, want)
		}
		pdu := writePDU(nil, p, data, false)
		if e := echoOf(pdu); e == nil {
			t.Fatalf("write PDU % X has no echo", pdu)
		}
	})
}

// TestWriteFrameGolden pins whole write frames: the RTU example of the
// Modbus over Serial Line guides (slave 0x11, FC6 register 2 = 3, CRC
// 9A 9B), the same request in MBAP and ASCII (LRC E5).
func TestWriteFrameGolden(t *testing.T) {
	p := Point{Table: HoldingRegisters, Address: 1, Type: Uint16}
	data, err := Encode(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	pdu := writePDU(nil, p, data, false)
	cases := []struct {
		tr   Transport
		want []byte
	}{
		{RTU, []byte{0x11, 0x06, 0x00, 0x01, 0x00, 0x03, 0x9A, 0x9B}},
		{TCP, []byte{0x00, 0x07, 0x00, 0x00, 0x00, 0x06, 0x11, 0x06, 0x00, 0x01, 0x00, 0x03}},
		{ASCII, []byte(":110600010003E5\r\n")},
	}
	for _, c := range cases {
		if got := appendRequest(nil, c.tr, 7, 0x11, pdu); !bytes.Equal(got, c.want) {
			t.Errorf("%s: % X, want % X", c.tr, got, c.want)
		}
	}
}

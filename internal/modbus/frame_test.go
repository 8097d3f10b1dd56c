package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
)

func byteReader(data []byte) filler {
	r := bytes.NewReader(data)
	return func(p []byte) error {
		if _, err := io.ReadFull(r, p); err != nil {
			return linkErr(StatusTimeout, "end of test input")
		}
		return nil
	}
}

func exp(unit, fc byte, count int) expect { return expect{unit: unit, fc: fc, count: count} }

func TestRequestGolden(t *testing.T) {
	pdu := readPDU(nil, HoldingRegisters, 0x006B, 3)
	if !bytes.Equal(pdu, []byte{3, 0x00, 0x6B, 0x00, 0x03}) {
		t.Fatalf("pdu = %x", pdu)
	}
	// Modbus over Serial Line V1.02 / Application Protocol examples: read
	// holding 0x006B..0x006D of unit 0x11.
	if got := appendRequest(nil, RTU, 0, 0x11, pdu); !bytes.Equal(got, []byte{0x11, 3, 0, 0x6B, 0, 3, 0x76, 0x87}) {
		t.Errorf("rtu = %x", got)
	}
	if got := appendRequest(nil, ASCII, 0, 0x11, pdu); string(got) != ":1103006B00037E\r\n" {
		t.Errorf("ascii = %q", got)
	}
	if got := appendRequest(nil, TCP, 0x1234, 0x11, pdu); !bytes.Equal(got, []byte{0x12, 0x34, 0, 0, 0, 6, 0x11, 3, 0, 0x6B, 0, 3}) {
		t.Errorf("tcp = %x", got)
	}
	if e := expectFor(0x11, pdu); e.count != 6 || e.fc != 3 || e.unit != 0x11 {
		t.Errorf("expect = %+v", e)
	}
	if e := expectFor(1, readPDU(nil, Coils, 0, 19)); e.count != 3 {
		t.Errorf("coil byte count = %d, want 3", e.count)
	}
}

func TestFrameGolden(t *testing.T) {
	// read holding registers reply from unit 1: two registers 0x000A 0x0102
	rtu := modbustest.EncodeRTU(1, []byte{3, 4, 0x00, 0x0A, 0x01, 0x02})
	var buf [maxADU]byte
	pdu, err := readRTU(byteReader(rtu), buf[:], exp(1, 3, 4))
	if err != nil || !bytes.Equal(pdu, []byte{3, 4, 0x00, 0x0A, 0x01, 0x02}) {
		t.Fatalf("readRTU = %x, %v", pdu, err)
	}
	exc := modbustest.EncodeRTU(1, []byte{0x83, 2})
	if _, err := readRTU(byteReader(exc), buf[:], exp(1, 3, 4)); !errors.Is(err, Status(2)) {
		t.Fatalf("exception frame: %v", err)
	}
	bad := bytes.Clone(rtu)
	bad[len(bad)-1] ^= 0xFF
	ascii := modbustest.EncodeASCII(1, []byte{3, 4, 0x00, 0x0A, 0x01, 0x02})
	cases := []struct {
		name   string
		frame  []byte
		status Status
		text   string
		read   func(filler, []byte, expect) ([]byte, error)
	}{
		{"rtu wrong unit", modbustest.EncodeRTU(1, []byte{3, 2, 0, 1}), StatusWrongUnit, "reply from unit 1 to a request for unit 3", readRTU},
		{"rtu wrong function", modbustest.EncodeRTU(3, []byte{4, 4, 0, 1, 0, 2}), StatusWrongFunction, "reply function 4 to request function 3", readRTU},
		{"rtu byte count", modbustest.EncodeRTU(3, []byte{3, 6, 0, 1, 0, 2, 0, 3}), StatusBadLength, "byte count 6, request wants 4", readRTU},
		{"rtu crc", bad, StatusChecksum, "checksum mismatch", readRTU},
		{"rtu garbage", modbustest.GarbageBytes, StatusChecksum, "checksum", readRTU},
		{"rtu unknown function", []byte{3, 0x41, 0, 0}, StatusFraming, "function code 65", readRTU},
		{"ascii wrong unit", modbustest.EncodeASCII(1, []byte{3, 4, 0, 1, 0, 2}), StatusWrongUnit, "unit 1", readASCII},
		{"ascii lrc", append(bytes.Clone(ascii[:len(ascii)-4]), '0', '0', '\r', '\n'), StatusChecksum, "checksum", readASCII},
		{"ascii not hex", []byte(":01XY\r\n"), StatusFraming, "not hex", readASCII},
	}
	for _, c := range cases {
		unit := byte(3)
		if c.status == StatusChecksum || c.status == StatusFraming {
			unit = 1
		}
		_, err := c.read(byteReader(c.frame), buf[:], exp(unit, 3, 4))
		var re *ReplyError
		if !errors.Is(err, c.status) || !errors.As(err, &re) || !bytes.Contains([]byte(err.Error()), []byte(c.text)) {
			t.Errorf("%s: %v, want %v with %q", c.name, err, c.status, c.text)
		}
	}

	noisy := append([]byte("\x00\r\n"), ascii...)
	pdu, err = readASCII(byteReader(noisy), buf[:], exp(1, 3, 4))
	if err != nil || !bytes.Equal(pdu, []byte{3, 4, 0x00, 0x0A, 0x01, 0x02}) {
		t.Fatalf("readASCII = %x, %v", pdu, err)
	}
}

func TestMBAPTransactionIDs(t *testing.T) {
	var buf [maxADU]byte
	reply := func(tid uint16, unit byte) []byte {
		return modbustest.MBAPReply(tid, unit, []byte{3, 2, 0, 7})
	}
	var skipped int
	skip := func(f []byte) { skipped += len(f) }
	// a leftover with another id is skipped, the right one taken
	stream := append(reply(0x7777, 1), reply(9, 1)...)
	pdu, err := readMBAP(byteReader(stream), buf[:], expect{tid: 9, unit: 1, fc: 3, count: 2}, skip)
	if err != nil || !bytes.Equal(pdu, []byte{3, 2, 0, 7}) || skipped != 11 {
		t.Fatalf("pdu %x, err %v, skipped %d", pdu, err, skipped)
	}
	// a device answering with id + 1: the mismatch is the cause, with both ids
	_, err = readMBAP(byteReader(reply(10, 1)), buf[:], expect{tid: 9, unit: 1, fc: 3, count: 2}, skip)
	var re *ReplyError
	if !errors.Is(err, StatusTransactionMismatch) || !errors.As(err, &re) || re.Want != 9 || re.Got != 10 ||
		err.Error() != "modbus: transaction id mismatch: reply 10 to request 9" {
		t.Fatalf("tid+1: %v", err)
	}
	_, err = readMBAP(byteReader(reply(9, 2)), buf[:], expect{tid: 9, unit: 1, fc: 3, count: 2}, skip)
	if !errors.Is(err, StatusWrongUnit) {
		t.Fatalf("wrong unit: %v", err)
	}
}

// FuzzRTUFrame feeds arbitrary byte streams to the RTU reply reader: it must
// not panic, and whatever it accepts has a valid CRC, the requested unit,
// function and byte count, and is the stream's prefix.
func FuzzRTUFrame(f *testing.F) {
	f.Add([]byte{1, 3, 4, 0, 10, 1, 2}, byte(1), byte(3), uint8(2))
	f.Add(modbustest.EncodeRTU(1, []byte{3, 4, 0, 10, 1, 2}), byte(1), byte(3), uint8(2))
	f.Add(modbustest.EncodeRTU(9, []byte{0x81, 2}), byte(9), byte(1), uint8(1))
	f.Add(modbustest.EncodeRTU(1, []byte{2, 1, 5}), byte(1), byte(2), uint8(3))
	f.Add([]byte{1, 3, 255}, byte(1), byte(3), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, unit, fc byte, qty uint8) {
		var buf [maxADU]byte
		want := expectFor(unit, []byte{fc, 0, 0, 0, qty})
		pdu, err := readRTU(byteReader(data), buf[:], want)
		if err != nil {
			return
		}
		n := len(pdu) + 1
		if len(data) < n+2 || checksum.CRC16(data[:n]) != binary.LittleEndian.Uint16(data[n:]) {
			t.Fatalf("accepted bad frame %x", data)
		}
		if data[0] != unit || pdu[0] != fc || !bytes.Equal(pdu, data[1:n]) {
			t.Fatalf("accepted frame %x for unit %d function %d", data, unit, fc)
		}
		if want.count >= 0 && int(pdu[1]) != want.count {
			t.Fatalf("accepted byte count %d, want %d", pdu[1], want.count)
		}
	})
}

// FuzzASCIIFrame does the same for ASCII replies: what the reader accepts
// decodes (by encoding/hex, independently) to a frame with a valid LRC.
func FuzzASCIIFrame(f *testing.F) {
	f.Add(modbustest.EncodeASCII(1, []byte{3, 4, 0, 10, 1, 2}), byte(1), byte(3))
	f.Add(modbustest.EncodeASCII(1, []byte{0x84, 3}), byte(1), byte(4))
	f.Add([]byte("junk:0103020001F9\r\n"), byte(1), byte(3))
	f.Add([]byte(":01030"), byte(1), byte(3))
	f.Fuzz(func(t *testing.T, data []byte, unit, fc byte) {
		var buf [maxADU]byte
		pdu, err := readASCII(byteReader(data), buf[:], expect{unit: unit, fc: fc, count: -1})
		if err != nil {
			return
		}
		i := bytes.IndexByte(data, ':')
		end := i + 1 + 2*(len(pdu)+2)
		bin, herr := hex.DecodeString(string(data[i+1 : end]))
		if herr != nil || checksum.LRC(bin[:len(bin)-1]) != bin[len(bin)-1] || bin[0] != unit || !bytes.Equal(bin[1:len(bin)-1], pdu) {
			t.Fatalf("accepted %q as %x", data, pdu)
		}
	})
}

// FuzzMBAPFrame checks the Modbus TCP reply reader the same way.
func FuzzMBAPFrame(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7}, uint16(1))
	f.Add([]byte{0, 9, 0, 0, 0, 5, 1, 3, 2, 0, 7, 0, 1, 0, 0, 0, 3, 1, 0x83, 2}, uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, tid uint16) {
		var buf [maxADU]byte
		pdu, err := readMBAP(byteReader(data), buf[:], expect{tid: tid, unit: 1, fc: 3, count: 2}, func([]byte) {})
		if err != nil {
			return
		}
		if len(pdu) != 4 || pdu[0] != 3 || pdu[1] != 2 || !bytes.Contains(data, append([]byte{byte(tid >> 8), byte(tid)}, 0, 0, 0, 5, 1)) {
			t.Fatalf("accepted %x as %x for tid %d", data, pdu, tid)
		}
	})
}

// BenchmarkReadTCP100 reads 100 holding registers (one request, 50 float32
// points) per op from a simonvetter server over loopback TCP.
func BenchmarkReadTCP100(b *testing.B) { benchReadTCP100(b, context.Background()) }

// BenchmarkReadTCP100Cancelable reads with a context that can end, as a
// gateway's device does (its abort is registered with the context).
func BenchmarkReadTCP100Cancelable(b *testing.B) { benchReadTCP100(b, b.Context()) }

func benchReadTCP100(b *testing.B, ctx context.Context) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(b, bank)
	var points []Point
	for a := uint16(0); a < 100; a += 2 {
		points = append(points, Point{Table: HoldingRegisters, Address: a, Type: Float32})
		bank.SetBytes(modbustest.HoldingRegisters, a, []byte{0x42, 0xF6, 0xE9, 0x79})
	}
	cfg := Config{Transport: TCP, Address: srv.Addr, UnitID: 1}
	cfg.SetDefaults()
	plan, err := NewPlan(points, cfg)
	if err != nil {
		b.Fatal(err)
	}
	pool := NewPool(nil, nil)
	b.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "bench", cfg, plan)
	b.ReportAllocs()
	for b.Loop() {
		dev.Read(ctx)
	}
	if !isGood(dev.out[0]) {
		b.Fatal(dev.res.err)
	}
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "registers/s")
}

// benchSerial measures requests per second over a socat pty pair at 115200
// baud (nominal: a pty does not pace bytes), reading 10 registers per request.
func benchSerialOurs(b *testing.B, framing modbustest.Framing, tr Transport) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(b, bank)
	br := modbustest.StartSerialBridge(b, srv.Addr, framing)
	cfg := Config{Transport: tr, Address: br.Addr, UnitID: 1}
	cfg.SetDefaults()
	cfg.Serial.Baud = 115200
	plan, _ := NewPlan(regs(Uint16, seq(0, 10, 1)...), cfg)
	pool := NewPool(nil, nil)
	b.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "serial", cfg, plan)
	ctx := context.Background()
	dev.Read(ctx) // opens the line and waits for its first silence
	b.ReportAllocs()
	for b.Loop() {
		dev.Read(ctx)
		if !isGood(dev.out[0]) {
			b.Fatal(dev.res.err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func BenchmarkSerialRTU(b *testing.B)   { benchSerialOurs(b, modbustest.RTU, RTU) }
func BenchmarkSerialASCII(b *testing.B) { benchSerialOurs(b, modbustest.ASCII, ASCII) }

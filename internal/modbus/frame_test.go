package modbus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	gmb "github.com/goburrow/modbus"

	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
)

func reader(data []byte) filler {
	r := bytes.NewReader(data)
	return func(p []byte) error {
		_, err := io.ReadFull(r, p)
		return err
	}
}

func TestFrameGolden(t *testing.T) {
	// read holding registers reply from unit 1: two registers 0x000A 0x0102
	rtu := modbustest.EncodeRTU(1, []byte{3, 4, 0x00, 0x0A, 0x01, 0x02})
	var buf [maxADU]byte
	f, err := readRTU(reader(rtu), buf[:], 1, 3)
	if err != nil || !bytes.Equal(f, rtu) {
		t.Fatalf("readRTU = %x, %v", f, err)
	}
	exc := modbustest.EncodeRTU(1, []byte{0x83, 2})
	if f, err := readRTU(reader(exc), buf[:], 1, 3); err != nil || len(f) != 5 {
		t.Fatalf("exception frame = %x, %v", f, err)
	}
	wrongUnit := modbustest.EncodeRTU(2, []byte{3, 2, 0, 1})
	if _, err := readRTU(reader(wrongUnit), buf[:], 1, 3); !errors.Is(err, errFrame) {
		t.Fatalf("wrong unit: %v", err)
	}
	bad := bytes.Clone(rtu)
	bad[len(bad)-1] ^= 0xFF
	if _, err := readRTU(reader(bad), buf[:], 1, 3); !errors.Is(err, errFrame) {
		t.Fatalf("bad crc: %v", err)
	}

	ascii := modbustest.EncodeASCII(1, []byte{3, 4, 0x00, 0x0A, 0x01, 0x02})
	noisy := append([]byte("\x00\r\n"), ascii...)
	f, err = readASCII(reader(noisy), buf[:], 1, 3)
	if err != nil || !bytes.Equal(f, ascii) {
		t.Fatalf("readASCII = %q, %v", f, err)
	}
	var pk gmb.ASCIIClientHandler
	pdu, err := pk.Decode(f)
	if err != nil || !bytes.Equal(pdu.Data, []byte{4, 0x00, 0x0A, 0x01, 0x02}) {
		t.Fatalf("goburrow decode of our frame = %+v, %v", pdu, err)
	}
}

// FuzzRTUFrame feeds arbitrary byte streams to the RTU reply reader: it must
// not panic, and whatever it accepts has a valid CRC, the requested unit and
// function, and the length its header announces.
func FuzzRTUFrame(f *testing.F) {
	f.Add([]byte{1, 3, 4, 0, 10, 1, 2}, byte(1), byte(3))
	f.Add(modbustest.EncodeRTU(1, []byte{3, 4, 0, 10, 1, 2}), byte(1), byte(3))
	f.Add(modbustest.EncodeRTU(9, []byte{0x81, 2}), byte(9), byte(1))
	f.Add(modbustest.EncodeRTU(1, []byte{2, 1, 5}), byte(1), byte(2))
	f.Add([]byte{1, 3, 255}, byte(1), byte(3))
	f.Fuzz(func(t *testing.T, data []byte, unit, fc byte) {
		var buf [maxADU]byte
		frame, err := readRTU(reader(data), buf[:], unit, fc)
		if err != nil {
			return
		}
		n := len(frame)
		if n < 5 || checksum.CRC16(frame[:n-2]) != uint16(frame[n-2])|uint16(frame[n-1])<<8 {
			t.Fatalf("accepted bad frame %x", frame)
		}
		if frame[0] != unit || frame[1]&0x7F != fc&0x7F {
			t.Fatalf("accepted frame %x for unit %d function %d", frame, unit, fc)
		}
		if !bytes.Equal(frame, data[:n]) {
			t.Fatalf("frame %x is not the stream's prefix", frame)
		}
	})
}

// FuzzASCIIFrame does the same for ASCII replies, and checks that goburrow's
// packager decodes every frame the reader accepts.
func FuzzASCIIFrame(f *testing.F) {
	f.Add(modbustest.EncodeASCII(1, []byte{3, 4, 0, 10, 1, 2}), byte(1), byte(3))
	f.Add(modbustest.EncodeASCII(1, []byte{0x84, 3}), byte(1), byte(4))
	f.Add([]byte("junk:0103020001F9\r\n"), byte(1), byte(3))
	f.Add([]byte(":01030"), byte(1), byte(3))
	f.Fuzz(func(t *testing.T, data []byte, unit, fc byte) {
		var buf [maxADU]byte
		frame, err := readASCII(reader(data), buf[:], unit, fc)
		if err != nil {
			return
		}
		var pk gmb.ASCIIClientHandler
		pk.SlaveId = unit
		pdu, err := pk.Decode(frame)
		if err != nil {
			t.Fatalf("goburrow rejects accepted frame %q: %v", frame, err)
		}
		if pdu.FunctionCode&0x7F != fc&0x7F {
			t.Fatalf("frame %q function %d for request %d", frame, pdu.FunctionCode, fc)
		}
	})
}

// FuzzMBAPFrame checks the Modbus TCP reply reader the same way.
func FuzzMBAPFrame(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7}, uint16(1))
	f.Add([]byte{0, 9, 0, 0, 0, 5, 1, 3, 2, 0, 7, 0, 1, 0, 0, 0, 3, 1, 0x83, 2}, uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, tid uint16) {
		var buf [maxADU]byte
		frame, err := readMBAP(reader(data), buf[:], tid, 1, 3)
		if err != nil {
			return
		}
		if len(frame) < 9 || uint16(frame[0])<<8|uint16(frame[1]) != tid || frame[6] != 1 || frame[7]&0x7F != 3 {
			t.Fatalf("accepted %x for tid %d", frame, tid)
		}
	})
}

// BenchmarkReadTCP100 reads 100 holding registers (one request, 50 float32
// points) per op from a simonvetter server over loopback TCP.
func BenchmarkReadTCP100(b *testing.B) {
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
	dev := pool.Device("bench", cfg)
	out := make([]Value, plan.Len())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		dev.Read(ctx, plan, out)
	}
	if out[0].Err != nil {
		b.Fatal(out[0].Err)
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
	dev := pool.Device("serial", cfg)
	out := make([]Value, plan.Len())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		dev.Read(ctx, plan, out)
		if out[0].Err != nil {
			b.Fatal(out[0].Err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func BenchmarkSerialRTU(b *testing.B)   { benchSerialOurs(b, modbustest.RTU, RTU) }
func BenchmarkSerialASCII(b *testing.B) { benchSerialOurs(b, modbustest.ASCII, ASCII) }

// BenchmarkSerialRTUGoburrowHandler is the baseline: goburrow's own serial
// RTU handler, which sleeps an estimated transmission time before reading.
func BenchmarkSerialRTUGoburrowHandler(b *testing.B) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(b, bank)
	br := modbustest.StartSerialBridge(b, srv.Addr, modbustest.RTU)
	h := gmb.NewRTUClientHandler(br.Addr)
	h.BaudRate, h.DataBits, h.Parity, h.StopBits = 115200, 8, "E", 1
	h.SlaveId = 1
	h.Timeout = time.Second
	if err := h.Connect(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close() })
	c := gmb.NewClient(h)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

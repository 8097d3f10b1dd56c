package modbusfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/regmap"
)

// testImage: holding 100, 101, ...; input 200, 201, ...; coils 1 0 1 0 0 0 0 0 1; discrete inputs alternate.
func testImage() *regmap.Image {
	img := &regmap.Image{Holding: make([]uint16, 16), Input: make([]uint16, 16), Coils: make([]bool, 16), Discrete: make([]bool, 16)}
	for i := range 16 {
		img.Holding[i] = uint16(100 + i)
		img.Input[i] = uint16(200 + i)
		img.Discrete[i] = i%2 == 1
	}
	img.Coils[0], img.Coils[2], img.Coils[8] = true, true, true
	return img
}

func startFront(t testing.TB, cfg Config, units ...Unit) *Front {
	t.Helper()
	f, err := New(cfg, units, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func tcpClient(t testing.TB, addr string, unit uint8) mb.Client {
	t.Helper()
	h := mb.NewTCPClientHandler(addr)
	h.SlaveId = unit
	h.Timeout = 3 * time.Second
	t.Cleanup(func() { h.Close() })
	return mb.NewClient(h)
}

// exceptionOf returns the Modbus exception code of a goburrow error, 0 if none.
func exceptionOf(err error) byte {
	var me *mb.ModbusError
	if errors.As(err, &me) {
		return me.ExceptionCode
	}
	return 0
}

type counter struct{ n atomic.Int64 }

func (c *counter) Inc() { c.n.Add(1) }

func TestNewRejects(t *testing.T) {
	dev := NewDevice(nil, nil)
	for _, tc := range []struct {
		name  string
		cfg   Config
		units []Unit
		want  string
	}{
		{"transport", Config{Address: "127.0.0.1:0", Transport: "udp"}, []Unit{{1, dev}}, `transport: "udp" not one of tcp, rtu_over_tcp`},
		{"address", Config{Address: "localhost"}, []Unit{{1, dev}}, `address: "localhost"`},
		{"no unit", Config{Address: "127.0.0.1:0"}, nil, "no unit to serve"},
		{"twice", Config{Address: "127.0.0.1:0"}, []Unit{{1, dev}, {1, NewDevice(nil, nil)}}, "unit 1: used twice"},
		{"nil device", Config{Address: "127.0.0.1:0"}, []Unit{{3, nil}}, "unit 3: no device"},
	} {
		if _, err := New(tc.cfg, tc.units, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseException(t *testing.T) {
	for code, ok := range map[int]bool{1: true, 6: true, 7: false, 8: true, 10: true, 11: true, 12: false, 0: false, -1: false, 259: false} {
		if e, got := ParseException(code); got != ok || (ok && int(e) != code) {
			t.Errorf("ParseException(%d) = %d %v, want %v", code, e, got, ok)
		}
	}
}

// TestTCPReads reads every table over Modbus TCP from a port shared by two
// units, and checks unknown units, writes and out-of-range reads.
func TestTCPReads(t *testing.T) {
	reqs, excs := &counter{}, &counter{}
	a, b := NewDevice(reqs, excs), NewDevice(nil, nil)
	a.Publish(testImage())
	imgB := testImage()
	imgB.Holding[0] = 999
	b.Publish(imgB)
	f := startFront(t, Config{Name: "shared", Address: "127.0.0.1:0"}, Unit{ID: 1, Device: a}, Unit{ID: 2, Device: b})
	if !strings.HasPrefix(f.Addr(), "127.0.0.1:") || strings.HasSuffix(f.Addr(), ":0") {
		t.Fatalf("Addr %q: want the real port", f.Addr())
	}
	c1 := tcpClient(t, f.Addr(), 1)
	check := func(what string, got []byte, err error, want ...byte) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if string(got) != string(want) {
			t.Errorf("%s: % X, want % X", what, got, want)
		}
	}
	got, err := c1.ReadHoldingRegisters(1, 2)
	check("holding", got, err, 0, 101, 0, 102)
	got, err = c1.ReadInputRegisters(0, 1)
	check("input", got, err, 0, 200)
	got, err = c1.ReadCoils(0, 9)
	check("coils", got, err, 0x05, 0x01)
	got, err = c1.ReadDiscreteInputs(0, 4)
	check("discrete", got, err, 0x0A)
	got, err = tcpClient(t, f.Addr(), 2).ReadHoldingRegisters(0, 1)
	check("unit 2", got, err, 0x03, 0xE7)

	if _, err := tcpClient(t, f.Addr(), 9).ReadHoldingRegisters(0, 1); exceptionOf(err) != 11 {
		t.Errorf("unknown unit: %v, want exception 11", err)
	}
	if _, err := tcpClient(t, f.Addr(), 0).ReadHoldingRegisters(0, 1); exceptionOf(err) != 11 {
		t.Errorf("unit 0 on a shared port: %v, want exception 11", err)
	}
	if _, err := c1.WriteSingleRegister(0, 5); exceptionOf(err) != 1 {
		t.Errorf("write: %v, want exception 1", err)
	}
	if _, err := c1.ReadHoldingRegisters(10, 10); exceptionOf(err) != 2 {
		t.Errorf("read past the image: %v, want exception 2", err)
	}
	if r, e := reqs.n.Load(), excs.n.Load(); r != 6 || e != 2 {
		t.Errorf("device a counted %d requests, %d exceptions; want 6, 2", r, e)
	}
}

// TestSingleDeviceAnswersBroadcastUnits: a port with one device answers
// unit ids 0 and 255 too (Modbus TCP devices commonly ignore the unit id).
func TestSingleDeviceAnswersBroadcastUnits(t *testing.T) {
	d := NewDevice(nil, nil)
	d.Publish(testImage())
	f := startFront(t, Config{Address: "127.0.0.1:0"}, Unit{ID: 4, Device: d})
	for _, unit := range []uint8{4, 0, 255} {
		got, err := tcpClient(t, f.Addr(), unit).ReadHoldingRegisters(0, 1)
		if err != nil || got[1] != 100 {
			t.Errorf("unit %d: % X %v", unit, got, err)
		}
	}
	if _, err := tcpClient(t, f.Addr(), 5).ReadHoldingRegisters(0, 1); exceptionOf(err) != 11 {
		t.Errorf("unit 5: %v, want exception 11", err)
	}
}

// TestExceptionFaults: a range answers its exception over both transports;
// reads beside it and of another table are served; clearing restores it.
func TestExceptionFaults(t *testing.T) {
	for _, tr := range []string{TCP, RTUOverTCP} {
		t.Run(tr, func(t *testing.T) {
			d := NewDevice(nil, nil)
			d.Publish(testImage())
			f := startFront(t, Config{Address: "127.0.0.1:0", Transport: tr}, Unit{ID: 1, Device: d})
			d.SetFaults(&Faults{Exceptions: []ExceptionRange{{Table: regmap.Holding, From: 4, To: 6, Code: ServerDeviceBusy}}})
			c := newClient(t, f, 1)
			if _, err := c.ReadHoldingRegisters(5, 3); exceptionOf(err) != 6 {
				t.Errorf("overlapping read: %v, want exception 6", err)
			}
			if _, err := c.ReadHoldingRegisters(0, 4); err != nil {
				t.Errorf("read before the range: %v", err)
			}
			if _, err := c.ReadInputRegisters(4, 2); err != nil {
				t.Errorf("input table: %v", err)
			}
			d.SetFaults(nil)
			if _, err := c.ReadHoldingRegisters(5, 3); err != nil {
				t.Errorf("after clearing: %v", err)
			}
		})
	}
}

// newClient is a goburrow client over the front's transport.
func newClient(t testing.TB, f *Front, unit uint8) mb.Client {
	if f.Transport() == TCP {
		return tcpClient(t, f.Addr(), unit)
	}
	tr := &rtuTransporter{addr: f.Addr()}
	t.Cleanup(tr.close)
	p := mb.NewRTUClientHandler("")
	p.SlaveId = unit
	return mb.NewClient2(p, tr)
}

// rtuTransporter carries goburrow's RTU frames over a TCP stream.
type rtuTransporter struct {
	addr string
	conn net.Conn
}

func (r *rtuTransporter) Send(req []byte) ([]byte, error) {
	if r.conn == nil {
		c, err := net.DialTimeout("tcp", r.addr, 3*time.Second)
		if err != nil {
			return nil, err
		}
		r.conn = c
	}
	_ = r.conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := r.conn.Write(req); err != nil {
		return nil, err
	}
	var buf [260]byte
	if _, err := io.ReadFull(r.conn, buf[:3]); err != nil {
		return nil, err
	}
	n := 5
	if buf[1]&0x80 == 0 {
		n = 5 + int(buf[2])
	}
	if _, err := io.ReadFull(r.conn, buf[3:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (r *rtuTransporter) close() {
	if r.conn != nil {
		r.conn.Close()
	}
}

// TestSilentTCP: over Modbus TCP a request to a silent device waits until
// the silence ends and answers exception 11; Stop ends a wait too.
func TestSilentTCP(t *testing.T) {
	reqs := &counter{}
	d := NewDevice(reqs, nil)
	d.Publish(testImage())
	f := startFront(t, Config{Address: "127.0.0.1:0"}, Unit{ID: 1, Device: d})
	quiet := make(chan struct{})
	d.SetFaults(&Faults{Silent: quiet})
	done := make(chan error, 1)
	go func() {
		_, err := tcpClient(t, f.Addr(), 1).ReadHoldingRegisters(0, 1)
		done <- err
	}()
	wait.For(t, 3*time.Second, "the request to reach the silent device", func() bool { return reqs.n.Load() == 1 })
	select {
	case err := <-done:
		t.Fatalf("a silent device answered: %v", err)
	default:
	}
	close(quiet)
	if err := <-done; exceptionOf(err) != 11 {
		t.Errorf("after silence: %v, want exception 11", err)
	}
	d.SetFaults(nil)
	if _, err := tcpClient(t, f.Addr(), 1).ReadHoldingRegisters(0, 1); err != nil {
		t.Errorf("after clearing: %v", err)
	}

	// Stop releases a request still waiting on a silent device.
	d.SetFaults(&Faults{Silent: make(chan struct{})})
	waiting := make(chan error, 1)
	go func() {
		_, err := tcpClient(t, f.Addr(), 1).ReadHoldingRegisters(0, 1)
		waiting <- err
	}()
	wait.For(t, 3*time.Second, "the second request to reach the silent device", func() bool { return reqs.n.Load() == 3 })
	f.Stop()
	if err := <-waiting; err == nil {
		t.Error("a request to a silent device succeeded after Stop")
	}
}

// TestSilentRTU: over RTU a silent device sends nothing, and answers the
// next request once the silence ends.
func TestSilentRTU(t *testing.T) {
	reqs := &counter{}
	d := NewDevice(reqs, nil)
	d.Publish(testImage())
	f := startFront(t, Config{Address: "127.0.0.1:0", Transport: RTUOverTCP}, Unit{ID: 1, Device: d})
	d.SetFaults(&Faults{Silent: make(chan struct{})})
	conn, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	conn.Write(appendCRC([]byte{1, 3, 0, 0, 0, 1})) // register 0: must get no reply
	wait.For(t, 3*time.Second, "the request to reach the silent device", func() bool { return reqs.n.Load() == 1 })
	d.SetFaults(nil)
	conn.Write(appendCRC([]byte{1, 3, 0, 1, 0, 1})) // register 1
	var b [7]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil || b[4] != 101 {
		t.Errorf("first reply % X %v, want register 1 (101): the silent request was answered", b, err)
	}
}

// TestDropConnections: open connections are closed, the port keeps serving.
func TestDropConnections(t *testing.T) {
	for _, tr := range []string{TCP, RTUOverTCP} {
		t.Run(tr, func(t *testing.T) {
			d := NewDevice(nil, nil)
			d.Publish(testImage())
			f := startFront(t, Config{Address: "127.0.0.1:0", Transport: tr}, Unit{ID: 1, Device: d})
			conn, err := net.Dial("tcp", f.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// a first exchange makes sure the server holds the connection
			if err := exchangeOnce(conn, tr); err != nil {
				t.Fatal(err)
			}
			f.DropConnections()
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Fatal("the connection survived DropConnections")
			}
			var again net.Conn
			wait.For(t, 3*time.Second, "the port to accept again", func() bool {
				c, err := net.Dial("tcp", f.Addr())
				if err == nil {
					again = c
				}
				return err == nil
			})
			defer again.Close()
			if err := exchangeOnce(again, tr); err != nil {
				t.Errorf("after drop: %v", err)
			}
		})
	}
}

// exchangeOnce reads holding register 0 of unit 1 over conn.
func exchangeOnce(conn net.Conn, transport string) error {
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	req := []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1}
	resp := make([]byte, 11)
	if transport == RTUOverTCP {
		req = appendCRC([]byte{1, 3, 0, 0, 0, 1})
		resp = resp[:7]
	}
	if _, err := conn.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(conn, resp); err != nil {
		return err
	}
	low := len(resp) - 1 // Modbus TCP: the value's low byte ends the reply
	if transport == RTUOverTCP {
		low -= 2 // before the CRC
	}
	if resp[low] != 100 {
		return fmt.Errorf("unexpected reply % X", resp)
	}
	return nil
}

package fleet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/units"
	"github.com/smelterio/smelter/simulators/regmap"
)

const demoFleet = "../../configs/sim-fleet.yaml"

// startFleet loads the demo fleet in manual mode (or runs mut on the config)
// and starts it for the test.
func startFleet(t testing.TB, mut func(*Config)) *Fleet {
	t.Helper()
	cfg, err := Load(demoFleet)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Speed = 0
	if mut != nil {
		mut(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := New(cfg, nil)
	if err := f.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := f.Wait(); err != nil {
			t.Error(err)
		}
	})
	return f
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rtuFrame appends the Modbus RTU CRC-16 to a request, low byte first.
func rtuFrame(b []byte) []byte {
	c := checksum.CRC16(b)
	return append(b, byte(c), byte(c>>8))
}

// client is a goburrow Modbus client to one device (TCP or RTU over TCP).
type client struct {
	mb.Client
	close func() error
}

func dial(t testing.TB, d DeviceInfo, timeout time.Duration) *client {
	t.Helper()
	if d.Transport == TransportRTUOverTCP {
		tr := &rtuTCPTransporter{addr: d.Addr, timeout: timeout}
		p := mb.NewRTUClientHandler("")
		p.SlaveId = d.UnitID
		c := &client{Client: mb.NewClient2(p, tr), close: tr.Close}
		t.Cleanup(func() { c.close() })
		return c
	}
	h := mb.NewTCPClientHandler(d.Addr)
	h.SlaveId = d.UnitID
	h.Timeout = timeout
	c := &client{Client: mb.NewClient(h), close: h.Close}
	t.Cleanup(func() { c.close() })
	return c
}

// rtuTCPTransporter carries goburrow's RTU frames over a TCP stream.
type rtuTCPTransporter struct {
	addr    string
	timeout time.Duration
	mu      sync.Mutex
	conn    net.Conn
}

func (r *rtuTCPTransporter) Send(req []byte) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		c, err := net.DialTimeout("tcp", r.addr, r.timeout)
		if err != nil {
			return nil, err
		}
		r.conn = c
	}
	fail := func(err error) ([]byte, error) { r.conn.Close(); r.conn = nil; return nil, err }
	_ = r.conn.SetDeadline(time.Now().Add(r.timeout))
	if _, err := r.conn.Write(req); err != nil {
		return fail(err)
	}
	var buf [260]byte
	if _, err := io.ReadFull(r.conn, buf[:3]); err != nil {
		return fail(err)
	}
	n := 5
	switch fc := buf[1]; {
	case fc&0x80 != 0:
	case fc <= 4:
		n = 5 + int(buf[2])
	default:
		n = 8
	}
	if _, err := io.ReadFull(r.conn, buf[3:n]); err != nil {
		return fail(err)
	}
	return buf[:n], nil
}

func (r *rtuTCPTransporter) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		err := r.conn.Close()
		r.conn = nil
		return err
	}
	return nil
}

// readPoint reads and decodes one template point the way a gateway does,
// independently of regmap's encoder: raw registers, word order, type, scale,
// offset, unit conversion to canonical, enum to state index.
func readPoint(c *client, class string, p regmap.Point) (float64, error) {
	sig, err := catalog.Default().Lookup(class, p.Signal)
	if err != nil {
		return 0, err
	}
	width := map[string]int{"int16": 1, "uint16": 1, "bit": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}[p.Type]
	var data []byte
	switch p.Table {
	case "holding":
		data, err = c.ReadHoldingRegisters(uint16(p.Address), uint16(width))
	case "input":
		data, err = c.ReadInputRegisters(uint16(p.Address), uint16(width))
	default:
		return 0, fmt.Errorf("table %s not decoded by the test", p.Table)
	}
	if err != nil {
		return 0, err
	}
	order := p.Order
	if order == "" {
		order = "ABCDEFGH"[:2*width]
	}
	if width == 4 && len(order) == 4 {
		order = map[string]string{"ABCD": "ABCDEFGH", "DCBA": "HGFEDCBA", "BADC": "BADCFEHG", "CDAB": "GHEFCDAB"}[order]
	}
	be := make([]byte, 2*width)
	if width == 1 {
		copy(be, data)
	} else {
		for i := range be { // wire byte i holds big-endian byte order[i]
			be[order[i]-'A'] = data[i]
		}
	}
	var raw float64
	switch p.Type {
	case "int16":
		raw = float64(int16(binary.BigEndian.Uint16(be)))
	case "uint16":
		raw = float64(binary.BigEndian.Uint16(be))
	case "int32":
		raw = float64(int32(binary.BigEndian.Uint32(be)))
	case "uint32":
		raw = float64(binary.BigEndian.Uint32(be))
	case "float32":
		raw = float64(math.Float32frombits(binary.BigEndian.Uint32(be)))
	case "int64":
		raw = float64(int64(binary.BigEndian.Uint64(be)))
	case "uint64":
		raw = float64(binary.BigEndian.Uint64(be))
	case "float64":
		raw = math.Float64frombits(binary.BigEndian.Uint64(be))
	}
	scale := 1.0
	if p.Scale != nil {
		scale = *p.Scale
	}
	v := raw*scale + p.Offset
	if sig.IsState() {
		if len(p.Enum) > 0 {
			label, ok := p.Enum[int(v)]
			if !ok {
				return 0, fmt.Errorf("%s: device code %v not in enum", p.Signal, v)
			}
			for i, s := range sig.States {
				if s == label {
					return float64(i), nil
				}
			}
		}
		return v, nil
	}
	unit := p.Unit
	if unit == "" {
		unit = sig.Unit
	}
	conv, err := units.Convert(unit, sig.Unit)
	if err != nil {
		return 0, err
	}
	return conv.Apply(v), nil
}

// tolerance is the quantisation step of a point in canonical units.
func tolerance(class string, p regmap.Point, v float64) float64 {
	sig, _ := catalog.Default().Lookup(class, p.Signal)
	scale := 1.0
	if p.Scale != nil {
		scale = math.Abs(*p.Scale)
	}
	conv := units.Identity
	if !sig.IsState() {
		u := p.Unit
		if u == "" {
			u = sig.Unit
		}
		conv, _ = units.Convert(u, sig.Unit)
	}
	q := scale * math.Abs(conv.Scale) / 2
	if strings.HasPrefix(p.Type, "float32") {
		q = math.Max(q*1e-6, math.Abs(v)*2e-7)
	} else if p.Type == "float64" {
		q = math.Abs(v) * 1e-12
	}
	return q*1.0001 + 1e-9
}

func isException(err error, code byte) bool {
	var me *mb.ModbusError
	return errors.As(err, &me) && me.ExceptionCode == code
}

func template(t testing.TB, d DeviceInfo) *regmap.Template {
	t.Helper()
	tp, err := regmap.LoadTemplate(d.Template)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func devInfo(t testing.TB, f *Fleet, id string) DeviceInfo {
	t.Helper()
	d, ok := f.Device(id)
	if !ok {
		t.Fatalf("no device %s", id)
	}
	return d
}

// readSignal reads one signal of a device through its front.
func readSignal(t testing.TB, c *client, d DeviceInfo, signal string) float64 {
	t.Helper()
	for _, p := range template(t, d).Points {
		if p.Signal == signal {
			v, err := readPoint(c, d.Class, p)
			if err != nil {
				t.Fatalf("%s %s: %v", d.ID, signal, err)
			}
			return v
		}
	}
	t.Fatalf("%s has no point %s", d.ID, signal)
	return 0
}

package fleet

import (
	"context"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/smelterio/smelter/simulators/regmap"
)

// listener is one TCP port serving one or more devices (unit ids), speaking
// Modbus TCP (through the simonvetter server) or RTU framing over TCP.
type listener struct {
	name      string
	address   string // configured
	transport string
	units     [256]*device
	single    *device // the only device, which also answers unit ids 0 and 255
	log       *slog.Logger

	ctx    context.Context
	mu     sync.Mutex
	addr   string // real host:port
	srv    *modbus.ModbusServer
	rtu    *rtuServer
	closed bool
}

func newListener(cl compiledListener, log *slog.Logger) *listener {
	return &listener{name: cl.name, address: cl.address, transport: cl.transport,
		log: log.With("listener", cl.name)}
}

// Addr returns the real address once started.
func (l *listener) Addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr == "" {
		return l.address
	}
	return l.addr
}

func (l *listener) start(ctx context.Context) error {
	l.ctx = ctx
	var lc net.ListenConfig
	if l.transport == TransportRTUOverTCP {
		ln, err := lc.Listen(ctx, "tcp", l.address)
		if err != nil {
			return err
		}
		l.addr = ln.Addr().String()
		l.rtu = newRTUServer(ln, l)
		go l.rtu.serve()
		return nil
	}
	host, port, _ := net.SplitHostPort(l.address)
	var lastErr error
	// The server library binds by URL and does not report the port it got,
	// so port 0 is resolved here first (retried if another process wins it).
	for range 5 {
		p := port
		if p == "0" {
			probe, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				return err
			}
			p = strconv.Itoa(probe.Addr().(*net.TCPAddr).Port)
			probe.Close()
		}
		addr := net.JoinHostPort(host, p)
		srv, err := modbus.NewServer(&modbus.ServerConfiguration{
			URL:        "tcp://" + addr,
			Timeout:    5 * time.Minute,
			MaxClients: 512,
			Logger:     log.New(slogWriter{l.log}, "", 0),
		}, &tcpHandler{l: l})
		if err != nil {
			return err
		}
		if lastErr = srv.Start(); lastErr == nil {
			l.addr, l.srv = addr, srv
			return nil
		}
		if port != "0" {
			break
		}
	}
	return lastErr
}

// drop closes every client connection of the listener (the port stays open,
// after a blink for Modbus TCP).
func (l *listener) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if l.rtu != nil {
		l.rtu.dropConns()
		return
	}
	_ = l.srv.Stop()
	var err error
	for range 20 {
		if err = l.srv.Start(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.log.Error("cannot reopen listener after dropping connections", "addr", l.addr, "err", err)
}

func (l *listener) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.rtu != nil {
		l.rtu.close()
	}
	if l.srv != nil {
		_ = l.srv.Stop()
	}
}

// lookup finds the device of a unit id.
func (l *listener) lookup(unit uint8) *device {
	if d := l.units[unit]; d != nil {
		return d
	}
	if l.single != nil && (unit == 0 || unit == 255) {
		return l.single
	}
	return nil
}

// access applies the device's protocol faults and returns its current image.
// With wait set a silent device blocks until it speaks again (Modbus TCP:
// the library always answers); otherwise silent is reported.
func (d *device) access(ctx context.Context, table regmap.Table, addr, qty uint16, wait bool) (img *regmap.Image, silent bool, err error) {
	d.reqs.Inc()
	if ps := d.proto.Load(); ps != nil {
		if ps.silent != nil {
			if !wait {
				return nil, true, nil
			}
			select {
			case <-ps.silent:
			case <-ctx.Done():
			}
			return nil, false, modbus.ErrGWTargetFailedToRespond
		}
		if ps.delay > 0 {
			t := time.NewTimer(ps.delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		end := int(addr) + int(qty)
		for _, r := range ps.exc {
			if r.table == table && int(addr) < r.to && r.from < end {
				d.errs.Inc()
				return nil, false, r.err
			}
		}
	}
	img = d.img.Load()
	if int(addr)+int(qty) > tableLen(img, table) {
		d.errs.Inc()
		return nil, false, modbus.ErrIllegalDataAddress
	}
	return img, false, nil
}

func tableLen(img *regmap.Image, t regmap.Table) int {
	switch t {
	case regmap.Coil:
		return len(img.Coils)
	case regmap.Discrete:
		return len(img.Discrete)
	case regmap.Holding:
		return len(img.Holding)
	}
	return len(img.Input)
}

// registers returns a read-only window of the image: no copy, no allocation.
func registers(img *regmap.Image, t regmap.Table, addr, qty uint16) []uint16 {
	regs := img.Holding
	if t == regmap.Input {
		regs = img.Input
	}
	end := int(addr) + int(qty)
	return regs[addr:end:end]
}

func bits(img *regmap.Image, t regmap.Table, addr, qty uint16) []bool {
	b := img.Coils
	if t == regmap.Discrete {
		b = img.Discrete
	}
	end := int(addr) + int(qty)
	return b[addr:end:end]
}

// tcpHandler implements the server library's RequestHandler for a listener.
// Devices are read-only: writes answer "illegal function".
type tcpHandler struct{ l *listener }

func (h *tcpHandler) device(unit uint8) (*device, error) {
	d := h.l.lookup(unit)
	if d == nil {
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	return d, nil
}

func (h *tcpHandler) HandleCoils(req *modbus.CoilsRequest) ([]bool, error) {
	return h.bits(req.UnitId, regmap.Coil, req.Addr, req.Quantity, req.IsWrite)
}

func (h *tcpHandler) HandleDiscreteInputs(req *modbus.DiscreteInputsRequest) ([]bool, error) {
	return h.bits(req.UnitId, regmap.Discrete, req.Addr, req.Quantity, false)
}

func (h *tcpHandler) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	return h.regs(req.UnitId, regmap.Holding, req.Addr, req.Quantity, req.IsWrite)
}

func (h *tcpHandler) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	return h.regs(req.UnitId, regmap.Input, req.Addr, req.Quantity, false)
}

func (h *tcpHandler) regs(unit uint8, t regmap.Table, addr, qty uint16, write bool) ([]uint16, error) {
	img, err := h.image(unit, t, addr, qty, write)
	if err != nil {
		return nil, err
	}
	return registers(img, t, addr, qty), nil
}

func (h *tcpHandler) bits(unit uint8, t regmap.Table, addr, qty uint16, write bool) ([]bool, error) {
	img, err := h.image(unit, t, addr, qty, write)
	if err != nil {
		return nil, err
	}
	return bits(img, t, addr, qty), nil
}

// image is the request path both tables share: find the unit, refuse
// writes (the simulators are read-only), apply faults and return the
// device's current register image.
func (h *tcpHandler) image(unit uint8, t regmap.Table, addr, qty uint16, write bool) (*regmap.Image, error) {
	d, err := h.device(unit)
	if err != nil {
		return nil, err
	}
	if write {
		d.reqs.Inc()
		d.errs.Inc()
		return nil, modbus.ErrIllegalFunction
	}
	img, _, err := d.access(h.l.ctx, t, addr, qty, true)
	return img, err
}

// slogWriter routes the server library's log lines to slog at debug level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	w.log.Debug(msg, "component", "modbus-server")
	return len(p), nil
}

package modbusfront

import (
	"log/slog"

	"github.com/simonvetter/modbus"

	"github.com/smelterio/smelter/simulators/regmap"
)

// exceptionErrors maps exception codes to the server library's errors
// (which it maps back to the same codes on the wire).
var exceptionErrors = map[Exception]error{
	IllegalFunction: modbus.ErrIllegalFunction, IllegalDataAddress: modbus.ErrIllegalDataAddress,
	IllegalDataValue: modbus.ErrIllegalDataValue, ServerDeviceFailure: modbus.ErrServerDeviceFailure,
	Acknowledge: modbus.ErrAcknowledge, ServerDeviceBusy: modbus.ErrServerDeviceBusy,
	MemoryParityError: modbus.ErrMemoryParityError, GatewayPathUnavailable: modbus.ErrGWPathUnavailable,
	GatewayTargetDeviceFailedToRespond: modbus.ErrGWTargetFailedToRespond,
}

// tcpHandler implements the server library's RequestHandler for a Front.
type tcpHandler struct{ f *Front }

func (h *tcpHandler) HandleCoils(req *modbus.CoilsRequest) ([]bool, error) {
	return h.bits(req.UnitId, regmap.Coil, req.Addr, req.Quantity, req.IsWrite)
}

func (h *tcpHandler) HandleDiscreteInputs(req *modbus.DiscreteInputsRequest) ([]bool, error) {
	return h.bits(req.UnitId, regmap.Discrete, req.Addr, req.Quantity, false)
}

func (h *tcpHandler) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		d := h.f.lookup(req.UnitId)
		if d == nil {
			return nil, modbus.ErrGWTargetFailedToRespond
		}
		if _, exc := d.write(h.f.done, req.Addr, req.Args); exc != 0 {
			return nil, exceptionErrors[exc]
		}
		return nil, nil
	}
	return h.regs(req.UnitId, regmap.Holding, req.Addr, req.Quantity, false)
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
// writes (coils are read-only; holding writes go to Device.write), apply faults and return the
// device's current register image.
func (h *tcpHandler) image(unit uint8, t regmap.Table, addr, qty uint16, write bool) (*regmap.Image, error) {
	d := h.f.lookup(unit)
	if d == nil {
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	if write {
		d.refuse()
		return nil, modbus.ErrIllegalFunction
	}
	img, _, exc := d.access(h.f.done, t, addr, qty, true)
	if exc != 0 {
		return nil, exceptionErrors[exc]
	}
	return img, nil
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

package modbusfront

import (
	"sync/atomic"
	"time"

	"github.com/smelterio/smelter/simulators/regmap"
)

// Exception is a Modbus exception code (Modbus Application Protocol
// Specification V1.1b3, section 7).
type Exception byte

// The exception codes a Front can send.
const (
	IllegalFunction                    Exception = 1
	IllegalDataAddress                 Exception = 2
	IllegalDataValue                   Exception = 3
	ServerDeviceFailure                Exception = 4
	Acknowledge                        Exception = 5
	ServerDeviceBusy                   Exception = 6
	MemoryParityError                  Exception = 8
	GatewayPathUnavailable             Exception = 10
	GatewayTargetDeviceFailedToRespond Exception = 11
)

// ParseException returns the Exception of a numeric code, or false when
// the front cannot send it (it sends 1-6, 8, 10 and 11).
func ParseException(code int) (Exception, bool) {
	if code < 0 || code > 255 {
		return 0, false
	}
	e := Exception(code)
	_, ok := exceptionErrors[e]
	return e, ok
}

// ExceptionRange is a register range [From, To) of one table that answers
// with an exception.
type ExceptionRange struct {
	Table    regmap.Table
	From, To int
	Code     Exception
}

// Faults are a device's protocol faults. A stored Faults is never changed:
// SetFaults swaps in a new one.
type Faults struct {
	Delay      time.Duration   // held before every reply (0: none)
	Silent     <-chan struct{} // non-nil: the device is silent until it is closed
	Exceptions []ExceptionRange
}

// Counter counts; prometheus.Counter satisfies it.
type Counter interface{ Inc() }

type noCounter struct{}

func (noCounter) Inc() {}

// Device is one simulated device as a Front serves it: its current register
// image and protocol faults, each swapped atomically by the goroutine that
// steps the model while the front reads them.
type Device struct {
	img                  atomic.Pointer[regmap.Image]
	faults               atomic.Pointer[Faults]
	writer               atomic.Pointer[WriteFunc]
	writes               atomic.Int64
	requests, exceptions Counter
}

// WriteFunc applies a write of holding registers vals (wire order) at addr
// and returns 0, or the exception to answer (IllegalDataAddress: no
// writable point there; IllegalDataValue: the model refused the value).
// The image a read-back sees must already show the new value when it
// returns.
type WriteFunc func(addr uint16, vals []uint16) Exception

// SetWriter makes holding-register writes (FC6, FC16) reach w; nil (the
// default) refuses every write with IllegalFunction, a read-only device.
func (d *Device) SetWriter(w WriteFunc) {
	if w == nil {
		d.writer.Store(nil)
		return
	}
	d.writer.Store(&w)
}

// Writes counts the write requests the device received, applied or
// refused: tests prove with it that nothing reached the device.
func (d *Device) Writes() int64 { return d.writes.Load() }

// write serves one holding-register write: protocol faults first (a silent
// device stays silent), then the writer.
func (d *Device) write(done <-chan struct{}, addr uint16, vals []uint16) (silent bool, exc Exception) {
	d.writes.Add(1)
	_, silent, exc = d.access(done, regmap.Holding, addr, uint16(len(vals)), true)
	if silent || (exc != 0 && exc != IllegalDataAddress) {
		return silent, exc
	}
	w := d.writer.Load()
	if w == nil {
		d.exceptions.Inc()
		return false, IllegalFunction
	}
	if exc = (*w)(addr, vals); exc != 0 {
		d.exceptions.Inc()
	}
	return false, exc
}

// NewDevice returns a device with no image yet (every read answers
// exception 2 until Publish). requests counts every request, exceptions
// every exception reply; nil counts nothing.
func NewDevice(requests, exceptions Counter) *Device {
	if requests == nil {
		requests = noCounter{}
	}
	if exceptions == nil {
		exceptions = noCounter{}
	}
	return &Device{requests: requests, exceptions: exceptions}
}

// Publish makes img the image reads are served from. img must not change
// afterwards: publish a fresh image for the next step, so a read never
// mixes two steps.
func (d *Device) Publish(img *regmap.Image) { d.img.Store(img) }

// SetFaults replaces the device's protocol faults; nil clears them.
func (d *Device) SetFaults(f *Faults) { d.faults.Store(f) }

// refuse counts a request answered with an exception before any fault
// applies (a write, a bad quantity).
func (d *Device) refuse() {
	d.requests.Inc()
	d.exceptions.Inc()
}

// access applies the device's protocol faults and returns its current
// image. With wait set a silent device blocks until it speaks again or done
// is closed, then answers exception 11 (Modbus TCP: the library always
// answers); otherwise silent is reported.
func (d *Device) access(done <-chan struct{}, table regmap.Table, addr, qty uint16, wait bool) (img *regmap.Image, silent bool, exc Exception) {
	d.requests.Inc()
	if ps := d.faults.Load(); ps != nil {
		if ps.Silent != nil {
			if !wait {
				return nil, true, 0
			}
			select {
			case <-ps.Silent:
			case <-done:
			}
			return nil, false, GatewayTargetDeviceFailedToRespond
		}
		if ps.Delay > 0 {
			t := time.NewTimer(ps.Delay)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
			}
		}
		end := int(addr) + int(qty)
		for _, r := range ps.Exceptions {
			if r.Table == table && int(addr) < r.To && r.From < end {
				d.exceptions.Inc()
				return nil, false, r.Code
			}
		}
	}
	img = d.img.Load()
	if img == nil || int(addr)+int(qty) > tableLen(img, table) {
		d.exceptions.Inc()
		return nil, false, IllegalDataAddress
	}
	return img, false, 0
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

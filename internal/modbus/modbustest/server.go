// Package modbustest is a test harness for Modbus clients: a Modbus TCP
// server (github.com/simonvetter/modbus) on a random loopback port backed by
// a programmable register bank with exception and delay injection, and
// bridges that speak RTU or ASCII framing over TCP or over a pseudo-terminal
// pair and forward each request to the server's MBAP side.
//
// It deliberately shares no framing code with the driver it tests: request
// parsing, reply framing and the MBAP forwarding are written here
// independently. Only the checksums come from internal/modbus/checksum,
// which published vectors pin.
package modbustest

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	mbs "github.com/simonvetter/modbus"
)

// Table names a Modbus table in the bank.
type Table uint8

// Tables.
const (
	Coils Table = iota + 1
	DiscreteInputs
	HoldingRegisters
	InputRegisters
)

// Request is one read or write the server received.
type Request struct {
	Unit     uint8
	Table    Table
	Address  uint16
	Quantity uint16
	Write    bool
}

type key struct {
	t Table
	a uint16
}

// Bank is the server's memory: four tables of 65536 entries, exceptions
// raised by any request that covers a given address, and a reply delay.
// Its methods are safe for concurrent use.
type Bank struct {
	mu         sync.Mutex
	holding    [65536]uint16
	input      [65536]uint16
	coils      [65536]bool
	discrete   [65536]bool
	exceptions map[key]uint8
	writeExc   map[key]uint8 // raised by writes only
	delay      time.Duration
	delayNext  int
	unitDelay  map[uint8]time.Duration
	log        []Request
	onRequest  func(Request)
}

// NewBank returns an all-zero bank.
func NewBank() *Bank { return &Bank{exceptions: map[key]uint8{}, writeExc: map[key]uint8{}} }

// SetRegisters writes holding or input registers from addr on.
func (b *Bank) SetRegisters(t Table, addr uint16, vals ...uint16) {
	b.mu.Lock()
	defer b.mu.Unlock()
	dst := b.holding[:]
	if t == InputRegisters {
		dst = b.input[:]
	}
	copy(dst[addr:], vals)
}

// SetBytes writes registers from raw big-endian bytes (odd length is zero-padded).
func (b *Bank) SetBytes(t Table, addr uint16, raw []byte) {
	vals := make([]uint16, (len(raw)+1)/2)
	for i := range raw {
		if i%2 == 0 {
			vals[i/2] |= uint16(raw[i]) << 8
		} else {
			vals[i/2] |= uint16(raw[i])
		}
	}
	b.SetRegisters(t, addr, vals...)
}

// SetBits writes coils or discrete inputs from addr on.
func (b *Bank) SetBits(t Table, addr uint16, vals ...bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	dst := b.coils[:]
	if t == DiscreteInputs {
		dst = b.discrete[:]
	}
	copy(dst[addr:], vals)
}

// SetException makes every request covering (t, addr) fail with code
// (0 clears it). Code 2 is "illegal data address".
func (b *Bank) SetException(t Table, addr uint16, code uint8) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if code == 0 {
		delete(b.exceptions, key{t, addr})
		return
	}
	b.exceptions[key{t, addr}] = code
}

// SetWriteException makes every write covering (t, addr) fail with code
// (0 clears it); reads still succeed, as on a device that refuses a
// setpoint it can report (code 3, illegal data value, or 4, device failure).
func (b *Bank) SetWriteException(t Table, addr uint16, code uint8) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if code == 0 {
		delete(b.writeExc, key{t, addr})
		return
	}
	b.writeExc[key{t, addr}] = code
}

// Writes returns how many write requests the server received.
func (b *Bank) Writes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, r := range b.log {
		if r.Write {
			n++
		}
	}
	return n
}

// SetDelay delays the next n replies by d (n < 0: every reply).
func (b *Bank) SetDelay(d time.Duration, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay, b.delayNext = d, n
}

// SetUnitDelay delays every reply to unit by d (0: no longer), on top of
// SetDelay's: a slow device among fast ones behind one gateway or on one
// bus.
func (b *Bank) SetUnitDelay(unit uint8, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.unitDelay == nil {
		b.unitDelay = map[uint8]time.Duration{}
	}
	b.unitDelay[unit] = d
}

// OnRequest makes f be called with every request the bank serves from
// now on, when it arrives: before its reply is sent (and before any delay
// of it), from the server's goroutine, outside the bank's lock. Nil stops.
func (b *Bank) OnRequest(f func(Request)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onRequest = f
}

// Requests returns the requests received so far.
func (b *Bank) Requests() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request(nil), b.log...)
}

// ResetRequests forgets the request log.
func (b *Bank) ResetRequests() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = b.log[:0]
}

// enter logs a request and returns its exception and delay.
func (b *Bank) enter(r Request) (time.Duration, error) {
	b.mu.Lock()
	f := b.onRequest
	b.mu.Unlock()
	if f != nil {
		f(r)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, r)
	delay := b.unitDelay[r.Unit]
	if b.delayNext != 0 {
		delay += b.delay
		if b.delayNext > 0 {
			b.delayNext--
		}
	}
	for a := int(r.Address); a < int(r.Address)+int(r.Quantity); a++ {
		if code, ok := b.exceptions[key{r.Table, uint16(a)}]; ok {
			return delay, exceptionError(code)
		}
		if code, ok := b.writeExc[key{r.Table, uint16(a)}]; ok && r.Write {
			return delay, exceptionError(code)
		}
	}
	return delay, nil
}

func exceptionError(code uint8) error {
	switch code {
	case 1:
		return mbs.ErrIllegalFunction
	case 2:
		return mbs.ErrIllegalDataAddress
	case 3:
		return mbs.ErrIllegalDataValue
	case 5:
		return mbs.ErrAcknowledge
	case 6:
		return mbs.ErrServerDeviceBusy
	case 8:
		return mbs.ErrMemoryParityError
	case 10:
		return mbs.ErrGWPathUnavailable
	case 11:
		return mbs.ErrGWTargetFailedToRespond
	}
	return mbs.ErrServerDeviceFailure
}

// handler adapts the bank to simonvetter's RequestHandler.
type handler struct{ b *Bank }

// access serves one request on table t: it applies the bank's injected
// delay and exception, then writes args into src or returns a copy of the
// requested range.
func access[T bool | uint16](h handler, t Table, unit uint8, addr, qty uint16, write bool, args []T, src func() []T) ([]T, error) {
	delay, err := h.b.enter(Request{Unit: unit, Table: t, Address: addr, Quantity: qty, Write: write})
	if delay > 0 {
		time.Sleep(delay) // the simulated device is slow
	}
	if err != nil {
		return nil, err
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	tab := src()
	if write {
		copy(tab[addr:], args)
		return nil, nil
	}
	return append([]T(nil), tab[addr:int(addr)+int(qty)]...), nil
}

func (h handler) bits(t Table, unit uint8, addr, qty uint16, write bool, args []bool) ([]bool, error) {
	return access(h, t, unit, addr, qty, write, args, func() []bool {
		if t == DiscreteInputs {
			return h.b.discrete[:]
		}
		return h.b.coils[:]
	})
}

func (h handler) regs(t Table, unit uint8, addr, qty uint16, write bool, args []uint16) ([]uint16, error) {
	return access(h, t, unit, addr, qty, write, args, func() []uint16 {
		if t == InputRegisters {
			return h.b.input[:]
		}
		return h.b.holding[:]
	})
}

func (h handler) HandleCoils(r *mbs.CoilsRequest) ([]bool, error) {
	return h.bits(Coils, r.UnitId, r.Addr, r.Quantity, r.IsWrite, r.Args)
}

func (h handler) HandleDiscreteInputs(r *mbs.DiscreteInputsRequest) ([]bool, error) {
	return h.bits(DiscreteInputs, r.UnitId, r.Addr, r.Quantity, false, nil)
}

func (h handler) HandleHoldingRegisters(r *mbs.HoldingRegistersRequest) ([]uint16, error) {
	return h.regs(HoldingRegisters, r.UnitId, r.Addr, r.Quantity, r.IsWrite, r.Args)
}

func (h handler) HandleInputRegisters(r *mbs.InputRegistersRequest) ([]uint16, error) {
	return h.regs(InputRegisters, r.UnitId, r.Addr, r.Quantity, false, nil)
}

// Server is a running Modbus TCP server on the bank.
type Server struct {
	Addr string // 127.0.0.1:port
	Bank *Bank

	mu  sync.Mutex
	srv *mbs.ModbusServer
}

// StartServer starts a Modbus TCP server for bank on a random loopback port
// and stops it when the test ends.
func StartServer(tb testing.TB, bank *Bank) *Server {
	tb.Helper()
	var lastErr error
	var lc net.ListenConfig
	for range 10 {
		ln, err := lc.Listen(tb.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("modbustest: listen: %v", err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		s := &Server{Addr: addr, Bank: bank}
		if lastErr = s.Start(); lastErr == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("modbustest: start server: %v", lastErr)
	return nil
}

// Start (re)starts the server on s.Addr.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("modbustest: server already running")
	}
	srv, err := mbs.NewServer(&mbs.ServerConfiguration{
		URL:        "tcp://" + s.Addr,
		Timeout:    time.Minute,
		MaxClients: 64,
		Logger:     log.New(io.Discard, "", 0),
	}, handler{s.Bank})
	if err != nil {
		return fmt.Errorf("modbustest: new server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("modbustest: start %s: %w", s.Addr, err)
	}
	s.srv = srv
	return nil
}

// Stop stops the server and drops its clients; Start brings it back on the same address.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Stop()
		s.srv = nil
	}
}

// Package modbusfront serves simulated devices over Modbus: Modbus TCP
// (MBAP, through the simonvetter server) or RTU frames with CRC-16 over a
// TCP stream (as serial-to-Ethernet converters carry them), one or more
// devices per port, each under its unit id. Reads are served from the
// device's current register image with no copy. Writes of holding registers
// over Modbus TCP (FC6, FC16) reach the device's WriteFunc (SetWriter; the
// fleet hands them to the model's setpoints), and Device.Writes counts them;
// every other write, and every write over RTU, answers exception 1
// (illegal function).
//
// The front injects the protocol faults a device's Faults describe: a
// delay before every reply, silence (Modbus TCP: the request blocks until
// the silence ends, then answers exception 11; RTU: no reply at all, as a
// serial slave that does not hear), and exceptions on register ranges.
// DropConnections closes every client connection, as a device reset does.
//
// Typical use by the fleet runner (one goroutine owns the models):
//
//	dev := modbusfront.NewDevice(requests, exceptions)
//	f, _ := modbusfront.New(modbusfront.Config{Address: "127.0.0.1:502"}, []modbusfront.Unit{{ID: 1, Device: dev}}, log)
//	err := f.Start(ctx)            // ... f.Stop()
//	for each tick { step models; dev.Publish(img) }
package modbusfront

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/simonvetter/modbus"
)

// Transports a Front can speak.
const (
	TCP        = "tcp"          // Modbus TCP (MBAP header)
	RTUOverTCP = "rtu_over_tcp" // Modbus RTU frames with CRC-16 over a TCP stream
)

// Config configures a Front.
type Config struct {
	Name      string // for logs
	Address   string // host:port to bind; port 0 picks a free port (Addr reports it)
	Transport string // TCP (default) or RTUOverTCP
}

// Unit is a device served under a unit id (1-247 on a shared port; a port
// with a single device also answers it under 0 and 255 over Modbus TCP).
type Unit struct {
	ID     uint8
	Device *Device
}

// Front is one Modbus port serving one or more devices.
type Front struct {
	cfg    Config
	units  [256]*Device
	single *Device // the only device, which also answers unit ids 0 and 255 over Modbus TCP
	log    *slog.Logger

	mu      sync.Mutex
	addr    string // real host:port once started
	srv     *modbus.ModbusServer
	rtu     *rtuServer
	done    chan struct{} // closed by Stop: ends waits of silent and slow devices
	stopped bool
}

// New checks cfg and the units; it does no I/O.
func New(cfg Config, units []Unit, log *slog.Logger) (*Front, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Transport == "" {
		cfg.Transport = TCP
	}
	if cfg.Transport != TCP && cfg.Transport != RTUOverTCP {
		return nil, fmt.Errorf("modbusfront: transport: %q not one of tcp, rtu_over_tcp", cfg.Transport)
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return nil, fmt.Errorf("modbusfront: address: %q: %w", cfg.Address, err)
	}
	if len(units) == 0 {
		return nil, errors.New("modbusfront: no unit to serve")
	}
	f := &Front{cfg: cfg, log: log.With("listener", cfg.Name), done: make(chan struct{})}
	for _, u := range units {
		if u.Device == nil {
			return nil, fmt.Errorf("modbusfront: unit %d: no device", u.ID)
		}
		if f.units[u.ID] != nil {
			return nil, fmt.Errorf("modbusfront: unit %d: used twice", u.ID)
		}
		f.units[u.ID] = u.Device
	}
	if len(units) == 1 {
		f.single = units[0].Device
	}
	return f, nil
}

// Transport returns TCP or RTUOverTCP.
func (f *Front) Transport() string { return f.cfg.Transport }

// Addr returns the real host:port once started (the configured address
// before).
func (f *Front) Addr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addr == "" {
		return f.cfg.Address
	}
	return f.addr
}

// Run starts the front and serves until ctx is done.
func (f *Front) Run(ctx context.Context) error {
	if err := f.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	f.Stop()
	return nil
}

// Start binds the address and starts serving; ctx bounds the bind only
// (Stop ends the serving). A Front starts once.
func (f *Front) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.srv != nil || f.rtu != nil {
		return errors.New("modbusfront: already started")
	}
	var lc net.ListenConfig
	if f.cfg.Transport == RTUOverTCP {
		ln, err := lc.Listen(ctx, "tcp", f.cfg.Address)
		if err != nil {
			return err
		}
		f.addr = ln.Addr().String()
		f.rtu = newRTUServer(ln, f)
		go f.rtu.serve()
		return nil
	}
	host, port, _ := net.SplitHostPort(f.cfg.Address)
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
			Logger:     log.New(slogWriter{f.log}, "", 0),
		}, &tcpHandler{f: f})
		if err != nil {
			return err
		}
		if lastErr = srv.Start(); lastErr == nil {
			f.addr, f.srv = addr, srv
			return nil
		}
		if port != "0" {
			break
		}
	}
	return lastErr
}

// DropConnections closes every client connection (the port stays open,
// after a blink for Modbus TCP, whose server library can only stop and
// start again).
func (f *Front) DropConnections() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	if f.rtu != nil {
		f.rtu.dropConns()
		return
	}
	if f.srv == nil {
		return
	}
	_ = f.srv.Stop()
	var err error
	for range 20 {
		if err = f.srv.Start(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond) // the port is released asynchronously
	}
	f.log.Error("cannot reopen listener after dropping connections", "addr", f.addr, "err", err)
}

// Stop closes the port and every connection; requests waiting on a silent
// or slow device end. Stop is idempotent.
func (f *Front) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	close(f.done)
	if f.rtu != nil {
		f.rtu.close()
	}
	if f.srv != nil {
		_ = f.srv.Stop()
	}
}

// lookup finds the device of a unit id (Modbus TCP).
func (f *Front) lookup(unit uint8) *Device {
	if d := f.units[unit]; d != nil {
		return d
	}
	if f.single != nil && (unit == 0 || unit == 255) {
		return f.single
	}
	return nil
}

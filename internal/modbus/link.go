package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/goburrow/serial"

	"github.com/smelterio/smelter/internal/backoff"
)

// serialSlice bounds one blocking read on a serial port, so that a canceled
// context is noticed within this time.
const serialSlice = 50 * time.Millisecond

// link is one connection (TCP socket or serial port) shared by every device
// on the same transport and address. Its semaphore keeps exactly one request
// in flight; all fields below sem are owned by the holder of sem.
type link struct {
	key       string
	transport Transport
	address   string
	serial    SerialConfig
	timeout   time.Duration
	backMin   time.Duration
	backMax   time.Duration
	log       *slog.Logger
	m         *Metrics

	sem       chan struct{}
	connected atomic.Bool

	rw       io.ReadWriteCloser
	nc       net.Conn // rw as a net.Conn, nil for a serial port
	dirty    bool     // serial: stale input may be pending; drain before the next request
	closed   bool
	failures int
	nextDial time.Time
	downLog  bool      // a connection failure has been logged since the last success
	lastRx   time.Time // serial: end of the last reply, for the inter-frame silence

	// set by the device around one client call
	ctx context.Context
	buf [maxADU]byte
}

// linkError carries the status of a failed exchange through goburrow's client.
type linkError struct {
	status uint32
	err    error
}

func (e *linkError) Error() string { return e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

func newLink(cfg Config, log *slog.Logger, m *Metrics) *link {
	return &link{
		key:       cfg.linkKey(),
		transport: cfg.Transport,
		address:   cfg.Address,
		serial:    cfg.Serial,
		timeout:   cfg.Timeout,
		backMin:   cfg.BackoffMin,
		backMax:   cfg.BackoffMax,
		log:       log.With("connection", cfg.linkKey()),
		m:         m,
		sem:       make(chan struct{}, 1),
	}
}

func (l *link) acquire(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *link) release() { <-l.sem }

// ensure opens the connection if needed. While backing off after failed
// attempts it fails at once without I/O. Caller holds sem.
func (l *link) ensure(ctx context.Context, dev string) uint32 {
	if l.closed {
		return StatusConnection
	}
	if l.rw != nil {
		return StatusGood
	}
	now := time.Now()
	if now.Before(l.nextDial) {
		return StatusConnection
	}
	err := l.dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return StatusCanceled
		}
		l.failures++
		wait := backoff.Step(l.failures, l.backMin, l.backMax)
		l.nextDial = now.Add(wait)
		l.m.errorsFor(dev, "connection").Inc()
		if !l.downLog {
			l.log.Warn("modbus connection failed", "error", err, "retry_in", wait.Round(time.Millisecond))
			l.downLog = true
		} else {
			l.log.Debug("modbus connection retry failed", "error", err, "failures", l.failures, "retry_in", wait.Round(time.Millisecond))
		}
		return StatusConnection
	}
	l.connected.Store(true)
	l.m.connUp.WithLabelValues(l.key).Set(1)
	l.log.Info("modbus connected")
	return StatusGood
}

func (l *link) dial(ctx context.Context) error {
	if l.transport.Serial() {
		p, err := serial.Open(&serial.Config{
			Address:  l.address,
			BaudRate: l.serial.Baud,
			DataBits: l.serial.DataBits,
			StopBits: l.serial.StopBits,
			Parity:   l.serial.Parity,
			Timeout:  min(serialSlice, l.timeout),
		})
		if err != nil {
			return fmt.Errorf("modbus: open %s: %w", l.address, err)
		}
		l.rw, l.nc = p, nil
		return nil
	}
	d := net.Dialer{Timeout: l.timeout}
	c, err := d.DialContext(ctx, "tcp", l.address)
	if err != nil {
		return fmt.Errorf("modbus: dial %s: %w", l.address, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	l.rw, l.nc = c, c
	return nil
}

// drop closes the connection; the next request reconnects.
func (l *link) drop() {
	if l.rw != nil {
		_ = l.rw.Close()
		l.rw, l.nc = nil, nil
		l.dirty = false
		l.connected.Store(false)
		l.m.connUp.WithLabelValues(l.key).Set(0)
	}
}

// close shuts the link for good. It waits for a request in flight.
func (l *link) close() error {
	l.sem <- struct{}{}
	defer l.release()
	var err error
	if l.rw != nil {
		err = l.rw.Close()
		l.rw, l.nc = nil, nil
		l.connected.Store(false)
	}
	l.closed = true
	return err
}

// settle updates the link after one exchange that ended with status.
// A TCP stream cannot be trusted after a timeout, cancellation or framing
// error (a late reply would be taken for the next one), so it is dropped
// and reopened; a serial line is drained instead.
func (l *link) settle(status uint32) {
	switch status {
	case StatusGood, StatusBadLength:
		l.failures = 0
		l.downLog = false
		return
	case StatusConnection:
		l.drop()
		return
	case StatusTimeout, StatusCanceled, StatusFraming:
		if l.nc != nil {
			l.drop()
		} else {
			l.dirty = true
		}
		return
	}
	if status < 0x100 { // exception: a well-formed reply
		l.failures = 0
		l.downLog = false
	}
}

// Send implements goburrow's Transporter: write one request ADU and read the
// reply, within the request timeout and the context set by the caller.
func (l *link) Send(adu []byte) ([]byte, error) {
	ctx := l.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, &linkError{StatusCanceled, err}
	}
	if l.rw == nil {
		return nil, &linkError{StatusConnection, errors.New("not connected")}
	}
	deadline := time.Now().Add(l.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if l.nc != nil {
		if err := l.nc.SetDeadline(deadline); err != nil {
			return nil, &linkError{StatusConnection, err}
		}
		if ctx.Done() != nil {
			nc := l.nc
			stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
			defer func() {
				if !stop() && l.nc == nc {
					// the abort ran or is running: this socket's deadline is no longer ours
					l.drop()
				}
			}()
		}
	} else {
		if l.dirty {
			l.drain()
		}
		// RTU marks frame ends by 3.5 characters of silence; keep it after
		// the last reply before talking again (a real bus needs it).
		if gap := l.silence() - time.Since(l.lastRx); l.transport == RTU && gap > 0 {
			time.Sleep(gap)
		}
		defer func() { l.lastRx = time.Now() }()
	}
	rd := func(p []byte) error { return l.read(ctx, deadline, p) }
	if err := l.write(ctx, deadline, adu); err != nil {
		return nil, err
	}
	var (
		frame []byte
		err   error
	)
	switch l.transport {
	case TCP:
		frame, err = readMBAP(rd, l.buf[:], binary.BigEndian.Uint16(adu), adu[6], adu[7])
	case RTU, RTUOverTCP:
		frame, err = readRTU(rd, l.buf[:], adu[0], adu[1])
	default:
		var head [2]byte
		if err = decodeHex(head[:], adu[1:5]); err == nil {
			frame, err = readASCII(rd, l.buf[:], head[0], head[1])
		}
	}
	if err != nil {
		var le *linkError
		if !errors.As(err, &le) {
			err = &linkError{StatusFraming, err}
		}
		return nil, err
	}
	return frame, nil
}

func (l *link) write(ctx context.Context, deadline time.Time, p []byte) error {
	for len(p) > 0 {
		n, err := l.rw.Write(p)
		p = p[n:]
		if err != nil {
			return l.ioError(ctx, err)
		}
		if n == 0 && time.Now().After(deadline) {
			return &linkError{StatusTimeout, errors.New("write timed out")}
		}
	}
	return nil
}

// read fills p from the connection by the deadline.
func (l *link) read(ctx context.Context, deadline time.Time, p []byte) error {
	if l.nc != nil {
		if _, err := io.ReadFull(l.nc, p); err != nil {
			return l.ioError(ctx, err)
		}
		return nil
	}
	for len(p) > 0 {
		if err := ctx.Err(); err != nil {
			return &linkError{StatusCanceled, err}
		}
		if time.Now().After(deadline) {
			return &linkError{StatusTimeout, errors.New("serial read timed out")}
		}
		n, err := l.rw.Read(p)
		p = p[n:]
		switch {
		case errors.Is(err, serial.ErrTimeout):
		case err != nil:
			return l.ioError(ctx, err)
		case n == 0:
			return &linkError{StatusConnection, io.ErrUnexpectedEOF}
		}
	}
	return nil
}

// silence returns the RTU inter-frame gap t3.5: 3.5 characters of 11 bits,
// fixed at 1.75 ms above 19200 baud as the serial-line specification says.
func (l *link) silence() time.Duration {
	if l.serial.Baud <= 0 || l.serial.Baud > 19200 {
		return 1750 * time.Microsecond
	}
	return time.Duration(3.5 * 11 * float64(time.Second) / float64(l.serial.Baud))
}

// drain discards whatever input is pending on a serial line (a late reply).
func (l *link) drain() {
	var junk [64]byte
	for range 64 {
		n, err := l.rw.Read(junk[:])
		if err != nil || n == 0 {
			break
		}
	}
	l.dirty = false
}

func (l *link) ioError(ctx context.Context, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if ctx.Err() != nil {
			return &linkError{StatusCanceled, ctx.Err()}
		}
		return &linkError{StatusTimeout, err}
	}
	return &linkError{StatusConnection, err}
}

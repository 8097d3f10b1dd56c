//go:build unix

package modbus

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
)

// racingPort is a TCP connection that opens the window of a race on its
// at-th raw read (the drainer's reads are raw reads): before that read it
// calls before, which either ends the exchange's context and waits until
// the link's abort (roundTrip's AfterFunc) has set the port's past
// deadline, or sets a past deadline itself. The context then ends after
// setDeadline last looked at it and before the drain, as a cancel racing
// the drain does on a loaded machine.
type racingPort struct {
	*net.TCPConn
	at      int32
	reads   atomic.Int32
	before  func(p *racingPort)
	aborted chan struct{} // closed when a past deadline is set
	once    sync.Once
}

func (p *racingPort) SetDeadline(t time.Time) error {
	err := p.TCPConn.SetDeadline(t)
	if !t.IsZero() && t.Before(time.Now()) {
		p.once.Do(func() { close(p.aborted) })
	}
	return err
}

func (p *racingPort) SyscallConn() (syscall.RawConn, error) {
	rc, err := p.TCPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return racingRaw{rc, p}, nil
}

type racingRaw struct {
	syscall.RawConn
	p *racingPort
}

func (r racingRaw) Read(f func(fd uintptr) bool) error {
	if r.p.reads.Add(1) == r.p.at {
		r.p.before(r.p)
	}
	return r.RawConn.Read(f)
}

// TestDrainRacingCancel: a context that ends while the link drains stray
// input before a request (prepare, or waitQuiet on an RTU/ASCII line in
// doubt) is a cancellation. Before, the drain failed with the abort's
// "i/o timeout" and the link reported a connection failure: it counted a
// connection error, dropped the connection and made it the device's last
// error (TestHostileDevices/ascii_over_tcp flaked on it when its stop
// canceled a read). A deadline left on the port by anyone else is cleared
// and the request goes ahead.
func TestDrainRacingCancel(t *testing.T) {
	cancelBefore := func(cancel context.CancelFunc) func(p *racingPort) {
		return func(p *racingPort) {
			cancel()
			<-p.aborted // the abort has set the port's deadline in the past
		}
	}
	staleDeadline := func(context.CancelFunc) func(p *racingPort) {
		return func(p *racingPort) { _ = p.SetDeadline(time.Unix(1, 0)) }
	}
	for _, c := range []struct {
		name   string
		quiet  bool // the line is in doubt: waitQuiet drains (the second raw read)
		at     int32
		before func(context.CancelFunc) func(p *racingPort)
		want   Status // 0: the request is answered
	}{
		{"cancel before prepare's drain", false, 1, cancelBefore, StatusCanceled},
		{"cancel before waitQuiet's drain", true, 2, cancelBefore, StatusCanceled},
		{"stale deadline before prepare's drain", false, 1, staleDeadline, 0},
		{"stale deadline before waitQuiet's drain", true, 2, staleDeadline, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			bank, srv, pool, reg := countingPool(t)
			bank.SetRegisters(modbustest.HoldingRegisters, 0, 7)
			br := modbustest.StartBridge(t, srv.Addr, modbustest.ASCII)
			cfg := testConfig(ASCIIOverTCP, br.Addr, 1)
			cfg.Silence = 20 * time.Millisecond
			d := pool.device("race", cfg)
			l := d.link

			var dl net.Dialer
			conn, err := dl.DialContext(t.Context(), "tcp", br.Addr)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			p := &racingPort{TCPConn: conn.(*net.TCPConn), at: c.at, aborted: make(chan struct{})}
			p.before = c.before(cancel)
			// the connection as ensure leaves it, without its wait for a
			// converter's leftovers (nothing was sent before)
			l.p = p
			if l.drainer, err = newDrainer(p); err != nil {
				t.Fatal(err)
			}
			l.quiet = c.quiet
			l.lastRx = time.Now().Add(-time.Second)

			reply, err := l.exchange(ctx, d.share, d.m, 1, readPDU(nil, HoldingRegisters, 0, 1), nil)
			if p.reads.Load() < c.at {
				t.Fatalf("%d raw reads, the race needs %d", p.reads.Load(), c.at)
			}
			if c.want == 0 {
				if err != nil || len(reply) != 4 || reply[3] != 7 {
					t.Fatalf("exchange = % x, %v; want register 0's 7", reply, err)
				}
				return
			}
			if !errors.Is(err, c.want) || errors.Is(err, StatusConnection) {
				t.Fatalf("exchange error = %v, want %v", err, c.want)
			}
			if n := counter(t, reg, "smelter_modbus_errors_total", "kind", StatusConnection.Kind()); n != 0 {
				t.Errorf("%v connection errors counted for a canceled request", n)
			}
			if n := counter(t, reg, "smelter_modbus_requests_total", "result", StatusCanceled.Kind()); n != 1 {
				t.Errorf("%v canceled requests counted, want 1", n)
			}
		})
	}
}

// countingPool starts a Modbus TCP server on an empty bank and returns it
// with an empty pool whose metrics are registered in reg.
func countingPool(t *testing.T) (*modbustest.Bank, *modbustest.Server, *Pool, *prometheus.Registry) {
	t.Helper()
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	return bank, srv, pool, reg
}

// lateDeadlineCtx is a context whose deadline has passed while its Err is
// still nil: its timer has not run yet (a loaded machine), while the port's
// deadline, set from it, has already fired.
type lateDeadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c lateDeadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// TestReadStoppedByContextDeadline: a read that ends at the context's
// deadline (shorter than the timeout) is a cancellation, not the device's
// timeout, even when the context's own timer has not fired yet.
func TestReadStoppedByContextDeadline(t *testing.T) {
	bank, srv, pool, reg := countingPool(t)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Timeout = 10 * time.Second
	d := pool.device("late-ctx", cfg)
	bank.SetDelay(2*time.Second, 1) // the device answers after the context's deadline
	ctx := lateDeadlineCtx{context.Background(), time.Now().Add(100 * time.Millisecond)}
	_, err := d.link.exchange(ctx, d.share, d.m, 1, readPDU(nil, HoldingRegisters, 0, 1), nil)
	if !errors.Is(err, StatusCanceled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("exchange error = %v, want canceled by the context's deadline", err)
	}
	if n := counter(t, reg, "smelter_modbus_errors_total", "kind", StatusTimeout.Kind()); n != 0 {
		t.Errorf("%v timeouts counted for a request stopped by its context", n)
	}
}

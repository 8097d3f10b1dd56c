package modbus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// countingCtx is a context that counts the registrations context.AfterFunc
// makes with it and their stops (context.AfterFunc uses a context's own
// AfterFunc method when it has one).
type countingCtx struct {
	context.Context // Background: no deadline, no values
	done            chan struct{}

	mu                  sync.Mutex
	registered, stopped int
}

func newCountingCtx() *countingCtx {
	return &countingCtx{Context: context.Background(), done: make(chan struct{})}
}

func (c *countingCtx) Done() <-chan struct{} { return c.done }

func (c *countingCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

func (c *countingCtx) AfterFunc(func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.registered++
	once := false
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if once {
			return false
		}
		once = true
		c.stopped++
		return true
	}
}

func (c *countingCtx) counts() (registered, stopped int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registered, c.stopped
}

// TestAbortRegisteredOncePerContext: a device reads with one context for its
// whole run; the link registers its abort with that context once, not once
// per request (each registration locks the parent context and adds to its
// children), stops it when another context takes over, and when it closes.
func TestAbortRegisteredOncePerContext(t *testing.T) {
	bank, srv, pool, _ := countingPool(t)
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 7)
	d := pool.device("once", testConfig(TCP, srv.Addr, 1))
	pdu := readPDU(nil, HoldingRegisters, 0, 1)
	exchange := func(ctx context.Context) {
		t.Helper()
		if reply, err := d.link.exchange(ctx, d.share, d.m, 1, pdu, nil); err != nil || len(reply) != 4 || reply[3] != 7 {
			t.Fatalf("exchange = % x, %v; want register 0's 7", reply, err)
		}
	}
	a, b := newCountingCtx(), newCountingCtx()
	exchange(b) // connects (the dial registers with its context too)
	exchange(a)
	reg0, stop0 := a.counts()
	for range 20 {
		exchange(a)
	}
	if reg, stop := a.counts(); reg != reg0 || stop != stop0 || reg != 1 || stop != 0 {
		t.Fatalf("21 requests with one context: %d registrations, %d stopped; want 1, 0", reg, stop)
	}
	exchange(b) // another context (a write's, say) takes over
	if reg, stop := a.counts(); reg != 1 || stop != 1 {
		t.Fatalf("first context after another's request: %d registrations, %d stopped; want 1, 1", reg, stop)
	}
	regB, stopB := b.counts()
	exchange(b)
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if reg, stop := b.counts(); reg != regB || stop != stopB+1 {
		t.Fatalf("second context after Close: %d registrations, %d stopped; want %d, %d", reg, stop, regB, stopB+1)
	}
}

// TestAbortOnlyItsOwnExchange: the abort of a context whose exchange is
// over (its registration fires late, or after the link went on to another
// context's request) leaves the request in flight alone: it is answered on
// the same connection. The abort of the context in flight stops it at once
// as a cancellation.
func TestAbortOnlyItsOwnExchange(t *testing.T) {
	bank, srv, pool, _ := countingPool(t)
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 7)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Timeout = 10 * time.Second
	d := pool.device("own", cfg)
	l := d.link
	pdu := readPDU(nil, HoldingRegisters, 0, 1)
	a, b := newCountingCtx(), newCountingCtx()
	if _, err := l.exchange(a, d.share, d.m, 1, pdu, nil); err != nil {
		t.Fatal(err)
	}
	p := l.p

	inFlight := func(ctx context.Context, during func()) ([]byte, error) {
		t.Helper()
		bank.ResetRequests()
		bank.SetDelay(500*time.Millisecond, 1)
		type result struct {
			reply []byte
			err   error
		}
		res := make(chan result, 1)
		go func() {
			reply, err := l.exchange(ctx, d.share, d.m, 1, pdu, nil)
			res <- result{reply, err}
		}()
		wait.For(t, 5*time.Second, "request in flight", func() bool { return len(bank.Requests()) > 0 })
		during()
		r := <-res
		return r.reply, r.err
	}

	reply, err := inFlight(b, func() { l.abort.fire(a.Done()) })
	if err != nil || len(reply) != 4 || reply[3] != 7 {
		t.Fatalf("exchange of another context while the first's abort fired = % x, %v; want register 0's 7", reply, err)
	}
	if l.p != p {
		t.Fatal("connection dropped by another context's abort")
	}

	start := time.Now()
	_, err = inFlight(b, func() { close(b.done); l.abort.fire(b.Done()) })
	if !errors.Is(err, StatusCanceled) {
		t.Fatalf("exchange aborted by its context = %v, want canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("aborted exchange took %v", elapsed)
	}
	if l.p != nil {
		t.Fatal("connection kept after its deadline was the abort's")
	}
}

package modbus

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/wait"
)

// oneClient serves g's line to one client connection at a time, as a
// single-threaded converter does: while it waits for its slave it reads
// no socket, and then handles its queue of new connections before the
// old socket's close: a connection that came in meanwhile finds the slot
// taken and is closed at once (rejected).
type oneClient struct {
	g        *tcpGateway
	mu       sync.Mutex
	current  net.Conn
	txDone   chan struct{} // non-nil while a transaction is on the line
	rejected atomic.Int64
}

func serveOneClient(t *testing.T, g *tcpGateway) (string, *oneClient) {
	o := &oneClient{g: g}
	return modbustest.ServeConns(t, func(_ context.Context, c net.Conn) { o.serve(c) }), o
}

func (o *oneClient) serve(c net.Conn) {
	o.mu.Lock()
	if o.current != nil && o.txDone != nil {
		done := o.txDone
		o.mu.Unlock()
		<-done
		o.rejected.Add(1)
		return // closed by ServeConns
	}
	o.current = c
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		if o.current == c {
			o.current = nil
		}
		o.mu.Unlock()
	}()
	serveMBAP(c, func(tid uint16, unit byte, pdu []byte) []byte {
		o.mu.Lock()
		o.txDone = make(chan struct{})
		o.mu.Unlock()
		reply := o.g.exchange(unit, pdu)
		o.mu.Lock()
		close(o.txDone)
		o.txDone = nil
		o.mu.Unlock()
		if reply == nil {
			return nil
		}
		return modbustest.MBAPReply(tid, unit, reply)
	})
}

// TestReopenAfterNeighbourTimeoutLeavesUnitGood (review mbconv M1): unit 1
// behind a one-client converter never answers (the converter waits 150ms
// for it, the driver's timeout is 100ms); each of its timeouts closes the
// Modbus TCP connection, and the connection opened at once for healthy
// unit 2's request comes while the converter still waits: it is closed
// (the slot still taken). That lost connection is not unit 2's: its read
// is sent again on a new connection and published good, never bad with
// StatusConnection (257), which made it stale beside its dead neighbour.
func TestReopenAfterNeighbourTimeoutLeavesUnitGood(t *testing.T) {
	g := startGateway(t)
	g.setDead(1, 150*time.Millisecond)
	addr, o := serveOneClient(t, g)
	recs := gatewayUnits(t, addr, func(c *Config) { c.BackoffMin, c.BackoffMax = 200*time.Millisecond, 400*time.Millisecond },
		map[byte][]uint16{1: {0, 1}, 2: {0, 1}})
	wait.For(t, 20*time.Second, "10 connections rejected after unit 1's timeouts", func() bool { return o.rejected.Load() >= 10 })
	wait.For(t, 10*time.Second, "unit 2 good in 20 reads", func() bool { return goodSince(recs[2], 0) >= 20 })
	for _, c := range recs[2].snapshot() {
		for _, s := range c.Samples {
			if s.Status == uint32(StatusConnection) {
				t.Fatalf("healthy unit 2 failed with %v after unit 1's timeout closed the connection: %v", StatusConnection, c.Err)
			}
		}
	}
}

// serveRefusing serves g's line to one client at a time as a converter
// that stops listening while it has a client (review attack-mb M1): a
// second connection is refused by the system, also after the client left
// while the converter still waits for its slave; it listens again on the
// same port once that wait is over and the client's socket is closed.
// It returns the address and the number of times it listened again.
func serveRefusing(t *testing.T, g *tcpGateway) (string, *atomic.Int64) {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var (
		mu      sync.Mutex
		cur     = ln
		conn    net.Conn
		stopped bool
		wg      sync.WaitGroup
		relist  atomic.Int64
	)
	wg.Go(func() {
		for {
			mu.Lock()
			l := cur
			mu.Unlock()
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = l.Close() // one client: the next connect is refused
			mu.Lock()
			conn = c
			mu.Unlock()
			g.serve(c)
			_ = c.Close()
			mu.Lock()
			if stopped {
				mu.Unlock()
				return
			}
			next, err := lc.Listen(context.Background(), "tcp", addr)
			if err != nil {
				mu.Unlock()
				t.Errorf("listen again on %s: %v", addr, err)
				return
			}
			cur = next
			relist.Add(1)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		mu.Lock()
		stopped = true
		_ = cur.Close()
		if conn != nil {
			_ = conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return addr, &relist
}

// TestReopenRefusedRetriedWithinTimeout (review attack-mb M1): unit 1
// behind a one-client converter never answers; the converter waits 150ms
// for it (the driver's timeout is 100ms) and refuses every connection
// meanwhile. Each of unit 1's timeouts closes the Modbus TCP socket, and
// healthy unit 2's request comes while the converter still waits: its
// connect is refused. It is retried with a short backoff within the
// request's timeout, so unit 2 reads good and never fails as connection
// (257): before, the refused connect failed its read and the link backed
// off (here 200ms+), and unit 2 went stale beside its dead neighbour.
// When the converter waits longer than the timeout (400ms), unit 2's read
// fails as connection, and the error says that the converter refused
// the connection.
func TestReopenRefusedRetriedWithinTimeout(t *testing.T) {
	t.Run("within the timeout", func(t *testing.T) {
		g := startGateway(t)
		g.setDead(1, 150*time.Millisecond)
		addr, relist := serveRefusing(t, g)
		recs := gatewayUnits(t, addr, func(c *Config) { c.BackoffMin, c.BackoffMax = 200*time.Millisecond, 400*time.Millisecond },
			map[byte][]uint16{1: {0, 1}, 2: {0, 1}})
		wait.For(t, 20*time.Second, "10 connections refused after unit 1's timeouts", func() bool { return relist.Load() >= 10 })
		wait.For(t, 10*time.Second, "unit 2 good in 20 reads", func() bool { return goodSince(recs[2], 0) >= 20 })
		for _, c := range recs[2].snapshot() {
			for _, s := range c.Samples {
				if s.Status == uint32(StatusConnection) {
					t.Fatalf("healthy unit 2 failed with %v after unit 1's timeout closed the connection: %v", StatusConnection, c.Err)
				}
			}
		}
	})
	t.Run("longer than the timeout", func(t *testing.T) {
		g := startGateway(t)
		g.setDead(1, 400*time.Millisecond)
		addr, _ := serveRefusing(t, g)
		recs := gatewayUnits(t, addr, nil, map[byte][]uint16{1: {0, 1}, 2: {0, 1}})
		wait.For(t, 20*time.Second, "unit 2's read failed: the converter refused it", func() bool {
			return slices.ContainsFunc(recs[2].snapshot(), func(c sample.Cycle) bool {
				return errors.Is(c.Err, StatusConnection) && strings.Contains(c.Err.Error(), "connect refused")
			})
		})
	})
}

package modbus

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// burstConverter is a hostile Modbus TCP-to-RTU converter on a raw socket
// (review attack-mb H1): it holds the real answer of unit 1's 4-register
// read and fails it (exception 4 at once, or no reply when silent), then
// fails the next k reads of other shapes (another unit's 2-register read: a
// "busy" burst), then relays unit 1's held answer as the reply to unit 2's
// next 4-register read (unit 2's transaction id and unit id). It answers
// honestly otherwise, and for cool transactions after each relay. Units
// answer "read holding registers" with unit*1000 + address.
type burstConverter struct {
	Addr   string
	k      int
	silent bool
	cool   int

	mu     sync.Mutex
	st     int // 0 honest (cooling), 1 burst, 2 relay due
	n      int // failures of the burst so far
	left   int // transactions of cooling left
	held   []byte
	relays atomic.Int64
}

func startBurstConverter(t *testing.T, k int, silent bool) *burstConverter {
	t.Helper()
	c := &burstConverter{k: k, silent: silent, cool: 10}
	c.Addr = modbustest.ServeConns(t, func(_ context.Context, conn net.Conn) { serveMBAP(conn, c.exchange) })
	return c
}

func (c *burstConverter) exchange(tid uint16, unit byte, pdu []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	real := gatewayAnswer(unit, pdu, nil)
	count := 0
	if len(pdu) == 5 {
		count = int(binary.BigEndian.Uint16(pdu[3:]))
	}
	fail := func() []byte {
		if c.silent {
			return nil
		}
		return modbustest.MBAPReply(tid, unit, []byte{pdu[0] | 0x80, 4})
	}
	switch c.st {
	case 0:
		if c.left > 0 {
			c.left--
			break
		}
		if unit == 1 && count == 4 {
			c.st, c.n, c.held = 1, 0, real
			return fail()
		}
	case 1:
		if count != 4 {
			c.n++
			if c.n >= c.k {
				c.st = 2
			}
			return fail()
		}
	case 2:
		if unit == 2 && count == 4 {
			c.st, c.left = 0, c.cool
			c.relays.Add(1)
			return modbustest.MBAPReply(tid, unit, c.held)
		}
	}
	return modbustest.MBAPReply(tid, unit, real)
}

// TestOwedAnswerSurvivesBurstOfFailures (review attack-mb H1): units 1 and
// 2 read holding 0..3 (one 4-register read each), 18 more units holding
// 0..1 (2-register reads), all on one Modbus TCP connection to a
// burstConverter. Unit 1's answer is owed from its failure until relayed
// to unit 2's read after k failures of other units' reads: that relay must
// be proven and discarded whatever failed in between, 1, 3 or 15 requests
// (more than the requests a link remembers one by one: the overflow puts
// the forgotten request's shape in doubt). The recorders fail the test on
// any value published good that is not its register's (before the fix,
// unit 1's values published good as unit 2's: the owed entry was
// overwritten in the order entries were first made, not last owed, and
// lost outright beyond 8 entries). Unit 2 must read good again after.
func TestOwedAnswerSurvivesBurstOfFailures(t *testing.T) {
	for _, cs := range []struct {
		k      int
		silent bool
		relays int64
	}{{1, false, 40}, {3, false, 40}, {15, false, 30}, {3, true, 12}} {
		t.Run(fmt.Sprintf("%d failures between, silent %v", cs.k, cs.silent), func(t *testing.T) {
			c := startBurstConverter(t, cs.k, cs.silent)
			addrs := map[byte][]uint16{1: {0, 1, 2, 3}, 2: {0, 1, 2, 3}}
			for u := byte(3); u <= 20; u++ {
				addrs[u] = []uint16{0, 1}
			}
			recs := gatewayUnits(t, c.Addr, func(cfg *Config) {
				cfg.Timeout = 100 * time.Millisecond
				cfg.BackoffMin, cfg.BackoffMax = 5*time.Millisecond, 10*time.Millisecond
			}, addrs)
			wait.For(t, 60*time.Second, fmt.Sprintf("%d relays of unit 1's answer to unit 2", cs.relays), func() bool {
				return c.relays.Load() >= cs.relays
			})
			n2 := len(recs[2].snapshot())
			wait.For(t, 20*time.Second, "unit 2 good again", func() bool { return goodSince(recs[2], n2) >= 3 })
		})
	}
}

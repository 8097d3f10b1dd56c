package modbus

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// relayConverter is a dumb Modbus TCP-to-RTU converter on a raw socket,
// written for these tests (review 18): for each request it puts the asked
// unit's answer on its simulated RTU bus and relays the FIRST frame on the
// bus as the request's reply (its transaction id; in the MBAP header the
// request's unit when copyUnit, else the frame's), exception 11 when the
// bus is empty; the frames after the first are lost (as review 18's conv.py
// does, dropping frames older than the request it relays for). Every hold-th request of unit 1
// gets no answer in its transaction: that answer appears on the bus during
// the after-th transaction after it, before that transaction's answer.
// Units answer "read holding registers" with unit*1000 + address.
type relayConverter struct {
	Addr     string
	copyUnit bool
	hold     int // every hold-th request of unit 1 is answered late
	after    int // in the after-th transaction after it
	exc      byte

	mu      sync.Mutex
	n1      int // requests of unit 1 so far
	tx      int // transactions so far
	bus     []convFrame
	due     map[int][]convFrame // transaction -> late frames appearing in it
	excs    atomic.Int64        // exceptions answered in place of an answer
	foreign atomic.Int64        // frames relayed to another request than theirs
}

type convFrame struct {
	unit byte
	pdu  []byte
	of   string // the request it answers
}

func startRelayConverter(t *testing.T, copyUnit bool, hold, after int, exc byte) *relayConverter {
	t.Helper()
	c := &relayConverter{copyUnit: copyUnit, hold: hold, after: after, exc: exc, due: map[int][]convFrame{}}
	c.Addr = modbustest.ServeConns(t, func(_ context.Context, conn net.Conn) { serveMBAP(conn, c.exchange) })
	return c
}

func (c *relayConverter) exchange(tid uint16, unit byte, pdu []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tx++
	c.bus = append(c.bus, c.due[c.tx]...)
	delete(c.due, c.tx)
	f := convFrame{unit: unit, pdu: gatewayAnswer(unit, pdu, nil), of: fmt.Sprintf("%d:%x", unit, pdu)}
	if unit == 1 {
		c.n1++
		if c.n1%c.hold == 0 {
			c.due[c.tx+c.after] = append(c.due[c.tx+c.after], f)
			f.pdu = nil
		}
	}
	if f.pdu != nil {
		c.bus = append(c.bus, f)
	}
	if len(c.bus) == 0 {
		c.excs.Add(1)
		return modbustest.MBAPReply(tid, unit, []byte{pdu[0] | 0x80, c.exc})
	}
	out := c.bus[0]
	c.bus = c.bus[:0] // the frames after the first on the bus are dropped
	if out.of != f.of {
		c.foreign.Add(1)
	}
	hdr := out.unit
	if c.copyUnit {
		hdr = unit
	}
	return modbustest.MBAPReply(tid, hdr, out.pdu)
}

// TestConverterRelayOwedAnswers (review 18, H-1, H-2): units 1 and 2 on one
// Modbus TCP connection behind a converter that relays the first frame on
// its bus; every 5th request of unit 1 gets exception 11 and its answer is
// relayed during the 3rd (or 8th) transaction after it, to whichever request
// is then outstanding (the re-send after a neighbour's proof, the unit's other
// register). Each unit reads holding registers 10 and 20 in two one-register
// requests (no probe of one register less). No value may be published good
// that is not its register's (the recorders fail the test: before, unit 2's
// register 10 read 1010 and unit 1's register 20 read 1010, good), and the
// healthy unit 2 must keep reading good values, never failing as a
// reply from the wrong unit when unit 1's frame comes with its own unit in
// the header (M-1: its read is sent again).
func TestConverterRelayOwedAnswers(t *testing.T) {
	for _, cs := range []struct {
		copyUnit bool
		after    int // 8: after a neighbour's whole proof (5 requests)
	}{{true, 3}, {false, 3}, {true, 8}, {false, 8}} {
		copyUnit := cs.copyUnit
		t.Run(fmt.Sprintf("copy request unit %v, late by %d", copyUnit, cs.after), func(t *testing.T) {
			c := startRelayConverter(t, copyUnit, 5, cs.after, 11)
			recs := gatewayUnits(t, c.Addr, func(cfg *Config) {
				cfg.Timeout = 200 * time.Millisecond
				cfg.MaxGap = 0 // two one-register requests per read
				cfg.BackoffMin, cfg.BackoffMax = 5*time.Millisecond, 10*time.Millisecond
			}, map[byte][]uint16{1: {10, 20}, 2: {10, 20}})
			wait.For(t, 20*time.Second, "20 late answers relayed to other requests", func() bool {
				return c.foreign.Load() >= 20
			})
			n2 := len(recs[2].snapshot())
			wait.For(t, 20*time.Second, "unit 2 good again", func() bool { return goodSince(recs[2], n2) >= 5 })
			// review 18 M-1: unit 1's frame relayed with its own unit to unit
			// 2's request is unit 1's fault: unit 2's read is sent again, not
			// failed as a reply from the wrong unit (264)
			for _, cy := range recs[2].snapshot() {
				for _, s := range cy.Samples {
					if s.Status == uint32(StatusWrongUnit) {
						t.Fatalf("healthy unit 2 failed with %v: %v", StatusWrongUnit, cy.Err)
					}
				}
			}
		})
	}
}

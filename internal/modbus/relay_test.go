package modbus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// tcpGateway is a Modbus TCP-to-RTU gateway on a raw socket, written for
// these tests (review 14): its serial units answer "read holding
// registers" with unit*1000 + address below address 100 and exception 2
// from there. It serves one request at a time over all its connections,
// as a gateway with one serial line does, and keeps its line's state
// across connections:
//   - a dead unit never answers: the gateway holds its line for busy, then
//     sends nothing;
//   - a late unit's next answers come after the client's timeout: the
//     gateway sends nothing then, and takes the late answer, when it comes
//     on the line, for the answer to the next request, whichever unit it
//     asks, with that request's transaction id and unit (it relays the
//     next frame on its line);
//   - stalled, it reads nothing until released (a slave stopped).
type tcpGateway struct {
	Addr string

	mu      sync.Mutex
	serial  sync.Mutex // the serial line: one request at a time
	dead    map[byte]bool
	late    map[byte]int    // unit -> answers still to come late
	only    map[byte]uint16 // unit -> the one register it maps (else 0..99)
	busy    time.Duration
	lagged  []byte // the late answer on the line, relayed to the next request
	stall   chan struct{}
	relayed atomic.Int64
	asked   atomic.Int64
}

func startGateway(t *testing.T) *tcpGateway {
	t.Helper()
	g := &tcpGateway{dead: map[byte]bool{}, late: map[byte]int{}, only: map[byte]uint16{}}
	g.Addr = modbustest.ServeConns(t, func(_ context.Context, c net.Conn) { g.serve(c) })
	t.Cleanup(g.release) // before ServeConns' cleanup, which waits for serve
	return g
}

// setDead makes unit silent: the gateway holds its line busy for each of
// its requests, then sends nothing.
func (g *tcpGateway) setDead(unit byte, busy time.Duration) {
	g.mu.Lock()
	g.busy = busy
	g.dead[unit] = true
	g.mu.Unlock()
}

func (g *tcpGateway) setOnly(unit byte, a uint16) {
	g.mu.Lock()
	g.only[unit] = a
	g.mu.Unlock()
}

func (g *tcpGateway) setLate(unit byte, n int) {
	g.mu.Lock()
	g.late[unit] = n
	g.mu.Unlock()
}

// hold stalls the gateway's line until release.
func (g *tcpGateway) hold() {
	g.mu.Lock()
	if g.stall == nil {
		g.stall = make(chan struct{})
	}
	g.mu.Unlock()
}

func (g *tcpGateway) release() {
	g.mu.Lock()
	if g.stall != nil {
		close(g.stall)
		g.stall = nil
	}
	g.mu.Unlock()
}

// gatewayAnswer is the honest reply PDU of a read holding registers
// request pdu to unit, which maps only register only when it is not nil.
func gatewayAnswer(unit byte, pdu []byte, only *uint16) []byte {
	if len(pdu) != 5 || pdu[0] != 3 {
		return []byte{pdu[0] | 0x80, 1}
	}
	start, n := binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])
	if n == 0 || n > 125 || int(start)+int(n) > 100 || only != nil && (start != *only || n != 1) {
		return []byte{0x83, 2}
	}
	out := []byte{3, byte(2 * n)}
	for a := start; a < start+n; a++ {
		out = binary.BigEndian.AppendUint16(out, uint16(unit)*1000+a)
	}
	return out
}

func (g *tcpGateway) serve(c net.Conn) {
	serveMBAP(c, func(tid uint16, unit byte, pdu []byte) []byte {
		if reply := g.exchange(unit, pdu); reply != nil {
			return modbustest.MBAPReply(tid, unit, reply)
		}
		return nil
	})
}

// serveMBAP reads Modbus TCP requests from c one at a time and writes what
// answer returns for each (its whole ADU; nil: nothing) until c fails.
func serveMBAP(c net.Conn, answer func(tid uint16, unit byte, pdu []byte) []byte) {
	r := bufio.NewReader(c)
	for {
		tid, unit, pdu, err := modbustest.ReadMBAPRequest(r)
		if err != nil {
			return
		}
		if adu := answer(tid, unit, pdu); adu != nil {
			if _, err := c.Write(adu); err != nil {
				return
			}
		}
	}
}

// exchange puts one request on the gateway's line and returns what the
// gateway sends back (nil: nothing).
func (g *tcpGateway) exchange(unit byte, pdu []byte) []byte {
	g.serial.Lock()
	defer g.serial.Unlock()
	g.asked.Add(1)
	g.mu.Lock()
	stall, dead, busy := g.stall, g.dead[unit], g.busy
	g.mu.Unlock()
	if stall != nil {
		<-stall
	}
	if dead {
		time.Sleep(busy) // the gateway's own wait for its slave
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var only *uint16
	if a, ok := g.only[unit]; ok {
		only = &a
	}
	answer := gatewayAnswer(unit, pdu, only)
	if g.lagged != nil {
		// the line's next frame is the late answer: taken for this one's
		answer, g.lagged = g.lagged, nil
		g.relayed.Add(1)
		return answer
	}
	if g.late[unit] > 0 {
		g.late[unit]--
		g.lagged = answer
		return nil
	}
	return answer
}

// unitGroup is one group reading holding registers addrs of unit, and the
// value each Sample.Index must carry when good.
func unitGroup(unit byte, interval time.Duration, addrs ...uint16) (Group, map[int]float64) {
	g := Group{Interval: interval}
	want := map[int]float64{}
	for i, a := range addrs {
		g.Points = append(g.Points, Point{Table: HoldingRegisters, Address: a, Type: Uint16})
		g.Index = append(g.Index, i)
		want[i] = float64(unit)*1000 + float64(a)
	}
	return g, want
}

// gatewayUnits reads each unit of addrs through the gateway at addr on one Modbus TCP
// connection and returns their recorders (which fail the test on any
// value published good that is not its register's).
func gatewayUnits(t *testing.T, addr string, tune func(*Config), addrs map[byte][]uint16) map[byte]*recorder {
	t.Helper()
	return gatewayUnitsIn(t, NewPool(testLogger(t), nil), addr, tune, addrs)
}

// gatewayUnitsIn is gatewayUnits on pool (closed at the test's end).
func gatewayUnitsIn(t *testing.T, pool *Pool, addr string, tune func(*Config), addrs map[byte][]uint16) map[byte]*recorder {
	t.Helper()
	t.Cleanup(func() { _ = pool.Close() })
	recs := map[byte]*recorder{}
	for unit, a := range addrs {
		cfg := testConfig(TCP, addr, unit)
		cfg.Timeout = 100 * time.Millisecond
		if tune != nil {
			tune(&cfg)
		}
		grp, want := unitGroup(unit, 20*time.Millisecond, a...)
		src, err := pool.Source(fmt.Sprintf("unit-%d", unit), cfg, []Group{grp})
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{t: t, want: want}
		recs[unit] = rec
		rec.run(src)
	}
	return recs
}

// sawCause reports whether a cycle of r had cause in its Err.
func sawCause(r *recorder, cause error) bool {
	return slices.ContainsFunc(r.snapshot(), func(c sample.Cycle) bool { return errors.Is(c.Err, cause) })
}

// goodThenExc2 counts r's cycles whose samples of Index below n are good
// and the others the device's exception 2 (not silent).
func goodThenExc2(r *recorder, n int) int {
	return goodExc2Where(r, func(i int) bool { return i >= n })
}

// goodExc2Where counts r's cycles whose samples are good but those whose
// Index is exc2, which carry the device's exception 2 (quarantined or
// not), not silent.
func goodExc2Where(r *recorder, exc2 func(index int) bool) int {
	count := 0
	for _, c := range r.snapshot() {
		ok := true
		for _, s := range c.Samples {
			if !exc2(s.Index) {
				ok = ok && s.Quality == telemetry.QualityGood
			} else {
				ok = ok && !s.Silent && errors.Is(Status(s.Status), Status(2))
			}
		}
		if ok {
			count++
		}
	}
	return count
}

// goodSince counts r's cycles after the first from in which every sample
// is good.
func goodSince(r *recorder, from int) int {
	n := 0
	for i, c := range r.snapshot() {
		if i < from {
			continue
		}
		ok := c.Err == nil
		for _, s := range c.Samples {
			ok = ok && s.Quality == telemetry.QualityGood
		}
		if ok {
			n++
		}
	}
	return n
}

// TestGatewayLateOneRegisterAnswerNotGivenToAnotherUnit (review 14, F4): a
// Modbus TCP gateway relays unit 1's late answer to a ONE-register read
// (no probe of one register less exists) as the reply to the next
// request, which asks unit 2 for one register too: same function, same
// byte count, unit 2's transaction id and unit. It must never be published
// as unit 2's value (the recorders fail on 1005 for unit 2's register 5):
// after a timeout on the connection a one-register answer is tied by a
// read of another length (here one register wider) before the request is
// sent again; both units read good once the gateway is honest again.
func TestGatewayLateOneRegisterAnswerNotGivenToAnotherUnit(t *testing.T) {
	g := startGateway(t)
	recs := gatewayUnits(t, g.Addr, func(c *Config) {
		c.BackoffMin, c.BackoffMax = 5*time.Millisecond, 10*time.Millisecond
	}, map[byte][]uint16{1: {5}, 2: {5}})
	wait.For(t, 10*time.Second, "good reads of both units", func() bool {
		return goodSince(recs[1], 0) >= 3 && goodSince(recs[2], 0) >= 3
	})
	for i := range 15 {
		g.setLate(1, 1)
		wait.For(t, 10*time.Second, fmt.Sprintf("late answer %d relayed", i+1), func() bool { return g.relayed.Load() > int64(i) })
	}
	n1, n2 := len(recs[1].snapshot()), len(recs[2].snapshot())
	wait.For(t, 10*time.Second, "good reads of both units after", func() bool {
		return goodSince(recs[1], n1) >= 3 && goodSince(recs[2], n2) >= 3
	})
}

// TestDeadUnitLeavesNeighbourGood (review 14, F2): two units behind one
// Modbus TCP gateway, one of which never answers (the gateway waits for it
// and sends nothing, as a gateway without exceptions 10/11 does). Each of
// its timeouts puts the connection in doubt (the gateway may relay its
// answer if it comes late), but the healthy unit must keep publishing good
// values, not die beside it: when it reads the dead unit's shape its
// answers are proven (a probe, or a read of another length), and when it
// reads another shape (one register beside the dead unit's four) its
// answers need no proof: a relayed four-register answer cannot pass for
// them. In that last case the healthy unit maps only the one register it
// reads, so no read of another length could tie its answer: with every
// answer after the dead unit's timeouts proven, it was untied (268) for
// good.
func TestDeadUnitLeavesNeighbourGood(t *testing.T) {
	for _, c := range []struct {
		name       string
		dead, live []uint16
		only       bool          // the live unit maps only its one register
		busy       time.Duration // the gateway's wait for the dead unit (the driver's timeout: 100ms)
	}{
		{"same shapes, two requests", []uint16{0, 1, 2, 3, 50}, []uint16{0, 1, 2, 3, 50}, false, 150 * time.Millisecond},
		{"same shape, one register", []uint16{5}, []uint16{5}, false, 150 * time.Millisecond},
		{"other shape, one register mapped", []uint16{0, 1, 2, 3}, []uint16{7}, true, 150 * time.Millisecond},
		// the gateway waits for the dead unit longer than twice the
		// driver's timeout: the live unit's request queued behind it times
		// out too now and then; its next answer, to the same request,
		// carries its own register even if it is the late one relayed
		{"one register mapped, gateway slower than the timeout", []uint16{0, 1, 2, 3}, []uint16{7}, true, 250 * time.Millisecond},
		{"same shapes, gateway slower than the timeout", []uint16{0, 1, 2, 3, 50}, []uint16{0, 1, 2, 3, 50}, false, 250 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGateway(t)
			g.setDead(1, c.busy)
			if c.only {
				g.setOnly(2, c.live[0])
			}
			// a dead unit is retried at most every 500ms..2s (defaults:
			// 500ms..30s), not faster than the gateway gives up on it
			recs := gatewayUnits(t, g.Addr, func(c *Config) { c.BackoffMin, c.BackoffMax = 500*time.Millisecond, 2*time.Second },
				map[byte][]uint16{1: c.dead, 2: c.live})
			wait.For(t, 15*time.Second, "unit 2 good in 20 reads while unit 1 is dead", func() bool {
				return goodSince(recs[2], 0) >= 20
			})
			for _, c := range recs[1].snapshot() {
				for _, s := range c.Samples {
					if s.Quality == telemetry.QualityGood {
						t.Fatalf("dead unit 1 published good: %+v", s)
					}
				}
			}
		})
	}
}

// TestExceptionInDoubtThenGood (review 14, F1; TestInteropStallThenGood
// runs the same against libmodbus and pymodbus): the gateway stalls as the
// unit's first read starts, so the unit is in doubt when it first answers,
// and its read's first request (holding 96..103, of which 100.. is not
// mapped) raises exception 2. The exception is the unit's answer: published
// with its code (never untied 268), bisected, 100..103 quarantined, and
// 96..99 read good again. Before, the probe of the request (96+7) got
// exception 2 too: the read was untied, the unit back in doubt, forever.
func TestExceptionInDoubtThenGood(t *testing.T) {
	g := startGateway(t)
	g.hold()
	recs := gatewayUnits(t, g.Addr, nil, map[byte][]uint16{1: {96, 97, 98, 99, 100, 101, 102, 103}})
	wait.For(t, 10*time.Second, "a timeout in the stall", func() bool { return sawCause(recs[1], StatusTimeout) })
	g.release()
	wait.For(t, 10*time.Second, "good readings of 96..99, exception 2 for 100..103", func() bool {
		return goodThenExc2(recs[1], 4) >= 3
	})
	for _, c := range recs[1].snapshot() {
		for _, s := range c.Samples {
			if s.Status == uint32(StatusUntied) {
				t.Fatalf("an exception in doubt published as untied (268): %v", c.Err)
			}
		}
	}
}

// TestTrustedWriteKeepsReadsInDoubt: on Modbus TCP a write in doubt is
// trusted without a tie (no read of another shape exists for it; its reply
// echoes it), which proves nothing about the connection: the reads left
// unanswered stay pending, and another unit's read of their shape is
// still proven (and, review 18, stays in doubt after its proof: unit 1's
// answers are still owed).
func TestTrustedWriteKeepsReadsInDoubt(t *testing.T) {
	srv := modbustest.StartServer(t, modbustest.NewBank())
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	d1, d2 := pool.device("u1", testConfig(TCP, srv.Addr, 1)), pool.device("u2", testConfig(TCP, srv.Addr, 2))
	l := d1.link
	read := readPDU(nil, HoldingRegisters, 5, 1)
	write := []byte{6, 0, 5, 0, 42}
	// unit 1's read and write left unanswered (timeouts)
	l.owe(1, read)
	l.owe(1, write)
	if _, err := l.exchange(t.Context(), d2.share, d2.m, 2, write, nil); err != nil {
		t.Fatal(err)
	}
	if !l.inDoubt(d2.share, 2, read) {
		t.Fatal("a trusted write ended the doubt on unit 1's unanswered read: unit 2's read of its shape would not be proven")
	}
	if _, err := l.exchange(t.Context(), d2.share, d2.m, 2, read, nil); err != nil {
		t.Fatal(err)
	}
	// the proof ties the answers it saw, not unit 1's answer still owed
	// (review 18 H-1): the shape stays in doubt
	if !l.inDoubt(d2.share, 2, read) {
		t.Fatal("unit 2's read proven: unit 1's owed answer forgotten")
	}
}

package modbustest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/checksum"
)

// Fault is a misbehaviour of a Hostile device's replies.
type Fault uint8

// Faults. Each applies to one reply.
const (
	// Honest answers correctly.
	Honest Fault = iota
	// Late answers after the device's late delay (SetLate) and ignores
	// every request that arrives meanwhile, as a busy slave does.
	Late
	// WrongTransaction answers Modbus TCP with transaction id + 1 (on RTU
	// and ASCII, which have none, it answers honestly).
	WrongTransaction
	// WrongUnit answers as another unit (SetWrongUnit, default unit+1).
	WrongUnit
	// WrongFunction answers read holding (3) as read input (4) and the
	// other way round, with data of the right size.
	WrongFunction
	// WrongByteCount answers with one register (or bit byte) more than
	// asked, checksum correct.
	WrongByteCount
	// Garbage sends bytes that are no reply at all.
	Garbage
	// Partial sends the first half of the reply, then nothing.
	Partial
	// Echo answers correctly and sends the same frame again after the echo
	// delay (SetEcho), as an echoing link, a radio retry or a converter
	// repeating a frame does; the slave answers the next request meanwhile.
	// On Modbus TCP the copy repeats the transaction id.
	Echo
	// LagOne answers each request only when the next request comes, with
	// the answer to the one before (nothing for the first): a slave or a
	// store-and-forward converter one request behind.
	LagOne
	// GatewayLate is a Modbus TCP gateway to a serial slave that gives up on
	// the slave: it answers exception 11 (gateway target failed to respond)
	// at once, and relays the slave's answer, which comes later, as the
	// reply to the next request, with that request's transaction id and
	// unit, whichever unit it asks.
	GatewayLate
)

var faultNames = [...]string{"honest", "late", "wrong transaction id", "wrong unit", "wrong function",
	"wrong byte count", "garbage", "partial frame", "echo", "one request behind", "gateway relaying a late answer"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return "fault?"
}

// GarbageBytes is what a Garbage reply sends.
var GarbageBytes = []byte{0x5A, 0xA5, 0xFF, 0x00, 0x13, 0x37, 0x42, 0x24}

// Hostile is a Modbus slave written for tests that must survive broken
// devices. It serves one unit from a Bank and misbehaves on command
// (Inject). Three shapes:
//   - StartHostileTCP: Modbus TCP (MBAP), one session per connection;
//   - StartHostileConverter: a serial device behind a serial-to-TCP
//     converter: RTU or ASCII framing on TCP, where the converter forwards
//     whatever the slave sends to whichever client is connected at that
//     moment and keeps what arrives while nobody is connected for the next
//     client (its queue survives reconnects);
//   - StartHostileSerial: the slave on one end of a socat pty pair.
//
// It shares no framing code with the driver (only the checksums).
type Hostile struct {
	// Addr is the client's address: host:port, or the client's pty path.
	Addr string
	Bank *Bank

	unit    uint8
	framing Framing // 0 for MBAP

	mu        sync.Mutex
	fault     Fault
	faultN    int
	faultAt   int // request start address the fault applies to; -1: any
	late      time.Duration
	wrongUnit uint8
	absent    uint8 // exception for requests to other units (a TCP-to-RTU gateway's 10 or 11); 0: silence
	busyUntil time.Time
	queue     bool          // requests arriving during a late reply are answered after it, not ignored
	delay     time.Duration // every reply's answer time
	echo      time.Duration // how long after its reply an Echo copy comes
	lagged    []byte        // LagOne: the answer held for the next request; GatewayLate: the late answer to relay
	also      []uint8       // Modbus TCP: other units answered honestly from the bank (a gateway's other slaves)

	ignored atomic.Int64
	replies atomic.Int64
	out     func([]byte) // serial slave's line output
}

// Inject makes the next n replies misbehave with f (n < 0: every reply from
// now on; Honest with any n stops misbehaving).
func (h *Hostile) Inject(f Fault, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fault, h.faultN, h.faultAt = f, n, -1
}

// InjectAt is Inject for the replies to requests that start at addr only.
func (h *Hostile) InjectAt(f Fault, n int, addr uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fault, h.faultN, h.faultAt = f, n, int(addr)
}

// SetLate sets how late a Late reply comes (default 1.5 s).
func (h *Hostile) SetLate(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.late = d
}

// SetQueueWhileLate makes a serial slave answer the requests that arrive
// while it is late (Late) in turn after the late reply, as a slave with an
// input queue does, instead of ignoring them as a busy slave does.
func (h *Hostile) SetQueueWhileLate(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queue = on
}

// SetDelay sets how long the slave takes to answer every request (default 0).
func (h *Hostile) SetDelay(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.delay = d
}

// SetEcho sets how long after its reply an Echo copy comes (default 20 ms).
func (h *Hostile) SetEcho(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.echo = d
}

func (h *Hostile) timing() (delay, echo time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.delay, h.echo
}

// AlsoServe makes a Modbus TCP device answer requests for unit too,
// honestly, from its bank (another slave behind the same gateway).
func (h *Hostile) AlsoServe(unit uint8) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.also = append(h.also, unit)
}

// SetWrongUnit sets the unit a WrongUnit reply claims to come from.
func (h *Hostile) SetWrongUnit(u uint8) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wrongUnit = u
}

// SetAbsentReply makes the device answer requests for any other unit with
// exception code, as a TCP-to-serial gateway does for a unit that is not
// on its bus (10 gateway path unavailable, 11 gateway target failed to
// respond); 0, the default, stays silent as a serial bus does.
func (h *Hostile) SetAbsentReply(code uint8) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.absent = code
}

func (h *Hostile) absentReply() uint8 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.absent
}

// Ignored counts requests dropped because the slave was busy with a late reply.
func (h *Hostile) Ignored() int64 { return h.ignored.Load() }

// Replies counts replies (or misbehaviours) sent.
func (h *Hostile) Replies() int64 { return h.replies.Load() }

func (h *Hostile) next(pdu []byte) (Fault, time.Duration, uint8) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := Honest
	if h.faultN != 0 && (h.faultAt < 0 || len(pdu) >= 3 && int(binary.BigEndian.Uint16(pdu[1:])) == h.faultAt) {
		f = h.fault
		if h.faultN > 0 {
			h.faultN--
		}
	}
	wu := h.wrongUnit
	if wu == 0 {
		wu = h.unit + 1
	}
	return f, h.late, wu
}

func newHostile(bank *Bank, unit uint8, framing Framing) *Hostile {
	return &Hostile{Bank: bank, unit: unit, framing: framing, late: 1500 * time.Millisecond, echo: 20 * time.Millisecond, faultAt: -1}
}

// answer computes the honest reply PDU of a read request PDU from the bank.
func (h *Hostile) answer(unit uint8, pdu []byte) []byte {
	if len(pdu) == 0 {
		return []byte{0x80, 1}
	}
	if len(pdu) < 5 || pdu[0] < 1 || pdu[0] > 4 {
		return []byte{pdu[0] | 0x80, 1}
	}
	t := [...]Table{1: Coils, 2: DiscreteInputs, 3: HoldingRegisters, 4: InputRegisters}[pdu[0]]
	addr := binary.BigEndian.Uint16(pdu[1:])
	qty := binary.BigEndian.Uint16(pdu[3:])
	if qty == 0 || qty > 125 && pdu[0] >= 3 || qty > 2000 {
		return []byte{pdu[0] | 0x80, 3} // illegal data value: quantity out of range
	}
	if int(addr)+int(qty) > 65536 {
		return []byte{pdu[0] | 0x80, 2}
	}
	_, err := h.Bank.enter(Request{Unit: unit, Table: t, Address: addr, Quantity: qty})
	if err != nil {
		return []byte{pdu[0] | 0x80, exceptionCode(err)}
	}
	h.Bank.mu.Lock()
	defer h.Bank.mu.Unlock()
	if t == Coils || t == DiscreteInputs {
		src := h.Bank.coils[:]
		if t == DiscreteInputs {
			src = h.Bank.discrete[:]
		}
		data := make([]byte, (int(qty)+7)/8)
		for i := range int(qty) {
			if src[int(addr)+i] {
				data[i/8] |= 1 << (i % 8)
			}
		}
		return append([]byte{pdu[0], byte(len(data))}, data...)
	}
	src := h.Bank.holding[:]
	if t == InputRegisters {
		src = h.Bank.input[:]
	}
	out := []byte{pdu[0], byte(2 * qty)}
	for i := range int(qty) {
		out = binary.BigEndian.AppendUint16(out, src[int(addr)+i])
	}
	return out
}

// misbehave turns an honest reply PDU into the fault's.
func misbehave(f Fault, pdu []byte) []byte {
	out := bytes.Clone(pdu)
	switch f {
	case WrongFunction:
		switch out[0] {
		case 3:
			out[0] = 4
		case 4:
			out[0] = 3
		case 1:
			out[0] = 2
		case 2:
			out[0] = 1
		}
	case WrongByteCount:
		if out[0]&0x80 == 0 {
			out[1] += 2
			out = append(out, 0xBE, 0xEF)
		}
	}
	return out
}

// frameOut frames a reply PDU for the serial encodings.
func (h *Hostile) frameOut(unit uint8, pdu []byte) []byte {
	if h.framing == ASCII {
		return EncodeASCII(unit, pdu)
	}
	return EncodeRTU(unit, pdu)
}

// serveLine is the serial slave: it reads request frames from r (stamped
// with their arrival) and writes replies with h.out.
func (h *Hostile) serveLine(ctx context.Context, r io.Reader) {
	type req struct {
		unit uint8
		pdu  []byte
		at   time.Time
	}
	reqs := make(chan req, 64)
	go func() {
		defer close(reqs)
		br := bufio.NewReaderSize(r, 1024)
		for {
			unit, pdu, err := readSerialRequest(br, h.framing)
			if errors.Is(err, errBadFrame) {
				continue
			}
			if err != nil {
				return
			}
			select {
			case reqs <- req{unit, pdu, time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	for q := range reqs {
		h.mu.Lock()
		busy := q.at.Before(h.busyUntil) && !h.queue
		h.mu.Unlock()
		if busy {
			h.ignored.Add(1)
			continue
		}
		if q.unit != h.unit {
			if code := h.absentReply(); code != 0 && len(q.pdu) > 0 {
				h.out(h.frameOut(q.unit, []byte{q.pdu[0] | 0x80, code}))
			}
			continue // another slave's request: a real bus stays quiet
		}
		f, late, wu := h.next(q.pdu)
		reply := h.answer(q.unit, q.pdu)
		var out []byte
		switch f {
		case Garbage:
			out = bytes.Clone(GarbageBytes)
		case WrongUnit:
			out = h.frameOut(wu, reply)
		case Partial:
			full := h.frameOut(q.unit, reply)
			out = full[:len(full)/2]
		default:
			out = h.frameOut(q.unit, misbehave(f, reply))
		}
		delay, echo := h.timing()
		if f == Late {
			h.mu.Lock()
			h.busyUntil = time.Now().Add(late)
			h.mu.Unlock()
			delay = late
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		if f == LagOne {
			h.mu.Lock()
			out, h.lagged = h.lagged, out
			h.mu.Unlock()
			if out == nil {
				continue
			}
		}
		h.out(out)
		h.replies.Add(1)
		if f == Echo {
			t := time.AfterFunc(echo, func() { h.out(out) })
			context.AfterFunc(ctx, func() { t.Stop() })
		}
	}
}

// readSerialRequest reads one read request (functions 1-4) in RTU or ASCII
// framing.
func readSerialRequest(r *bufio.Reader, framing Framing) (uint8, []byte, error) {
	if framing == ASCII {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 || len(line)-i < 11 || line[len(line)-2] != '\r' {
			return 0, nil, errBadFrame
		}
		bin, err := hex.DecodeString(string(line[i+1 : len(line)-2]))
		if err != nil || len(bin) < 3 || checksum.LRC(bin[:len(bin)-1]) != bin[len(bin)-1] {
			return 0, nil, errBadFrame
		}
		return bin[0], bin[1 : len(bin)-1], nil
	}
	f := make([]byte, 8)
	if _, err := io.ReadFull(r, f[:2]); err != nil {
		return 0, nil, err
	}
	if f[1] < 1 || f[1] > 4 {
		_, _ = r.Discard(r.Buffered())
		return 0, nil, errBadFrame
	}
	if _, err := io.ReadFull(r, f[2:]); err != nil {
		return 0, nil, err
	}
	if checksum.CRC16(f[:6]) != binary.LittleEndian.Uint16(f[6:]) {
		_, _ = r.Discard(r.Buffered())
		return 0, nil, errBadFrame
	}
	return f[0], f[1:6], nil
}

// listen opens a loopback listener closed when the test ends.
func listen(tb testing.TB) net.Listener {
	tb.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(tb.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("modbustest: listen: %v", err)
	}
	return ln
}

// StartHostileConverter starts a slave for unit with RTU or ASCII framing
// behind a serial-to-TCP converter on a random loopback port. leftover, when
// not empty, is on the line before anyone connects: the first client gets it
// as soon as it connects (a reply from before a restart).
func StartHostileConverter(tb testing.TB, bank *Bank, unit uint8, framing Framing, leftover []byte) *Hostile {
	tb.Helper()
	ctx := tb.Context()
	ln := listen(tb)
	h := newHostile(bank, unit, framing)
	h.Addr = ln.Addr().String()
	pr, pw := io.Pipe()
	var (
		mu      sync.Mutex
		cur     net.Conn
		pending = bytes.Clone(leftover)
		wg      sync.WaitGroup
	)
	h.out = func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			if _, err := cur.Write(b); err == nil {
				return
			}
		}
		pending = append(pending, b...) // nobody connected: the converter keeps it
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.serveLine(ctx, pr)
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if cur != nil {
				_ = cur.Close() // a converter serves one client: the newest
			}
			cur = c
			if len(pending) > 0 {
				if _, err := c.Write(pending); err == nil {
					pending = nil
				}
			}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(pw, c)
				mu.Lock()
				if cur == c {
					cur = nil
				}
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		if cur != nil {
			_ = cur.Close()
		}
		mu.Unlock()
		_ = pw.Close()
		_ = pr.Close()
		wg.Wait()
	})
	return h
}

// StartHostileSerial starts a slave for unit on one end of a socat pty pair
// and returns it with Addr set to the other end, for the client. leftover,
// when not empty, is written to the line before the client opens it. The
// test is skipped when socat is not installed.
func StartHostileSerial(tb testing.TB, bank *Bank, unit uint8, framing Framing, leftover []byte) *Hostile {
	tb.Helper()
	client, dev := PtyPair(tb)
	h := newHostile(bank, unit, framing)
	h.Addr = client
	f, err := os.OpenFile(dev, os.O_RDWR|noctty, 0)
	if err != nil {
		tb.Fatalf("modbustest: open %s: %v", dev, err)
	}
	var wmu sync.Mutex
	h.out = func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = f.Write(b)
	}
	if len(leftover) > 0 {
		h.out(leftover)
	}
	ctx, cancel := context.WithCancel(tb.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.serveLine(ctx, f)
	}()
	tb.Cleanup(func() {
		cancel()
		_ = f.Close()
		<-done
	})
	return h
}

// StartHostileTCP starts a Modbus TCP slave for unit on a random loopback
// port. leftover, when not empty, is sent to every client as soon as it
// connects.
func StartHostileTCP(tb testing.TB, bank *Bank, unit uint8, leftover []byte) *Hostile {
	tb.Helper()
	h := newHostile(bank, unit, 0)
	h.Addr = ServeConns(tb, func(ctx context.Context, c net.Conn) {
		if len(leftover) > 0 {
			_, _ = c.Write(leftover)
		}
		h.serveMBAP(ctx, c)
	})
	return h
}

// ReadMBAPRequest reads one Modbus TCP request from r: its transaction id,
// unit and PDU. A length outside 2..254 is an error.
func ReadMBAPRequest(r *bufio.Reader) (tid uint16, unit uint8, pdu []byte, err error) {
	var head [7]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(head[4:]))
	if n < 2 || n > 254 {
		return 0, 0, nil, fmt.Errorf("mbap length %d", n)
	}
	pdu = make([]byte, n-1)
	if _, err := io.ReadFull(r, pdu); err != nil {
		return 0, 0, nil, err
	}
	return binary.BigEndian.Uint16(head[:]), head[6], pdu, nil
}

func (h *Hostile) serveMBAP(ctx context.Context, c net.Conn) {
	r := bufio.NewReader(c)
	for {
		tid, unit, pdu, err := ReadMBAPRequest(r)
		if err != nil {
			return
		}
		if unit != h.unit {
			h.mu.Lock()
			relay := h.lagged
			h.lagged = nil
			h.mu.Unlock()
			h.mu.Lock()
			other := slices.Contains(h.also, unit)
			h.mu.Unlock()
			if relay == nil && other {
				relay = h.answer(unit, pdu)
			}
			if relay != nil {
				// a gateway that relays its slave's late answer to the next
				// request, whichever unit it asks; or another slave's answer
				if _, err := c.Write(MBAPReply(tid, unit, relay)); err != nil {
					return
				}
				continue
			}
			if code := h.absentReply(); code != 0 {
				if _, err := c.Write(MBAPReply(tid, unit, []byte{pdu[0] | 0x80, code})); err != nil {
					return
				}
			}
			continue
		}
		f, late, wu := h.next(pdu)
		reply := misbehave(f, h.answer(unit, pdu))
		h.mu.Lock()
		relay := h.lagged
		h.lagged = nil
		if f == GatewayLate {
			h.lagged, reply = reply, []byte{pdu[0] | 0x80, 11}
		}
		h.mu.Unlock()
		if relay != nil && f != GatewayLate {
			reply = relay // the slave's late answer taken for this request's
		}
		switch f {
		case WrongTransaction:
			tid++
		case WrongUnit:
			unit = wu
		}
		out := binary.BigEndian.AppendUint16(nil, tid)
		out = append(out, 0, 0)
		out = binary.BigEndian.AppendUint16(out, uint16(len(reply)+1))
		out = append(out, unit)
		out = append(out, reply...)
		switch f {
		case Garbage:
			out = bytes.Clone(GarbageBytes)
		case Partial:
			out = out[:len(out)/2]
		case Late:
			t := time.NewTimer(late)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		if _, err := c.Write(out); err != nil {
			return
		}
		h.replies.Add(1)
	}
}

// MBAPReply frames a reply PDU for unit with transaction id tid.
func MBAPReply(tid uint16, unit uint8, pdu []byte) []byte {
	out := binary.BigEndian.AppendUint16(nil, tid)
	out = append(out, 0, 0)
	out = binary.BigEndian.AppendUint16(out, uint16(len(pdu)+1))
	out = append(out, unit)
	return append(out, pdu...)
}

// ReadReply returns the honest reply PDU of "read holding/input registers
// addr, qty" from bank (function 3 or 4), for building leftovers.
func ReadReply(bank *Bank, t Table, addr, qty uint16) []byte {
	h := &Hostile{Bank: bank}
	fc := byte(3)
	if t == InputRegisters {
		fc = 4
	}
	pdu := h.answer(0, []byte{fc, byte(addr >> 8), byte(addr), byte(qty >> 8), byte(qty)})
	bank.mu.Lock()
	bank.log = bank.log[:len(bank.log)-1] // not a request anyone sent
	bank.mu.Unlock()
	return pdu
}

func exceptionCode(err error) byte {
	for code := byte(1); code <= 11; code++ {
		if errors.Is(err, exceptionError(code)) {
			return code
		}
	}
	return 4
}

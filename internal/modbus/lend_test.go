package modbus

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// scriptedRTU is an RTU-over-TCP converter whose answers the test scripts:
// for the n-th read request (from 1) of unit, script returns the frames to
// write at once (none: the unit is silent). It serves one connection at a
// time.
func scriptedRTU(t *testing.T, script func(unit byte, n int, start, qty uint16) [][]byte) string {
	t.Helper()
	seen := map[byte]int{}
	addr, _ := serveInTurn(t, func(c net.Conn) {
		req := make([]byte, 8)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			unit := req[0]
			seen[unit]++
			for _, f := range script(unit, seen[unit], binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])) {
				_, _ = c.Write(f)
			}
		}
	})
	return addr
}

// rtuHolding is unit's RTU reply to a holding read of qty registers from
// start, register a holding base + a.
func rtuHolding(unit byte, start, qty uint16, base uint16) []byte {
	body := []byte{unit, 3, byte(2 * qty)}
	for i := range qty {
		body = binary.BigEndian.AppendUint16(body, base+start+i)
	}
	return binary.LittleEndian.AppendUint16(body, checksum.CRC16(body))
}

// TestLentWindowFrameNeverTheDoubtedUnitsAnswer: unit 1 times out, then
// answers its next read (4 registers, so it has a probe) at once with
// values it never holds (7000 + a): the answer is in doubt and held, and
// while its window runs unit 2 comes to read and is lent the line. The
// converter answers unit 2's request with a frame from unit 1 first
// (8000 + a: the late reply still on its way), then unit 2's answer. That
// frame is never taken for unit 1's answer: unit 2's read is sent again
// and is good with its own values; unit 1's held read is discarded,
// StatusUntied, with nothing published good (the frame is evidence that
// its held answer may have been a late reply); unit 1 is good again, with
// its own values (1000 + a), once its probe ties a later answer. Without
// the evidence rule (lentSeen) unit 1's read would pass its probe and be
// published good although a frame of its came in its window.
func TestLentWindowFrameNeverTheDoubtedUnitsAnswer(t *testing.T) {
	var heldSent atomic.Bool
	heldSeen := make(chan struct{})
	addr := scriptedRTU(t, func(unit byte, n int, start, qty uint16) [][]byte {
		switch {
		case unit == 1 && n == 1:
			return nil // times out: unit 1 in doubt
		case unit == 1 && n == 2:
			heldSent.Store(true)
			close(heldSeen)
			return [][]byte{rtuHolding(1, start, qty, 7000)}
		case unit == 1:
			return [][]byte{rtuHolding(1, start, qty, 1000)}
		case unit == 2 && n == 1:
			return [][]byte{rtuHolding(1, 0, 4, 8000), rtuHolding(2, start, qty, 2000)}
		default:
			return [][]byte{rtuHolding(unit, start, qty, 2000)}
		}
	})
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	cfg := func(unit uint8) Config {
		c := testConfig(RTUOverTCP, addr, unit)
		c.Timeout = 300 * time.Millisecond
		c.Silence = 100 * time.Millisecond
		return c
	}
	plan, err := NewPlan(regs(Uint16, 0, 1, 2, 3), cfg(1))
	if err != nil {
		t.Fatal(err)
	}
	u1, u2 := newReader(pool, "doubted", cfg(1), plan), newReader(pool, "borrower", cfg(2), plan)
	ctx := t.Context()
	check1 := func(what string) bool {
		good := 0
		for i, s := range u1.out {
			if s.Quality != telemetry.QualityGood {
				continue
			}
			good++
			if s.Num != 1000+float64(i) {
				t.Fatalf("%s: unit 1 register %d published good with %v, its value is %d", what, i, s.Num, 1000+i)
			}
		}
		return good == len(u1.out)
	}
	if u1.Read(ctx); check1("first read") || !errors.Is(u1.res.err, StatusTimeout) {
		t.Fatalf("first read of unit 1: %v, want a timeout", u1.res.err)
	}
	// the read whose answer is held (reads in the device's backoff fail
	// without I/O)
	done2 := make(chan struct{})
	go func() {
		defer close(done2)
		<-heldSeen
		u2.Read(ctx)
	}()
	wait.For(t, 10*time.Second, "unit 1's read answered in doubt", func() bool {
		u1.Read(ctx)
		check1("held read")
		return heldSent.Load()
	})
	for i, s := range u1.out {
		if s.Status != uint32(StatusUntied) {
			t.Errorf("unit 1's held read, register %d: %+v (%v), want status 268 untied: its frame came while the line was lent", i, s, u1.res.err)
		}
	}
	<-done2
	for i, s := range u2.out {
		if s.Quality != telemetry.QualityGood || s.Num != 2000+float64(i) {
			t.Errorf("unit 2 (lent the line), register %d: %+v (%v), want good %d", i, s, u2.res.err, 2000+i)
		}
	}
	if n := counter(t, reg, "smelter_modbus_errors_total", "device", "borrower"); n != 0 {
		t.Errorf("unit 2 counted %v errors for unit 1's frame", n)
	}
	wait.For(t, 10*time.Second, "unit 1 good again", func() bool {
		u1.Read(ctx)
		return check1("after")
	})
}

// TestLateFrameOfAUnitInDoubt: what a read's closing listen hears is a
// unit's late reply (link.lateFrame), not evidence against the asked read,
// only when it is exactly one well-formed frame, checksum valid, from the
// unit of another device on the link whose replies are in doubt; anything
// else (a trusted unit, the asked unit itself, a bad checksum, a frame and
// more, a part of a frame, an unknown unit) stays evidence.
func TestLateFrameOfAUnitInDoubt(t *testing.T) {
	pdu := []byte{3, 4, 0x03, 0xE8, 0x03, 0xE9}
	for _, tr := range []Transport{RTUOverTCP, ASCIIOverTCP} {
		l := &link{transport: tr}
		asked := l.turns.joinUnit("asked", 1, nil)
		doubted := l.turns.joinUnit("doubted", 2, nil)
		l.turns.joinUnit("trusted", 3, nil)
		doubted.timedOut(time.Now())
		enc := modbustest.EncodeRTU
		if tr == ASCIIOverTCP {
			enc = modbustest.EncodeASCII
		}
		good := enc(2, pdu)
		bad := slices.Clone(good)
		bad[len(bad)-3] ^= 1 // a data byte (RTU) or hex digit (ASCII) of the frame
		for _, c := range []struct {
			name string
			b    []byte
			want *share
		}{
			{"frame of the unit in doubt", good, doubted},
			{"exception of the unit in doubt", enc(2, []byte{0x83, 2}), doubted},
			{"frame of a trusted unit", enc(3, pdu), nil},
			{"frame of the asked unit", enc(1, pdu), nil},
			{"frame of an unknown unit", enc(9, pdu), nil},
			{"bad checksum", bad, nil},
			{"a frame and more", append(slices.Clone(good), good[:3]...), nil},
			{"part of a frame", good[:len(good)-1], nil},
		} {
			if got := l.lateFrame(asked, c.b); got != c.want {
				t.Errorf("%v %s: lateFrame = %v, want %v", tr, c.name, got, c.want)
			}
		}
	}
}

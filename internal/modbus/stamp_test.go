package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// plantClock is a data clock that is not the wall clock: it starts 2 h
// behind and moves only when stepped, as the demo's simulated plant clock
// does (it steps by whole simulation steps).
type plantClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *plantClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *plantClock) step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestReadingStampedWithItsReplyOnTheGatewayClock (review 13, F7): each
// sample a reply answered carries the time that reply arrived, read on
// the pool's data clock (WithClock), not the end of the read and not the
// wall clock. Group 0 of shiftGroups is read in two requests (holding
// 0..3, then 100..103); the slave answers the first at once and the second
// 150 ms late. The data clock, 2 h behind the wall clock, steps one minute
// when the slave receives the second request (modbustest.Bank.OnRequest):
// after the first reply arrived, before the second's. So the first
// request's samples must carry the clock before the step, the second's
// the clock after it: exactly one minute apart, whatever the machine's
// speed. On Modbus TCP and RTU behind a TCP converter; the second request
// answered with values, or with exception 4 (the device's answer too).
// Fails without the stamp (TS 0: the read's end) and with a wall-clock
// stamp (time.Now: 2 h ahead, 150 ms apart).
func TestReadingStampedWithItsReplyOnTheGatewayClock(t *testing.T) {
	const step = time.Minute
	for _, tr := range []Transport{TCP, RTUOverTCP} {
		for _, exc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/exception=%v", tr, exc), func(t *testing.T) {
				h := startTruth(t, tr)
				if exc {
					h.Bank.SetException(modbustest.HoldingRegisters, 100, 4)
				}
				h.SetLate(150 * time.Millisecond)
				h.InjectAt(modbustest.Late, -1, 100)
				t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
				clk := &plantClock{t: t0}
				h.Bank.OnRequest(func(r modbustest.Request) {
					if r.Address == 100 {
						clk.step(step)
					}
				})
				cfg := testConfig(tr, h.Addr, 3)
				cfg.Timeout = time.Second
				groups, want := shiftGroups(20 * time.Millisecond)
				pool := NewPool(testLogger(t), nil, WithClock(clk.now))
				t.Cleanup(func() { _ = pool.Close() })
				src, err := pool.Source("stamped", cfg, groups[:1])
				if err != nil {
					t.Fatal(err)
				}
				rec := &recorder{t: t, want: want}
				stop := rec.run(src)
				answered := func(c sample.Cycle) bool {
					for _, s := range c.Samples[:4] {
						if s.Quality != telemetry.QualityGood {
							return false
						}
					}
					for _, s := range c.Samples[4:] {
						if exc == (s.Quality == telemetry.QualityGood) || exc && s.Status != 4 {
							return false
						}
					}
					return true
				}
				wait.For(t, 20*time.Second, "3 reads with both requests answered", func() bool {
					n := 0
					for _, c := range rec.snapshot() {
						if answered(c) {
							n++
						}
					}
					return n >= 3
				})
				stop()
				end := clk.now().UnixMilli()
				checked := 0
				for _, c := range rec.snapshot() {
					if !answered(c) {
						continue
					}
					checked++
					first, second := c.Samples[0].TS, c.Samples[4].TS
					for j, s := range c.Samples {
						if w := []int64{first, second}[j/4]; s.TS != w {
							t.Errorf("point %d of request %d stamped %d, its request's first point %d: a reply's samples share its time", s.Index, j/4+1, s.TS, w)
						}
					}
					if first < t0.UnixMilli() || second > end {
						t.Errorf("stamps %d and %d outside the data clock's %d..%d (the wall clock is 2 h ahead of it)", first, second, t0.UnixMilli(), end)
					}
					if second-first != step.Milliseconds() {
						t.Errorf("first request's samples stamped %d, second's %d: %d ms apart on the data clock, want %d (the clock stepped between the replies' arrivals)",
							first, second, second-first, step.Milliseconds())
					}
				}
				if checked == 0 {
					t.Fatal("no read with both requests answered")
				}
			})
		}
	}
}

// oneRegisterRTU is an RTU-over-TCP slave on a raw socket for unit 3 that
// maps one register, holding 0 = 1000 (exception 2 for any other read).
// Each request is first passed to seen, which drops it (no answer) when it
// returns true; sent is called just before an answer is written.
func oneRegisterRTU(t *testing.T, seen func() (drop bool), sent func()) string {
	t.Helper()
	return modbustest.ServeConns(t, func(_ context.Context, c net.Conn) {
		req := make([]byte, 8)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			if seen() {
				continue
			}
			start, qty := binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
			body := []byte{3, 0x83, 2}
			if req[1] == 3 && start == 0 && qty == 1 {
				body = []byte{3, 3, 2, 0x03, 0xE8}
			}
			sent()
			if _, err := c.Write(binary.LittleEndian.AppendUint16(body, checksum.CRC16(body))); err != nil {
				return
			}
		}
	})
}

// fastClock is a data clock 2 h behind the wall clock running 600 times
// faster, as the demo's plant clock does: a real wait of d moves it 600 d.
type fastClock struct{ t0, start time.Time }

func (c fastClock) at(wall time.Time) time.Time { return c.t0.Add(600 * wall.Sub(c.start)) }
func (c fastClock) now() time.Time              { return c.at(time.Now()) }

// TestHeldAnswerStampedAtItsArrival (review 14, F3): after a timeout, a
// one-register answer (no probe of one register less) of a unit in doubt
// on an RTU line is held for the silent window (here at least 500 ms:
// timeout 100 ms, silence 200 ms), then published on the window's decision.
// Its samples must carry the time it arrived on the data clock, not the end
// of the window. The data clock runs 600 times faster than the wall clock:
// the stamp must be within 120 s (200 ms of wall time) of the clock when
// the slave sent the answer; stamped at the window's end it is 300 s or
// more after (what the code before did).
func TestHeldAnswerStampedAtItsArrival(t *testing.T) {
	clk := fastClock{t0: time.Now().Add(-2 * time.Hour), start: time.Now()}
	var drop atomic.Bool
	var mu sync.Mutex
	var lastSent time.Time
	addr := oneRegisterRTU(t, func() bool { return drop.Swap(false) }, func() {
		mu.Lock()
		lastSent = time.Now()
		mu.Unlock()
	})
	cfg := testConfig(RTUOverTCP, addr, 3)
	cfg.Timeout, cfg.Silence = 100*time.Millisecond, 200*time.Millisecond
	pool := NewPool(testLogger(t), nil, WithClock(clk.now))
	t.Cleanup(func() { _ = pool.Close() })
	plan, err := NewPlan(regs(Uint16, 0), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(pool, "held", cfg, plan)
	if out := r.Read(t.Context()); !isGood(out[0]) || out[0].Num != 1000 {
		t.Fatalf("first read = %+v (%v), want 1000", out[0], r.res.err)
	}
	drop.Store(true)
	if out := r.Read(t.Context()); !errors.Is(Status(out[0].Status), StatusTimeout) {
		t.Fatalf("read with its answer dropped = %+v, want a timeout", out[0])
	}
	start := time.Now()
	out := r.Read(t.Context())
	took := time.Since(start)
	if !isGood(out[0]) || out[0].Num != 1000 {
		t.Fatalf("held read = %+v (%v), want 1000 good", out[0], r.res.err)
	}
	if took < 500*time.Millisecond {
		t.Fatalf("held read took %v: the answer was not held for the window", took)
	}
	mu.Lock()
	sentAt := clk.at(lastSent)
	mu.Unlock()
	if late := time.Duration(out[0].TS-sentAt.UnixMilli()) * time.Millisecond; late < 0 || late > 2*time.Minute {
		t.Errorf("held answer stamped %v after the slave sent it on the data clock (600x), want its arrival (< 2m): stamped after the window", late)
	}
}

package modbus

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// rtuException is unit's RTU exception reply code to function fc.
func rtuException(unit, fc, code byte) []byte {
	body := []byte{unit, fc | 0x80, code}
	return binary.LittleEndian.AppendUint16(body, checksum.CRC16(body))
}

// excThenLate is an RTU-over-TCP unit 1 (register a holds 1000 + a) that
// answers every every-th read request with exception exc at once and sends
// that request's real answer with its next request, in place of that
// request's own answer (review attack-mb L1): a unit, or a converter for
// it, answering an exception when its slave is slow and relaying the
// slave's answer late. relayed counts the answers sent to another request
// than theirs (another start or count); requests counts every request.
type excThenLate struct {
	Addr     string
	relayed  atomic.Int64
	requests atomic.Int64
}

func startExcThenLate(t *testing.T, exc byte, every int) *excThenLate {
	d := &excThenLate{}
	d.Addr = scriptedRTU(t, d.script(exc, every))
	return d
}

// startExcThenLateSerial is startExcThenLate on a serial line (a socat pty
// pair; skipped without socat): Addr is the gateway's end.
func startExcThenLateSerial(t *testing.T, exc byte, every int) *excThenLate {
	d := &excThenLate{}
	d.Addr = scriptedSerialRTU(t, d.script(exc, every))
	return d
}

// scriptedSerialRTU is scriptedRTU on a serial line (a socat pty pair;
// skipped without socat): it returns the gateway's end.
func scriptedSerialRTU(t *testing.T, script func(unit byte, n int, start, qty uint16) [][]byte) string {
	client, dev := modbustest.PtyPair(t)
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		seen := map[byte]int{}
		req := make([]byte, 8)
		for {
			if _, err := io.ReadFull(f, req); err != nil {
				return
			}
			seen[req[0]]++
			for _, fr := range script(req[0], seen[req[0]], binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])) {
				_, _ = f.Write(fr)
			}
		}
	})
	t.Cleanup(func() {
		_ = f.Close()
		wg.Wait()
	})
	return client
}

// script is the unit's behaviour for scriptedRTU.
func (d *excThenLate) script(exc byte, every int) func(unit byte, n int, start, qty uint16) [][]byte {
	var held []byte
	var heldOf [2]uint16
	return func(unit byte, n int, start, qty uint16) [][]byte {
		d.requests.Add(1)
		if unit != 1 {
			return nil
		}
		answer := rtuHolding(1, start, qty, 1000)
		if held != nil {
			out := held
			if heldOf != [2]uint16{start, qty} {
				d.relayed.Add(1)
			}
			held = nil
			return [][]byte{out}
		}
		if every > 0 && n%every == 0 {
			held, heldOf = answer, [2]uint16{start, qty}
			return [][]byte{rtuException(1, 3, exc)}
		}
		return [][]byte{answer}
	}
}

// TestRTUExceptionThenLateAnswer (review attack-mb L1): on RTU over TCP a
// unit answers an exception at once and its real answer with its next
// request. With one-register reads (or the one-register halves of a
// bisection after exception 2 or 3) the late answer has the byte count of
// the next read of another register: before, it was published good as that
// register's value (the recorder fails the test: 1010 for register 20).
// Now a read answered with an exception is owed its answer, and the unit's
// answers of its shape to other reads are proven (a read of another shape,
// or the read sent again answered with the same bytes): nothing wrong is
// published good, the exception is published as the device's answer, and
// the device reads good between the faults.
func TestRTUExceptionThenLateAnswer(t *testing.T) {
	for _, cs := range []struct {
		tr     Transport
		exc    byte
		every  int
		addrs  []uint16
		maxGap int
	}{
		{RTUOverTCP, 4, 11, []uint16{10, 20}, 0},             // two one-register reads
		{RTUOverTCP, 6, 13, []uint16{10, 20, 30}, 0},         // three
		{RTUOverTCP, 2, 11, []uint16{0, 1, 2, 3, 10, 11}, 2}, // bisected into halves and one-register reads
		{RTUOverTCP, 3, 7, []uint16{0, 1, 2, 3}, 2},
		{RTU, 4, 11, []uint16{10, 20}, 0}, // a serial line (pty)
		{RTU, 2, 11, []uint16{0, 1, 2, 3, 10, 11}, 2},
	} {
		t.Run(fmt.Sprintf("%s exception %d every %d, %v", cs.tr, cs.exc, cs.every, cs.addrs), func(t *testing.T) {
			d := startExcThenLate
			if cs.tr == RTU {
				d = startExcThenLateSerial
			}
			dev := d(t, cs.exc, cs.every)
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			rec, stop := recordHostileUnit(t, pool, cs.tr, dev.Addr, cs.maxGap, cs.addrs...)
			wait.For(t, 60*time.Second, "20 late answers sent to another read", func() bool {
				return dev.relayed.Load() >= 20
			})
			wait.For(t, 60*time.Second, "every point good 5 times", func() bool {
				return minGood(rec, len(cs.addrs)) >= 5
			})
			stop() // the recorder fails the test on a wrong good value
			t.Logf("%d reads, %d requests, %d late answers sent to another read, every point good at least %d times",
				len(rec.snapshot()), dev.requests.Load(), dev.relayed.Load(), minGood(rec, len(cs.addrs)))
			if !sawExc(rec, Status(cs.exc)) {
				t.Errorf("the unit's exception %d never published", cs.exc)
			}
			if n := counter(t, reg, "smelter_modbus_owed_answers_total", "device", "unit-1"); n < 20 {
				t.Errorf("owed answers counted %v times, want >= 20 (one per exception)", n)
			}
			requestsCounted(t, reg, "unit-1", dev.requests.Load())
		})
	}
}

// requestsCounted fails t unless smelter_modbus_requests_total of device
// sums to got, the requests the unit received (review mb-proof: the reads
// of a proof were not counted), give or take the read a stop cut short.
func requestsCounted(t *testing.T, reg *prometheus.Registry, device string, got int64) {
	t.Helper()
	if n := int64(counter(t, reg, "smelter_modbus_requests_total", "device", device)); n < got-2 || n > got+2 {
		t.Errorf("smelter_modbus_requests_total{device=%q} is %d, the unit received %d requests", device, n, got)
	}
}

// minGood is the fewest good samples of any of r's points 0..n-1.
func minGood(r *recorder, n int) int {
	good := make([]int, n)
	for _, c := range r.snapshot() {
		for _, s := range c.Samples {
			if s.Quality == telemetry.QualityGood && s.Index < n {
				good[s.Index]++
			}
		}
	}
	return slices.Min(good)
}

// sawExc reports whether a sample of r carried exception code exc (as the
// cycle's error, or a point's status after a bisection).
func sawExc(r *recorder, exc Status) bool {
	for _, c := range r.snapshot() {
		for _, s := range c.Samples {
			if Status(s.Status) == exc && s.Quality == telemetry.QualityBad {
				return true
			}
		}
	}
	return false
}

// TestRTUHealthyUnitRequestsUnchanged (review attack-mb L1, the cost): an
// RTU-over-TCP unit that never fails is sent exactly its plan's requests
// per read (two: 0..3 and 10..11), counted on the device's side: the
// doubt after an exception costs a device nothing until it raises one.
func TestRTUHealthyUnitRequestsUnchanged(t *testing.T) {
	d := startExcThenLate(t, 0, 0)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	cfg := testConfig(RTUOverTCP, d.Addr, 1)
	cfg.MaxGap = 2
	grp, want := unitGroup(1, 10*time.Millisecond, 0, 1, 2, 3, 10, 11)
	src, err := pool.Source("unit-1", cfg, []Group{grp})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: want}
	stop := rec.run(src)
	wait.For(t, 20*time.Second, "30 good reads", func() bool { return goodSince(rec, 0) >= 30 })
	stop()
	cycles, reqs := len(rec.snapshot()), int(d.requests.Load())
	if goodSince(rec, 0) != cycles {
		t.Errorf("%d of %d reads good, want all", goodSince(rec, 0), cycles)
	}
	// a read cut short by the stop is not emitted: at most its 2 requests more
	if reqs < 2*cycles || reqs > 2*cycles+2 {
		t.Errorf("%d requests for %d reads, want 2 per read (+2 at most for a read cut short)", reqs, cycles)
	}
}

// TestRTUDirectExceptionCostBounded (review attack-mb L1, the cost): an
// honest RTU-over-TCP unit maps holding 0..9 but 5, which raises exception
// 2. Its read (0..9, one request) is bisected, register 5 quarantined (no
// re-probe in the test), the others read good; each exception is owed its
// answer, so the unit's reads of an owed shape are proven until a read of
// another shape is answered in turn (link.paid), at most for owedFor (30 x
// timeout) after the last one. Then a read costs its plan's requests
// again (here three: 0..4, 6..7 and 8..9 as the bisection left them, or
// fewer): the doubt is not forever. Nothing wrong is published (the
// recorder).
func TestRTUDirectExceptionCostBounded(t *testing.T) {
	var requests atomic.Int64
	addr := scriptedRTU(t, func(unit byte, _ int, start, qty uint16) [][]byte {
		requests.Add(1)
		if start <= 5 && 5 < start+qty {
			return [][]byte{rtuException(unit, 3, 2)}
		}
		return [][]byte{rtuHolding(unit, start, qty, 1000)}
	})
	cfg := testConfig(RTUOverTCP, addr, 1)
	cfg.Timeout = 40 * time.Millisecond // owedFor 1.2s
	cfg.Silence = 20 * time.Millisecond
	rec, reg5 := readDirect(t, cfg)
	start, startReqs, startCycles := time.Now(), requests.Load(), len(rec.snapshot())
	untilPlanCost(t, rec, func() int { return int(requests.Load()) }, 3)
	t.Logf("from the quarantine to the plan's cost: %v, %d reads, %d requests",
		time.Since(start).Round(time.Millisecond), len(rec.snapshot())-startCycles, requests.Load()-startReqs)
	if n := goodExc2Where(rec, reg5); n < 10 {
		t.Fatalf("%d reads with 9 points good and register 5 exception 2, want >= 10", n)
	}
}

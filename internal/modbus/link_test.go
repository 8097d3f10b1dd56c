package modbus

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
)

// scriptedMBAP serves one Modbus TCP connection at a time on a loopback
// port: for the n-th request (counted over the server's life) it calls
// script(n, tid, pdu) and writes each chunk it returns with its own write,
// pausing between chunks so that they arrive as separate segments. It
// returns the address and a function that reports how many connections
// were accepted.
func scriptedMBAP(t *testing.T, script func(n int, tid uint16, pdu []byte) [][]byte) (string, func() int) {
	t.Helper()
	n := 0
	return serveInTurn(t, func(c net.Conn) {
		for {
			var head [7]byte
			if _, err := io.ReadFull(c, head[:]); err != nil {
				return
			}
			pdu := make([]byte, int(binary.BigEndian.Uint16(head[4:]))-1)
			if _, err := io.ReadFull(c, pdu); err != nil {
				return
			}
			chunks := script(n, binary.BigEndian.Uint16(head[:]), pdu)
			n++
			for i, ch := range chunks {
				if i > 0 {
					time.Sleep(5 * time.Millisecond) // the device's pause between segments
				}
				if _, err := c.Write(ch); err != nil {
					break
				}
			}
		}
	})
}

// serveInTurn listens on a loopback port and serves each connection
// accepted with serve, one at a time, closing it when serve returns. It
// returns the address and the number of connections accepted so far; the
// test's cleanup closes the listener and every connection, and waits.
func serveInTurn(t *testing.T, serve func(c net.Conn)) (string, func() int) {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			serve(c)
			_ = c.Close()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// TestMBAPRepliesSplitAndMerged: the Modbus TCP link reads what is
// available and frames replies from its buffer; what the device sends
// must be framed exactly as when each frame was read from the socket on
// its own. A reply split over several segments is put together; a stale
// reply (another transaction id) arriving in the same read as the right
// one is skipped and counted; bytes arriving in the same read after the
// reply (a forged "reply" to the next transaction, half a header) answer
// no request: they are discarded and counted before the next request, and
// never taken for its reply, whose transaction id they carry.
func TestMBAPRepliesSplitAndMerged(t *testing.T) {
	const unit = 1
	good := []byte{3, 8, 0x03, 0xE8, 0x03, 0xE9, 0x03, 0xEA, 0x03, 0xEB} // holding 0..3 = 1000..1003
	wrong := []byte{3, 8, 0xDE, 0xAD, 0xDE, 0xAD, 0xDE, 0xAD, 0xDE, 0xAD}
	frame := len(modbustest.MBAPReply(0, unit, wrong))
	steps := []struct {
		name    string
		discard int // bytes of the reply that answer no request
		reply   func(tid uint16) [][]byte
	}{
		{"honest", 0, func(tid uint16) [][]byte { return [][]byte{modbustest.MBAPReply(tid, unit, good)} }},
		{"split over three segments", 0, func(tid uint16) [][]byte {
			r := modbustest.MBAPReply(tid, unit, good)
			return [][]byte{r[:3], r[3:9], r[9:]}
		}},
		{"stale reply merged before the reply", frame, func(tid uint16) [][]byte {
			stale := modbustest.MBAPReply(tid-1, unit, wrong)
			return [][]byte{append(stale, modbustest.MBAPReply(tid, unit, good)...)}
		}},
		{"next transaction's forged reply merged after the reply", frame, func(tid uint16) [][]byte {
			forged := modbustest.MBAPReply(tid+1, unit, wrong)
			return [][]byte{append(modbustest.MBAPReply(tid, unit, good), forged...)}
		}},
		{"honest after the forged reply", 0, func(tid uint16) [][]byte { return [][]byte{modbustest.MBAPReply(tid, unit, good)} }},
		{"half a header merged after the reply", 4, func(tid uint16) [][]byte {
			half := modbustest.MBAPReply(tid+1, unit, wrong)[:4]
			return [][]byte{append(modbustest.MBAPReply(tid, unit, good), half...)}
		}},
		{"stale reply split, the reply merged with its end", frame, func(tid uint16) [][]byte {
			stale := modbustest.MBAPReply(tid-1, unit, wrong)
			return [][]byte{stale[:5], append(slices.Clone(stale[5:]), modbustest.MBAPReply(tid, unit, good)...)}
		}},
		{"honest at the end", 0, func(tid uint16) [][]byte { return [][]byte{modbustest.MBAPReply(tid, unit, good)} }},
	}
	addr, accepted := scriptedMBAP(t, func(n int, tid uint16, pdu []byte) [][]byte {
		if n >= len(steps) || !slices.Equal(pdu, []byte{3, 0, 0, 0, 4}) {
			return nil // not in the script: silence, the exchange times out
		}
		return steps[n].reply(tid)
	})
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	cfg := testConfig(TCP, addr, unit)
	plan, err := NewPlan(regs(Uint16, 0, 1, 2, 3), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(pool, "scripted", cfg, plan)
	discards := 0
	for _, step := range steps {
		discards += step.discard
		for i, s := range r.Read(t.Context()) {
			if s.Quality != telemetry.QualityGood || s.Num != 1000+float64(i) {
				t.Fatalf("%s: register %d = %+v (cycle error %v), want good %v", step.name, i, s, r.res.err, 1000+i)
			}
		}
	}
	if n := accepted(); n != 1 {
		t.Errorf("%d connections, want 1: an exchange was in doubt", n)
	}
	if n := counter(t, reg, "smelter_modbus_discarded_bytes_total", "connection", cfg.linkKey()); n != float64(discards) {
		t.Errorf("%v bytes discarded, want the %d that answer no request", n, discards)
	}
	// bytes after an accepted reply (the forged next reply, the half
	// header) are the sign of a device sending more than one frame per
	// request: suspect, once per exchange; so is a frame before the reply
	// repeating the transaction answered just before (the two stale ones)
	if n := counter(t, reg, "smelter_modbus_suspect_replies_total", "connection", cfg.linkKey()); n != 4 {
		t.Errorf("%v suspect replies, want 4: the exchanges with bytes after their accepted reply, and the two duplicates", n)
	}
}

// TestMBAPDuplicateRepliesSuspect: on a Modbus TCP connection shared by two
// units, unit 1 sends every reply twice, 5 ms apart (review 2, finding 5).
// A copy arrives either while unit 2's request is outstanding (skipped by
// its transaction id) or while the link is idle (discarded before the next
// request): either way it repeats a transaction already answered, so it is
// a suspect reply of unit 1's device, every one, and the warning names the
// unit and device. No value is taken from a copy.
func TestMBAPDuplicateRepliesSuspect(t *testing.T) {
	fastPDU, slowPDU := []byte{3, 0, 0, 0, 2}, []byte{3, 0, 10, 0, 1}
	addr, accepted := scriptedMBAP(t, func(n int, tid uint16, pdu []byte) [][]byte {
		switch {
		case slices.Equal(pdu, fastPDU):
			r := modbustest.MBAPReply(tid, 1, []byte{3, 4, 0x03, 0xE8, 0x03, 0xE9}) // 1000, 1001
			return [][]byte{r, r}
		case slices.Equal(pdu, slowPDU):
			return [][]byte{modbustest.MBAPReply(tid, 2, []byte{3, 2, 0x07, 0xD0})} // 2000
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	pool := NewPool(logs.Logger(slog.LevelInfo), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	fcfg, scfg := testConfig(TCP, addr, 1), testConfig(TCP, addr, 2)
	fplan, err := NewPlan(regs(Uint16, 0, 1), fcfg)
	if err != nil {
		t.Fatal(err)
	}
	splan, err := NewPlan(regs(Uint16, 10), scfg)
	if err != nil {
		t.Fatal(err)
	}
	fast, slow := newReader(pool, "fast", fcfg, fplan), newReader(pool, "slow", scfg, splan)
	const rounds = 10
	for i := range rounds {
		for j, s := range fast.Read(t.Context()) {
			if !isGood(s) || s.Num != 1000+float64(j) {
				t.Fatalf("round %d: fast register %d = %+v (%v)", i, j, s, fast.res.err)
			}
		}
		if i%2 == 1 {
			time.Sleep(20 * time.Millisecond) // the copy comes while the link is idle
		}
		if s := slow.Read(t.Context())[0]; !isGood(s) || s.Num != 2000 {
			t.Fatalf("round %d: slow = %+v (%v)", i, s, slow.res.err)
		}
	}
	key := fcfg.linkKey()
	suspect := func(dev string) float64 {
		return metricValue(t, reg, "smelter_modbus_suspect_replies_total", func(l map[string]string) bool {
			return l["connection"] == key && l["device"] == dev
		})
	}
	if n := suspect("fast"); n != rounds {
		t.Errorf("suspect replies of fast = %v, want %d: every copy", n, rounds)
	}
	if n := suspect("") + suspect("slow"); n != 0 {
		t.Errorf("%v suspect replies not tied to fast", n)
	}
	if n := accepted(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if out := logs.String(); !strings.Contains(out, "duplicate") || !strings.Contains(out, "device=fast") || !strings.Contains(out, "unit=1") {
		t.Errorf("want a warning naming unit 1 and device fast:\n%s", out)
	}
}

package modbus

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/modbus/checksum"
	"github.com/smelterio/smelter/internal/telemetry"
)

// asyncRTU is an RTU-over-TCP converter whose units answer holding-register
// reads asynchronously, like a converter forwarding a slow unit's bytes
// whenever they come: register a of unit u holds u*1000+a; unit slow
// answers delay after the request, the others at once.
func asyncRTU(t *testing.T, slow byte, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var wmu sync.Mutex
				req := make([]byte, 8)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					unit, start, n := req[0], binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
					body := []byte{unit, 3, byte(2 * n)}
					for i := range n {
						body = binary.BigEndian.AppendUint16(body, uint16(unit)*1000+start+i)
					}
					frame := binary.LittleEndian.AppendUint16(body, checksum.CRC16(body))
					d := time.Duration(0)
					if unit == slow {
						d = delay
					}
					wg.Add(1)
					time.AfterFunc(d, func() {
						defer wg.Done()
						wmu.Lock()
						_, _ = c.Write(frame)
						wmu.Unlock()
					})
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRTULateUnitBlamedOnItself: on an RTU line a slow unit answers later
// than timeout + silence while a fast unit shares the line (review 2,
// finding 3). The slow unit's late replies must never be published good
// (not for its own later requests either), the fast unit must never be
// published bad or count wrong-unit errors for them, and the late replies
// are counted as the slow device's suspect replies with a warning naming it
// and telling to raise silence; the waits they cause are the slow unit's
// link time, never the fast one's (an overrun would name the slow unit).
func TestRTULateUnitBlamedOnItself(t *testing.T) {
	addr := asyncRTU(t, 2, 300*time.Millisecond)
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	pool := NewPool(logs.Logger(slog.LevelInfo), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	cfg := func(unit uint8) Config {
		c := testConfig(RTUOverTCP, addr, unit)
		c.Timeout = 100 * time.Millisecond
		c.Silence = 50 * time.Millisecond // bound 150ms: the slow unit's 300ms is beyond it
		return c
	}
	plan, err := NewPlan(regs(Uint16, 7), cfg(1))
	if err != nil {
		t.Fatal(err)
	}
	fast, slow := newReader(pool, "fast", cfg(1), plan), newReader(pool, "slow", cfg(2), plan)
	ctx := t.Context()
	var fastBad, slowGood, fastReads, fastBlamed atomic.Int64
	var badWhy atomic.Value
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) {
			out := fast.Read(ctx)
			fastReads.Add(1)
			// after its first (which waits timeout + silence for the
			// fresh connection), a silence wait (50ms) or a wait for a
			// late frame charged to fast: its overrun would tell to slow
			// it down
			if fastReads.Load() > 1 && fast.res.busiest == "fast" && fast.res.busiestTime >= 50*time.Millisecond {
				fastBlamed.Add(1)
				t.Logf("read %d: fast busiest %v: %v", fastReads.Load(), fast.res.busiestTime, fast.res.err)
			}
			if out[0].Quality != telemetry.QualityGood {
				fastBad.Add(1)
				badWhy.Store(fast.res.err.Error())
			} else if out[0].Num != 1007 {
				t.Errorf("fast read %v, want 1007", out[0].Num)
			}
			time.Sleep(20 * time.Millisecond) // its poll interval
		}
	}()
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) {
			if out := slow.Read(ctx); out[0].Quality == telemetry.QualityGood {
				slowGood.Add(1) // only a late reply can be: the unit never answers in time
			}
			time.Sleep(60 * time.Millisecond)
		}
	}()
	wg.Wait()
	c1 := cfg(1)
	key := c1.linkKey()
	if n := fastBad.Load(); n != 0 {
		t.Errorf("fast unit published bad %d times of %d (last: %v)", n, fastReads.Load(), badWhy.Load())
	}
	if n := fastBlamed.Load(); n != 0 {
		t.Errorf("%d reads of fast found it the link's busiest user: the slow unit's waits charged to it", n)
	}
	if n := counter(t, reg, "smelter_modbus_errors_total", "device", "fast"); n != 0 {
		t.Errorf("fast unit counted %v errors for the slow unit's late replies", n)
	}
	if n := slowGood.Load(); n != 0 {
		t.Errorf("slow unit published good %d times: late replies taken for answers", n)
	}
	if n := metricValue(t, reg, "smelter_modbus_suspect_replies_total", func(l map[string]string) bool {
		return l["connection"] == key && l["device"] == "slow"
	}); n < 1 {
		t.Errorf("suspect replies of slow = %v, want its late replies counted", n)
	}
	out := logs.String()
	if !strings.Contains(out, "raise silence") || !strings.Contains(out, "device=slow") {
		t.Errorf("want a warning naming slow and telling to raise silence:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "device=fast") && (strings.Contains(line, "WARN") || strings.Contains(line, "answered later")) {
			t.Errorf("a warning names fast: %s", line)
		}
	}
}

// TestConnectWaitChargedToNobody: the wait for a silent line after opening
// an RTU connection (timeout + silence) is no device's doing; the device
// that happens to connect first is not the link's busiest user for it, so
// its first read is not reported as its own overrun (review 2, finding 3:
// the fast unit's remaining overrun with link_time of the connect wait).
func TestConnectWaitChargedToNobody(t *testing.T) {
	addr := asyncRTU(t, 0, 0)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	cfg := func(unit uint8) Config {
		c := testConfig(RTUOverTCP, addr, unit)
		c.Timeout = 100 * time.Millisecond
		c.Silence = 50 * time.Millisecond
		return c
	}
	plan, err := NewPlan(regs(Uint16, 7), cfg(1))
	if err != nil {
		t.Fatal(err)
	}
	first := newReader(pool, "first", cfg(1), plan)
	newReader(pool, "other", cfg(2), plan) // the link is shared
	if out := first.Read(t.Context()); !isGood(out[0]) {
		t.Fatalf("first read = %+v: %v", out[0], first.res.err)
	}
	if first.res.busiestTime >= 100*time.Millisecond {
		t.Errorf("first read: %s used the link %v: the connect wait (150ms) charged to it", first.res.busiest, first.res.busiestTime)
	}
}

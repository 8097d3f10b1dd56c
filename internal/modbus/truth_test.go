package modbus

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// startFramed starts a hostile slave for unit behind a converter (RTU or
// ASCII over TCP).
func startFramed(t *testing.T, tr Transport, bank *modbustest.Bank, unit uint8) *modbustest.Hostile {
	if tr == ASCIIOverTCP {
		return modbustest.StartHostileConverter(t, bank, unit, modbustest.ASCII, nil)
	}
	return modbustest.StartHostileConverter(t, bank, unit, modbustest.RTU, nil)
}

// TestEchoedRepliesDiscarded (review 13, F2 and F4): a slave answering in
// 30 ms whose replies are repeated 20 ms later (an echoing link, a radio
// retry; a second master's reply looks the same). The copy of the first
// reply comes while the second request of the read is outstanding and has
// its length: it would be taken for that request's answer. The real answer
// then comes after the read's last reply: the read's answers are discarded
// (StatusUntied), never published good with another register's value; the
// suspect replies are the device's, LastError says why, and the device reads
// good again once the copies stop.
func TestEchoedRepliesDiscarded(t *testing.T) {
	for _, tr := range []Transport{RTUOverTCP, ASCIIOverTCP} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			const unit = 3
			bank := modbustest.NewBank()
			fillBank(bank)
			h := startFramed(t, tr, bank, unit)
			h.SetDelay(30 * time.Millisecond)
			h.SetEcho(20 * time.Millisecond)
			h.Inject(modbustest.Echo, 6)
			cfg := testConfig(tr, h.Addr, unit)
			cfg.Timeout = 200 * time.Millisecond
			groups, want := shiftGroups(20 * time.Millisecond)
			reg := prometheus.NewRegistry()
			logs := &logtest.Buffer{}
			pool := NewPool(logs.Logger(slog.LevelDebug), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			src, err := pool.Source("echo", cfg, groups[:1])
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{t: t, want: want}
			stop := rec.run(src)
			wait.For(t, 20*time.Second, "reads discarded as untied, then good reads", func() bool {
				return causeThenGood(rec.snapshot(), StatusUntied, 1, 3)
			})
			stop()
			var untied error
			for _, c := range rec.snapshot() {
				if errors.Is(c.Err, StatusUntied) {
					untied = c.Err
					break
				}
			}
			if !strings.Contains(untied.Error(), "echoing link") {
				t.Errorf("Cycle.Err = %v, want it to name an echoing link", untied)
			}
			if n := counter(t, reg, "smelter_modbus_suspect_replies_total", "device", "echo"); n < 1 {
				t.Errorf("suspect replies of the device = %v", n)
			}
			if !strings.Contains(logs.String(), "could not be tied to its request") || !strings.Contains(logs.String(), "device=echo") {
				t.Errorf("no warning naming the device:\n%s", logs.String())
			}
		})
	}
}

// TestLaggingSlaveNeverGood (review 13, F1): a slave (or a store-and-forward
// converter) that answers each request only when the next one comes, with
// the answer to the one before. After its first timeout its next answer is
// held, and the line stays silent (the slave waits for the next request):
// silence alone would trust it and publish every later answer as the next
// request's. The probe of another length (holding 0+3 after 0+4) gets the
// previous request's 4 registers: untied, never good. Once the slave answers
// in turn again the probe passes and the unit reads good.
func TestLaggingSlaveNeverGood(t *testing.T) {
	for _, tr := range []Transport{RTUOverTCP, ASCIIOverTCP} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			const unit = 3
			bank := modbustest.NewBank()
			fillBank(bank)
			h := startFramed(t, tr, bank, unit)
			h.Inject(modbustest.LagOne, 12)
			cfg := testConfig(tr, h.Addr, unit)
			cfg.Timeout = 100 * time.Millisecond
			cfg.Silence = 50 * time.Millisecond
			cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 20*time.Millisecond
			groups, want := shiftGroups(20 * time.Millisecond)
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			src, err := pool.Source("lagging", cfg, groups[:1])
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{t: t, want: want}
			stop := rec.run(src)
			wait.For(t, 20*time.Second, "untied reads, then good reads", func() bool {
				return causeThenGood(rec.snapshot(), StatusUntied, 1, 3)
			})
			stop()
			if n := counter(t, reg, "smelter_modbus_suspect_replies_total", "device", "lagging"); n < 1 {
				t.Errorf("suspect replies of the device = %v", n)
			}
		})
	}
}

// TestTCPGatewayLateAnswerNotPublished (review 13, F3): a Modbus TCP gateway
// in front of a serial slave gives up on a request (exception 11) and
// relays the slave's late answer as the reply to the next request, with its
// transaction id: the id proves the gateway answered, not the slave. After
// the 11 the unit's next answer is in doubt: a probe of another length,
// then the request again; the relayed answer is never published.
func TestTCPGatewayLateAnswerNotPublished(t *testing.T) {
	const unit = 3
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileTCP(t, bank, unit, nil)
	h.InjectAt(modbustest.GatewayLate, 3, 100)
	cfg := testConfig(TCP, h.Addr, unit)
	cfg.Timeout = 200 * time.Millisecond
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 20*time.Millisecond
	groups, want := shiftGroups(20 * time.Millisecond)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source("behind-gateway", cfg, groups[:1])
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: want}
	stop := rec.run(src)
	wait.For(t, 20*time.Second, "exception 11, then good reads", func() bool {
		return h.Replies() > 12 && causeThenGood(rec.snapshot(), Status(11), 1, 3)
	})
	stop()
}

// TestReadingStampedWithItsReply (review 13, F7): a reading carries the
// time its reply arrived, not the end of the read: here the read's second
// request times out (200 ms) after the first was answered at once.
func TestReadingStampedWithItsReply(t *testing.T) {
	const unit = 3
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileConverter(t, bank, unit, modbustest.RTU, nil)
	h.SetLate(2 * time.Second)
	h.InjectAt(modbustest.Late, 1, 100)
	cfg := testConfig(RTUOverTCP, h.Addr, unit)
	cfg.Timeout = 200 * time.Millisecond
	groups, want := shiftGroups(20 * time.Millisecond)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source("stamped", cfg, groups[:1])
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: want}
	stop := rec.run(src)
	wait.For(t, 10*time.Second, "a read whose second request timed out", func() bool {
		for _, c := range rec.snapshot() {
			if errors.Is(c.Err, StatusTimeout) {
				return true
			}
		}
		return false
	})
	stop()
	for _, c := range rec.snapshot() {
		if !errors.Is(c.Err, StatusTimeout) || c.Samples[0].Quality != telemetry.QualityGood {
			continue
		}
		end := c.Start.Add(c.Duration).UnixMilli()
		for _, s := range c.Samples[:4] {
			if s.TS == 0 || s.TS < c.Start.UnixMilli() || s.TS > end-150 {
				t.Errorf("point %d stamped %d, read %d..%d: want its reply's time, before the timeout", s.Index, s.TS, c.Start.UnixMilli(), end)
			}
		}
		return
	}
	t.Fatal("no read with the first request answered and the second timed out")
}

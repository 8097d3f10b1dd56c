package modbus

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/wait"
)

// startTruth starts a hostile slave for unit 3 on tr (Modbus TCP, or
// behind a converter: RTU or ASCII over TCP) over a bank of fillBank.
func startTruth(t *testing.T, tr Transport) *modbustest.Hostile {
	bank := modbustest.NewBank()
	fillBank(bank)
	switch tr {
	case TCP:
		return modbustest.StartHostileTCP(t, bank, 3, nil)
	case ASCIIOverTCP:
		return modbustest.StartHostileConverter(t, bank, 3, modbustest.ASCII, nil)
	}
	return modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
}

// truthRun reads group 0 of shiftGroups from h as device id with cfg
// (adjusted by tune) until done holds for its cycles, failing on any
// point published good with another register's value. It returns the
// recorded cycles, the metrics and the log.
func truthRun(t *testing.T, h *modbustest.Hostile, tr Transport, id string, tune func(*Config),
	what string, done func([]sample.Cycle) bool) ([]sample.Cycle, *prometheus.Registry, *logtest.Buffer) {
	t.Helper()
	cfg := testConfig(tr, h.Addr, 3)
	cfg.Timeout = 200 * time.Millisecond
	tune(&cfg)
	groups, want := shiftGroups(20 * time.Millisecond)
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	pool := NewPool(logs.Logger(slog.LevelDebug), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source(id, cfg, groups[:1])
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: want}
	stop := rec.run(src)
	wait.For(t, 20*time.Second, what, func() bool { return done(rec.snapshot()) })
	stop()
	return rec.snapshot(), reg, logs
}

func untiedThenGood(cycles []sample.Cycle) bool { return causeThenGood(cycles, StatusUntied, 1, 3) }

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
			h := startTruth(t, tr)
			h.SetDelay(30 * time.Millisecond)
			h.SetEcho(20 * time.Millisecond)
			h.Inject(modbustest.Echo, 6)
			cycles, reg, logs := truthRun(t, h, tr, "echo", func(*Config) {}, "reads discarded as untied, then good reads", untiedThenGood)
			var untied error
			for _, c := range cycles {
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
			h := startTruth(t, tr)
			h.Inject(modbustest.LagOne, 12)
			_, reg, _ := truthRun(t, h, tr, "lagging", func(cfg *Config) {
				cfg.Timeout, cfg.Silence = 100*time.Millisecond, 50*time.Millisecond
				cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 20*time.Millisecond
			}, "untied reads, then good reads", untiedThenGood)
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
	h := startTruth(t, TCP)
	h.InjectAt(modbustest.GatewayLate, 3, 100)
	truthRun(t, h, TCP, "behind-gateway", func(cfg *Config) {
		cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 20*time.Millisecond
	}, "exception 11, then good reads", func(cycles []sample.Cycle) bool {
		return h.Replies() > 12 && causeThenGood(cycles, Status(11), 1, 3)
	})
}

// TestTCPGatewayLateAnswerNotGivenToAnotherUnit (review 13, F3 on a shared
// connection): the gateway relays unit 3's late answer to the next request,
// which asks unit 4 (a healthy slave behind the same gateway, that never
// failed): after a timeout or exception 10/11 on a Modbus TCP connection,
// the next answer on it, whichever unit's, goes through the probe.
func TestTCPGatewayLateAnswerNotGivenToAnotherUnit(t *testing.T) {
	h := startTruth(t, TCP)
	h.AlsoServe(4)
	h.InjectAt(modbustest.GatewayLate, 3, 100)
	cfg := testConfig(TCP, h.Addr, 3)
	cfg.Timeout = 200 * time.Millisecond
	groups, want := shiftGroups(20 * time.Millisecond)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	var stops []func()
	var recs []*recorder
	for _, unit := range []uint8{3, 4} {
		c := cfg
		c.UnitID = unit
		src, err := pool.Source(fmt.Sprintf("unit-%d", unit), c, groups[:1])
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{t: t, want: want}
		recs = append(recs, rec)
		stops = append(stops, rec.run(src))
	}
	wait.For(t, 20*time.Second, "exception 11 of unit 3, then good reads of both", func() bool {
		return h.Replies() > 12 && causeThenGood(recs[0].snapshot(), Status(11), 1, 3) && causeThenGood(recs[1].snapshot(), nil, 1, 5)
	})
	for _, stop := range stops {
		stop()
	}
}

package modbus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

func TestSourceErrors(t *testing.T) {
	pool := NewPool(nil, nil)
	cfg := testConfig(TCP, "127.0.0.1:1", 1)
	pts := regs(Uint16, 0, 1)
	cases := []struct {
		g    Group
		want string
	}{
		{Group{Interval: time.Second, Points: pts, Index: []int{0}}, "group 0: 1 indexes for 2 points"},
		{Group{Interval: 0, Points: pts, Index: []int{0, 1}}, "group 0: interval 0s must be positive"},
		{Group{Interval: time.Second, Points: []Point{{Table: HoldingRegisters, Type: String}}, Index: []int{0}}, "group 0: points[0]: length"},
	}
	for _, c := range cases {
		if _, err := pool.Source("x", cfg, []Group{c.g}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Source: %v, want %q", err, c.want)
		}
	}
}

// TestSourceCycles checks what Run hands the gateway: one cycle per group
// per interval, samples indexed by Group.Index, Start/Duration/Interval set,
// and emits serialised (the recorder fails on overlap).
func TestSourceCycles(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	srv := modbustest.StartServer(t, bank)
	groups, want := shiftGroups(30 * time.Millisecond)
	groups[1].Interval = 50 * time.Millisecond
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source("cycles", testConfig(TCP, srv.Addr, 1), groups)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: want}
	stop := rec.run(src)
	wait.For(t, 5*time.Second, "5 cycles of each group", func() bool {
		n := map[int]int{}
		for _, c := range rec.snapshot() {
			n[c.Samples[0].Index]++
		}
		return n[10] >= 5 && n[20] >= 5
	})
	// the state while running (stop closes the connection)
	if st := src.State(); !st.Connected || st.LastError != nil || st.LastSuccess.IsZero() {
		t.Fatalf("state = %+v", st)
	}
	stop()
	for _, c := range rec.snapshot() {
		first := c.Samples[0].Index
		wantIv, wantN := 30*time.Millisecond, 8
		if first == 20 {
			wantIv = 50 * time.Millisecond
		}
		if c.Interval != wantIv || len(c.Samples) != wantN || c.Start.IsZero() || c.Duration <= 0 || !c.Replied || c.Err != nil || c.Lost {
			t.Fatalf("cycle = %+v", c)
		}
		for j, s := range c.Samples {
			if s.Index != first+j || s.Quality != telemetry.QualityGood || s.Num != want[s.Index] {
				t.Fatalf("sample %d = %+v, want index %d value %v", j, s, first+j, want[first+j])
			}
		}
	}
}

// TestExceptionsAreLife: a device whose group answers only with exceptions
// is alive (Replied on every cycle), its points Bad but not Silent, with the
// exception code, then the quarantine flag on the same code; a second group
// that reads fine changes nothing (no flapping). A device that says nothing
// is Silent and not Replied.
func TestExceptionsAreLife(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	for a := uint16(500); a < 504; a++ {
		bank.SetException(modbustest.HoldingRegisters, a, 2)
	}
	srv := modbustest.StartServer(t, bank)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Quarantine = 80 * time.Millisecond
	groups := []Group{
		{Interval: 20 * time.Millisecond, Points: regs(Uint16, 500, 501, 502, 503), Index: []int{0, 1, 2, 3}},
		{Interval: 20 * time.Millisecond, Points: regs(Uint16, 7), Index: []int{4}},
	}
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source("exc", cfg, groups)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: map[int]float64{4: holdingValue(7)}}
	stop := rec.run(src)
	wait.For(t, 5*time.Second, "20 cycles of the exception group", func() bool {
		n := 0
		for _, c := range rec.snapshot() {
			if c.Samples[0].Index == 0 {
				n++
			}
		}
		return n >= 20
	})
	stop()
	first := true
	for _, c := range rec.snapshot() {
		if !c.Replied {
			t.Fatalf("cycle without Replied: %+v", c)
		}
		if c.Samples[0].Index != 0 {
			continue
		}
		for _, s := range c.Samples {
			code := Status(s.Status)
			if s.Quality != telemetry.QualityBad || s.Silent || !errors.Is(code, Status(2)) {
				t.Fatalf("exception point = %+v, want bad, not silent, exception 2", s)
			}
			if first && code != Status(2) || !first && code != Status(2)|StatusQuarantined {
				t.Fatalf("first %v: status %#x", first, uint32(code))
			}
		}
		if !errors.Is(c.Err, Status(2)) || (!first && !errors.Is(c.Err, StatusQuarantined)) {
			t.Fatalf("Err = %v", c.Err)
		}
		first = false
	}
	// quarantined addresses are re-probed alone, at the quarantine interval
	// (80ms, doubling): a handful of probes, not one per 20ms cycle
	probes := 0
	for _, r := range bank.Requests() {
		if r.Address >= 500 && r.Quantity == 1 {
			probes++
		}
	}
	if probes == 0 || probes > 40 {
		t.Fatalf("%d single-address probes of the quarantined addresses", probes)
	}
	if st := src.State(); st.Quarantined != 4 || !errors.Is(st.LastError, Status(2)) {
		t.Fatalf("state = %+v", st)
	}

	// the device falls silent: samples Silent, cycles not Replied
	srv.Stop()
	rec2 := &recorder{t: t}
	stop = rec2.run(src)
	wait.For(t, 5*time.Second, "silent cycles", func() bool { return len(rec2.snapshot()) >= 4 })
	stop()
	for _, c := range rec2.snapshot() {
		if c.Replied || !errors.Is(c.Err, StatusConnection) && !errors.Is(c.Err, StatusTimeout) {
			t.Fatalf("silent cycle = %+v", c)
		}
		for _, s := range c.Samples {
			if s.Quality != telemetry.QualityBad || !s.Silent {
				t.Fatalf("silent sample = %+v", s)
			}
		}
	}
}

// TestQuarantineReleasedBySource: a quarantined address that reads again is
// released and merged back.
func TestQuarantineReleasedBySource(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	bank.SetException(modbustest.HoldingRegisters, 2, 2)
	srv := modbustest.StartServer(t, bank)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Quarantine = 30 * time.Millisecond
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source("rel", cfg, []Group{{Interval: 10 * time.Millisecond, Points: regs(Uint16, 0, 1, 2, 3), Index: []int{0, 1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: map[int]float64{0: 1000, 1: 1001, 2: 1002, 3: 1003}}
	stop := rec.run(src)
	quarantined := func(c sample.Cycle) bool { return Status(c.Samples[2].Status) == Status(2)|StatusQuarantined }
	wait.For(t, 5*time.Second, "quarantine", func() bool {
		cs := rec.snapshot()
		return len(cs) > 0 && quarantined(cs[len(cs)-1])
	})
	bank.SetException(modbustest.HoldingRegisters, 2, 0)
	wait.For(t, 5*time.Second, "release", func() bool {
		cs := rec.snapshot()
		c := cs[len(cs)-1]
		return c.Err == nil && c.Samples[2].Quality == telemetry.QualityGood
	})
	stop()
	if st := src.State(); st.Quarantined != 0 {
		t.Fatalf("quarantined = %d after release", st.Quarantined)
	}
}

// TestPersistentMismatches are issue 16's "causes kept": a TCP device that
// answers every request with transaction id + 1, and unit 4 answering
// every request for unit 3 behind a converter. Nothing good is published,
// the device is not alive, and the cause names both values.
func TestPersistentMismatches(t *testing.T) {
	for _, c := range []struct {
		tr    Transport
		fault modbustest.Fault
		cause Status
		text  string
	}{
		{TCP, modbustest.WrongTransaction, StatusTransactionMismatch, "modbus: transaction id mismatch: reply "},
		{RTUOverTCP, modbustest.WrongUnit, StatusWrongUnit, "modbus: reply from unit 1 to a request for unit 3"},
	} {
		t.Run(string(c.tr), func(t *testing.T) {
			bank := modbustest.NewBank()
			fillBank(bank)
			var h *modbustest.Hostile
			if c.tr == TCP {
				h = modbustest.StartHostileTCP(t, bank, 3, nil)
			} else {
				h = modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
			}
			h.SetWrongUnit(1)
			h.Inject(c.fault, -1)
			cfg := testConfig(c.tr, h.Addr, 3)
			cfg.Timeout = 100 * time.Millisecond
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			groups, want := shiftGroups(20 * time.Millisecond)
			src, err := pool.Source("liar", cfg, groups[:1])
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{t: t, want: want}
			stop := rec.run(src)
			wait.For(t, 10*time.Second, "cycles", func() bool { return len(rec.snapshot()) >= 3 })
			stop()
			for _, cy := range rec.snapshot() {
				if cy.Replied || !errors.Is(cy.Err, c.cause) || !strings.Contains(cy.Err.Error(), c.text) {
					t.Fatalf("cycle Replied %v Err %v, want %q", cy.Replied, cy.Err, c.text)
				}
				for _, s := range cy.Samples {
					if s.Quality != telemetry.QualityBad || !s.Silent {
						t.Fatalf("sample %+v", s)
					}
				}
			}
			if n := counter(t, reg, "smelter_modbus_errors_total", "kind", c.cause.Kind()); n < 3 {
				t.Fatalf("errors{kind=%s} = %v", c.cause.Kind(), n)
			}
			if st := src.State(); !errors.Is(st.LastError, c.cause) || st.ConsecutiveFailures < 3 {
				t.Fatalf("state %+v", st)
			}
		})
	}
}

// TestConnectWaitWithShortSilence: a silence much shorter than the timeout
// still lets a fresh connection through (the connect wait is timeout +
// silence and must not be taken for a line that never falls quiet).
func TestConnectWaitWithShortSilence(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
	cfg := testConfig(RTUOverTCP, h.Addr, 3)
	cfg.Timeout = time.Second
	cfg.Silence = 20 * time.Millisecond
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	plan, err := NewPlan(regs(Uint16, 0), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(pool, "short", cfg, plan)
	if out := r.Read(t.Context()); !isGood(out[0]) || out[0].Num != holdingValue(0) {
		t.Fatalf("first read = %+v: %v", out[0], r.res.err)
	}
}

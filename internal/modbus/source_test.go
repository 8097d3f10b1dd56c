package modbus

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging/logtest"
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

// TestGatewayTargetExceptionsAreSilence: a Modbus TCP gateway answering
// exception 10 (path unavailable) or 11 (target failed to respond) for a
// unit is the gateway saying that device is silent: the cycles are not
// Replied, the samples are Bad and Silent with the exception code, and the
// cause stays in Cycle.Err and the device state (review finding 2). The
// gateway itself answered, so the connection is not reopened.
func TestGatewayTargetExceptionsAreSilence(t *testing.T) {
	for _, code := range []uint8{10, 11} {
		t.Run(Status(code).Error(), func(t *testing.T) {
			bank := modbustest.NewBank()
			fillBank(bank)
			h := modbustest.StartHostileTCP(t, bank, 3, nil) // unit 3 lives; unit 5 is absent
			h.SetAbsentReply(code)
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			groups, _ := shiftGroups(20 * time.Millisecond)
			src, err := pool.Source("behind-gw", testConfig(TCP, h.Addr, 5), groups)
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{t: t}
			stop := rec.run(src)
			wait.For(t, 5*time.Second, "6 cycles", func() bool { return len(rec.snapshot()) >= 6 })
			stop()
			for _, c := range rec.snapshot() {
				if c.Replied || !errors.Is(c.Err, Status(code)) || !strings.Contains(c.Err.Error(), "unit 5") {
					t.Fatalf("cycle Replied %v Err %v, want not replied with exception %d", c.Replied, c.Err, code)
				}
				for _, s := range c.Samples {
					if s.Quality != telemetry.QualityBad || !s.Silent || Status(s.Status) != Status(code) {
						t.Fatalf("sample %+v, want bad, silent, status %d", s, code)
					}
				}
			}
			st := src.State()
			if !errors.Is(st.LastError, Status(code)) || st.ConsecutiveFailures < 6 || !st.LastSuccess.IsZero() {
				t.Fatalf("state %+v", st)
			}
			if n := counter(t, reg, "smelter_modbus_reconnects_total", "connection", "tcp|"+h.Addr); n != 0 {
				t.Fatalf("%v reconnects: the gateway answered, its connection is fine", n)
			}
		})
	}
	for _, s := range []Status{2, 4, 6, 10 | StatusQuarantined, 11} {
		if want := s.Code() == 10 || s.Code() == 11; s.Silent() != want || s.TargetSilent() != want {
			t.Errorf("%v: Silent %v TargetSilent %v, want %v", s, s.Silent(), s.TargetSilent(), want)
		}
	}
}

// TestPersistentReplyErrorLogsOnce: a Modbus TCP device answering every
// request with a wrong transaction id makes the link reopen its socket every
// poll; that is counted (smelter_modbus_reconnects_total), not logged as
// "modbus connected" each time, and the device logs "not answering" once
// for the persistent cause (review finding 8).
func TestPersistentReplyErrorLogsOnce(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileTCP(t, bank, 3, nil)
	h.Inject(modbustest.WrongTransaction, -1)
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	pool := NewPool(logs.Logger(slog.LevelDebug), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	groups, _ := shiftGroups(10 * time.Millisecond)
	src, err := pool.Source("liar", testConfig(TCP, h.Addr, 3), groups[:1])
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t}
	stop := rec.run(src)
	wait.For(t, 10*time.Second, "10 reconnects", func() bool {
		return counter(t, reg, "smelter_modbus_reconnects_total", "connection", "tcp|"+h.Addr) >= 10
	})
	stop()
	out := logs.String()
	if n := strings.Count(out, "modbus connected"); n != 1 {
		t.Errorf("%d \"modbus connected\" lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "modbus device not answering"); n != 1 {
		t.Errorf("%d \"modbus device not answering\" lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "transaction id mismatch") {
		t.Errorf("the log does not give the cause:\n%s", out)
	}
}

// TestSuspectLateReplyWarns: on RTU over TCP, a reply that comes later than
// timeout + silence arrives while the next request is outstanding; nothing
// in it tells it apart from that request's answer (same unit, function and
// byte count). The unit timed out, so its next answer is held until the
// line has stayed quiet long enough for the real answer to show: it does,
// so both are discarded (never published good), the late reply is counted
// as the device's suspect reply and a warning names it, telling to raise
// silence (review finding 3, review 2 finding 3). Once the unit answers in
// time again, its answers are published.
func TestSuspectLateReplyWarns(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
	cfg := testConfig(RTUOverTCP, h.Addr, 3)
	cfg.Timeout = 100 * time.Millisecond
	cfg.Silence = 20 * time.Millisecond
	// late by 200ms > timeout + silence (120ms): caught by nothing
	h.SetLate(200 * time.Millisecond)
	h.SetQueueWhileLate(true)
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	pool := NewPool(logs.Logger(slog.LevelInfo), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	plan, err := NewPlan(regs(Uint16, 0), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(pool, "late", cfg, plan)
	if out := r.Read(t.Context()); !isGood(out[0]) {
		t.Fatalf("first read = %+v: %v", out[0], r.res.err)
	}
	h.Inject(modbustest.Late, 1)
	if out := r.Read(t.Context()); !errors.Is(Status(out[0].Status), StatusTimeout) {
		t.Fatalf("late read = %+v, want a timeout", out[0])
	}
	// the next request goes out after the silence; the late reply comes
	// while it is outstanding: it must not be published
	if out := r.Read(t.Context()); isGood(out[0]) {
		t.Fatalf("read after the timeout = %+v: the late reply was taken for its answer", out[0])
	}
	key := cfg.linkKey()
	if n := metricValue(t, reg, "smelter_modbus_suspect_replies_total", func(l map[string]string) bool {
		return l["connection"] == key && l["device"] == "late"
	}); n < 1 {
		t.Errorf("suspect replies of device late = %v, want >= 1", n)
	}
	wait.For(t, 5*time.Second, "good reads again", func() bool {
		return isGood(r.Read(t.Context())[0])
	})
	if out := logs.String(); strings.Count(out, "answered later than timeout + silence") != 1 || !strings.Contains(out, "raise silence") ||
		!strings.Contains(out, "device=late") {
		t.Errorf("want one warning naming the device and telling to raise silence:\n%s", out)
	}
}

// TestNoSuspectOnCleanLine: honest replies on RTU over TCP raise no
// suspect-reply count and no warning.
func TestNoSuspectOnCleanLine(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
	cfg := testConfig(RTUOverTCP, h.Addr, 3)
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	pool := NewPool(logs.Logger(slog.LevelInfo), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	plan, err := NewPlan(regs(Uint16, 0, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(pool, "clean", cfg, plan)
	for range 20 {
		if out := r.Read(t.Context()); !isGood(out[0]) {
			t.Fatalf("read = %+v: %v", out[0], r.res.err)
		}
	}
	if n := counter(t, reg, "smelter_modbus_suspect_replies_total", "connection", cfg.linkKey()); n != 0 {
		t.Fatalf("suspect replies = %v on a clean line", n)
	}
	if out := logs.String(); strings.Contains(out, "late reply may have been taken") || strings.Contains(out, "answered later") {
		t.Fatalf("warning on a clean line:\n%s", logs.String())
	}
}

// TestDeviceSeriesCreatedWhenCounted: the series a user alerts on exist
// at 0 from the start: a device's timeout and connection errors and the
// late replies tied to it, a connection's up gauge, discarded bytes,
// replies from an unknown sender and reopens. The others (request
// results, other error kinds, register counts) only once counted (at 100
// devices the ~20 series per device that would stay at zero cost ~1 MB);
// the duration histogram and the quarantined gauge are there from the
// start.
func TestDeviceSeriesCreatedWhenCounted(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	srv := modbustest.StartServer(t, bank)
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	groups, _ := shiftGroups(20 * time.Millisecond)
	good, err := pool.Source("good", testConfig(TCP, srv.Addr, 1), groups)
	if err != nil {
		t.Fatal(err)
	}
	// nobody listens on port 1: connection errors only
	down, err := pool.Source("down", testConfig(TCP, "127.0.0.1:1", 1), groups)
	if err != nil {
		t.Fatal(err)
	}
	series := func() map[string]float64 { // counters' and gauges' values, histograms' counts
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				s := mf.GetName() + "{"
				for _, l := range m.GetLabel() {
					s += l.GetName() + "=" + l.GetValue() + ","
				}
				out[s+"}"] = m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
		return out
	}
	before := series()
	good0 := "smelter_modbus_connection_up{connection=tcp|" + srv.Addr + ",}"
	atZero := []string{
		"smelter_modbus_errors_total{device=good,kind=timeout,}", "smelter_modbus_errors_total{device=good,kind=connection,}",
		"smelter_modbus_errors_total{device=down,kind=timeout,}", "smelter_modbus_errors_total{device=down,kind=connection,}",
		"smelter_modbus_suspect_replies_total{connection=tcp|" + srv.Addr + ",device=good,}",
		"smelter_modbus_suspect_replies_total{connection=tcp|" + srv.Addr + ",device=,}",
		"smelter_modbus_suspect_replies_total{connection=tcp|127.0.0.1:1,device=down,}",
		"smelter_modbus_suspect_replies_total{connection=tcp|127.0.0.1:1,device=,}",
		"smelter_modbus_discarded_bytes_total{connection=tcp|" + srv.Addr + ",}", "smelter_modbus_discarded_bytes_total{connection=tcp|127.0.0.1:1,}",
		"smelter_modbus_reconnects_total{connection=tcp|" + srv.Addr + ",}", "smelter_modbus_reconnects_total{connection=tcp|127.0.0.1:1,}",
	}
	for _, s := range append([]string{"smelter_modbus_request_duration_seconds{device=good,}", "smelter_modbus_quarantined_points{device=good,}",
		"smelter_modbus_quarantined_points{device=down,}", good0, "smelter_modbus_connection_up{connection=tcp|127.0.0.1:1,}"}, atZero...) {
		if v, ok := before[s]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) before any request, want 0: %v", s, v, ok, before)
		}
	}
	for s := range before {
		if strings.Contains(s, "_total") && !slices.Contains(atZero, s) {
			t.Errorf("%s exists before anything was counted", s)
		}
	}
	recGood, recDown := &recorder{t: t}, &recorder{t: t}
	stopGood, stopDown := recGood.run(good), recDown.run(down)
	wait.For(t, 5*time.Second, "cycles of both devices", func() bool {
		return len(recGood.snapshot()) >= 4 && len(recDown.snapshot()) >= 2
	})
	stopGood()
	stopDown()
	want := []string{"smelter_modbus_requests_total{device=good,result=ok,}", "smelter_modbus_registers_read_total{device=good,}",
		"smelter_modbus_errors_total{device=down,kind=connection,}"}
	got := series()
	for _, s := range want {
		if _, ok := got[s]; !ok {
			t.Errorf("%s missing after counting", s)
		}
	}
	// a request in flight when stopGood cancels it did happen: counted
	// as canceled (the stop can land on a poll tick)
	happened := append(slices.Clone(want), "smelter_modbus_requests_total{device=good,result=canceled,}")
	happened = append(happened, atZero...)
	for s := range got {
		if strings.Contains(s, "_total") && !slices.Contains(happened, s) {
			t.Errorf("%s: a series for something that never happened", s)
		}
	}
	if n := counter(t, reg, "smelter_modbus_errors_total", "device", "down"); n < 1 {
		t.Errorf("connection errors of down: %v", n)
	}
}

func TestNextTick(t *testing.T) {
	epoch := time.Now()
	iv := 100 * time.Millisecond
	for _, c := range []struct{ now, want time.Duration }{
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{99 * time.Millisecond, 100 * time.Millisecond},
		{100 * time.Millisecond, 200 * time.Millisecond}, // a tick that is now has passed
		{250 * time.Millisecond, 300 * time.Millisecond},
		{time.Hour + 1, time.Hour + 100*time.Millisecond},
	} {
		if got := nextTick(epoch, epoch.Add(c.now), iv).Sub(epoch); got != c.want {
			t.Errorf("nextTick(epoch+%v) = epoch+%v, want epoch+%v", c.now, got, c.want)
		}
	}
}

// TestDevicesPolledOnOneGrid: two devices of a pool whose sources start at
// different moments of the interval are read on the same ticks after their
// first read, so that their batches reach the spool and the uplinks
// together. Before, each device's ticks kept the phase of its start.
func TestDevicesPolledOnOneGrid(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	srv := modbustest.StartServer(t, bank)
	const iv = 200 * time.Millisecond
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	cfg := testConfig(TCP, srv.Addr, 1)
	var recs [2]*recorder
	for i := range recs {
		if i > 0 {
			// the second device starts 90 ms into the first one's interval
			wait.For(t, time.Second, "90 ms of the pool's first interval", func() bool {
				return time.Since(pool.epoch) >= 90*time.Millisecond
			})
		}
		src, err := pool.Source(fmt.Sprintf("grid-%d", i), cfg, []Group{{Interval: iv, Points: regs(Uint16, 0), Index: []int{0}}})
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &recorder{t: t, want: map[int]float64{0: holdingValue(0)}}
		recs[i].run(src)
	}
	wait.For(t, 10*time.Second, "4 cycles of each device", func() bool {
		return len(recs[0].snapshot()) >= 4 && len(recs[1].snapshot()) >= 4
	})
	// The phase of a cycle is its start modulo the interval, on the pool's
	// grid. A ticker of its own would keep the second device's cycles
	// 90 ms or more after the grid's ticks; on the grid, the earliest of
	// its cycles is within a scheduling delay of a tick (the earliest:
	// a loaded machine delays some cycles' timers by tens of ms).
	for i, r := range recs {
		earliest := iv
		for _, c := range r.snapshot()[1:] {
			earliest = min(earliest, c.Start.Sub(pool.epoch)%iv)
		}
		if earliest > 45*time.Millisecond {
			t.Errorf("device %d: its cycles start %v or more after the ticks of the pool's grid (interval %v)", i, earliest, iv)
		}
	}
}

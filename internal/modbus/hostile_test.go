package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// Every register holds a value derived from its address, distinct across
// tables, so a reply taken for another request shows as a wrong value.
func holdingValue(a uint16) float64 { return 1000 + float64(a) }
func inputValue(a uint16) float64   { return 30000 + float64(a) }

func fillBank(bank *modbustest.Bank) {
	for a := uint16(0); a < 200; a++ {
		bank.SetRegisters(modbustest.HoldingRegisters, a, uint16(holdingValue(a)))
		bank.SetRegisters(modbustest.InputRegisters, a, uint16(inputValue(a)))
	}
}

// shiftGroups are two groups whose holding requests all have the same size:
// a reply to one would decode as a plausible value of another. Group 0 reads
// holding 0..3 and 100..103 (two requests, points 10..17), group 1 holding
// 50..53 and input 0..3 (points 20..27).
func shiftGroups(interval time.Duration) ([]Group, map[int]float64) {
	want := map[int]float64{}
	g := []Group{{Interval: interval}, {Interval: interval}}
	add := func(gi int, t Table, addrs ...uint16) {
		for _, a := range addrs {
			i := 10*(gi+1) + len(g[gi].Points)
			g[gi].Points = append(g[gi].Points, Point{Table: t, Address: a, Type: Uint16})
			g[gi].Index = append(g[gi].Index, i)
			if t == HoldingRegisters {
				want[i] = holdingValue(a)
			} else {
				want[i] = inputValue(a)
			}
		}
	}
	add(0, HoldingRegisters, 0, 1, 2, 3, 100, 101, 102, 103)
	add(1, HoldingRegisters, 50, 51, 52, 53)
	add(1, InputRegisters, 0, 1, 2, 3)
	return g, want
}

// recorder runs a Source and keeps a copy of every cycle it emits.
type recorder struct {
	t      *testing.T
	want   map[int]float64 // expected value of each Sample.Index
	mu     sync.Mutex
	cycles []sample.Cycle
	active bool
	wrong  []string
}

func (r *recorder) emit(c *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active {
		r.wrong = append(r.wrong, "emit called while another emit was running")
	}
	r.active = true
	defer func() { r.active = false }()
	cp := *c
	cp.Samples = slices.Clone(c.Samples)
	for _, s := range cp.Samples {
		if w, ok := r.want[s.Index]; ok && s.Quality == telemetry.QualityGood && s.Num != w {
			r.wrong = append(r.wrong, fmt.Sprintf("point %d published good with %v, its value is %v", s.Index, s.Num, w))
		}
	}
	r.cycles = append(r.cycles, cp)
}

func (r *recorder) snapshot() []sample.Cycle {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cycles)
}

// run starts src and returns a stop function that waits for Run to return.
func (r *recorder) run(src *Source) func() {
	ctx, cancel := contextWithCancel(r.t)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, r.emit) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("Run returned %v", err)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, w := range r.wrong {
			r.t.Error(w)
		}
	}
	r.t.Cleanup(stop)
	return stop
}

// causeThenGood reports whether some cycle's Err matches cause (nil: the
// first cycle counts) and, after the first such cycle, each of groups groups
// (told apart by their first Sample.Index) has ended with n cycles in a row
// with every sample good.
func causeThenGood(cycles []sample.Cycle, cause error, groups, n int) bool {
	seen := false
	streak := map[int]int{} // first index of the group -> good cycles in a row
	for _, c := range cycles {
		if !seen {
			seen = cause == nil || errors.Is(c.Err, cause)
			continue
		}
		key := c.Samples[0].Index
		allGood := c.Err == nil
		for _, s := range c.Samples {
			allGood = allGood && s.Quality == telemetry.QualityGood
		}
		if allGood {
			streak[key]++
		} else {
			streak[key] = 0
		}
	}
	if !seen || len(streak) < groups {
		return false
	}
	for _, k := range streak {
		if k < n {
			return false
		}
	}
	return true
}

type hostileCase struct {
	fault modbustest.Fault
	n     int    // replies misbehaving (the first n)
	cause Status // expected in Cycle.Err, the error-kind label and LastError; 0: none, bytes discarded instead
	text  string // in the error text
}

func TestHostileDevices(t *testing.T) {
	const unit = 3
	leftover := func(tr Transport, bank *modbustest.Bank) []byte {
		// a reply to "read holding 100+4" from before a restart, sized like
		// every request of shiftGroups: taken for the first request, it
		// would publish register 100's value as register 0's
		pdu := modbustest.ReadReply(bank, modbustest.HoldingRegisters, 100, 4)
		switch tr {
		case TCP:
			return modbustest.MBAPReply(1, unit, pdu)
		case ASCIIOverTCP, ASCII:
			return modbustest.EncodeASCII(unit, pdu)
		}
		return modbustest.EncodeRTU(unit, pdu)
	}
	common := []hostileCase{
		{modbustest.Late, 1, StatusTimeout, "no reply within"},
		// 3: every send of the first read (a stray frame is not the asked
		// unit's fault: the read is sent again, twice; MEDIUM-3)
		{modbustest.WrongUnit, 3, StatusWrongUnit, "reply from unit 4 to a request for unit 3"},
		{modbustest.WrongFunction, 2, StatusWrongFunction, "to request function"},
		{modbustest.WrongByteCount, 2, StatusBadLength, "request wants 8"},
		{modbustest.Partial, 1, StatusFraming, "incomplete reply"},
		{0xFF, 0, 0, ""}, // leftover bytes at start
	}
	transports := map[Transport][]hostileCase{
		TCP: append([]hostileCase{
			{modbustest.WrongTransaction, 2, StatusTransactionMismatch, "transaction id mismatch"},
			{modbustest.Garbage, 1, StatusFraming, "malformed reply: mbap protocol id"},
		}, common...),
		RTUOverTCP: append([]hostileCase{
			{modbustest.Garbage, 1, StatusChecksum, "checksum mismatch"},
		}, common...),
		RTU: append([]hostileCase{
			{modbustest.Garbage, 1, StatusChecksum, "checksum mismatch"},
		}, common...),
	}
	transports[ASCIIOverTCP] = []hostileCase{
		{modbustest.Late, 1, StatusTimeout, "no reply within"},
		{modbustest.WrongUnit, 3, StatusWrongUnit, "reply from unit 4"},
		{modbustest.WrongByteCount, 2, StatusBadLength, "request wants 8"},
		{modbustest.Garbage, 1, StatusFraming, "incomplete reply: 8 bytes"}, // no colon: noise, then silence
		{0xFF, 0, 0, ""},
	}
	transports[ASCII] = transports[ASCIIOverTCP]
	for _, tr := range []Transport{TCP, RTUOverTCP, RTU, ASCIIOverTCP, ASCII} {
		for _, c := range transports[tr] {
			name := c.fault.String()
			if c.fault == 0xFF {
				name = "leftover at start"
			}
			t.Run(string(tr)+"/"+name, func(t *testing.T) {
				t.Parallel()
				bank := modbustest.NewBank()
				fillBank(bank)
				var left []byte
				if c.fault == 0xFF {
					left = leftover(tr, bank)
				}
				var h *modbustest.Hostile
				switch tr {
				case TCP:
					h = modbustest.StartHostileTCP(t, bank, unit, left)
				case RTUOverTCP:
					h = modbustest.StartHostileConverter(t, bank, unit, modbustest.RTU, left)
				case ASCIIOverTCP:
					h = modbustest.StartHostileConverter(t, bank, unit, modbustest.ASCII, left)
				case RTU:
					h = modbustest.StartHostileSerial(t, bank, unit, modbustest.RTU, left)
				case ASCII:
					h = modbustest.StartHostileSerial(t, bank, unit, modbustest.ASCII, left)
				}
				cfg := testConfig(tr, h.Addr, unit)
				cfg.Timeout = 200 * time.Millisecond
				h.SetLate(250 * time.Millisecond) // 1.25 x the timeout: arrives while the next request would be on the line
				switch c.fault {
				case 0xFF:
				case modbustest.Late:
					// the reply to holding 100+4 comes late; the next request,
					// holding 0+4 or 50+4, must not take it for its own
					h.InjectAt(c.fault, c.n, 100)
				default:
					h.Inject(c.fault, c.n)
				}
				groups, want := shiftGroups(20 * time.Millisecond)
				reg := prometheus.NewRegistry()
				logs := &logtest.Buffer{}
				// the driver logs a device's health at debug (the gateway logs it)
				pool := NewPool(logs.Logger(slog.LevelDebug), NewMetrics(reg))
				t.Cleanup(func() { _ = pool.Close() })
				src, err := pool.Source("hostile", cfg, groups)
				if err != nil {
					t.Fatal(err)
				}
				rec := &recorder{t: t, want: want}
				stop := rec.run(src)
				var cause error
				if c.cause != 0 {
					cause = c.cause
				}
				wait.For(t, 20*time.Second, "the fault's cause, then good cycles in every group", func() bool {
					return causeThenGood(rec.snapshot(), cause, 2, 3)
				})
				stop()
				if c.cause == 0 {
					if n := counter(t, reg, "smelter_modbus_discarded_bytes_total", "connection", cfg.linkKey()); n < float64(len(left)) {
						t.Fatalf("%v bytes discarded, want the %d leftover bytes", n, len(left))
					}
					return
				}
				var err0 error
				for _, cy := range rec.snapshot() {
					if errors.Is(cy.Err, c.cause) {
						err0 = cy.Err
						break
					}
				}
				if !strings.Contains(err0.Error(), c.text) {
					t.Errorf("Cycle.Err = %q, want it to say %q", err0, c.text)
				}
				if n := counter(t, reg, "smelter_modbus_errors_total", "kind", c.cause.Kind()); n < 1 {
					t.Errorf("smelter_modbus_errors_total{kind=%q} = %v", c.cause.Kind(), n)
				}
				if c.fault == modbustest.WrongUnit {
					if n := counter(t, reg, "smelter_modbus_stray_frames_total", "unit", "4"); n < 3 {
						t.Errorf("smelter_modbus_stray_frames_total{unit=\"4\"} = %v, want 3", n)
					}
				}
				if st := src.State(); !errors.Is(st.LastError, c.cause) || !strings.Contains(st.LastError.Error(), c.text) {
					t.Errorf("State().LastError = %v, want %v saying %q", st.LastError, c.cause, c.text)
				}
				if !strings.Contains(logs.String(), c.text) {
					t.Errorf("the log does not say %q:\n%s", c.text, logs.String())
				}
			})
		}
	}
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}

// TestConverterQueueSurvivesReconnect: the gateway reloads (a new pool, a
// new connection) while a late reply is on its way; the converter forwards
// it to the new connection, which must not take it for its first request.
func TestConverterQueueSurvivesReconnect(t *testing.T) {
	const unit = 3
	bank := modbustest.NewBank()
	fillBank(bank)
	h := modbustest.StartHostileConverter(t, bank, unit, modbustest.RTU, nil)
	h.SetLate(300 * time.Millisecond) // 1.5 x the timeout
	h.InjectAt(modbustest.Late, 1, 100)
	cfg := testConfig(RTUOverTCP, h.Addr, unit)
	cfg.Timeout = 200 * time.Millisecond
	// A silence well beyond the reply's lateness: the converter's timer and
	// the reconnect are scheduled by a loaded machine under -race, and this
	// test is about the reconnect's wait, not about its margin.
	cfg.Silence = time.Second
	groups, want := shiftGroups(20 * time.Millisecond)

	poolA := NewPool(testLogger(t), nil)
	srcA, err := poolA.Source("before-reload", cfg, groups[:1])
	if err != nil {
		t.Fatal(err)
	}
	recA := &recorder{t: t, want: want}
	stopA := recA.run(srcA)
	wait.For(t, 5*time.Second, "the request that will be answered late", func() bool {
		for _, r := range bank.Requests() {
			if r.Address == 100 {
				return true
			}
		}
		return false
	})
	stopA()
	if err := poolA.Close(); err != nil {
		t.Fatal(err)
	}
	if h.Replies() != 1 {
		t.Fatalf("%d replies sent before the reload, want only the one before the late request", h.Replies())
	}

	reg := prometheus.NewRegistry()
	poolB := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = poolB.Close() })
	srcB, err := poolB.Source("after-reload", cfg, groups[1:])
	if err != nil {
		t.Fatal(err)
	}
	recB := &recorder{t: t, want: want}
	stopB := recB.run(srcB)
	wait.For(t, 5*time.Second, "good cycles after the reload", func() bool {
		return causeThenGood(recB.snapshot(), nil, 1, 3)
	})
	stopB()
	if h.Replies() < 2 {
		t.Fatal("the late reply was never sent")
	}
	if n := counter(t, reg, "smelter_modbus_discarded_bytes_total", "connection", cfg.linkKey()); n < 13 {
		t.Fatalf("%v bytes discarded after the reload, want the late reply's 13", n)
	}
}

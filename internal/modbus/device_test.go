package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testConfig(tr Transport, addr string, unit uint8) Config {
	c := Config{Transport: tr, Address: addr, UnitID: unit}
	c.SetDefaults()
	c.Timeout = 300 * time.Millisecond
	c.BackoffMin = 10 * time.Millisecond
	c.BackoffMax = 50 * time.Millisecond
	c.Quarantine = 100 * time.Millisecond
	c.Serial.Baud = 115200
	return c
}

// endpoint starts what a transport needs in front of the server and returns the client address.
func endpoint(t *testing.T, tr Transport, srv *modbustest.Server) (string, *modbustest.Bridge) {
	t.Helper()
	switch tr {
	case TCP:
		return srv.Addr, nil
	case RTUOverTCP:
		b := modbustest.StartBridge(t, srv.Addr, modbustest.RTU)
		return b.Addr, b
	case ASCIIOverTCP:
		b := modbustest.StartBridge(t, srv.Addr, modbustest.ASCII)
		return b.Addr, b
	case RTU:
		b := modbustest.StartSerialBridge(t, srv.Addr, modbustest.RTU)
		return b.Addr, b
	case ASCII:
		b := modbustest.StartSerialBridge(t, srv.Addr, modbustest.ASCII)
		return b.Addr, b
	}
	t.Fatalf("no endpoint for %s", tr)
	return "", nil
}

type want struct {
	num    float64
	str    string
	status Status
}

// reader reads one plan on one device, as a group's poller does.
type reader struct {
	d   *device
	g   *groupState
	out []sample.Sample
	res cycle
}

func newReader(pool *Pool, id string, cfg Config, plan *Plan) *reader {
	return &reader{d: pool.device(id, cfg), g: newGroupState(plan, nil), out: make([]sample.Sample, plan.Len())}
}

// Read reads the plan once and returns the samples.
func (r *reader) Read(ctx context.Context) []sample.Sample {
	r.res = r.d.read(ctx, r.g, r.out)
	return r.out
}

func (r *reader) State() DeviceState { return r.d.state() }

func isGood(v sample.Sample) bool { return v.Quality == telemetry.QualityGood }

// allTypes loads the bank with one point of every type and order and returns
// the points with the values they must decode to.
func allTypes(bank *modbustest.Bank) ([]Point, []want) {
	h := modbustest.HoldingRegisters
	bank.SetBytes(h, 0, []byte{0x42, 0xF6, 0xE9, 0x79})
	bank.SetBytes(h, 2, []byte{0xE9, 0x79, 0x42, 0xF6})
	bank.SetBytes(h, 4, []byte{0xFF, 0x38})
	bank.SetBytes(h, 5, []byte{0xFF, 0x38})
	bank.SetBytes(h, 6, []byte{0xEB, 0x32, 0xA4, 0xF8})
	bank.SetBytes(h, 8, []byte{2, 1, 4, 3, 6, 5, 8, 7})
	bank.SetBytes(h, 12, []byte{0x40, 0x93, 0x4A, 0x45, 0x6D, 0x5C, 0xFA, 0xAD})
	bank.SetBytes(h, 16, []byte("PUMP-7\x00\x00"))
	bank.SetRegisters(h, 20, 0x0008)
	bank.SetBytes(h, 21, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE})
	bank.SetBytes(h, 30, []byte{0x7F, 0xC0, 0, 0})
	bank.SetBytes(modbustest.InputRegisters, 0, []byte{1, 2, 3, 4})
	bank.SetBits(modbustest.Coils, 3, true, false)
	bank.SetBits(modbustest.DiscreteInputs, 10, true)
	points := []Point{
		{Table: HoldingRegisters, Address: 0, Type: Float32},
		{Table: HoldingRegisters, Address: 2, Type: Float32, Order: CDAB},
		{Table: HoldingRegisters, Address: 4, Type: Int16},
		{Table: HoldingRegisters, Address: 5, Type: Uint16},
		{Table: HoldingRegisters, Address: 6, Type: Int32, Order: DCBA},
		{Table: HoldingRegisters, Address: 8, Type: Uint64, Order: BADC},
		{Table: HoldingRegisters, Address: 12, Type: Float64},
		{Table: HoldingRegisters, Address: 16, Type: String, Length: 4},
		{Table: HoldingRegisters, Address: 20, Type: Bit, Bit: 3},
		{Table: HoldingRegisters, Address: 21, Type: Int64},
		{Table: HoldingRegisters, Address: 30, Type: Float32},
		{Table: InputRegisters, Address: 0, Type: Uint32},
		{Table: Coils, Address: 3, Type: Bool},
		{Table: Coils, Address: 4, Type: Bool},
		{Table: DiscreteInputs, Address: 10, Type: Bool},
	}
	wants := []want{
		{num: float64(float32(123.456))}, {num: float64(float32(123.456))}, {num: -200}, {num: 65336},
		{num: -123456789}, {num: 0x0102030405060708}, {num: 1234.5678}, {str: "PUMP-7"}, {num: 1}, {num: -2},
		{status: StatusNotFinite}, {num: 16909060}, {num: 1}, {num: 0}, {num: 1},
	}
	return points, wants
}

func check(t *testing.T, out []sample.Sample, wants []want) {
	t.Helper()
	for i, w := range wants {
		v := out[i]
		switch {
		case w.status != 0:
			if Status(v.Status) != w.status || isGood(v) {
				t.Errorf("point %d: %+v, want status %d", i, v, w.status)
			}
		case !isGood(v):
			t.Errorf("point %d: status %v, want good", i, Status(v.Status))
		case w.str != "":
			if v.Str != w.str || !v.IsStr {
				t.Errorf("point %d: %q, want %q", i, v.Str, w.str)
			}
		case v.Num != w.num:
			t.Errorf("point %d: %v, want %v", i, v.Num, w.num)
		}
	}
}

func TestReadTransports(t *testing.T) {
	for _, tr := range []Transport{TCP, RTUOverTCP, ASCIIOverTCP, RTU, ASCII} {
		t.Run(string(tr), func(t *testing.T) {
			bank := modbustest.NewBank()
			srv := modbustest.StartServer(t, bank)
			addr, _ := endpoint(t, tr, srv)
			points, want := allTypes(bank)
			cfg := testConfig(tr, addr, 7)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			plan, err := NewPlan(points, cfg)
			if err != nil {
				t.Fatal(err)
			}
			pool := NewPool(testLogger(t), nil)
			t.Cleanup(func() { _ = pool.Close() })
			dev := newReader(pool, "dev-"+string(tr), cfg, plan)
			out := dev.out
			for range 3 {
				dev.Read(t.Context())
				check(t, out, want)
			}
			reqs := bank.Requests()
			if len(reqs) != 3*len(plan.Spans()) {
				t.Fatalf("server saw %d requests, want %d", len(reqs), 3*len(plan.Spans()))
			}
			for _, r := range reqs {
				if r.Unit != 7 {
					t.Fatalf("request for unit %d, want 7", r.Unit)
				}
			}
			if st := dev.State(); !st.Connected || st.LastSuccess.IsZero() || st.ConsecutiveFailures != 0 {
				t.Fatalf("state = %+v", st)
			}
		})
	}
}

func TestExceptionIsolation(t *testing.T) {
	for _, tr := range []Transport{TCP, RTUOverTCP, ASCIIOverTCP} {
		t.Run(string(tr), func(t *testing.T) {
			bank := modbustest.NewBank()
			srv := modbustest.StartServer(t, bank)
			addr, _ := endpoint(t, tr, srv)
			var points []Point
			for a := uint16(0); a < 10; a++ {
				points = append(points, Point{Table: HoldingRegisters, Address: a, Type: Uint16})
				bank.SetRegisters(modbustest.HoldingRegisters, a, 100+a)
			}
			bank.SetException(modbustest.HoldingRegisters, 6, 2)
			cfg := testConfig(tr, addr, 1)
			cfg.Quarantine = time.Hour
			plan, err := NewPlan(points, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(plan.Spans()); n != 1 {
				t.Fatalf("%d requests planned, want 1 merged", n)
			}
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			dev := newReader(pool, "iso", cfg, plan)
			out := dev.out

			dev.Read(t.Context())
			for i, v := range out {
				if i == 6 {
					if v.Status != 2 || v.Silent {
						t.Fatalf("point 6 = %+v, want exception 2", v)
					}
					continue
				}
				if !isGood(v) || v.Num != float64(100+i) {
					t.Fatalf("point %d = %+v, want %d", i, v, 100+i)
				}
			}
			if st := dev.State(); st.Quarantined != 1 {
				t.Fatalf("quarantined = %d, want 1", st.Quarantined)
			}
			if g := gauge(t, reg, "smelter_modbus_quarantined_points"); g != 1 {
				t.Fatalf("quarantined gauge = %v", g)
			}

			// next cycle: the bad address is left out, everything else good, no exception raised
			bank.ResetRequests()
			dev.Read(t.Context())
			for i, v := range out {
				if i == 6 {
					if Status(v.Status) != Status(2)|StatusQuarantined || v.Silent || v.Quality != telemetry.QualityBad {
						t.Fatalf("point 6 = %+v, want quarantined", v)
					}
				} else if !isGood(v) || v.Num != float64(100+i) {
					t.Fatalf("cycle 2 point %d = %+v", i, v)
				}
			}
			for _, r := range bank.Requests() {
				if r.Address <= 6 && 6 < r.Address+r.Quantity {
					t.Fatalf("quarantined address read in request %+v", r)
				}
			}
			if n := counter(t, reg, "smelter_modbus_errors_total", "kind", "exception"); n < 1 {
				t.Fatalf("exception errors = %v", n)
			}
		})
	}
}

func TestQuarantineRelease(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	points := []Point{
		{Table: InputRegisters, Address: 0, Type: Int16},
		{Table: InputRegisters, Address: 1, Type: Float32},
		{Table: InputRegisters, Address: 3, Type: Int16},
	}
	bank.SetRegisters(modbustest.InputRegisters, 0, 1, 0x4049, 0x0FDB, 3)
	bank.SetException(modbustest.InputRegisters, 2, 2)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Quarantine = 20 * time.Millisecond
	plan, err := NewPlan(points, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "rel", cfg, plan)
	out := dev.out
	dev.Read(t.Context())
	if out[1].Status != 2 || out[0].Num != 1 || out[2].Num != 3 {
		t.Fatalf("first read = %+v", out)
	}
	// still failing when retried alone: stays bad with the exception code
	wait.For(t, 2*time.Second, "retry alone", func() bool {
		dev.Read(t.Context())
		return Status(out[1].Status) == Status(2)|StatusQuarantined && !out[1].Silent
	})
	bank.SetException(modbustest.InputRegisters, 2, 0)
	wait.For(t, 5*time.Second, "release", func() bool {
		dev.Read(t.Context())
		return isGood(out[1])
	})
	if got := out[1].Num; math.Abs(got-math.Pi) > 1e-6 {
		t.Fatalf("released point = %v", got)
	}
	if st := dev.State(); st.Quarantined != 0 {
		t.Fatalf("quarantined = %d after release", st.Quarantined)
	}
	bank.ResetRequests()
	dev.Read(t.Context())
	if reqs := bank.Requests(); len(reqs) != 1 || reqs[0].Quantity != 4 {
		t.Fatalf("after release requests = %+v, want one merged read of 4", reqs)
	}
}

func TestExceptionInGap(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	points := []Point{
		{Table: HoldingRegisters, Address: 0, Type: Int16},
		{Table: HoldingRegisters, Address: 1, Type: Int16},
		{Table: HoldingRegisters, Address: 10, Type: Int16},
		{Table: HoldingRegisters, Address: 11, Type: Int16},
	}
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 5, 6)
	bank.SetRegisters(modbustest.HoldingRegisters, 10, 7, 8)
	bank.SetException(modbustest.HoldingRegisters, 5, 2) // unmapped register in the gap
	cfg := testConfig(TCP, srv.Addr, 1)
	plan, err := NewPlan(points, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "gap", cfg, plan)
	out := dev.out
	for cycle := range 2 {
		bank.ResetRequests()
		dev.Read(t.Context())
		for i, w := range []float64{5, 6, 7, 8} {
			if !isGood(out[i]) || out[i].Num != w {
				t.Fatalf("cycle %d point %d = %+v", cycle, i, out[i])
			}
		}
		if cycle == 1 && len(bank.Requests()) != 2 {
			t.Fatalf("split not kept: %+v", bank.Requests())
		}
	}
	if st := dev.State(); st.Quarantined != 0 {
		t.Fatalf("a gap exception quarantined %d points", st.Quarantined)
	}
}

func TestDeviceWideException(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	bank.SetException(modbustest.HoldingRegisters, 1, 6) // busy: about the device, not an address
	points := regs(Int16, 0, 1, 2)
	cfg := testConfig(TCP, srv.Addr, 1)
	plan, _ := NewPlan(points, cfg)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "busy", cfg, plan)
	out := dev.out
	dev.Read(t.Context())
	for i, v := range out {
		if v.Status != 6 {
			t.Fatalf("point %d = %+v, want exception 6", i, v)
		}
	}
	if n := len(bank.Requests()); n != 1 {
		t.Fatalf("%d requests, want 1 (no bisection for exception 6)", n)
	}
	if dev.State().Quarantined != 0 {
		t.Fatal("busy device quarantined points")
	}
}

func TestTimeoutThenRecover(t *testing.T) {
	for _, tr := range []Transport{TCP, RTUOverTCP} {
		t.Run(string(tr), func(t *testing.T) {
			bank := modbustest.NewBank()
			srv := modbustest.StartServer(t, bank)
			addr, _ := endpoint(t, tr, srv)
			bank.SetRegisters(modbustest.HoldingRegisters, 0, 11)
			bank.SetRegisters(modbustest.InputRegisters, 0, 22)
			points := []Point{
				{Table: HoldingRegisters, Address: 0, Type: Uint16},
				{Table: InputRegisters, Address: 0, Type: Uint16},
			}
			cfg := testConfig(tr, addr, 1)
			cfg.Timeout = 100 * time.Millisecond
			plan, _ := NewPlan(points, cfg)
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			dev := newReader(pool, "slow", cfg, plan)
			out := dev.out

			// the first reply comes late: a stale answer is on its way when the next request goes out
			bank.SetDelay(250*time.Millisecond, 1)
			dev.Read(t.Context())
			for i, v := range out {
				if Status(v.Status) != StatusTimeout || !v.Silent {
					t.Fatalf("point %d = %+v, want timeout", i, v)
				}
			}
			if n := len(bank.Requests()); n != 1 {
				t.Fatalf("%d requests after a timeout, want 1 (rest of the cycle fails fast)", n)
			}
			// reads resume by themselves, with the right values in the right places
			wait.For(t, 3*time.Second, "recovery", func() bool {
				dev.Read(t.Context())
				return isGood(out[0])
			})
			for range 5 {
				dev.Read(t.Context())
				if out[0].Num != 11 || out[1].Num != 22 || !isGood(out[0]) || !isGood(out[1]) {
					t.Fatalf("after recovery = %+v", out)
				}
			}
			// On RTU the late reply (250ms) is beyond timeout + silence
			// (224ms): it comes while the next request is outstanding and
			// is held, then discarded with the real answer if that follows
			// in the held window (a second timeout), never published.
			if n := counter(t, reg, "smelter_modbus_errors_total", "kind", "timeout"); n < 1 || n > 2 || tr == TCP && n != 1 {
				t.Fatalf("timeout errors = %v, want 1 (2 on RTU)", n)
			}
		})
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 42)
	cfg := testConfig(TCP, srv.Addr, 1)
	plan, _ := NewPlan(regs(Uint16, 0, 50), cfg)
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "restart", cfg, plan)
	out := dev.out
	dev.Read(t.Context())
	if !isGood(out[0]) || out[0].Num != 42 {
		t.Fatalf("first read = %+v", out[0])
	}
	srv.Stop()
	wait.For(t, 3*time.Second, "connection failure", func() bool {
		dev.Read(t.Context())
		return Status(out[0].Status) == StatusConnection && Status(out[1].Status) == StatusConnection
	})
	if dev.State().Connected {
		t.Fatal("state says connected while the server is down")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "reads to resume", func() bool {
		dev.Read(t.Context())
		return isGood(out[0]) && isGood(out[1])
	})
	if out[0].Num != 42 {
		t.Fatalf("after restart = %+v", out[0])
	}
	if st := dev.State(); !st.Connected || st.ConsecutiveFailures != 0 || st.LastError == nil {
		t.Fatalf("state = %+v", st)
	}
}

func TestBackoffFailsFastWithoutIO(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	srv.Stop() // nothing listens: every connect is refused
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	plan, _ := NewPlan(regs(Uint16, 0, 200, 400), cfg)
	reg := prometheus.NewRegistry()
	pool := NewPool(testLogger(t), NewMetrics(reg))
	t.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "down", cfg, plan)
	out := dev.out
	for range 50 {
		dev.Read(t.Context())
		for i, v := range out {
			if Status(v.Status) != StatusConnection || !v.Silent {
				t.Fatalf("point %d = %+v", i, v)
			}
		}
	}
	if n := counter(t, reg, "smelter_modbus_errors_total", "kind", "connection"); n != 1 {
		t.Fatalf("%v connection attempts in 50 reads during backoff, want 1", n)
	}
	if st := dev.State(); st.ConsecutiveFailures != 50 || !errors.Is(st.LastError, StatusConnection) {
		t.Fatalf("state = %+v", st)
	}
}

func TestReadCanceled(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Timeout = 30 * time.Second
	plan, _ := NewPlan(regs(Uint16, 0, 300), cfg)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	dev := newReader(pool, "cancel", cfg, plan)
	out := dev.out
	bank.SetDelay(3*time.Second, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		wait.For(t, 5*time.Second, "request in flight", func() bool { return len(bank.Requests()) > 0 })
		cancel()
	}()
	start := time.Now()
	dev.Read(ctx)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Read took %v after cancel", elapsed)
	}
	for i, v := range out {
		if Status(v.Status) != StatusCanceled {
			t.Fatalf("point %d = %+v", i, v)
		}
	}
	// the device is fine afterwards
	dev.Read(t.Context())
	if !isGood(out[0]) || !isGood(out[1]) {
		t.Fatalf("after cancel = %+v", out)
	}
}

func TestFramingErrorRecovers(t *testing.T) {
	for _, tr := range []Transport{RTUOverTCP, ASCIIOverTCP} {
		t.Run(string(tr), func(t *testing.T) {
			bank := modbustest.NewBank()
			srv := modbustest.StartServer(t, bank)
			addr, br := endpoint(t, tr, srv)
			bank.SetRegisters(modbustest.HoldingRegisters, 0, 9)
			cfg := testConfig(tr, addr, 1)
			plan, _ := NewPlan(regs(Uint16, 0), cfg)
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			dev := newReader(pool, "crc", cfg, plan)
			out := dev.out
			br.CorruptReplies(1)
			dev.Read(t.Context())
			if Status(out[0].Status) != StatusChecksum || !out[0].Silent || !errors.Is(dev.res.err, StatusChecksum) {
				t.Fatalf("corrupt reply = %+v", out[0])
			}
			dev.Read(t.Context())
			if !isGood(out[0]) || out[0].Num != 9 {
				t.Fatalf("next read = %+v", out[0])
			}
			if n := counter(t, reg, "smelter_modbus_errors_total", "kind", "checksum"); n != 1 {
				t.Fatalf("framing errors = %v", n)
			}
		})
	}
}

func TestSharedConnection(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	br := modbustest.StartBridge(t, srv.Addr, modbustest.RTU)
	bank.SetRegisters(modbustest.HoldingRegisters, 0, 1, 2, 3)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for unit := uint8(1); unit <= 4; unit++ {
		cfg := testConfig(RTUOverTCP, br.Addr, unit)
		plan, _ := NewPlan(regs(Uint16, 0, 1, 2), cfg)
		dev := newReader(pool, "unit", cfg, plan)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				out := dev.Read(t.Context())
				for i, v := range out {
					if !isGood(v) || v.Num != float64(i+1) {
						errs <- fmt.Sprintf("unit %d point %d = %+v", dev.d.cfg.UnitID, i, v)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := len(pool.links); n != 1 {
		t.Fatalf("%d connections for one RTU gateway", n)
	}
	units := map[uint8]int{}
	for _, r := range bank.Requests() {
		units[r.Unit]++
	}
	if len(units) != 4 || units[1] != 25 || units[4] != 25 {
		t.Fatalf("requests by unit = %v", units)
	}
}

func TestPoolClose(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	pool := NewPool(nil, nil)
	cfg := testConfig(TCP, srv.Addr, 1)
	plan, _ := NewPlan(regs(Uint16, 0), cfg)
	dev := newReader(pool, "c", cfg, plan)
	out := dev.out
	dev.Read(t.Context())
	if !isGood(out[0]) {
		t.Fatal(dev.res.err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	dev.Read(t.Context())
	if Status(out[0].Status) != StatusConnection {
		t.Fatalf("after Close = %+v", out[0])
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, match func(map[string]string) bool) float64 {
	t.Helper()
	sum, _ := metricSeries(t, reg, name, match)
	return sum
}

// metricSeries returns the sum of reg's series of name whose labels match,
// and how many there are.
func metricSeries(t *testing.T, reg *prometheus.Registry, name string, match func(map[string]string) bool) (float64, int) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if !match(labels) {
				continue
			}
			n++
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum, n
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	return metricValue(t, reg, name, func(l map[string]string) bool { return l[label] == value })
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return metricValue(t, reg, name, func(map[string]string) bool { return true })
}

// TestReadSetsEveryEntry: a read's output buffer is lent by the pool and
// may hold another device's samples; whatever the replies (good, address
// exceptions, quarantine, silence), nothing of it survives the read.
func TestReadSetsEveryEntry(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	bank.SetException(modbustest.HoldingRegisters, 2, 2)
	srv := modbustest.StartServer(t, bank)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	plan, err := NewPlan(regs(Uint16, 0, 1, 2, 3, 10, 11), testConfig(TCP, srv.Addr, 1))
	if err != nil {
		t.Fatal(err)
	}
	poison := sample.Sample{Num: 12345, Quality: telemetry.QualityGood, Index: 99}
	for _, addr := range []string{srv.Addr, "127.0.0.1:1"} {
		r := newReader(pool, "d-"+addr, testConfig(TCP, addr, 1), plan)
		for cycle := range 3 { // isolation, then quarantine waiting and re-probes
			for i := range r.out {
				r.out[i] = poison
			}
			for i, s := range r.Read(t.Context()) {
				if s.Num == poison.Num || s.Index != i {
					t.Fatalf("%s cycle %d: entry %d = %+v: left from before the read", addr, cycle, i, s)
				}
			}
		}
	}
}

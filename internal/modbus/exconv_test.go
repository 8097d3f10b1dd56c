package modbus

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// TestConverterExceptionThenRelayedAnswer (review mbconv F1): a cheap
// Modbus TCP-to-RTU converter answers an exception at once (4 server device
// failure, 6 busy, 3 illegal data value) when its slave is slow, then
// relays the slave's real answer, when it comes on its bus, as the reply to
// the next request (or a later one), with that request's transaction id,
// whichever unit it asks. Units 1 and 2 read holding registers 10 and 20 in
// one-register requests on one connection; every 5th request of unit 1 is
// answered so. No value may be published good that is not its register's
// (the recorders fail the test: before the fix, 1010 was published for
// unit 2's register 10 and for unit 1's register 20), the exception is
// unit 1's published answer, the owed answers are counted against unit 1,
// and unit 2 keeps reading good.
func TestConverterExceptionThenRelayedAnswer(t *testing.T) {
	for _, cs := range []struct {
		exc      byte
		copyUnit bool
		after    int
	}{{4, true, 1}, {6, true, 1}, {3, true, 2}, {4, false, 1}} {
		t.Run(fmt.Sprintf("exception %d, copy request unit %v, relayed %d later", cs.exc, cs.copyUnit, cs.after), func(t *testing.T) {
			c := startRelayConverter(t, cs.copyUnit, 5, cs.after, cs.exc)
			reg := prometheus.NewRegistry()
			recs := gatewayUnitsIn(t, NewPool(testLogger(t), NewMetrics(reg)), c.Addr, func(cfg *Config) {
				cfg.Timeout = 200 * time.Millisecond
				cfg.MaxGap = 0 // two one-register requests per read
			}, map[byte][]uint16{1: {10, 20}, 2: {10, 20}})
			wait.For(t, 20*time.Second, "20 late answers relayed to other requests", func() bool {
				return c.foreign.Load() >= 20
			})
			n2 := len(recs[2].snapshot())
			wait.For(t, 20*time.Second, "unit 2 good again", func() bool { return goodSince(recs[2], n2) >= 5 })
			if !sawCause(recs[1], Status(cs.exc)) {
				t.Errorf("unit 1's exception %d never published", cs.exc)
			}
			if n := counter(t, reg, "smelter_modbus_owed_answers_total", "device", "unit-1"); n < 20 {
				t.Errorf("unit 1's owed answers counted %v times, want >= 20 (one per exception)", n)
			}
		})
	}
}

// TestDirectDeviceExceptionCostBounded (review mbconv F1, the cost): a
// Modbus TCP device without a converter maps holding 0..9 but 5, which
// raises exception 2. Its read (0..9, one request) is bisected, register 5
// quarantined, the others read good; every exception puts the request's
// shape in doubt on the connection (a converter could have sent it), so
// the reads of that shape are proven for owedFor (30 x timeout) after the
// last exception. Once that has passed, a read costs its plan's requests
// again: the doubt is not forever. (A bound on the fix's cost: it passes
// without the fix too.)
func TestDirectDeviceExceptionCostBounded(t *testing.T) {
	bank := modbustest.NewBank()
	for a := uint16(0); a < 10; a++ {
		bank.SetRegisters(modbustest.HoldingRegisters, a, 1000+a)
	}
	bank.SetException(modbustest.HoldingRegisters, 5, 2)
	srv := modbustest.StartServer(t, bank)
	cfg := testConfig(TCP, srv.Addr, 1)
	cfg.Timeout = 40 * time.Millisecond // owedFor 1.2s
	rec, reg5 := readDirect(t, cfg)
	// the doubt expires: a run of 10 reads costs the plan's three requests
	// each again (0+5, and 6+1, 7+3: the bisection split the gap for
	// good; one more may be in flight when counted)
	untilPlanCost(t, rec, func() int { return len(bank.Requests()) }, 3)
	if n := goodExc2Where(rec, reg5); n < 10 {
		t.Fatalf("%d reads with 9 points good and register 5 exception 2, want >= 10", n)
	}
}

// readDirect reads holding 0..9 of unit 1 through cfg (register a holds
// 1000 + a, 5 raises exception 2; quarantined for good) every 20ms, and
// returns its recorder (failing the test on a wrong good value) once 9
// points read good and register 5 exception 2 in 3 reads, with the test
// for register 5's index.
func readDirect(t *testing.T, cfg Config) (*recorder, func(int) bool) {
	t.Helper()
	cfg.Quarantine = time.Hour // no re-probe in the test
	grp, want := unitGroup(1, 20*time.Millisecond, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	delete(want, 5)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	src, err := pool.Source("direct", cfg, []Group{grp})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, want: want}
	reg5 := func(i int) bool { return i == 5 }
	rec.run(src)
	wait.For(t, 10*time.Second, "9 points good and register 5 quarantined with exception 2", func() bool {
		return goodExc2Where(rec, reg5) >= 3
	})
	return rec, reg5
}

// untilPlanCost waits for 10 reads of rec in a row that cost at most per
// requests each (requests counts them on the device's side; one more read
// may be in flight when counted).
func untilPlanCost(t *testing.T, rec *recorder, requests func() int, per int) {
	t.Helper()
	base, baseReqs := len(rec.snapshot()), requests()
	wait.For(t, 20*time.Second, fmt.Sprintf("10 reads in a row at %d requests each", per), func() bool {
		cycles, reqs := len(rec.snapshot())-base, requests()-baseReqs
		if cycles < 10 {
			return false
		}
		if reqs <= per*cycles+per {
			return true
		}
		base, baseReqs = len(rec.snapshot()), requests()
		return false
	})
}

package gateway

import (
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestModbusReadingsStampedOnTheGatewayClock (review 13, F7): a Modbus
// reading's ts is when its reply arrived, on the gateway's data clock
// (Options.Now, which reaches the driver through driver.Env.Now), not the
// wall clock and not the end of the read. The e2e device is read in two
// requests (holding 0..12, then input 0..3); the data clock, 2 h behind the
// wall clock as the demo's plant clock, steps one minute when the device
// receives the input request: after the holding reply arrived, before the
// input reply. Fails without the stamp (every ts the clock at the read's
// end: the same for both) and with a wall-clock stamp (2 h ahead).
func TestModbusReadingsStampedOnTheGatewayClock(t *testing.T) {
	r := newRig(t, "")
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
	var mu sync.Mutex
	clock := t0
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	r.bank.OnRequest(func(q modbustest.Request) {
		if q.Table == modbustest.InputRegisters {
			mu.Lock()
			clock = clock.Add(time.Minute)
			mu.Unlock()
		}
	})
	runGatewayWith(t, r.cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t), Now: now}, nil)
	nc := subscribeNATS(t, r.nats.URL())
	wait.For(t, 15*time.Second, "3 batches", func() bool { b, _, _ := nc.snapshot(); return len(b) >= 3 })
	batches, _, errs := nc.snapshot()
	if len(errs) > 0 {
		t.Fatalf("undecodable messages: %v", errs)
	}
	end := now().UnixMilli()
	inputs := map[string]bool{"input_power": true, "free_air_delivery": true}
	for _, b := range batches[:3] {
		var holding, input int64
		for _, rd := range b.Readings {
			if rd.Quality != telemetry.QualityGood {
				t.Fatalf("batch %d: %s %s: want good", b.Seq, rd.Signal, rd.Quality)
			}
			if rd.TS < t0.UnixMilli() || rd.TS > end {
				t.Errorf("batch %d: %s ts %d outside the gateway clock's %d..%d (the wall clock is 2 h ahead)", b.Seq, rd.Signal, rd.TS, t0.UnixMilli(), end)
			}
			ts := &holding
			if inputs[rd.Signal] {
				ts = &input
			}
			if *ts != 0 && *ts != rd.TS {
				t.Errorf("batch %d: %s ts %d, its request's other readings %d", b.Seq, rd.Signal, rd.TS, *ts)
			}
			*ts = rd.TS
		}
		if input-holding != time.Minute.Milliseconds() {
			t.Errorf("batch %d: holding readings ts %d, input readings %d: %d ms apart, want %d (the gateway clock stepped between the replies)",
				b.Seq, holding, input, input-holding, time.Minute.Milliseconds())
		}
	}
}

package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestExceptionOnlyDeviceIsAliveAndBad runs a real Modbus server that
// answers every request with exception 2: the device is answering, so it
// never dies, and its readings are bad (never stale) on every batch, the
// first with the exception code itself (issue 16).
func TestExceptionOnlyDeviceIsAliveAndBad(t *testing.T) {
	r := newRig(t, "")
	for _, a := range []uint16{0, 1, 2, 10, 12} {
		r.bank.SetException(modbustest.HoldingRegisters, a, 2)
	}
	for _, a := range []uint16{0, 1, 2, 3} {
		r.bank.SetException(modbustest.InputRegisters, a, 2)
	}
	g := runGateway(t, r.cfg)
	nc := subscribeNATS(t, r.nats.URL())
	// 100 ms poll interval: 12 batches span well over 3 intervals
	wait.For(t, 20*time.Second, "12 batches", func() bool { b, _, _ := nc.snapshot(); return len(b) >= 12 })
	batches, _, _ := nc.snapshot()
	for i, b := range batches {
		if len(b.Readings) != 6 {
			t.Fatalf("batch %d has %d readings, want all 6", i, len(b.Readings))
		}
		for _, rd := range b.Readings {
			if rd.Quality != telemetry.QualityBad || rd.HasValue() || rd.Status == 0 {
				t.Fatalf("batch %d: %+v, want bad with its status", i, rd)
			}
			if i == 0 && rd.Status != 2 {
				t.Errorf("first batch: %s status %d, want the exception code 2", rd.Signal, rd.Status)
			}
		}
	}
	if n := nc.deathCount(); n != 0 {
		t.Errorf("%d death notices for a device that answers every request", n)
	}
	st := g.Status().Devices[0]
	if st.Dead || st.LastReply.IsZero() || !strings.Contains(st.LastError, "exception") {
		t.Errorf("device status = %+v", st)
	}
}

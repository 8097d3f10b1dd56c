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

// TestSilentModbusDeviceDiesAndComesBack: when the server goes away the
// readings turn bad then stale, one death is published and /status names
// the cause; when it is back, a birth and good readings follow.
func TestSilentModbusDeviceDiesAndComesBack(t *testing.T) {
	r := newRig(t, "")
	g := runGateway(t, r.cfg)
	nc := subscribeNATS(t, r.nats.URL())
	wait.For(t, 15*time.Second, "good batches", func() bool { b, _, _ := nc.snapshot(); return len(b) >= 2 })
	r.server.Stop()
	wait.For(t, 15*time.Second, "a death notice", func() bool { return nc.deathCount() == 1 })
	wait.For(t, 15*time.Second, "stale readings", func() bool {
		b, _, _ := nc.snapshot()
		last := b[len(b)-1]
		return last.Readings[0].Quality == telemetry.QualityStale
	})
	st := g.Status().Devices[0]
	if !st.Dead || st.LastError == "" {
		t.Errorf("status after the server stopped = %+v", st)
	}
	_, births, _ := nc.snapshot()
	if err := r.server.Start(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "a birth and good readings again", func() bool {
		b, bs, _ := nc.snapshot()
		return len(bs) > len(births) && b[len(b)-1].Readings[0].Quality == telemetry.QualityGood
	})
	if nc.deathCount() != 1 || g.Status().Devices[0].Dead {
		t.Errorf("deaths %d, status %+v", nc.deathCount(), g.Status().Devices[0])
	}
}

package modbus

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestNoiseAfterAnotherUnitsReply (review 18 M-2): on an RTU-over-TCP
// line (a converter that forwards its serial side in order), unit 2's
// every reply is followed by 4 bytes that are no frame (a transceiver's
// glitch), at once or a little later, so that they reach the gateway
// ahead of unit 1's next answer (or the start of a frame of unit 1 whose
// byte count runs past that answer). Before, unit 1's reply read started with
// them: a checksum error against unit 1, about half its reads bad. Now
// the bytes are the trail of unit 2's frame: counted against unit 2
// (smelter_modbus_noise_total, suspect replies; unit 2's read discarded,
// in doubt), unit 1's answer behind them is not taken but asked for again
// on the quiet line: unit 1 reads good every time, right, with no error
// counted. Unit 2 is never published good with a wrong value.
func TestNoiseAfterAnotherUnitsReply(t *testing.T) {
	for _, tc := range []struct {
		noise []byte
		after time.Duration
	}{
		{[]byte{0x00, 0xff, 0x7e, 0x00}, 0},
		{[]byte{0x00, 0xff, 0x7e, 0x00}, 2 * time.Millisecond},
		{[]byte{0x00, 0xff, 0x7e, 0x00}, 20 * time.Millisecond},
		// the start of a frame of unit 1 whose byte count runs past its
		// answer: the reader waits for the timeout, then finds the answer
		{[]byte{0x01, 0x03, 0xf0}, 2 * time.Millisecond},
	} {
		after := tc.after
		t.Run(fmt.Sprintf("% x %v after", tc.noise, after), func(t *testing.T) {
			bank := modbustest.NewBank()
			fillBank(bank)
			line := startRTULineTrail(t, bank, func(uint8, int) time.Duration { return 0 },
				func(unit uint8, _ int) ([]byte, time.Duration) {
					if unit == 2 {
						return tc.noise, after
					}
					return nil, 0
				})
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			short := fastLine
			iv := 100 * time.Millisecond
			recs, stop := sharedUnits(t, pool, RTUOverTCP, line.Addr, []sharedUnit{
				{"healthy", 1, iv, []uint16{0, 1, 2, 3}, short},
				{"noisy", 2, iv, []uint16{10, 11, 12, 13}, short},
			})
			for _, dev := range []string{"healthy", "noisy"} {
				if _, n := metricSeries(t, reg, "smelter_modbus_noise_total", func(l map[string]string) bool { return l["device"] == dev }); n == 0 {
					t.Errorf("no noise series of %s at the start", dev)
				}
			}
			noise := func(dev string) float64 {
				return metricValue(t, reg, "smelter_modbus_noise_total", func(l map[string]string) bool { return l["device"] == dev })
			}
			suspect := func(dev string) float64 {
				return metricValue(t, reg, "smelter_modbus_suspect_replies_total", func(l map[string]string) bool { return l["device"] == dev })
			}
			wait.For(t, 30*time.Second, "10 suspect replies counted against the noisy unit", func() bool { return suspect("noisy") >= 10 })
			stop()
			healthy := recs[0].snapshot()
			for _, c := range healthy {
				for _, s := range c.Samples {
					if s.Quality != telemetry.QualityGood {
						t.Errorf("healthy unit's read at %v: %v: want every reading good", c.Start.Format("15:04:05.000"), c.Err)
						break
					}
				}
			}
			if len(healthy) < 5 {
				t.Errorf("healthy unit read %d times", len(healthy))
			}
			errs := metricValue(t, reg, "smelter_modbus_errors_total", func(l map[string]string) bool { return l["device"] == "healthy" })
			if errs != 0 || noise("healthy") != 0 || suspect("healthy") != 0 {
				t.Errorf("healthy unit blamed: %v errors, %v noise runs, %v suspect replies", errs, noise("healthy"), suspect("healthy"))
			}
			if after > 0 && noise("noisy") == 0 {
				// at once, the bytes come in the noisy read's closing listen (quietAfter)
				t.Error("no noise run counted against the noisy unit")
			}
			t.Logf("healthy unit: %d reads; noisy unit: %d noise runs, %d suspect replies counted", len(healthy), int(noise("noisy")), int(suspect("noisy")))
		})
	}
}

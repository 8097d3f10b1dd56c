package modbus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestStrayUnitNotChargedToAskedUnit (attack run MEDIUM-3): on a shared
// RTU line (a converter, and a serial line on a pty) units 1 and 2 are
// read; unit 9, which no device reads (misaddressed, or answering for
// another master), answers every third request of unit 1 with its own
// well-formed frame (right function, byte count and CRC, other values)
// ahead of unit 1's answer. Before, that frame was a wrong_unit error of
// unit 1: its points bad (264), its error counter charged, its read a
// failure. Now the frame is counted as a stray frame of unit 9
// (smelter_modbus_stray_frames_total{unit="9"}), discarded, and unit 1's
// read is sent again on the quiet line: both units read good, with their
// own values, and no error is counted against either. When unit 9
// answers every request of unit 1 (every: 1), unit 1's read fails after
// three sends naming both units (unit 1 cannot be told from a unit
// answering with another id itself) and unit 2 is not disturbed.
func TestStrayUnitNotChargedToAskedUnit(t *testing.T) {
	for _, tc := range []struct {
		tr    Transport
		every int
	}{{RTUOverTCP, 3}, {RTU, 3}, {RTUOverTCP, 1}} {
		tr, every := tc.tr, tc.every
		t.Run(fmt.Sprintf("%v every %d", tr, every), func(t *testing.T) {
			script := func(unit byte, n int, start, qty uint16) [][]byte {
				switch {
				case unit == 1 && n%every == 0:
					return [][]byte{rtuHolding(9, start, qty, 5000), rtuHolding(1, start, qty, 1000)}
				case unit == 1 || unit == 2:
					return [][]byte{rtuHolding(unit, start, qty, 1000)}
				}
				return nil
			}
			var addr string
			if tr == RTU {
				addr = scriptedSerialRTU(t, script)
			} else {
				addr = scriptedRTU(t, script)
			}
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			iv := 100 * time.Millisecond
			// every reading must be good: a timeout long enough for a pty's
			// replies on a loaded machine (128-231 ms seen at load 11
			// against fastLine's 100 ms)
			line := func(c *Config) { fastLine(c); c.Timeout = time.Second }
			recs, stop := sharedUnits(t, pool, tr, addr, []sharedUnit{
				{"honest", 1, iv, []uint16{0, 1}, line},
				{"other", 2, iv, []uint16{10, 11}, line},
			})
			stray := func() float64 {
				return metricValue(t, reg, "smelter_modbus_stray_frames_total", func(l map[string]string) bool { return l["unit"] == "9" })
			}
			wait.For(t, 30*time.Second, "30 reads of unit 1", func() bool { return len(recs[0].snapshot()) >= 30 })
			stop()
			if stray() < 5 {
				t.Errorf("%v stray frames of unit 9 counted, want >= 5", stray())
			}
			if every == 1 {
				// every send met by unit 9's frame: unit 1 cannot be told
				// from a unit answering with another id itself; its read
				// fails naming both units (as TestPersistentMismatches)
				for _, c := range recs[0].snapshot() {
					if !errors.Is(c.Err, StatusWrongUnit) || !strings.Contains(c.Err.Error(), "reply from unit 9 to a request for unit 1") {
						t.Errorf("honest: read at %v: %v: want the wrong unit named", c.Start.Format("15:04:05.000"), c.Err)
						break
					}
				}
			}
			for i, dev := range []string{"honest", "other"} {
				if every == 1 && i == 0 {
					continue
				}
				for _, c := range recs[i].snapshot() {
					for _, s := range c.Samples {
						if s.Quality != telemetry.QualityGood {
							t.Errorf("%s: read at %v: %v: want every reading good", dev, c.Start.Format("15:04:05.000"), c.Err)
							break
						}
					}
				}
				errs := metricValue(t, reg, "smelter_modbus_errors_total", func(l map[string]string) bool { return l["device"] == dev })
				if errs != 0 {
					t.Errorf("%s charged with %v errors for unit 9's frames", dev, errs)
				}
			}
			t.Logf("%v stray frames of unit 9; honest unit %d reads", stray(), len(recs[0].snapshot()))
		})
	}
}

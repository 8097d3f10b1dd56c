package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/wait"
)

// TestSilentConverterSaysSo (attack run LOW-3): an RTU-over-TCP converter
// that accepts the connection but behind which no unit ever answers: the
// timeout says the converter accepted the connection and nothing came
// (check the line and the unit id). Once any unit has answered on the
// connection, a silent unit's timeout is the plain one.
func TestSilentConverterSaysSo(t *testing.T) {
	const says = "accepted the TCP connection, but nothing has been received on it since"
	for _, withNeighbour := range []bool{false, true} {
		t.Run(fmt.Sprintf("neighbour answers %v", withNeighbour), func(t *testing.T) {
			addr := scriptedRTU(t, func(unit byte, _ int, start, qty uint16) [][]byte {
				if unit == 2 && withNeighbour {
					return [][]byte{rtuHolding(unit, start, qty, 1000)}
				}
				return nil
			})
			pool := NewPool(testLogger(t), NewMetrics(prometheus.NewRegistry()))
			t.Cleanup(func() { _ = pool.Close() })
			units := []sharedUnit{{"silent", 1, 100 * time.Millisecond, []uint16{0}, fastLine}}
			if withNeighbour {
				units = append(units, sharedUnit{"answering", 2, 100 * time.Millisecond, []uint16{10}, fastLine})
			}
			recs, stop := sharedUnits(t, pool, RTUOverTCP, addr, units)
			from := 0 // the silent unit's reads from then on
			if withNeighbour {
				wait.For(t, 30*time.Second, "a good read of unit 2", func() bool { return goodSince(recs[1], 0) > 0 })
				from = len(recs[0].snapshot())
			}
			var last error // the last read that timed out on the wire (not one backing off)
			wait.For(t, 30*time.Second, "a read of the silent unit timing out", func() bool {
				for _, c := range recs[0].snapshot()[from:] {
					if c.Err != nil && strings.Contains(c.Err.Error(), "no reply within") {
						last = c.Err
					}
				}
				return last != nil
			})
			stop()
			if got := strings.Contains(last.Error(), says); got == withNeighbour {
				t.Errorf("silent unit's last read: %v: converter named silent %v, want %v", last, got, !withNeighbour)
			}
		})
	}
}

package modbus

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestLateEveryThirdRequestLaterPointRead (review 18 L-1): a unit alone on
// an RTU-over-TCP line answers every third request 200 ms late, beyond
// timeout + silence (100 + 50 ms); its read is two one-register requests
// (points 0 and 1, far apart), every 200 ms. The request after a late one
// is in doubt: its held answer's window catches the late reply and both
// are discarded. Before, that discard stopped the read as if the unit were
// silent, so point 1 was only ever asked in the reads where its request was
// the late one: 1 good reading (the first read) in 30 s. Now the read goes
// on after such a discard (the unit spoke): point 1's request, proven by
// its own quiet window, reads good again and again. Point 0, whose
// requests are now each either the late one or the one in doubt, is never
// published with another value (recorder); the late reply of the same
// request is not taken for its answer (TestSuspectLateReplyWarns).
func TestLateEveryThirdRequestLaterPointRead(t *testing.T) {
	bank := modbustest.NewBank()
	fillBank(bank)
	line := startRTULine(t, bank, func(_ uint8, n int) time.Duration {
		if n%3 == 0 {
			return 200 * time.Millisecond
		}
		return 0
	})
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	recs, stop := sharedUnits(t, pool, RTUOverTCP, line.Addr, []sharedUnit{
		{"late", 1, 200 * time.Millisecond, []uint16{0, 20}, fastLine},
	})
	goodBy := func() map[int]int {
		m := map[int]int{}
		for _, c := range recs[0].snapshot() {
			for _, s := range c.Samples {
				if s.Quality == telemetry.QualityGood {
					m[s.Index]++
				}
			}
		}
		return m
	}
	wait.For(t, 30*time.Second, "point 1 read good 4 times", func() bool { return goodBy()[1] >= 4 })
	stop()
	t.Logf("%d reads, good readings per point %v", len(recs[0].snapshot()), goodBy())
}

package modbus

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/wait"
)

// queuedExc is an RTU unit 1 that maps holding registers 10 and 20 only
// (register a holds 1000 + a; any other read is answered with exception 2
// at once) and answers every every-th read of them with exception 4 while
// its real answer goes to the end of its output queue (review mb-proof
// MEDIUM-1: a unit, or a converter for it, with a queue of replies). While
// the queue holds anything, each read's own answer joins its end and the
// answer at its head is sent instead: the unit falls one request further
// behind with each exception. twins counts the answers sent to another
// register's read right after the same register's answer was sent to a
// read (two owed answers with the same bytes in a row).
type queuedExc struct {
	mu       sync.Mutex
	queue    [][]byte
	of       []uint16
	mapped   int
	lastSent uint16
	relayed  atomic.Int64
	twins    atomic.Int64
	requests atomic.Int64
}

func (d *queuedExc) script(every int) func(unit byte, n int, start, qty uint16) [][]byte {
	return func(unit byte, _ int, start, qty uint16) [][]byte {
		d.requests.Add(1)
		if unit != 1 {
			return nil
		}
		if qty != 1 || start != 10 && start != 20 {
			return [][]byte{rtuException(1, 3, 2)}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.mapped++
		d.queue, d.of = append(d.queue, rtuHolding(1, start, qty, 1000)), append(d.of, start)
		if d.mapped%every == 0 {
			return [][]byte{rtuException(1, 3, 4)}
		}
		out, of := d.queue[0], d.of[0]
		d.queue, d.of = d.queue[1:], d.of[1:]
		if of != start {
			d.relayed.Add(1)
			if of == d.lastSent {
				d.twins.Add(1)
			}
		}
		d.lastSent = of
		return [][]byte{out}
	}
}

// TestQueuedOwedAnswersNeverAgree (review mb-proof MEDIUM-1): a unit
// that falls one request further behind with each exception (queuedExc)
// sends two owed answers of the same register, with the same bytes, to
// both sends of a one-register read whose reads of another length are
// all answered with exception 2 (no register beside it is mapped): the
// read sent again "agreed" and another register's value was published
// good (the recorder fails the test). Now the read must be answered alike
// once more than the answers of its shape the unit may still owe, and
// reads of another length are only sent with a length no owed request of
// the unit has: nothing wrong is published.
func TestQueuedOwedAnswersNeverAgree(t *testing.T) {
	for _, tr := range []Transport{RTUOverTCP, RTU} {
		t.Run(fmt.Sprint(tr), func(t *testing.T) {
			t.Parallel() // each waits on its unit's lag, not on the CPU: half the time
			d := &queuedExc{}
			addr := ""
			if tr == RTU {
				addr = scriptedSerialRTU(t, d.script(7))
			} else {
				addr = scriptedRTU(t, d.script(7))
			}
			reg := prometheus.NewRegistry()
			pool := NewPool(testLogger(t), NewMetrics(reg))
			t.Cleanup(func() { _ = pool.Close() })
			rec, stop := recordHostileUnit(t, pool, tr, addr, 0, 10, 20)
			wait.For(t, 60*time.Second, "40 answers sent to another read", func() bool {
				return d.relayed.Load() >= 40
			})
			stop() // the recorder fails the test on a wrong good value
			requestsCounted(t, reg, "unit-1", d.requests.Load())
			t.Logf("%d reads, %d requests, %d answers sent to another read, %d of them right after the same register's, %d good",
				len(rec.snapshot()), d.requests.Load(), d.relayed.Load(), d.twins.Load(), goodSince(rec, 0))
		})
	}
}

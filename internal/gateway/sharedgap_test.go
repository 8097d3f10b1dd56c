package gateway

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestSharedLinkBirthCoversGaps (review 4, F9): ac-1 answers every request
// and shares its Modbus TCP connection with five units that never answer
// (timeout 150 ms); its reads wait for their timeouts (fair turns). Its
// birth's interval_ms, "the longest time between two reports of the signal
// while the device answers" (docs/schema.md), on which a consumer's
// silence rules wait, must cover every gap between two of its batches.
// Before, the birth announced the 100 ms poll interval while the batches
// came up to ~850 ms apart: a collector's "sent nothing for 3 x its
// interval" fired on a healthy device.
func TestSharedLinkBirthCoversGaps(t *testing.T) {
	sub := &collector{}
	r, _, _ := modbusSharedRig(t, 6, 150*time.Millisecond, time.Minute)
	consumeStream(t, r.nats.URL(), sub.add)
	const want = 60 // batches of ac-1
	var gaps []int64
	var birth *telemetry.Birth
	wait.For(t, 60*time.Second, "ac-1's birth and 60 batches", func() bool {
		batches, births, errs := sub.snapshot()
		if len(errs) > 0 {
			t.Fatalf("decode: %v", errs)
		}
		for _, b := range births {
			if b.Asset.ID == "ac-1" {
				birth = b
			}
		}
		gaps = gaps[:0]
		var last int64
		for _, b := range batches {
			if b.Asset.ID != "ac-1" {
				continue
			}
			if last != 0 {
				gaps = append(gaps, b.TSGW-last)
			}
			last = b.TSGW
		}
		return birth != nil && len(gaps) >= want
	})
	longest := int64(0)
	for _, d := range gaps {
		longest = max(longest, d)
	}
	for _, s := range birth.Signals {
		if s.IntervalMS < longest {
			t.Errorf("ac-1 birth: %s interval_ms %d, but two of its batches came %d ms apart (gaps %v)", s.Signal, s.IntervalMS, longest, gaps)
		}
	}
	t.Logf("ac-1: longest gap %d ms over %d batches; birth interval_ms %d", longest, len(gaps), birth.Signals[0].IntervalMS)
	if longest <= 3*100 {
		t.Logf("note: the silent units did not delay ac-1 beyond 3 x its poll interval this run")
	}
}

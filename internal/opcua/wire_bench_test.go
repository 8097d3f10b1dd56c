package opcua

import (
	"bytes"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// benchCycle is a notification of n changed nodes as the worker sends it.
func benchCycle(n int) *sample.Cycle {
	c := &sample.Cycle{Start: time.Unix(1764470000, 123456789), Interval: 100 * time.Millisecond, Replied: true}
	for i := range n {
		c.Samples = append(c.Samples, sample.Sample{Index: i, Num: float64(i) + 0.125, Quality: telemetry.QualityGood, TS: 1764470000123 + int64(i)})
	}
	return c
}

// BenchmarkWireCycle is one cycle of 1,000 samples and the status frame
// before it, written and read back: the per-cycle cost of the worker wire
// on both sides.
func BenchmarkWireCycle(b *testing.B) {
	cyc := benchCycle(1000)
	st := Status{Connected: true, Since: time.Now(), Sessions: 1}
	var buf bytes.Buffer
	var m wireMsg
	fr := &frameReader{r: &buf}
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := writeFrame(&buf, &wireMsg{Kind: msgStatus, Status: &st}); err != nil {
			b.Fatal(err)
		}
		if err := writeFrame(&buf, &wireMsg{Kind: msgCycle, Cycle: toWireCycle(cyc)}); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			if err := fr.read(&m); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(buf.Cap()), "buf-bytes")
}

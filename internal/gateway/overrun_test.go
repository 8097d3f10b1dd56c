package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// TestOverrunNamesTheDeviceThatUsedTheLink: a cycle longer than its
// interval is the device's own overrun when it is alone on its link or
// used its shared link most (smelter_gateway_poll_overruns_total), and
// otherwise a delay caused by the device that did
// (smelter_gateway_poll_delayed_total{by}): the advice names that device.
// Before, every overrun was counted and reported as the device's own, so a
// fast unit waiting for a slow one on the same RTU line was blamed too.
func TestOverrunNamesTheDeviceThatUsedTheLink(t *testing.T) {
	dir := t.TempDir()
	doc := "gateway: {id: gw, site: s, data_dir: " + filepath.Join(dir, "data") + "}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n" +
		"  - {id: m-1, class: motor, poll_interval: 1s, modbus: {address: \"127.0.0.1:1\"}, points: " + twoPoints + "}\n"
	cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gw.yaml"), []byte(doc), Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	r := newGatewayRig(t, cfg, Options{Logger: logs.Logger(slog.LevelInfo)})
	cycle := func(s float64, took time.Duration, busiest string) sample.Cycle {
		return sample.Cycle{Start: at(s), Duration: took, Interval: time.Second, Replied: true,
			LinkBusiest: busiest, LinkBusiestTime: took / 2,
			Samples: []sample.Sample{{Index: 0, Num: 1}, {Index: 1, Num: 50}}}
	}
	r.run(t,
		cycle(0, 500*time.Millisecond, ""),      // within the interval
		cycle(1, 1500*time.Millisecond, ""),     // alone on its link: its own
		cycle(3, 1500*time.Millisecond, "m-2"),  // another unit used the shared link most
		cycle(5, 1500*time.Millisecond, "m-1"),  // it used the shared link most itself
		cycle(7, 1500*time.Millisecond, "m-2"),  // again: counted, not logged again
		cycle(9, 900*time.Millisecond, "m-2"),   // no overrun, whoever used the link
		cycle(10, 1500*time.Millisecond, "m-3"), // a third unit
	)
	m := r.d.g.m
	if got := testutil.ToFloat64(m.overruns.WithLabelValues("m-1")); got != 2 {
		t.Errorf("overruns of m-1 = %v, want 2 (alone, and using the shared link most)", got)
	}
	for by, want := range map[string]float64{"m-2": 2, "m-3": 1} {
		if got := testutil.ToFloat64(m.delayed.WithLabelValues("m-1", by)); got != want {
			t.Errorf("delayed{device=m-1,by=%s} = %v, want %v", by, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.delayed); n != 2 {
		t.Errorf("%d delayed series, want 2", n)
	}
	out := logs.String()
	for _, want := range []string{
		"the device's reads take longer than the interval",
		"the device used its shared link for most of the cycle",
		"link saturated by device m-2",
		"link saturated by device m-3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "link saturated by device m-2"); n != 1 {
		t.Errorf("the advice naming m-2 logged %d times, want once", n)
	}
}

// TestHealthLoggedOnChange: a device in timeout backoff fails every poll
// without I/O, each time with another "next try in" text; it is logged
// once when it stops answering, then summarised at most once a minute, once
// more when it reads good again, and a device flapping between good and
// errors is not logged at every flap (review 2, finding 4: 115 lines in 20 s
// for one device, each failure also logged by the driver).
func TestHealthLoggedOnChange(t *testing.T) {
	dir := t.TempDir()
	doc := "gateway: {id: gw, site: s, data_dir: " + filepath.Join(dir, "data") + "}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n" +
		"  - {id: m-1, class: motor, poll_interval: 200ms, modbus: {address: \"127.0.0.1:1\"}, points: " + twoPoints + "}\n"
	cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gw.yaml"), []byte(doc), Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	r := newGatewayRig(t, cfg, Options{Logger: logs.Logger(slog.LevelInfo)})
	good := func(s float64) sample.Cycle {
		return sample.Cycle{Start: at(s), Interval: 200 * time.Millisecond, Replied: true,
			Samples: []sample.Sample{{Index: 0, Num: 1}, {Index: 1, Num: 50}}}
	}
	silent := func(s float64, i int) sample.Cycle {
		return sample.Cycle{Start: at(s), Interval: 200 * time.Millisecond,
			Err:     fmt.Errorf("unit 2: modbus: timeout: not answering; next try in %dms", 600-i%3*200),
			Samples: []sample.Sample{{Index: 0, Quality: telemetry.QualityBad}, {Index: 1, Quality: telemetry.QualityBad}}}
	}
	withErrors := func(s float64) sample.Cycle {
		c := good(s)
		c.Err = errors.New("reply from unit 2 to a request for unit 1")
		c.Samples = []sample.Sample{{Index: 0, Quality: telemetry.QualityBad}, {Index: 1, Num: 50}}
		return c
	}
	var cycles []sample.Cycle
	s := 0.0
	cycles = append(cycles, good(s))
	for i := range 400 { // 80 s silent: one line, one summary a minute
		s += 0.2
		cycles = append(cycles, silent(s, i))
	}
	s += 0.2
	cycles = append(cycles, good(s))
	for i := range 150 { // 30 s flapping: every 3rd poll with errors
		s += 0.2
		if i%3 == 0 {
			cycles = append(cycles, withErrors(s))
		} else {
			cycles = append(cycles, good(s))
		}
	}
	r.run(t, cycles...)
	out := logs.String()
	for msg, want := range map[string]int{
		"msg=\"device not answering\"":       1,
		"msg=\"device still not answering\"": 1,
		"msg=\"device answers with errors\"": 1,
		"msg=\"device reads good again\"":    2,
	} {
		if n := strings.Count(out, msg); n != want {
			t.Errorf("%d lines %s, want %d:\n%s", n, msg, want, out)
		}
	}
}

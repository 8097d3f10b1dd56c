package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// TestStalledDriverIsDeclaredDeadAndRestarted wedges an OPC UA driver in
// the gateway's process (isolation none): the simulator front goes silent
// while keeping its connections open, and the driver, with a 10 min
// request timeout and watchdog interval, waits on its Read and its Publish
// without emitting anything. Before the gateway's stall watch its points
// kept their last good state on the stream for those 10 minutes. Now, once
// the stall limit passes (the floor, lowered to 1 s here), every point is
// published stale with its last status, the asset dies with a reason naming
// the stall, the stall is counted and logged once, and the driver is
// restarted: when the server answers again, values are good and the asset
// is born again, with no action. The driver's heartbeat (200 ms here)
// repeats nothing while the subscription is silent: it used to re-report
// the last good value, stamped now, and hide the stall.
func TestStalledDriverIsDeclaredDeadAndRestarted(t *testing.T) {
	src := &fixedSource{class: "boiler", signals: []string{"steam_pressure", "flue_o2"}, values: []float64{1.25, 3.1}}
	var logs logtest.Buffer
	g, nc, front := startBoilerStallRig(t, src, &logs, func(front *opcuafront.Front) string {
		return fmt.Sprintf(`    heartbeat: 200ms
    opcua: {endpoint: %q, isolation: none, publish_interval: 50ms, keep_alive: 100ms, request_timeout: 10m,
            watchdog_interval: 1h, backoff_min: 50ms, backoff_max: 200ms}
    points:
      - {signal: steam_pressure, node_id: %q, sampling_interval: 50ms}
      - {signal: flue_o2, node_id: %q, mode: poll, interval: 100ms}
`, front.Endpoint(), front.NodeID("boiler-ua", "steam_pressure"), front.NodeID("boiler-ua", "flue_o2"))
	})
	good := func(sig string) bool {
		r, ok := lastReading(nc, sig)
		return ok && r.Quality == telemetry.QualityGood
	}
	wait.For(t, 20*time.Second, "both signals good", func() bool { return good("steam_pressure") && good("flue_o2") })
	// the device answers Bad about one point: bad on every batch until
	// the stall, then stale keeping that status
	if err := front.SetStatus("boiler-ua", "flue_o2", opcuafront.StatusBadSensorFailure); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "flue_o2 bad", func() bool {
		r, ok := lastReading(nc, "flue_o2")
		return ok && r.Quality == telemetry.QualityBad && r.Status == opcuafront.StatusBadSensorFailure
	})

	front.SetSilent(true)
	wait.For(t, 20*time.Second, "both signals stale while the driver is wedged", func() bool {
		for sig, status := range map[string]uint32{"steam_pressure": 0, "flue_o2": opcuafront.StatusBadSensorFailure} {
			if r, ok := lastReading(nc, sig); !ok || r.Quality != telemetry.QualityStale || r.HasValue() || r.Status != status {
				return false
			}
		}
		return true
	})
	wait.For(t, 10*time.Second, "a death notice naming the stall", func() bool { return nc.deathCount() == 1 })
	stalls := g.m.stalls.WithLabelValues("boiler-ua")
	if n := testutil.ToFloat64(stalls); n != 1 {
		t.Fatalf("smelter_gateway_device_stalls_total = %v, want 1", n)
	}
	st := g.devices[0].state()
	if !st.Dead || !strings.Contains(st.LastError, ErrStalled.Error()) {
		t.Fatalf("device state %+v: want dead, last error naming the stall", st)
	}

	front.SetSilent(false)
	if err := front.SetStatus("boiler-ua", "flue_o2", 0); err != nil {
		t.Fatal(err)
	}
	src.values[0] = 1.5
	front.Refresh(time.Now())
	wait.For(t, 30*time.Second, "good values again after the restart", func() bool {
		r, ok := lastReading(nc, "steam_pressure")
		return ok && r.Quality == telemetry.QualityGood && r.Value == 1.5 && good("flue_o2")
	})
	wait.For(t, 10*time.Second, "a rebirth", func() bool {
		_, births, _ := nc.snapshot()
		return len(births) >= 2
	})
	if n := testutil.ToFloat64(stalls); n != 1 {
		t.Errorf("smelter_gateway_device_stalls_total = %v after the recovery, want 1", n)
	}
	text := logs.String()
	if n := strings.Count(text, "device's driver stalled"); n != 1 {
		t.Errorf("%d stall lines logged, want 1:\n%s", n, text)
	}
	t.Log(text)
}

// startBoilerStallRig serves src as OPC UA asset boiler-ua (the simulator
// front), starts NATS and a gateway (stall floor 1 s, logs into logs) with
// one boiler device boiler-ua whose remaining lines (opcua block, points)
// device writes, and subscribes to what it publishes; all stop at the
// test's end.
func startBoilerStallRig(t *testing.T, src *fixedSource, logs *logtest.Buffer, device func(*opcuafront.Front) string) (*Gateway, *collector, *opcuafront.Front) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	front, nb, dir := startFrontAndNATS(t, ctx, "boiler-ua", src)
	cfgText := fmt.Sprintf(`gateway: {id: gw-stall, site: plant1, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
devices:
  - id: boiler-ua
    class: boiler
`, nb.URL()) + device(front)
	g := runGatewayWith(t, loadConfigText(t, dir, cfgText), Options{DrainTimeout: time.Second, Logger: logs.Logger(slog.LevelInfo)},
		func(g *Gateway) { g.stallFloor = time.Second })
	return g, subscribeNATS(t, nb.URL()), front
}

// TestStallLimit: the stall limit is max(floor, 3 x (P + D)), P the longest
// of the configured intervals and the cycles' intervals, D the longest
// cycle duration seen; the default floor is DefaultStallFloor. Points never
// reported are not armed.
func TestStallLimit(t *testing.T) {
	newWatch := func(floor time.Duration) *stallWatch {
		d := &device{g: &Gateway{stallFloor: floor}, cfg: &gwconfig.Device{Interval: time.Second,
			Norm: normalize.NewTable([]normalize.Point{{IntervalMS: 5000}, {IntervalMS: 2000}})}}
		return newStallWatch(d)
	}
	w := newWatch(0)
	if got := w.limit(); got != DefaultStallFloor {
		t.Fatalf("limit %v with 5 s points, want the floor %v", got, DefaultStallFloor)
	}
	w.emitted(&sample.Cycle{Interval: 6 * time.Second, Duration: 2 * time.Second})
	if w.armed {
		t.Fatal("a cycle without samples armed the watch")
	}
	if got, want := w.limit(), DefaultStallFloor; got != want {
		t.Fatalf("limit %v, want %v", got, want)
	}
	w.emitted(&sample.Cycle{Interval: 10 * time.Second, Duration: 4 * time.Second, Samples: []sample.Sample{{Index: 1, Status: 7}, {Index: 9}}})
	if got, want := w.limit(), 3*(10*time.Second+4*time.Second); got != want {
		t.Fatalf("limit %v, want %v", got, want)
	}
	if !w.armed || w.status[1] != 7 || w.heard[0] != 1<<1 {
		t.Fatalf("armed %v, status %v, heard %b: want point 1 heard with status 7 (index 9 ignored)", w.armed, w.status, w.heard)
	}
	if got, want := newWatch(time.Minute).limit(), time.Minute; got != want {
		t.Fatalf("limit %v with a 1 min floor, want %v", got, want)
	}
}

// progressSource is a source reporting progress (driver.Progresser).
type progressSource struct {
	last  time.Time
	bound time.Duration
}

func (p *progressSource) Run(ctx context.Context, _ func(*sample.Cycle)) error {
	<-ctx.Done()
	return nil
}

func (p *progressSource) Progress() (time.Time, time.Duration) { return p.last, p.bound }

// TestStallLimitWithProgress: a source reporting progress has the limit
// max(floor, 3 x (P + max(D, B))), B its progress bound, and is silent
// since the later of its last cycle and its last progress; one without
// progress in flight (zero: wedged outside its link, or between cycles)
// is silent since its last cycle.
func TestStallLimitWithProgress(t *testing.T) {
	src := &progressSource{bound: 25 * time.Second}
	d := &device{g: &Gateway{}, src: src, cfg: &gwconfig.Device{Interval: time.Second, Norm: normalize.NewTable([]normalize.Point{{IntervalMS: 1000}})}}
	w := newStallWatch(d)
	if got, want := w.limit(), 3*(time.Second+25*time.Second); got != want {
		t.Fatalf("limit %v, want 3 x (P + B) = %v", got, want)
	}
	w.emitted(&sample.Cycle{Interval: time.Second, Duration: 40 * time.Second})
	if got, want := w.limit(), 3*(time.Second+40*time.Second); got != want {
		t.Fatalf("limit %v after a 40 s cycle, want 3 x (P + D) = %v", got, want)
	}
	now := time.Now()
	w.last = now.Add(-100 * time.Second)
	if got := w.silence(now); got != 100*time.Second {
		t.Fatalf("silence %v without progress, want 100s (since the last cycle)", got)
	}
	src.last = now.Add(-5 * time.Second)
	if got := w.silence(now); got != 5*time.Second {
		t.Fatalf("silence %v with progress 5 s ago, want 5s", got)
	}
	src.last = now.Add(-200 * time.Second)
	if got := w.silence(now); got != 100*time.Second {
		t.Fatalf("silence %v with progress older than the last cycle, want 100s", got)
	}
}

package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/wait"
)

// modbusStallRig runs a gateway whose devices ac-1.. read units 1..n of one
// Modbus TCP server (one shared connection) that answers unit 1 only and
// never answers the others (it reads their requests, keeps the connection
// open and says nothing, unless told to answer them with an exception:
// SetAbsentReply), with the stall floor lowered to floor.
func modbusStallRig(t *testing.T, n int, timeout, floor time.Duration) (*Gateway, *modbustest.Hostile) {
	t.Helper()
	_, g, srv := modbusSharedRig(t, n, timeout, floor)
	return g, srv
}

// modbusSharedRig is modbusStallRig that also returns its rig (its NATS
// server: the gateway's uplink).
func modbusSharedRig(t *testing.T, n int, timeout, floor time.Duration) (*rig, *Gateway, *modbustest.Hostile) {
	t.Helper()
	r := newRig(t, "")
	srv := modbustest.StartHostileTCP(t, r.bank, 1, nil)
	var devs strings.Builder
	for u := 1; u <= n; u++ {
		fmt.Fprintf(&devs, `  - id: ac-%d
    class: air_compressor
    nameplate: {rated_power: 75, rated_fad: 12.5}
    poll_interval: 100ms
    template: compressor.yaml
    modbus: {address: %q, unit_id: %d, timeout: %v}
`, u, srv.Addr, u, timeout)
	}
	cfg := loadConfigText(t, r.dir, fmt.Sprintf(`gateway: {id: gw-stall, site: plant1, data_dir: ./data}
http: {listen: "off"}
uplinks: {nats: {url: %q}}
devices:
%s`, r.nats.URL(), devs.String()))
	g := runGatewayWith(t, cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t)},
		func(g *Gateway) { g.stallFloor = floor })
	return r, g, srv
}

// assertNoStall fails when any device of g was declared stalled, and when
// ac-1 (the unit that answers) is dead.
func assertNoStall(t *testing.T, g *Gateway) {
	t.Helper()
	for _, d := range g.devices {
		if n := testutil.ToFloat64(g.m.stalls.WithLabelValues(d.cfg.ID)); n != 0 {
			t.Errorf("%s: smelter_gateway_device_stalls_total = %v, want 0 (its driver made bounded progress); state %+v", d.cfg.ID, n, d.state())
		}
	}
	if st := g.devices[0].state(); st.Dead || strings.Contains(st.LastError, ErrStalled.Error()) {
		t.Errorf("ac-1 (answering) state %+v: want alive, never stalled", st)
	}
}

// TestHealthyDeviceOnSharedLinkIsNotStalled (review 1, F1): unit 1 answers
// every request at once and shares its connection with four units that
// answer exceptions at first (fast cycles: ac-1's measured cycle duration,
// and so its old stall limit, stays small: max(200 ms floor, 3 x (100 ms +
// a few ms))), then never answer. ac-1's reads then wait their turn behind
// their 400 ms timeouts (the link's fair turns). Before, the first such
// wait declared it "driver stalled": dead, points stale, driver restarted,
// its queued read thrown away. Now the link's progress (the other units'
// exchanges while it waits) and its bound (the timeout) keep it alive: no
// stall of any device over 20 cycles of ac-1 after the silence began.
func TestHealthyDeviceOnSharedLinkIsNotStalled(t *testing.T) {
	g, srv := modbusStallRig(t, 5, 400*time.Millisecond, 200*time.Millisecond)
	srv.SetAbsentReply(2)
	ac1 := g.devices[0]
	wait.For(t, 20*time.Second, "10 fast cycles of every device", func() bool {
		for _, d := range g.devices {
			if d.state().Polls < 10 {
				return false
			}
		}
		return true
	})
	srv.SetAbsentReply(0) // units 2-5 fall silent
	polls := ac1.state().Polls
	failed := make([]uint64, len(g.devices))
	for i, d := range g.devices {
		failed[i] = d.state().FailedPolls
	}
	wait.For(t, 60*time.Second, "20 cycles of ac-1 and the silent units' timeouts", func() bool {
		var timeouts uint64
		for i, d := range g.devices[1:] {
			timeouts += d.state().FailedPolls - failed[i+1]
		}
		return ac1.state().Polls >= polls+20 && timeouts >= 8
	})
	assertNoStall(t, g)
	if st := ac1.state(); st.FailedPolls != failed[0] {
		t.Errorf("ac-1 failed %d polls, want %d: %+v", st.FailedPolls, failed[0], st)
	}
}

// TestSlowDeviceWithinTimeoutIsNotStalled (review 1, F7): a device that
// answers every request 1.2 s late, within its 3 s timeout, after fast
// cycles (its measured cycle duration, and so its old limit, was small:
// max(300 ms floor, 3 x (100 ms + a few ms))). Before, the first slow
// read was declared a stall: death, stale points, and the answer about to
// arrive thrown away with the restarted driver. Now its limit counts the
// link's bound (its 3 s timeout): its slow answers are published good.
func TestSlowDeviceWithinTimeoutIsNotStalled(t *testing.T) {
	g, srv := modbusStallRig(t, 1, 3*time.Second, 300*time.Millisecond)
	ac1 := g.devices[0]
	wait.For(t, 20*time.Second, "10 fast cycles", func() bool { return ac1.state().Polls >= 10 })
	srv.SetLate(1200 * time.Millisecond)
	srv.Inject(modbustest.Late, -1)
	before := srv.Replies()
	wait.For(t, 30*time.Second, "4 replies 1.2 s late", func() bool { return srv.Replies() >= before+4 })
	polls := ac1.state().Polls
	wait.For(t, 30*time.Second, "a slow cycle emitted", func() bool { return ac1.state().Polls > polls })
	assertNoStall(t, g)
	if st := ac1.state(); st.FailedPolls != 0 {
		t.Errorf("ac-1 failed %d polls, want 0: %+v", st.FailedPolls, st)
	}
}

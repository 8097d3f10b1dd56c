package dashboard

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Review 3 C: the gateway list behind /api/v1/gateways had no bound
// (210,004 invented ids: 420 MB of heap, a 46 MB answer). It holds at most
// MaxGateways now; beyond it the gateway seen least recently goes
// (counted), a gateway that keeps publishing stays, and an asset of an
// evicted gateway attaches to it again at its next batch.
func TestGatewaysBounded(t *testing.T) {
	wall := time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	real := batch(1, wall.UnixMilli(), 1) // gw-1, m-1
	l.ObserveBatch(real)
	l.ObserveStatus("s1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-quiet", Online: true})
	const invented = MaxGateways + 5000
	for i := range invented {
		wall = wall.Add(time.Millisecond)
		b := &telemetry.Batch{Gateway: fmt.Sprintf("g%d", i), Seq: 1, TSGW: wall.UnixMilli(),
			Asset: telemetry.Asset{ID: "x", Class: "generic", Path: []string{"acme", "s1"}}}
		l.ObserveBatch(b)
		if i%1000 == 0 { // the real gateway keeps publishing
			real.Seq++
			real.TSGW = wall.UnixMilli()
			l.ObserveBatch(real)
		}
	}
	gws := l.Gateways()
	if len(gws) != MaxGateways {
		t.Fatalf("%d gateways held, want %d", len(gws), MaxGateways)
	}
	if got, want := l.Stats().GatewaysEvicted, uint64(invented+2-MaxGateways); got != want {
		t.Errorf("evicted %d, want %d", got, want)
	}
	held := map[string]bool{}
	for _, g := range gws {
		held[g.ID] = true
	}
	if !held["gw-1"] || held["gw-quiet"] || held["g0"] || !held[fmt.Sprintf("g%d", invented-1)] {
		t.Errorf("gw-1 %v (want held), gw-quiet %v, g0 %v (want evicted), newest %v (want held)",
			held["gw-1"], held["gw-quiet"], held["g0"], held[fmt.Sprintf("g%d", invented-1)])
	}
	if _, _, ok := l.DataClock("s1", "m-1", wall.UnixMilli()); !ok {
		t.Error("the real gateway's asset lost its data clock")
	}
	// the list stays consistent: walking it finds every gateway once
	n := 0
	for g := l.recent.front; g != nil; g = g.links[byRecency].next {
		if l.gateways[g.id] != g {
			t.Fatalf("%s in the recency list, not in the store", g.id)
		}
		n++
	}
	if n != len(l.gateways) {
		t.Fatalf("recency list of %d, store of %d", n, len(l.gateways))
	}
}

// A change held for its refresh slot waits for the slot on the wall
// clock; a clock set back must not hold it until the clock catches up
// again (an hour of no counters, and a client calling the gateway
// silent): the next call publishes every held change.
func TestGatewayRefreshClockSetBack(t *testing.T) {
	wall := time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	b := batch(1, wall.UnixMilli(), 1)
	l.ObserveBatch(b)
	_, _, ver := l.GatewaySnapshot()
	wall = wall.Add(time.Second)
	b.Seq++
	l.ObserveBatch(b) // counters only: held
	if changed, _, _, _, _ := l.GatewayChanges(ver); len(changed) != 0 {
		t.Fatalf("a second batch alone went out at once: %+v", changed)
	}
	wall = wall.Add(-time.Hour)
	changed, _, _, _, ok := l.GatewayChanges(ver)
	if !ok || len(changed) != 1 || changed[0].Batches != 2 {
		t.Fatalf("after the clock went back an hour: %+v, want the held gateway with 2 batches", changed)
	}
}

// The silence threshold is the store's (WithSilentAfter, the collector's
// http.gateway_silent_after): /api/v1/gateways judges status by it and
// says it (silent_after_ms), as the stream's snapshot does; one below
// MinSilentAfter is raised to it.
func TestGatewaySilentAfterConfigured(t *testing.T) {
	for _, c := range []struct {
		set, want time.Duration
	}{{0, DefaultSilentAfter}, {20 * time.Second, 20 * time.Second}, {5 * time.Second, MinSilentAfter}, {time.Hour, time.Hour}} {
		t.Run(c.set.String(), func(t *testing.T) {
			f := newSSEFixture(t, WithSilentAfter(c.set))
			f.publish("gw-1")
			f.clock.Add(c.want.Milliseconds()) // at the threshold: online
			var page struct {
				SilentAfterMS int64         `json:"silent_after_ms"`
				Gateways      []GatewayView `json:"gateways"`
			}
			get := func() {
				t.Helper()
				resp, err := f.http.Client().Get(f.http.URL + "/api/v1/gateways")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || len(page.Gateways) != 1 {
					t.Fatalf("/api/v1/gateways: %v %+v", err, page)
				}
			}
			get()
			if page.SilentAfterMS != c.want.Milliseconds() || page.Gateways[0].Status != "online" {
				t.Errorf("at the threshold: silent_after_ms %d, status %s; want %d, online", page.SilentAfterMS, page.Gateways[0].Status, c.want.Milliseconds())
			}
			f.clock.Add(1)
			get()
			if page.Gateways[0].Status != "silent" {
				t.Errorf("past the threshold: status %s, want silent", page.Gateways[0].Status)
			}
			st := openStream(t, f.http, "gateways=delta")
			if snap := decode[GatewaySnapshotEvent](t, st.nextGateways(t)); snap.SilentAfterMS != c.want.Milliseconds() {
				t.Errorf("snapshot silent_after_ms %d, want %d", snap.SilentAfterMS, c.want.Milliseconds())
			}
		})
	}
}

// verify12 N1: a gateway whose clock steps back 2 minutes (its seq going on
// upwards, its batches evaluated) moves its data clock back with it: its
// asset's data clock follows the new times, not the old newest one, so the
// asset is not shown 2 minutes old while it reports. A late batch (not
// evaluated: a replayed backlog) moves nothing back.
func TestGatewayClockStepBackFollowed(t *testing.T) {
	wall := time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	for seq := uint64(1); seq <= 5; seq++ {
		l.ObserveBatch(batch(seq, wall.UnixMilli(), 1))
		wall = wall.Add(time.Second)
	}
	l.ObserveLateBatch(batch(6, wall.UnixMilli()-300_000, 1))
	if now, _, _ := l.DataClock("s1", "m-1", wall.UnixMilli()); now < wall.UnixMilli()-2000 {
		t.Fatalf("a late batch moved the data clock back to %d (wall %d)", now, wall.UnixMilli())
	}
	stepped := wall.UnixMilli() - 120_000
	l.ObserveBatch(batch(7, stepped, 1))
	now, _, ok := l.DataClock("s1", "m-1", wall.UnixMilli())
	if !ok || now != stepped {
		t.Fatalf("data clock %d after the step back, want the stepped batch's %d", now, stepped)
	}
	for _, g := range l.Gateways() {
		if g.ID == "gw-1" && g.LastTSGW != stepped {
			t.Fatalf("gateway last_ts_gw %d, want %d", g.LastTSGW, stepped)
		}
	}
}

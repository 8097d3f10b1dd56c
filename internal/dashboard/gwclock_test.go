package dashboard

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestGatewayClockEstimate (review7 F3): each gateway shows its clock
// offset as measured, the largest ts_gw - arrival of its live batches of
// the last 30-60 s (delays only lower a sample), and is marked when it lies
// beyond the tolerance. Neither a backlog (Clock.Live false) nor a batch
// the gateway flagged historical moves it; a clock corrected shows within
// two buckets; clock_ahead_total counts the bounded messages; and a change
// of the mark goes to event streams at once, not at the refresh slot.
func TestGatewayClockEstimate(t *testing.T) {
	wall := time.Date(2026, 11, 30, 14, 0, 0, 10, time.UTC) // 10 ns into a bucket
	l := NewLive(func() time.Time { return wall })
	seq := uint64(0)
	send := func(lead, delay time.Duration, live, bounded, historical bool) {
		t.Helper()
		seq++
		arrival := wall.UnixMilli()
		sent := arrival - delay.Milliseconds() + lead.Milliseconds()
		b := batch(seq, min(sent, arrival), 1)
		b.Historical = historical
		l.ObserveBatchClock(b, false, Clock{TSGW: sent, Arrival: arrival, Live: live, Bounded: bounded})
	}
	view := func() GatewayView {
		t.Helper()
		gws := l.Gateways()
		if len(gws) != 1 {
			t.Fatalf("%d gateways, want 1", len(gws))
		}
		return gws[0]
	}
	want := func(what string, off int64, skew string, ahead uint64) {
		t.Helper()
		v := view()
		if v.ClockOffsetMS == nil || *v.ClockOffsetMS != off || v.ClockSkew != skew || v.ClockAheadTotal != ahead {
			got := "absent"
			if v.ClockOffsetMS != nil {
				got = time.Duration(*v.ClockOffsetMS * 1e6).String()
			}
			t.Errorf("%s: offset %s skew %q ahead %d; want %v %q %d", what, got, v.ClockSkew, v.ClockAheadTotal,
				time.Duration(off*1e6), skew, ahead)
		}
	}

	// a backlog and historical data only: no estimate yet
	send(-10*time.Minute, 0, false, false, false)
	send(-time.Hour, 0, true, false, true)
	if v := view(); v.ClockOffsetMS != nil || v.ClockSkew != "" {
		t.Fatalf("offset %d skew %q from a backlog and historical data, want none", *v.ClockOffsetMS, v.ClockSkew)
	}
	_, _, ver := l.GatewaySnapshot()

	// 240 s ahead, delivered in 40-900 ms: the fastest delivery is the estimate
	for _, d := range []time.Duration{900, 40, 300} {
		wall = wall.Add(time.Second)
		send(240*time.Second, d*time.Millisecond, true, true, false)
	}
	want("240 s ahead", 240_000-40, "ahead", 3)
	// the mark went out at once: a change of counters alone is held
	if changed, _, _, _, _ := l.GatewayChanges(ver); len(changed) != 1 || changed[0].ClockSkew != "ahead" {
		t.Errorf("delta after the clock turned ahead: %+v, want the gateway marked ahead at once", changed)
	}
	// a backlog dated 10 min ahead of when it was stored, and historical
	// data: the estimate stays
	wall = wall.Add(time.Second)
	send(10*time.Minute, 0, false, false, false)
	send(10*time.Minute, 0, true, false, true)
	want("after a backlog and historical data", 240_000-40, "ahead", 3)
	if ahead, behind := l.ClockSkewed(); ahead != 1 || behind != 0 {
		t.Errorf("ClockSkewed %d ahead %d behind, want 1, 0", ahead, behind)
	}

	// corrected (NTP): within two buckets the estimate is the new clock
	for range 2 {
		wall = wall.Add(ClockBucket)
		send(0, 50*time.Millisecond, true, false, false)
	}
	want("corrected", -50, "", 3)
	// within the tolerance either way: not marked; beyond it behind: marked
	wall = wall.Add(2 * ClockBucket) // a gap: a fresh estimate
	send(-1500*time.Millisecond, 0, true, false, false)
	want("1.5 s behind", -1500, "", 3)
	wall = wall.Add(2 * ClockBucket)
	send(-4*time.Minute, 0, true, false, false)
	want("4 min behind", -240_000, "behind", 3)

	// the tolerance off: offsets shown, nothing marked
	off := NewLive(func() time.Time { return wall }, WithClockTolerance(0))
	off.ObserveBatchClock(batch(1, wall.UnixMilli(), 1), false, Clock{TSGW: wall.UnixMilli() + 3_600_000, Arrival: wall.UnixMilli(), Live: true})
	if v := off.Gateways()[0]; v.ClockOffsetMS == nil || *v.ClockOffsetMS != 3_600_000 || v.ClockSkew != "" {
		t.Errorf("tolerance off: %+v, want the offset 1 h and no mark", v)
	}
}

// TestClockBoundedBirthCounted: a birth or death whose ts_gw the collector
// bounded counts in its gateway's clock_ahead_total.
func TestClockBoundedBirthCounted(t *testing.T) {
	wall := time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	l.ObserveBirth(&telemetry.Birth{Gateway: "gw-1", Seq: 1, TSGW: wall.UnixMilli(),
		Asset: telemetry.AssetJSON{ID: "m-1", Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}}})
	l.ObserveClockBounded("gw-1")
	l.ObserveClockBounded("gw-unknown") // not in the store: nothing made up
	gws := l.Gateways()
	if len(gws) != 1 || gws[0].ClockAheadTotal != 1 || gws[0].ClockOffsetMS != nil {
		t.Errorf("gateways %+v, want gw-1 alone with clock_ahead_total 1 and no offset", gws)
	}
}

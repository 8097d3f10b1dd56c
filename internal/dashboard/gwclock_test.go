package dashboard

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestGatewayClockEstimate (review7 F3): each gateway shows its clock
// offset as measured, the median ts_gw - arrival of its last live batches
// of the last minute (delays only lower a sample), and is marked when it
// lies beyond the tolerance. Neither a backlog (Clock.Live false) nor a
// batch the gateway flagged historical moves it; a clock corrected shows
// within three batches; clock_ahead_total counts the bounded messages; and
// a change of the mark goes to event streams at once, not at the refresh
// slot.
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

	// 240 s ahead, delivered in 40-900 ms: the median delivery is the estimate
	for _, d := range []time.Duration{900, 40, 300} {
		wall = wall.Add(time.Second)
		send(240*time.Second, d*time.Millisecond, true, true, false)
	}
	want("240 s ahead", 240_000-300, "ahead", 3)
	// the mark went out at once: a change of counters alone is held
	if changed, _, _, _, _ := l.GatewayChanges(ver); len(changed) != 1 || changed[0].ClockSkew != "ahead" {
		t.Errorf("delta after the clock turned ahead: %+v, want the gateway marked ahead at once", changed)
	}
	// a backlog dated 10 min ahead of when it was stored, and historical
	// data: the estimate stays
	wall = wall.Add(time.Second)
	send(10*time.Minute, 0, false, false, false)
	send(10*time.Minute, 0, true, false, true)
	want("after a backlog and historical data", 240_000-300, "ahead", 3)
	if ahead, behind := l.ClockSkewed(); ahead != 1 || behind != 0 {
		t.Errorf("ClockSkewed %d ahead %d behind, want 1, 0", ahead, behind)
	}

	// corrected (NTP): two batches are a minority of the samples held, the
	// third makes the majority and the estimate is the new clock
	for range 2 {
		wall = wall.Add(time.Second)
		send(0, 50*time.Millisecond, true, false, false)
	}
	want("corrected twice", 240_000-900, "ahead", 3)
	wall = wall.Add(time.Second)
	send(0, 50*time.Millisecond, true, false, false)
	want("corrected", -50, "", 3)
	// within the tolerance either way: not marked; beyond it behind: marked
	wall = wall.Add(ClockWindow) // a gap: a fresh estimate
	send(-1500*time.Millisecond, 0, true, false, false)
	want("1.5 s behind", -1500, "", 3)
	wall = wall.Add(ClockWindow)
	send(-4*time.Minute, 0, true, false, false)
	want("4 min behind", -240_000, "behind", 3)

	// the tolerance off: offsets shown, nothing marked
	off := NewLive(func() time.Time { return wall }, WithClockTolerance(0))
	off.ObserveBatchClock(batch(1, wall.UnixMilli(), 1), false, Clock{TSGW: wall.UnixMilli() + 3_600_000, Arrival: wall.UnixMilli(), Live: true})
	if v := off.Gateways()[0]; v.ClockOffsetMS == nil || *v.ClockOffsetMS != 3_600_000 || v.ClockSkew != "" {
		t.Errorf("tolerance off: %+v, want the offset 1 h and no mark", v)
	}
}

// TestClockEstimateOneOutlier (review10 F4): the estimate was the largest
// sample of the last 30-60 s, so one batch dated 1 h ahead (a clock step,
// or forged by another publisher of the site) marked a correct gateway
// "1 h ahead" for up to a minute, and resent every 30 s for ever. Now it
// is the median of the last ClockSamples samples: one outlier among them
// does not mark the gateway; alone in its window it does until the
// gateway's next correct batch. The estimate stays a lower bound of the
// lead of honest samples (delays only lower them), and a gateway most of
// whose batches are ahead is marked.
func TestClockEstimateOneOutlier(t *testing.T) {
	wall := time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	seq := uint64(0)
	send := func(lead, delay time.Duration) {
		t.Helper()
		seq++
		arrival := wall.UnixMilli()
		sent := arrival - delay.Milliseconds() + lead.Milliseconds()
		l.ObserveBatchClock(batch(seq, min(sent, arrival), 1), false, Clock{TSGW: sent, Arrival: arrival, Live: true})
	}
	check := func(what string, lo, hi int64, skew string) {
		t.Helper()
		v := l.Gateways()[0]
		if v.ClockOffsetMS == nil || *v.ClockOffsetMS < lo || *v.ClockOffsetMS > hi || v.ClockSkew != skew {
			t.Fatalf("%s: %+v, want an offset in [%d, %d] ms, skew %q", what, v, lo, hi, skew)
		}
	}
	// a correct clock, 1 batch/s, 10-200 ms on the way; one batch 1 h ahead
	// in the middle: never marked, never above the true offset 0
	for i := range 40 {
		wall = wall.Add(time.Second)
		if i == 10 {
			send(time.Hour, 0)
		} else {
			send(0, time.Duration(10+i*37%190)*time.Millisecond)
		}
		check("correct clock, one outlier", -200, 0, "")
	}
	if ahead, behind := l.ClockSkewed(); ahead != 0 || behind != 0 {
		t.Errorf("ClockSkewed %d ahead %d behind after one outlier, want 0, 0", ahead, behind)
	}
	// alone in its window: marked, cleared by the next correct batch
	wall = wall.Add(ClockWindow)
	send(time.Hour, 0)
	check("the outlier alone", 3_600_000, 3_600_000, "ahead")
	wall = wall.Add(time.Second)
	send(0, 20*time.Millisecond)
	check("the next correct batch", -20, -20, "")
	// most batches 4 min ahead (a fast clock), delays up to 2 s, one
	// outlier low (a batch held 1 min): marked, at most the true lead
	for i := range 10 {
		wall = wall.Add(time.Second)
		if i == 5 {
			send(4*time.Minute, time.Minute)
		} else {
			send(4*time.Minute, time.Duration(i*211%2000)*time.Millisecond)
		}
		if i >= 2 {
			check("a fast clock", 240_000-2000, 240_000, "ahead")
		}
	}
}

// TestClockStaleWhenSilentOrOffline (review10 F5): a gateway marked ahead
// stayed marked, and counted in ClockSkewed (the gauge the shipped alert
// watches), after it went silent or reported itself offline, until its
// next live batch: a gateway shut down kept the alert firing. Now such a
// gateway keeps its last offset (no longer current) but no mark, and is
// not counted; its next batch marks it again. Going offline is sent to
// event streams at once with the mark cleared.
func TestClockStaleWhenSilentOrOffline(t *testing.T) {
	wall := time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	seq := uint64(0)
	send := func() {
		t.Helper()
		seq++
		at := wall.UnixMilli()
		l.ObserveBatchClock(batch(seq, at, 1), false, Clock{TSGW: at + 240_000, Arrival: at, Live: true, Bounded: true})
	}
	want := func(what, status, skew string, ahead int) {
		t.Helper()
		v := l.Gateways()[0]
		if v.Status != status || v.ClockSkew != skew || v.ClockOffsetMS == nil || *v.ClockOffsetMS != 240_000 {
			t.Errorf("%s: %+v, want status %s, skew %q, the offset 240000 kept", what, v, status, skew)
		}
		if a, b := l.ClockSkewed(); a != ahead || b != 0 {
			t.Errorf("%s: ClockSkewed %d ahead %d behind, want %d, 0", what, a, b, ahead)
		}
	}
	send()
	want("publishing", "online", "ahead", 1)
	wall = wall.Add(l.SilentAfter() + time.Second)
	want("silent", "silent", "", 0)
	send()
	want("back", "online", "ahead", 1)
	_, _, ver := l.GatewaySnapshot()
	wall = wall.Add(time.Second)
	l.ObserveStatus("s1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-1", Online: false, TSGW: wall.UnixMilli()})
	want("offline", "offline", "", 0)
	if changed, _, _, _, _ := l.GatewayChanges(ver); len(changed) != 1 || changed[0].ClockSkew != "" || changed[0].Status != "offline" {
		t.Errorf("delta after going offline: %+v, want the gateway offline, unmarked, at once", changed)
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

// review10 F7: a gateway whose batches are dated 1970 (an edge box without
// a real-time clock) or 2200 showed clock_offset_ms of about -1.76e12 or
// +7.3e12. The estimate is bounded to ±ClockOffsetLimit (at least that far
// off) and the gateway stays marked.
func TestClockOffsetBounded(t *testing.T) {
	for _, c := range []struct {
		name string
		tsgw time.Time
		off  int64
		skew string
	}{
		{"1970", time.Unix(0, 0), -ClockOffsetLimit.Milliseconds(), "behind"},
		{"2200", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), ClockOffsetLimit.Milliseconds(), "ahead"},
		{"6 days ahead", time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC), 6*24*3600_000 + 1000, "ahead"}, // inside the bound, as measured (its batches dated from 1 s past it),
	} {
		t.Run(c.name, func(t *testing.T) {
			wall := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
			l := NewLive(func() time.Time { return wall }, WithClockTolerance(24*time.Hour))
			for seq := uint64(1); seq <= 3; seq++ {
				ts := c.tsgw.UnixMilli() + int64(seq)*1000
				l.ObserveBatchClock(batch(seq, ts, 1), false, Clock{TSGW: ts, Arrival: wall.UnixMilli(), Live: true})
				wall = wall.Add(time.Second)
			}
			gws := l.Gateways()
			if len(gws) != 1 || gws[0].ClockOffsetMS == nil || *gws[0].ClockOffsetMS != c.off || gws[0].ClockSkew != c.skew {
				t.Fatalf("gateways %+v, want clock_offset_ms %d clock_skew %s", gws, c.off, c.skew)
			}
		})
	}
}

// TestPageClockOffsetLimitMatches: the page says "7 d or more" for an
// offset at the collector's bound; its constant (app.js clockOffLimit) must
// be ClockOffsetLimit, or a gateway at the bound would be shown as a
// plain duration (or one below it as "or more").
func TestPageClockOffsetLimitMatches(t *testing.T) {
	js, err := staticFS.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`const clockOffLimit = ([0-9 *]+);`).FindSubmatch(js)
	if m == nil {
		t.Fatal("app.js: no `const clockOffLimit = <product>;`")
	}
	ms := int64(1)
	for _, f := range strings.Split(string(m[1]), "*") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil {
			t.Fatalf("app.js clockOffLimit %q: %v", m[1], err)
		}
		ms *= n
	}
	if ms != ClockOffsetLimit.Milliseconds() {
		t.Errorf("app.js clockOffLimit = %d ms, ClockOffsetLimit = %d ms", ms, ClockOffsetLimit.Milliseconds())
	}
	if !strings.Contains(string(js), fmt.Sprintf("'%d d or more'", int(ClockOffsetLimit.Hours()/24))) {
		t.Errorf("app.js does not say '%d d or more' at the bound", int(ClockOffsetLimit.Hours()/24))
	}
}

package natsjs

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestSentAtHeaderFromDataClock: every message carries Smelter-Sent-At, the
// uplink's data clock (WithClock) in Unix ms when it was published, not
// the wall clock and not the batch's own time: a gateway whose clock runs
// 4 min fast sends its publish time 4 min ahead, and a batch published
// again later carries the later time. The collector measures the gateway
// clock's lead by it (docs/collector.md).
func TestSentAtHeaderFromDataClock(t *testing.T) {
	srv := startNATS(t, brokers.NATSOptions{})
	var clock atomic.Int64
	clock.Store(time.Now().Add(4 * time.Minute).UnixMilli())
	dataClock := func() time.Time { return time.UnixMilli(clock.Load()) }
	r := runUplink(t, Config{URL: srv.URL()}, nil, WithClock(dataClock))
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)

	first := clock.Load()
	publish(t, r.u, envelopes("gw-test", 1, 3, 64))
	clock.Add(90_000)
	publish(t, r.u, envelopes("gw-test", 4, 2, 64))

	_, js := client(t, srv.URL())
	got := readStream(t, js, DefaultStream)
	if len(got) != 5 {
		t.Fatalf("stream holds %d messages, want 5", len(got))
	}
	for i, m := range got {
		v := m.Header.Get(telemetry.SentAtHeader)
		ms, ok := telemetry.ParseSentAt(v)
		want := first
		if i >= 3 {
			want += 90_000
		}
		if !ok || ms != want {
			t.Errorf("message %d: %s %q, want %d (the data clock at publish)", i, telemetry.SentAtHeader, v, want)
		}
	}

	// without WithClock the header is the wall clock
	srv2 := startNATS(t, brokers.NATSOptions{})
	r2 := runUplink(t, Config{URL: srv2.URL()}, nil)
	wait.For(t, 10*time.Second, "uplink ready", r2.u.Ready)
	before := time.Now().UnixMilli()
	publish(t, r2.u, envelopes("gw-test", 1, 1, 64))
	after := time.Now().UnixMilli()
	_, js2 := client(t, srv2.URL())
	m := readStream(t, js2, DefaultStream)[0]
	if ms, ok := telemetry.ParseSentAt(m.Header.Get(telemetry.SentAtHeader)); !ok || ms < before || ms > after {
		t.Errorf("%s %q without WithClock, want the wall clock in %d..%d", telemetry.SentAtHeader, m.Header.Get(telemetry.SentAtHeader), before, after)
	}
}

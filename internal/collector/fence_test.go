package collector

import (
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// The gap the stream fence closes (docs/collector.md, "Fencing"): replica
// a raises ac-1's silence live, confirms its tenure and is paused before
// the raise reaches the server (as SIGSTOP may land there: every loop of
// a stops). Replica b takes the partition over once a's membership lapsed
// and its pin expired, restores it and reads its alert events back (none),
// judges ac-1 silent itself and raises its own occurrence. Then a resumes
// and its publish reaches the server. Before, the stream stored a's raise,
// which neither replica's state held: no clear ever followed it (a false
// alert for ever). Now b fenced the partition before its read-back, so the
// stream refuses a's raise (wrong last sequence), a drops the cycle
// (cycles_dropped{reason="fence"}) and the one occurrence on the stream,
// b's, clears when ac-1 reports again.
func TestFencedOldOwnerRaiseRefused(t *testing.T) {
	g := newGapRigWith(t, func(cfg *Config) {
		cfg.Cluster.Partitions, cfg.Cluster.PinnedTTL, cfg.Cluster.MemberTimeout = 2, Duration(2*time.Second), Duration(2*time.Second)
	})
	p := partitionOf("site1", "ac-1", 2)
	release := make(chan struct{})
	var paused, sent atomic.Bool
	var held atomic.Value // a's raise, held before its publish
	cfgA := g.cfg
	cfgA.Replica, cfgA.DataDir = "a", t.TempDir()
	a := startWith(t, cfgA, func(c *Collector) {
		c.stall = func() {
			if paused.Load() {
				<-release
			}
		}
		c.publishing = func(q int, events []alert.Alert) {
			for _, e := range events {
				if q == p && e.Key == silenceKey && e.State == alert.Raised && paused.CompareAndSwap(false, true) {
					held.Store(e)
					<-release
				}
			}
		}
		c.published = func(q int, events []alert.Alert) {
			for _, e := range events {
				if q == p && e.Key == silenceKey && e.State == alert.Raised {
					sent.Store(true)
				}
			}
		}
	})
	g.publish(t, time.Now().UnixMilli()-10*gapIV, 10)
	wait.For(t, 30*time.Second, "a paused with its live raise of ac-1's silence confirmed and not sent", paused.Load)
	cfgB := g.cfg
	cfgB.Replica, cfgB.DataDir = "b", t.TempDir()
	b := startCfg(t, cfgB)
	ours := g.first(t, alert.Raised, "b took the partition over and raised ac-1's silence itself")
	x := held.Load().(alert.Alert)
	if ours.ID == x.ID {
		t.Fatalf("b's raise %s is a's held one", ours.ID)
	}
	close(release) // a resumes: its held raise reaches the server now
	wait.For(t, 10*time.Second, "a's held raise refused or stored", func() bool {
		return sent.Load() || counterValue(t, a.c.m.dropped.WithLabelValues(reasonFence)) > 0
	})
	a.stop()
	g.publish(t, time.Now().UnixMilli()-5*gapIV, 5)
	wait.For(t, 30*time.Second, "every occurrence of ac-1's silence on the stream cleared", func() bool {
		ids, events := g.occurrences(t, time.Now().UnixMilli())
		for _, id := range ids {
			if ev := events[id]; ev[len(ev)-1].State != alert.Cleared {
				return false
			}
		}
		return len(ids) > 0
	})
	ids, events := g.occurrences(t, time.Now().UnixMilli())
	if len(ids) != 1 || ids[0] != ours.ID || len(events[ours.ID]) != 2 {
		t.Fatalf("want b's occurrence %s raised and cleared and no other (a's %s refused), got %+v", ours.ID, x.ID, events)
	}
	if n := counterValue(t, a.c.m.dropped.WithLabelValues(reasonFence)); n != 1 || sent.Load() {
		t.Fatalf("a's cycle dropped for the fence %v times (sent: %v), want once and not sent", n, sent.Load())
	}
	if act := b.c.Alerts(true); len(act) != 0 {
		t.Fatalf("active on b after ac-1 reported again: %+v", act)
	}
}

// On nats-server 2.9 (before 2.11) the fence cannot work: 2.9 ignores
// Nats-Expected-Last-Subject-Sequence-Subject and checks the sequence
// against the output's own subject, so it would refuse every alert and
// KPI message (wrong last sequence). The collector says so once at
// start-up and runs as before: no fence subject in the stream, outputs
// published without the headers. Interop: SMELTER_INTEROP=1.
func TestInteropFenceOffOn29(t *testing.T) {
	url := nats29(t)
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = url, "", t.TempDir()
	var logs logtest.Buffer
	r := startWith(t, cfg, func(c *Collector) { c.log = logs.Logger(slog.LevelInfo) })
	js := jsClient(t, url)
	t0 := time.Now().UnixMilli() - 60_000
	for i := range 30 {
		ts := t0 + int64(i)*1000
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i + 1), TSGW: ts, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 115, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
		if _, err := js.Publish(t.Context(), telemetry.Subject("site1", "air_compressor", "ac-1", telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 30*time.Second, "the alarm published on 2.9", func() bool {
		for _, a := range r.c.Alerts(true) {
			if a.Rule == "discharge_temp_high" {
				return true
			}
		}
		return false
	})
	if n := strings.Count(logs.String(), "stream fencing needs nats-server 2.11.0 or newer"); n != 1 {
		t.Fatalf("start-up notice logged %d times, want once:\n%s", n, logs.String())
	}
	s, err := js.Stream(t.Context(), cfg.NATS.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if subj := s.CachedInfo().Config.Subjects; slices.Contains(subj, fenceFilter(cfg.Group)) {
		t.Fatalf("stream subjects %v hold the fence on 2.9", subj)
	}
}

package collector

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/telemetry"
)

// floodBirthPart is part part of parts of a birth of gen-<asset> by gw-f
// (seq), with n signals of the longest src (~300 bytes a signal on the
// wire).
func floodBirthPart(t *testing.T, asset int, seq uint64, part, parts, n int) []byte {
	t.Helper()
	bi := telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-f", Seq: seq, TSGW: 1_763_812_345_000, Part: part, Parts: parts,
		Asset: telemetry.AssetJSON{ID: fmt.Sprintf("gen-%d", asset), Class: "generic", Path: []string{"acme", "s1", "_", "_", "_"}}}
	for i := range n {
		bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("p%d_s%d", part, i), Src: strings.Repeat("s", telemetry.MaxSrcLen)})
	}
	data, err := telemetry.MarshalBirth(&bi)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Review 3 B: incomplete split births were bounded in number only. One
// birth announcing parts: 1000000 is now refused part by part (bounds),
// and the parts of many incomplete births held at once stay within
// ingest.MaxBirthPartsHeld per partition, the oldest evicted; every drop
// is counted by reason (present at 0 from the start). The log has one
// line per reason, not one per part (review 3 D).
func TestIncompleteBirthPartsBounded(t *testing.T) {
	var lb logtest.Buffer
	c := newCollectorLog(t, Defaults(), &lb)
	sh := c.shard(0)
	for _, r := range ingest.PartsDropReasons {
		if n := testutil.CollectAndCount(c.m.partsDrop.WithLabelValues(r)); n != 1 {
			t.Fatalf("birth_parts_dropped_total{reason=%q} missing at start", r)
		}
	}
	var cy cycle
	subj := func(a int) string {
		return telemetry.Subject("s1", "generic", fmt.Sprintf("gen-%d", a), telemetry.KindBirth)
	}
	// 60 parts of a birth announcing a million parts
	for p := range 60 {
		c.process(sh, subj(0), floodBirthPart(t, 0, 1, p+1, 1_000_000, 20), time.Now(), &cy)
	}
	if got := counterValue(t, c.m.partsDrop.WithLabelValues(ingest.PartsDropParts)); got != 60 {
		t.Fatalf("parts refused: %v, want 60\n%.3000s", got, lb.String())
	}
	if got := counterValue(t, c.m.malformed.WithLabelValues(string(ingest.ReasonBounds))); got != 60 {
		t.Fatalf("malformed{bounds} %v, want 60", got)
	}
	// 10 births of 11 parts, 10 sent each, ~120 KB a part (12 MB in
	// all): beyond the total held, the oldest go
	for a := range 10 {
		for p := range 10 {
			c.process(sh, subj(a+1), floodBirthPart(t, a+1, uint64(10+a), p+1, 11, 400), time.Now(), &cy)
			sh.mu.Lock()
			n, b := sh.births.Held()
			sh.mu.Unlock()
			if b > ingest.MaxBirthPartsHeld || n > 256 {
				t.Fatalf("%d incomplete births, %d bytes held", n, b)
			}
		}
	}
	if got := counterValue(t, c.m.partsDrop.WithLabelValues(ingest.PartsDropEvicted)); got == 0 {
		t.Fatal("nothing evicted")
	}
	// a birth in parts within the bounds still completes
	for p := range 3 {
		c.process(sh, subj(20), floodBirthPart(t, 20, 99, p+1, 3, 2), time.Now(), &cy)
	}
	if _, ok := c.Asset("s1", "gen-20"); !ok {
		t.Fatal("a complete split birth was not applied")
	}
	log := lb.String()
	if n := strings.Count(log, "batch rejected"); n != 1 {
		t.Errorf("%d 'batch rejected' lines for 60 refused parts, want 1:\n%s", n, log)
	}
	if n := strings.Count(log, "split birth dropped"); n != 2 {
		t.Errorf("%d 'split birth dropped' lines, want 2 (parts, evicted):\n%s", n, log)
	}
}

// Review 3 D: malformed messages were logged one line each, with the
// attacker's strings in full (500 kB lines). Now the first of a reason is
// logged, the rest held back (counted in the metric and in the next line a
// minute later), and the subject and error text are cut.
func TestMalformedLogLimitedAndCut(t *testing.T) {
	var lb logtest.Buffer
	c := newCollectorLog(t, Defaults(), &lb)
	sh := c.shard(0)
	var cy cycle
	subj := telemetry.Subject("s1", "generic", "gen-1", telemetry.KindData)
	big := strings.Repeat("X", 500_000)
	for range 200 {
		c.process(sh, subj, []byte(`{"schema":"`+big+`"}`), time.Now(), &cy)
		c.process(sh, subj, []byte(`not json`), time.Now(), &cy)
	}
	long := "smelter.v1." + strings.Repeat("s", 100_000) + ".generic.a.data"
	c.process(sh, long, []byte(`{}`), time.Now(), &cy)
	log := lb.String()
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) > 4 {
		t.Fatalf("%d log lines for 401 malformed messages:\n%.2000s", len(lines), log)
	}
	for _, l := range lines {
		if len(l) > 2048 {
			t.Errorf("log line of %d bytes: %.300s", len(l), l)
		}
	}
	if got := counterValue(t, c.m.malformed.WithLabelValues("schema")) + counterValue(t, c.m.malformed.WithLabelValues("invalid")); got < 400 {
		t.Errorf("malformed counted %v, want every one (400)", got)
	}
}

// The limiter lets a key's first line through, holds the rest back for a
// minute and then reports how many it held.
func TestLogLimiter(t *testing.T) {
	t0 := time.Unix(1_763_812_345, 0)
	now := t0
	l := logLimits{now: func() time.Time { return now }}
	var buf logtest.Buffer
	log := buf.Logger(slog.LevelInfo)
	allow := func(key string, at time.Time) (bool, string) {
		now = at
		before := len(buf.String())
		ok := l.of(key).Log(context.Background(), log, slog.LevelWarn, "line", "key", key)
		return ok, buf.String()[before:]
	}
	if ok, line := allow("a", t0); !ok || strings.Contains(line, "repeated") {
		t.Fatal("first line held back")
	}
	for i := range 5 {
		if ok, _ := allow("a", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatal("a line within the minute let through")
		}
	}
	if ok, _ := allow("b", t0); !ok {
		t.Fatal("another key's first line held back")
	}
	if ok, line := allow("a", t0.Add(logEvery)); !ok || !strings.Contains(line, "repeated=5") {
		t.Fatalf("after a minute: %v, %q; want true, 5 held", ok, line)
	}
}

// The dashboard's gateway evictions are exported, at 0 from the start.
func TestDashboardGatewaysEvictedExported(t *testing.T) {
	c := newCollector(t, Defaults())
	if _, err := c.reg.Gather(); err != nil {
		t.Fatal(err)
	}
	helpOf(t, c, "smelter_collector_dashboard_gateways_evicted_total")
}

// The dashboard's event streams that fell behind the gateway removal log
// and got a fresh snapshot are counted (docs/api.md, "Slow clients").
func TestDashboardStreamLagSnapshotsExported(t *testing.T) {
	c := newCollector(t, Defaults())
	helpOf(t, c, "smelter_collector_dashboard_stream_lag_snapshots_total")
}

// A birth left incomplete is dropped after ingest.BirthPartsTTL by the
// partition worker's every fetch, idle ones included (expireBirths), not
// only when another part arrives; the drop is counted.
func TestIncompleteBirthExpires(t *testing.T) {
	c := newCollector(t, Defaults())
	sh := c.shard(0)
	bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-x", Seq: 1, Part: 1, Parts: 2,
		Asset:   telemetry.AssetJSON{ID: "a", Class: "generic", Path: []string{"acme", "s1"}},
		Signals: []telemetry.SignalInfo{{Signal: "s"}}}
	sh.mu.Lock()
	_, err := sh.births.Add(bi, 1000, time.Now().Add(-ingest.BirthPartsTTL-time.Second))
	sh.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	expireBirths(sh)
	sh.mu.Lock()
	n, b := sh.births.Held()
	sh.mu.Unlock()
	if n != 0 || b != 0 {
		t.Fatalf("%d births, %d bytes held past the TTL", n, b)
	}
	if got := counterValue(t, c.m.partsDrop.WithLabelValues(ingest.PartsDropExpired)); got != 1 {
		t.Fatalf("expired %v, want 1", got)
	}
}

package collector

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/internal/wait"
)

// Review 12 F4: a gateway whose clock runs fast drains its spool backlog
// (an uplink outage) within a second; every batch's ts_gw lies ahead of
// its arrival, is set to it, and the backlog's time axis collapses, so a
// rule that needs a duration never fires. The gateway's uplink now sends
// its data clock at publish (Smelter-Sent-At) and the collector moves the
// gateway's times back by the lead it measures, keeping their spacing.

// sustainedRule holds discharge_temp above 105 Cel for 60 s before it
// raises an alarm.
const sustainedRule = `version: 1
rules:
  - name: discharge_temp_sustained
    kind: threshold
    class: air_compressor
    signal: discharge_temp
    levels:
      - {severity: alarm, above: 105}
    deadband: 2
    on_delay: 60s
    off_delay: 30s
`

// sentAtRig is an embedded NATS server, a running collector with
// sustainedRule and a gateway's JetStream uplink whose data clock runs
// lead ahead of the wall clock (natsjs.WithClock, as gateway.Options.Now).
type sentAtRig struct {
	col  *Collector
	up   *natsjs.Uplink
	url  string
	lead time.Duration
}

func newSentAtRig(t *testing.T, lead time.Duration) *sentAtRig {
	t.Helper()
	ns, cfg := embeddedConfig(t)
	rf := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rf, []byte(sustainedRule), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Files = []string{rf}
	r := &sentAtRig{col: startCfg(t, cfg).c, url: ns.URL(), lead: lead}
	f := false
	ucfg := natsjs.Config{URL: ns.URL(), CreateStream: &f}
	ucfg.SetDefaults("gw-1")
	up, err := natsjs.New(ucfg, slog.New(slog.NewTextHandler(io.Discard, nil)), natsjs.NewMetrics(prometheus.NewRegistry()),
		natsjs.WithClock(r.gatewayNow))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	wait.For(t, 10*time.Second, "gateway uplink ready", up.Ready)
	r.up = up
	return r
}

// gatewayNow is the gateway's data clock.
func (r *sentAtRig) gatewayNow() time.Time { return time.Now().Add(r.lead) }

func (r *sentAtRig) publish(t *testing.T, envs []telemetry.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.up.Publish(ctx, envs); err != nil {
		t.Fatal(err)
	}
}

func (r *sentAtRig) ingested(kind telemetry.Kind) float64 {
	return testutil.ToFloat64(r.col.m.ingested.WithLabelValues(string(kind)))
}

// backlogBatch is ac-1's batch seq stamped ts (the gateway's clock) by
// Modbus, discharge_temp temp.
func backlogBatch(seq uint64, ts int64, temp float64) telemetry.Envelope {
	b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: spanAsset,
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: temp, Unit: "Cel", TS: ts - 5, Src: "modbus:1:hr:0"},
			{Signal: "load_state", Value: 2, TS: ts - 5, Src: "modbus:1:hr:9"}}}
	return telemetry.Envelope{Subject: telemetry.AssetSubject(spanAsset, telemetry.KindData), MsgID: b.MsgID(), Data: b.AppendJSON(nil)}
}

func sustained(c *Collector) (alert.Alert, bool) {
	for _, a := range c.Alerts(true) {
		if a.Asset == "ac-1" && a.Rule == "discharge_temp_sustained" {
			return a, true
		}
	}
	return alert.Alert{}, false
}

// TestFastGatewayBacklogKeepsTimeAxis: a gateway 240 s fast holds 91 s of
// batches in its spool (one a second; discharge_temp above the alarm's
// 105 Cel from the 21st on: 70 s) and drains them at once over a real
// uplink and NATS server. The collector moves every batch back by the
// measured lead, and the 60 s hold raises the alarm at the real time its
// 60 s passed. Before (review 12 F4) every batch was set to its arrival,
// all within a second: no alarm.
func TestFastGatewayBacklogKeepsTimeAxis(t *testing.T) {
	r := newSentAtRig(t, 240*time.Second)
	const n = 91
	real0 := time.Now().Add(-n * time.Second).UnixMilli() // the backlog's first batch, real time
	g0 := real0 + r.lead.Milliseconds()                   // ... on the gateway's clock
	var envs []telemetry.Envelope
	for i := range n {
		temp := 80.0
		if i >= 20 {
			temp = 120
		}
		envs = append(envs, backlogBatch(uint64(i+1), g0+int64(i)*1000, temp))
	}
	r.publish(t, envs)
	wait.For(t, 20*time.Second, "the backlog evaluated", func() bool { return r.ingested(telemetry.KindData) >= n })

	a, ok := sustained(r.col)
	if !ok {
		t.Fatalf("no discharge_temp_sustained alarm after 70 s above its limit (alerts %v): the backlog's time axis collapsed", r.col.Alerts(true))
	}
	// raised by the batch 60 s after the first one above, at its real time
	// plus the delivery (the lead measured is the clock's less the time
	// from publish to the collector's read: up to a few seconds on a
	// loaded machine), never ahead of it by more than the readings' 5 ms
	if want := real0 + 80_000; a.RaisedAt < want-1000 || a.RaisedAt > want+5000 {
		t.Errorf("alarm raised at %d, want about %d (the 81st batch's real time; %+d ms)", a.RaisedAt, want, a.RaisedAt-want)
	}
	if got := testutil.ToFloat64(r.col.m.shifted.WithLabelValues("data")); got != n {
		t.Errorf("clock_shifted_total{kind=data} %v, want %d", got, n)
	}
	if v, _ := r.col.Asset("site1", "ac-1"); v.LastTS < real0+89_000 || v.LastTS > time.Now().UnixMilli() {
		t.Errorf("ac-1 last evaluated at %d, want the backlog's newest real time about %d, not ahead", v.LastTS, real0+90_000)
	}
}

// TestSentAtShiftsBirthsAndDeaths: a fast gateway's birth and death, sent
// late from its spool, are moved by the same lead as its batches: the
// asset's life time (its newest birth or death) is when they happened,
// and the death's alert is raised then, not at the arrival.
func TestSentAtShiftsBirthsAndDeaths(t *testing.T) {
	r := newSentAtRig(t, 240*time.Second)
	realBirth := time.Now().Add(-60 * time.Second).UnixMilli()
	birth := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: 1, TSGW: realBirth + r.lead.Milliseconds(),
		Asset: spanAsset.ToJSON(), Protocol: "modbus", Signals: []telemetry.SignalInfo{{Signal: "discharge_temp", Unit: "Cel", IntervalMS: 1000}}}
	bdata, err := telemetry.MarshalBirth(birth)
	if err != nil {
		t.Fatal(err)
	}
	r.publish(t, []telemetry.Envelope{{Subject: telemetry.AssetSubject(spanAsset, telemetry.KindBirth), MsgID: "gw-1-1", Data: bdata}})
	wait.For(t, 10*time.Second, "the birth applied", func() bool { return r.ingested(telemetry.KindBirth) >= 1 })
	life := func() int64 {
		sh := r.col.shard(0)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		st, _ := sh.engine.Snapshot("site1", "ac-1")
		return st.LifeTSGW
	}
	if got := life(); got < realBirth || got > realBirth+1000 {
		t.Errorf("birth's time %d, want about %d (its real time; %+d ms)", got, realBirth, got-realBirth)
	}

	realDeath := time.Now().Add(-30 * time.Second).UnixMilli()
	death := &telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw-1", Seq: 2, TSGW: realDeath + r.lead.Milliseconds(),
		Asset: spanAsset.ToJSON(), Reason: "no reply"}
	r.publish(t, []telemetry.Envelope{{Subject: telemetry.AssetSubject(spanAsset, telemetry.KindDeath), MsgID: "gw-1-2", Data: mustJSON(t, death)}})
	wait.For(t, 10*time.Second, "the death applied", func() bool { return r.ingested(telemetry.KindDeath) >= 1 })
	if got := life(); got < realDeath || got > realDeath+1000 {
		t.Errorf("death's time %d, want about %d (its real time; %+d ms)", got, realDeath, got-realDeath)
	}
	a, ok := deathAlert(r.col)
	if !ok || a.RaisedAt < realDeath || a.RaisedAt > realDeath+1000 {
		t.Errorf("death alert %v (raised at %d), want raised at about %d", ok, a.RaisedAt, realDeath)
	}
	for _, k := range []string{"birth", "death"} {
		if got := testutil.ToFloat64(r.col.m.shifted.WithLabelValues(k)); got != 1 {
			t.Errorf("clock_shifted_total{kind=%s} %v, want 1", k, got)
		}
	}
}

// TestSentAtForgedOrBroken: a Smelter-Sent-At that is malformed, before
// the message's ts_gw, or a lead beyond max_future (5 min) ahead is
// ignored and counted by reason; the message's times stay as sent
// (bounded by the arrival as before). A header is no more trusted than
// the payload: what it can move is bounded by max_future and the arrival.
func TestSentAtForgedOrBroken(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	col := startCfg(t, cfg).c
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().UnixMilli()
	ms := func(v int64) string { return strconv.FormatInt(v, 10) }
	for i, tc := range []struct {
		name, sentAt string
		tsgw         int64
		reason       string
	}{
		{"malformed", ms(now+240_000) + "x", now - 2000, "malformed"},
		{"signed", "+" + ms(now+240_000), now - 2000, "malformed"},
		{"empty digits", "", now - 2000, ""}, // absent: nothing to say
		{"before ts_gw", ms(now - 60_000), now - 2000, "before_ts_gw"},
		{"beyond max_future ahead", ms(now + 10*60_000), now - 2000, "beyond_max_future"},
		{"far behind: not moved, not ignored", ms(now - 10*60_000), now - 11*60_000, ""},
	} {
		asset := telemetry.Asset{ID: fmt.Sprintf("ac-%d", i+1), Class: "air_compressor", Path: spanAsset.Path}
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i + 1), TSGW: tc.tsgw, Asset: asset,
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel", TS: tc.tsgw, Src: "modbus:1:hr:0"}}}
		m := &nats.Msg{Subject: telemetry.AssetSubject(asset, telemetry.KindData), Data: b.AppendJSON(nil), Header: nats.Header{}}
		if tc.sentAt != "" {
			m.Header.Set(telemetry.SentAtHeader, tc.sentAt)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 10*time.Second, tc.name+": evaluated", func() bool { _, ok := col.Asset("site1", asset.ID); return ok })
		if v, _ := col.Asset("site1", asset.ID); v.LastTS != tc.tsgw {
			t.Errorf("%s: the batch evaluated at %d, want its ts_gw as sent %d (%+d ms)", tc.name, v.LastTS, tc.tsgw, v.LastTS-tc.tsgw)
		}
	}
	for reason, want := range map[string]float64{"malformed": 2, "before_ts_gw": 1, "beyond_max_future": 1} {
		if got := testutil.ToFloat64(col.m.sentAtIgnored.WithLabelValues(reason)); got != want {
			t.Errorf("sent_at_ignored_total{reason=%s} %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(col.m.shifted.WithLabelValues("data")); got != 0 {
		t.Errorf("clock_shifted_total{kind=data} %v, want 0", got)
	}
}

// TestSplitBatchPartsShiftedAlike: the parts of a split batch share ts_gw
// and seq; each part's header measures a lead of its own (here 5 ms more
// on the second part, none on the third). Every part is moved by the
// first part's lead, so the later parts are neither dropped as late (a
// part moved 5 ms further back lay before the first) nor left on the
// arrival's collapsed time; the batch counts once.
func TestSplitBatchPartsShiftedAlike(t *testing.T) {
	c := newCollector(t, func() Config { cfg := Defaults(); cfg.DataDir = t.TempDir(); return cfg }())
	const lead = 240_000
	arrival := time.Now()
	tsgw := arrival.UnixMilli() - 30_000 + lead // stamped 30 s ago on a clock 240 s fast
	b := &telemetry.Batch{Gateway: "gw-1", Seq: 7, TSGW: tsgw, Asset: spanAsset}
	for i := range 30 {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("extra_%02d", i), Value: float64(i), TS: tsgw, Src: "modbus:1:hr:" + strconv.Itoa(i)})
	}
	parts, _ := b.Split(600, nil)
	if len(parts) < 3 {
		t.Fatalf("%d parts, want 3 or more", len(parts))
	}
	sh := c.shard(0)
	var cy cycle
	for i := range parts {
		at := arrival.Add(time.Duration(i) * 10 * time.Millisecond)
		sentAt := strconv.FormatInt(at.UnixMilli()+lead+int64(min(i, 1))*5, 10) // part 2 on: 5 ms more lead
		if i == 2 {
			sentAt = "" // a part without the header
		}
		c.processPayload(sh, telemetry.AssetSubject(spanAsset, telemetry.KindData), parts[i].AppendJSON(nil), false, at, true, 0, sentAt, &cy)
	}
	sh.mu.Lock()
	late, batches := sh.engine.Stats().Late, sh.engine.Stats().Batches
	sh.mu.Unlock()
	if late != 0 || batches != uint64(len(parts)) {
		t.Errorf("%d of %d parts evaluated, %d dropped as late; want every part evaluated", batches, len(parts), late)
	}
	if v, _ := c.Asset("site1", "ac-1"); v.LastTS != tsgw-lead {
		t.Errorf("ac-1 last evaluated at %d, want %d (ts_gw less the first part's lead; %+d ms)", v.LastTS, tsgw-lead, v.LastTS-(tsgw-lead))
	}
	if got := testutil.ToFloat64(c.m.shifted.WithLabelValues("data")); got != 1 {
		t.Errorf("clock_shifted_total{kind=data} %v, want 1 (one batch)", got)
	}
	sh.mu.Lock()
	held := len(sh.partLeads)
	sh.mu.Unlock()
	if held != 0 {
		t.Errorf("%d split batches' leads held after their last part, want 0", held)
	}
}

// TestClockShiftToleranceConfig: clock_shift_tolerance defaults to 2 s,
// 0s means the default, and a value below 500 ms, above 24 h or negative
// is refused naming the field.
func TestClockShiftToleranceConfig(t *testing.T) {
	cfg := Defaults()
	if got := cfg.clockShiftTolerance(); got != 2*time.Second {
		t.Errorf("default %v, want 2s", got)
	}
	cfg.ClockShiftTolerance = 0
	if err := cfg.Validate(); err != nil || cfg.clockShiftTolerance() != 2*time.Second {
		t.Errorf("0s: %v, tolerance %v; want valid, 2s", err, cfg.clockShiftTolerance())
	}
	for _, d := range []time.Duration{-time.Second, 100 * time.Millisecond, 25 * time.Hour} {
		cfg.ClockShiftTolerance = Duration(d)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "clock_shift_tolerance") {
			t.Errorf("%v: %v, want an error naming clock_shift_tolerance", d, err)
		}
	}
	cfg.ClockShiftTolerance = Duration(10 * time.Second)
	if err := cfg.Validate(); err != nil || cfg.clockShiftTolerance() != 10*time.Second {
		t.Errorf("10s: %v, tolerance %v", err, cfg.clockShiftTolerance())
	}
}

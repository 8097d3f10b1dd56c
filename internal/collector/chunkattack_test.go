package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/natswire"
	"github.com/smelterio/smelter/internal/telemetry"
)

// attackRig publishes rounds of messages of every kind and every path of
// processPayload (births whole and split, data batches with text readings,
// units, refused and invalid signals, split parts, Smelter-Sent-At headers
// valid, malformed and ahead, duplicates, late and future batches, an
// asset that changes gateway and one that changes class, deaths, statuses,
// assets beyond max_assets, malformed and rejected messages, unknown
// kinds, the collector's own outputs) and evaluates them as a partition's
// worker does: pull, cycle, Release.
type attackRig struct {
	t    *testing.T
	c    *Collector
	io   *natsIO
	sh   *shard
	pl   *puller
	t0   int64
	seq  map[int]uint64
	refs []BatchRef // every batch onCommit was given, kept past the cycles
	// later: the last parts of a split batch, published with the next
	// round (a split batch's parts in two pulls)
	later []func()
	// the only strings an asset, gateway or alert may show
	sites, assets, gateways map[string]bool
}

const attackAssets = 10 // max_assets: asset attackAssets and up are rejected

func (a *attackRig) pub(subject string, data []byte, sentAt string) {
	a.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	if sentAt != "" {
		m.Header.Set(telemetry.SentAtHeader, sentAt)
	}
	if _, err := a.io.js.PublishMsg(context.Background(), m); err != nil {
		a.t.Fatal(err)
	}
}

func (a *attackRig) asset(i, r int) (site, class, id, gw string) {
	site, class, id, gw = fmt.Sprintf("site%d", i%2+1), "air_compressor", fmt.Sprintf("ac-%02d", i), fmt.Sprintf("gw-%d", i%3)
	if i == 0 && r >= 2 {
		gw = fmt.Sprintf("gw-moved-%d", r) // the asset moves, to a new gateway every round
	}
	if i == 9 && r >= 2 {
		class = "motor" // the asset changes class: its state starts over
	}
	a.sites[site], a.assets[id], a.gateways[gw] = true, true, true
	return site, class, id, gw
}

func (a *attackRig) nextSeq(i int) uint64 { a.seq[i]++; return a.seq[i] }

func (a *attackRig) birth(i, r int, split bool) {
	site, class, id, gw := a.asset(i, r)
	b := telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: gw, Seq: a.nextSeq(i), TSGW: a.t0 + int64(r)*70_000,
		Asset:     telemetry.AssetJSON{ID: id, Class: class, Path: []string{"acme", site, "_", "_", "_"}},
		Nameplate: map[string]float64{"rated_power": 75},
		Signals: []telemetry.SignalInfo{{Signal: "discharge_temp", Unit: "Cel"}, {Signal: "load_state"},
			{Signal: "discharge_pressure", Unit: "MPa"}, {Signal: "input_power", Unit: "kW"}, {Signal: "free_air_delivery", Unit: "m3/min"}}}
	parts := []telemetry.Birth{b}
	if split {
		whole, err := telemetry.MarshalBirth(&b)
		if err != nil {
			a.t.Fatal(err)
		}
		if parts, _, err = telemetry.SplitBirth(&b, len(whole)/2+120); err != nil || len(parts) < 2 {
			a.t.Fatalf("split birth: %d parts, %v", len(parts), err)
		}
	}
	for _, p := range parts {
		data, err := telemetry.MarshalBirth(&p)
		if err != nil {
			a.t.Fatal(err)
		}
		a.pub(telemetry.Subject(site, class, id, telemetry.KindBirth), data, sentAt(0))
	}
}

func sentAt(lead time.Duration) string {
	return string(telemetry.AppendSentAt(nil, time.Now().Add(lead).UnixMilli()))
}

// batch publishes asset i's batch of round r; ts moves it off the round's
// time (a late or future batch).
func (a *attackRig) batch(i, r int, ts int64, header string, split bool) []byte {
	site, class, id, gw := a.asset(i, r)
	temp := 80.0
	if r%2 == 0 {
		temp = 125 // raised on even rounds, cleared on odd ones
	}
	b := &telemetry.Batch{Gateway: gw, Seq: a.nextSeq(i), TSGW: ts, Asset: telemetry.Asset{ID: id, Class: class, Path: []string{"acme", site, "_", "_", "_"}}}
	add := func(sig, unit string, v float64) {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: sig, Unit: unit, Value: v, TS: ts})
	}
	if class == "motor" {
		add("winding_temp", "Cel", 170)
		add("power", "kW", float64(40+r))
	} else {
		add("discharge_temp", "Cel", temp)
		add("input_power", "kW", 62)
		add("free_air_delivery", "m3/min", 11.5)
		add("load_state", "", 2)
		add("discharge_pressure", []string{"MPa", "bar"}[r%2], 0.7) // the unit changes every round
	}
	b.Readings = append(b.Readings, telemetry.Reading{Signal: "fw_version", Text: fmt.Sprintf("v%d.%d-%s", r, i, gw), NoValue: true, TS: ts})
	for k := range 3 { // new signals every round: beyond max_signals_per_asset they are refused
		add(fmt.Sprintf("x_%d_%d", r, k), "", float64(k))
	}
	add(fmt.Sprintf("bad name %d", r), "", 1) // not a signal name: dropped as invalid
	parts := []telemetry.Batch{*b}
	if split {
		parts, _ = b.Split(len(b.AppendJSON(nil))/2+64, nil)
		if len(parts) < 2 {
			a.t.Fatalf("split batch: %d parts", len(parts))
		}
	}
	var last []byte
	for k, p := range parts {
		last = p.AppendJSON(nil)
		if k == 0 {
			a.pub(telemetry.Subject(site, class, id, telemetry.KindData), last, header)
			continue
		}
		a.later = append(a.later, func() { a.pub(telemetry.Subject(site, class, id, telemetry.KindData), p.AppendJSON(nil), header) })
	}
	return last
}

// flush publishes what was left for later.
func (a *attackRig) flush() {
	for _, f := range a.later {
		f()
	}
	a.later = a.later[:0]
}

// round publishes round r.
func (a *attackRig) round(r int) {
	ts := a.t0 + int64(r)*70_000 // a KPI window (1 min) ends every round
	a.flush()
	if r == 0 {
		for i := range attackAssets {
			if i != 8 { // asset 8 has no birth: its data creates its state
				a.birth(i, r, i == 1)
			}
		}
		for g := range 3 {
			st, _ := json.Marshal(telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: fmt.Sprintf("gw-%d", g), Online: true, TSGW: ts})
			a.pub(telemetry.StatusSubject("site1", fmt.Sprintf("gw-%d", g)), st, "")
		}
	}
	if r == 2 {
		a.birth(7, r, false) // after its death
		a.birth(9, r, false) // of its new class
	}
	for i := range attackAssets {
		header := sentAt(0)
		switch i {
		case 2:
			header = fmt.Sprintf("garbage-%d-%d", r, i) // malformed: ignored, logged
		case 3:
			header = sentAt(30 * time.Second) // the gateway clock 30 s ahead: its times moved
		}
		data := a.batch(i, r, ts, header, i == 4)
		switch i {
		case 5:
			site, class, id, _ := a.asset(i, r)
			a.pub(telemetry.Subject(site, class, id, telemetry.KindData), data, "") // a duplicate
			a.batch(i, r, ts-30_000, "", false)                                     // late
		case 6:
			a.batch(i, r, time.Now().Add(time.Hour).UnixMilli(), "", false) // beyond max_future
		}
	}
	if r == 1 {
		site, class, id, gw := a.asset(7, r)
		d, _ := json.Marshal(telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: gw, Seq: a.nextSeq(7), TSGW: ts + 1,
			Asset: telemetry.AssetJSON{ID: id, Class: class, Path: []string{"acme", site, "_", "_", "_"}}, Reason: fmt.Sprintf("offline %d", r)})
		a.pub(telemetry.Subject(site, class, id, telemetry.KindDeath), d, sentAt(0))
	}
	spoof := telemetry.Batch{Gateway: fmt.Sprintf("spoof-gw-%d", r), Seq: 1, TSGW: ts,
		Asset:    telemetry.Asset{ID: fmt.Sprintf("spoof-%d", r), Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 1, Unit: "Cel", TS: ts}}}
	a.pub(telemetry.Subject("site1", "air_compressor", spoof.Asset.ID, telemetry.KindData), spoof.AppendJSON(nil), sentAt(0)) // beyond max_assets
	a.pub("smelter.v1.site1.air_compressor.ac-00.data", []byte(fmt.Sprintf(`{"schema":"smelter.telemetry.v1","gateway":"broken-%d",`, r)), "")
	odd := spoof
	odd.Asset.Class, odd.Asset.ID = "no_such_class", "odd-1"
	a.pub(telemetry.Subject("site1", "no_such_class", "odd-1", telemetry.KindData), odd.AppendJSON(nil), "") // rejected
	// about 1 MiB of statuses a round (an unknown field padding them):
	// the pull connection reads through several chunks a round, and reads
	// into the released ones again
	a.gateways["gw-pad"] = true
	for k := range 200 {
		pad := fmt.Sprintf(`{"schema":%q,"gateway":"gw-pad","online":true,"ts_gw":%d,"pad":%q}`, telemetry.SchemaStatus, ts, strings.Repeat(string(rune('a'+k%26)), 5000))
		a.pub(telemetry.StatusSubject("site2", "gw-pad"), []byte(pad), "")
	}
	if r == 3 {
		st, _ := json.Marshal(telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: "gw-1", Online: false, TSGW: ts})
		a.pub(telemetry.StatusSubject("site1", "gw-1"), st, "")
	}
}

// evaluate pulls what the stream holds for the consumer, a few messages a
// pull, and evaluates each pull as the worker does: cycle, then Release;
// after each Release everything the collector keeps is read.
func (a *attackRig) evaluate(force bool) {
	a.t.Helper()
	ctx := context.Background()
	var cy cycle
	var h held
	for {
		if err := a.pl.send(37, 300*time.Millisecond, 0); err != nil {
			a.t.Fatal(err)
		}
		msgs, err := a.pl.collect()
		if err != nil {
			a.t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		if err := a.c.cycle(ctx, a.io, a.sh, msgs, &cy, &h, false, force); err != nil {
			a.t.Fatal(err)
		}
		a.pl.release()
		a.readAll()
	}
	if len(h.replies) > 0 {
		if err := a.c.cycle(ctx, a.io, a.sh, nil, &cy, &h, false, true); err != nil {
			a.t.Fatal(err)
		}
	}
	a.readAll()
}

// readAll reads every string the collector keeps and shows (in guard mode
// a view of a released chunk faults here) and checks that asset ids,
// sites and gateways are ones that were sent.
func (a *attackRig) readAll() {
	a.t.Helper()
	c := a.c
	known := func(what, s string, set map[string]bool) {
		if !set[s] {
			a.t.Fatalf("%s %q was never sent: a view of another message", what, s)
		}
	}
	mustJSON := func(v any) {
		if _, err := json.Marshal(v); err != nil {
			a.t.Fatal(err)
		}
	}
	views := c.Assets()
	mustJSON(views)
	for _, v := range views {
		known("asset", v.ID, a.assets)
		known("site", v.Site, a.sites)
		known("asset's gateway", v.Gateway, a.gateways)
		one, _ := c.Asset(v.Site, v.ID)
		mustJSON(one)
		k, _ := c.KPIs(v.Site, v.ID)
		mustJSON(k)
		pts, units, _, _ := c.live.History(v.Site, v.ID, nil, 0)
		mustJSON(pts)
		mustJSON(units)
		mustJSON(c.live.KPIHistory(v.Site, v.ID))
		a.sh.mu.Lock()
		_, _ = a.sh.engine.AppendBinary(nil, v.Site, v.ID)
		st, _ := a.sh.engine.Snapshot(v.Site, v.ID)
		kst, _ := a.sh.kpis.Snapshot(v.Site, v.ID)
		a.sh.mu.Unlock()
		mustJSON(st)
		mustJSON(kst)
	}
	als := c.Alerts(false)
	mustJSON(als)
	for _, al := range als {
		known("alert asset", al.Asset, a.assets)
	}
	for _, g := range c.live.Gateways() {
		known("gateway", g.ID, a.gateways)
		mustJSON(g)
	}
	evs, _, _ := c.live.EventsSince(0)
	mustJSON(evs)
	for _, r := range a.refs {
		known("committed batch's gateway", r.Gateway, a.gateways)
		known("committed batch's asset", r.Asset, a.assets)
	}
	h := c.HTTPHandler("")
	paths := []string{"/metrics", "/api/v1/assets", "/api/v1/alerts", "/api/v1/gateways", "/api/v1/kpis", "/api/v1/kpis/rollup"}
	for _, v := range views {
		p := "/api/v1/assets/" + v.Site + "/" + v.ID
		paths = append(paths, p, p+"/history", p+"/kpis")
	}
	for _, p := range paths {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusOK && rec.Code != http.StatusNotFound {
			a.t.Fatalf("GET %s: %d %s", p, rec.Code, rec.Body)
		}
	}
}

// Nothing the collector keeps past a cycle, on any path of processPayload
// and of the cycle, is a view into a pull's read chunk: the connection is
// guarded (TestMain), so a kept view faults when read after the Release,
// by the next rounds' evaluation (map lookups, comparisons with what is
// kept) or by readAll (the API, the dashboard, the checkpoint's encoding,
// the metrics); and what is shown was sent. The cycle's state (held replies,
// batch references) lives across Releases as between the worker's rounds.
func TestNoViewOutlivesItsRelease(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("guard mode is Linux only")
	}
	t.Run("guarded", func(t *testing.T) { noViewOutlivesItsRelease(t, true) })
	// the chunks read into again, as in production: a kept view shows
	// another message's bytes (the checks of what is shown)
	t.Run("reused", func(t *testing.T) {
		heapChunks(t)
		noViewOutlivesItsRelease(t, false)
	})
}

func noViewOutlivesItsRelease(t *testing.T, guard bool) {
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.AckWait = Duration(2 * time.Minute)
	cfg.Cluster.CheckpointInterval = Duration(time.Minute) // cycles without outputs hold their messages
	cfg.MaxAssets = attackAssets
	cfg.MaxSignalsPerAsset = 12
	cfg.KPI.Window = Duration(time.Minute)
	c := newCollector(t, cfg)
	a := &attackRig{t: t, c: c, seq: map[int]uint64{}, t0: time.Now().Add(-10 * time.Minute).UnixMilli(),
		sites: map[string]bool{}, assets: map[string]bool{}, gateways: map[string]bool{}}
	c.onCommit = func(_ int, bs []BatchRef) { a.refs = append(a.refs, bs...) }
	a.io = collectorIO(t, c, ns.URL())
	c.js.Store(a.io)
	ctx := context.Background()
	if _, err := a.io.js.CreateOrUpdateConsumer(ctx, cfg.NATS.Stream, jetstream.ConsumerConfig{Durable: "attack", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	pl, err := newPuller(a.io.nc, cfg.NATS.Stream, "attack", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pl.stop)
	a.pl, a.sh = pl, c.shard(0)
	guarded := natswire.Guarded()
	for r := range 4 {
		a.round(r)
		a.evaluate(r%2 == 0)
	}
	a.flush()
	a.evaluate(true)
	// silence of every asset (built from what the engine kept), published
	// and checkpointed
	if err := c.tick(ctx, a.sh, nil, time.Now().Add(time.Hour).UnixMilli(), 0); err != nil {
		t.Fatal(err)
	}
	a.readAll()
	if guard && natswire.Guarded() == guarded {
		t.Fatal("no chunk was released in guard mode: the test checked nothing")
	}
	if len(a.refs) == 0 || len(c.Alerts(false)) == 0 || !slices.ContainsFunc(c.live.Gateways(), func(g dashboard.GatewayView) bool { return g.ID == "gw-moved-3" }) {
		t.Fatalf("%d batches committed, %d alerts, gateways %v: the test evaluates less than it should", len(a.refs), len(c.Alerts(false)), c.live.Gateways())
	}
}

// Package dashboard is the collector's operator view: a JSON HTTP API, a
// Server-Sent Events stream of live updates and an embedded web dashboard
// (plain HTML, CSS and JavaScript, no external assets). It reads the
// collector through the small Source interface and keeps what the
// collector does not: bounded recent history per asset signal, KPI windows
// per asset, gateway health, and a bounded log of live events.
package dashboard

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/telemetry"
)

// History bounds, per asset signal. Memory is 12 bytes per bucket, 20 in a
// tier whose buckets hold several readings (min and max kept), float64
// columns for a series with values beyond ±3.4e38 (see tier): with a 1 s
// poll (fine buckets of one reading) 300 x 12 + 240 x 20 B = 8.4 KB per
// signal once full, 10.8 KB at most. Signals appear lazily; rings grow to
// their capacity and wrap.
const (
	FineResolution   = time.Second
	FineSpan         = 5 * time.Minute
	CoarseResolution = 15 * time.Second
	CoarseSpan       = time.Hour
	// MaxSeries caps the number of asset signals with history; readings of
	// further signals are counted (LiveStats.SeriesDropped) and not kept.
	MaxSeries = 200_000
	// KPIHistory is the number of KPI windows kept per asset (a day of
	// 15-minute windows).
	KPIHistory = 96
	// EventLog is the number of alert and KPI events kept for
	// SSE clients to catch up from (Last-Event-ID).
	EventLog = 2048
)

// Event is one live update in the event log.
type Event struct {
	ID   uint64
	Type string // alert, kpi
	Data []byte // JSON
}

type assetKey [2]string // site, id

type assetLive struct {
	key     assetKey // the map's key: copies, not views into a payload
	ver     uint64   // Live.ver when the asset last changed
	recv    int64    // wall ms of the last batch
	gateway string   // gw.id
	gw      *gatewayLive
	series  map[string]*series
	// last are the series of the asset's last batch by reading index
	// (nil: none): a batch usually lists the signals of the one before in
	// the same order, so a reading finds its series by comparing names
	// instead of hashing into series
	last    []*series
	touched uint32       // what warm returned
	kpis    []kpi.Result // ring, oldest first once rotated
	kpiHead int
	// lastBuf holds last up to lastInline readings: in the asset's own
	// allocation, its loads do not wait for that of a's slice header
	lastBuf [lastInline]*series
}

// lastInline is the number of assetLive.last kept in the assetLive.
const lastInline = 16

type gatewayLive struct {
	id, site       string
	lastSeq        uint64
	lastTSGW       int64
	tsgwRecv       int64   // wall ms when lastTSGW arrived
	rate           float64 // data-clock ms per wall ms (> 1 for a plant simulated faster than real time)
	rateTS, rateAt int64   // ts_gw and wall ms the current rate measurement started from
	lastRecv       int64   // wall ms of the last message of any kind
	firstRecv      int64
	batches        uint64
	births, deaths uint64
	assets         map[assetKey]struct{}
	statusKnown    bool
	online         bool
	statusRecv     int64
	lastDeath      string
	ver            uint64 // Live.ver of the last message
	dataVer        uint64 // ... of the last batch
	statusVer      uint64 // ... of the last status message
	clk            clockEst
	clockAhead     uint64 // messages whose times the collector set to their arrival (Clock.Bounded)
	seqSuspect     uint64 // messages whose seq no gateway could have numbered yet (gwseq.go)

	links   [nLists]gwLink // places in Live's lists (gwpublish.go)
	slot    int            // refresh slot: index into Live.wheel
	held    bool           // a change waits in Live.wheel[slot]
	pubVer  uint64         // Live.ver when last published to event streams (0: never)
	pubRecv int64          // lastRecv then: what its clients hold at least
	pubLook gatewayLook    // its look then
}

// LiveStats counts what the store dropped.
type LiveStats struct {
	Series        int
	SeriesDropped uint64 // readings of signals beyond MaxSeries
	OutOfOrder    uint64 // readings older than their signal's newest bucket
	// GatewaysEvicted counts gateways dropped from the store at
	// MaxGateways to make room for a new id (the one seen least recently).
	GatewaysEvicted uint64
	// GatewayResyncs counts GatewayChanges answers that could not be
	// served as a delta (the removals after the stream's version left the
	// removal log, RemovalLog): each one is a slow event stream sent a
	// fresh gateway snapshot instead.
	GatewayResyncs uint64
}

// RemovalLog is the number of gateway removals (evictions at
// MaxGateways) kept for event streams to send as deltas. A stream whose
// client fell further behind (its writes blocked while more gateways
// were evicted) gets a fresh snapshot instead: what a stream holds for
// its client is one version number, never a queue.
const RemovalLog = 4096

// removal is a gateway dropped from the store at version ver.
type removal struct {
	ver uint64
	id  string
}

// MaxGateways bounds the gateways the store keeps (/api/v1/gateways), as
// the collector's deduplication bounds the ids it tracks
// (ingest.MaxGateways): gateway ids come from the payload, so whoever may
// publish can invent them (a review's 210,004 invented ids: 420 MB of heap
// and a 46 MB answer). Beyond it the gateway seen least recently is
// dropped; its assets keep their data and attach to it again at its next
// message.
const MaxGateways = 32768

// Live holds the dashboard's own state. Its Observe methods are called by
// the collector for every processed message; they are safe for concurrent
// use and cheap (a map lookup and a bucket update per reading).
type Live struct {
	now func() time.Time
	// silentAfter: a gateway that sent nothing for longer is shown
	// silent (WithSilentAfter); fixed after NewLive
	silentAfter time.Duration
	// clockTol: a gateway's clock estimate further off is marked
	// (WithClockTolerance; 0: none); fixed after NewLive
	clockTol time.Duration
	// seqWindow: a live batch this far behind its gateway's last_seq takes
	// its place (WithSeqWindow, gwseq.go)
	seqWindow uint64

	mu       sync.Mutex
	ver      uint64
	assets   map[assetKey]*assetLive
	sites    map[string]string // the assets' site names (see site)
	names    map[string]string // signal names and units (see name)
	gateways map[string]*gatewayLive
	nseries  int
	stats    LiveStats

	removals []removal // ring of RemovalLog, oldest first once rotated
	rmHead   int
	rmLost   uint64 // version of the newest removal that left the ring (0: none)

	// gateways by last message (eviction, the list form's change test),
	// by last publication to delta streams, and held changes by slot
	recent, published gwList
	wheel             [refreshSlots]gwList
	wheelNext         int64 // the next wheel bucket due (wall ms / slotMS)
	nextSlot          int   // the slot the next new gateway takes

	events []Event // ring of EventLog
	epoch  string  // EventID's prefix: the store's start, Unix ms
	evHead int
	lastID uint64
	wake   chan struct{} // closed and replaced on every new event
}

// NewLive returns an empty store. now is the wall clock (time.Now when nil).
func NewLive(now func() time.Time, opts ...LiveOption) *Live {
	if now == nil {
		now = time.Now
	}
	l := &Live{now: now, epoch: strconv.FormatInt(now().UnixMilli(), 10), assets: map[assetKey]*assetLive{}, sites: map[string]string{}, names: map[string]string{}, gateways: map[string]*gatewayLive{},
		wake: make(chan struct{}), recent: gwList{k: byRecency}, published: gwList{k: byPublish}, silentAfter: DefaultSilentAfter,
		clockTol: DefaultClockTolerance, seqWindow: DefaultSeqWindow}
	for i := range l.wheel {
		l.wheel[i].k = inWheel
	}
	for _, o := range opts {
		o(l)
	}
	return l
}

// asset returns the asset's entry, created on first use. The strings it
// keeps are copies: site and id may be views into a message payload that
// must not stay alive with the store.
func (l *Live) asset(site, id string) *assetLive {
	a := l.assets[assetKey{site, id}]
	if a == nil {
		k := assetKey{l.site(site), strings.Clone(id)}
		a = &assetLive{key: k, series: map[string]*series{}}
		a.last = a.lastBuf[:0]
		l.assets[k] = a
	}
	return a
}

// site returns the store's copy of a site name, one for all its assets:
// fewer allocations, and an asset's lookup compares its key's site with
// one string that stays in the cache instead of a copy of its own.
func (l *Live) site(site string) string {
	s, ok := l.sites[site]
	if !ok {
		s = strings.Clone(site)
		l.sites[s] = s
	}
	return s
}

// maxNames bounds Live.names: the signal names and units of a fleet are a
// few hundred; beyond the bound (invented names) each series keeps its
// own copy.
const maxNames = 8192

// name returns the store's copy of a signal name or unit, one for every
// series of that name (up to maxNames of them): fewer allocations, and
// the comparisons of a batch's names and units with its series' (every
// reading) read bytes that stay in the cache instead of a copy per
// series.
func (l *Live) name(s string) string {
	if c, ok := l.names[s]; ok {
		return c
	}
	c := strings.Clone(s) // not a view into the batch's payload
	if len(l.names) < maxNames {
		l.names[c] = c
	}
	return c
}

// gateway returns the gateway's entry (created on first use, strings
// copied) and records a message from it.
func (l *Live) gateway(id, site string, now int64) *gatewayLive {
	g := l.gateways[id]
	if g == nil {
		for len(l.gateways) >= MaxGateways && l.recent.back != nil {
			l.evict(l.recent.back)
		}
		g = &gatewayLive{id: strings.Clone(id), firstRecv: now, assets: map[assetKey]struct{}{}, slot: l.nextSlot}
		l.nextSlot = (l.nextSlot + 1) % refreshSlots
		l.gateways[g.id] = g
	}
	l.touch(g, site, now)
	return g
}

func (l *Live) touch(g *gatewayLive, site string, now int64) {
	if site != "" && site != g.site {
		g.site = strings.Clone(site)
	}
	g.lastRecv = now
	l.ver++
	g.ver = l.ver
	if l.recent.front != g {
		l.recent.remove(g)
		l.recent.pushFront(g)
	}
}

// evict drops gateway g from the store; its assets attach to a new entry
// at their next message.
func (l *Live) evict(g *gatewayLive) {
	for _, ls := range []*gwList{&l.recent, &l.published, &l.wheel[g.slot]} {
		ls.remove(g)
	}
	delete(l.gateways, g.id)
	for k := range g.assets {
		if a := l.assets[k]; a != nil && a.gw == g {
			a.gw = nil
		}
	}
	l.stats.GatewaysEvicted++
	l.ver++
	r := removal{ver: l.ver, id: g.id}
	if len(l.removals) < RemovalLog {
		l.removals = append(l.removals, r)
		return
	}
	l.rmLost = l.removals[l.rmHead].ver
	l.removals[l.rmHead] = r
	l.rmHead = (l.rmHead + 1) % RemovalLog
}

// attach records that asset a's messages come from gateway g.
func (a *assetLive) attach(g *gatewayLive) {
	if a.gw == g {
		return
	}
	a.gw, a.gateway = g, g.id
	g.assets[a.key] = struct{}{}
}

// ObserveBatch records a processed batch: history of every numeric reading,
// the asset's change version and its gateway's sequence and age; the
// asset's gateway becomes the batch's.
func (l *Live) ObserveBatch(b *telemetry.Batch) { l.observeBatch(b, true, nil) }

// ObserveLateBatch is ObserveBatch for a batch the rules did not evaluate
// (older in ts_gw than its asset's newest: a gateway's backlog replayed
// after the asset moved to another): it counts for its gateway and its
// readings go to the history, but the asset keeps the gateway of its
// newest evaluated message (review4 F7: before, the asset was shown on
// the gateway it left, and its data clock was that gateway's).
func (l *Live) ObserveLateBatch(b *telemetry.Batch) { l.observeBatch(b, false, nil) }

// AssetHandle is a caller's reference to an asset's entry in a Live store
// (ObserveBatchAt): it spares the map lookup by site and id on the
// asset's next batches. The zero AssetHandle refers to nothing; once
// filled it refers to the asset's entry for the store's life (the store
// never drops an asset), and only in the store that filled it. Its caller
// guards it (ObserveBatchAt fills it under the store's lock, but the
// handle itself is the caller's: one writer at a time).
type AssetHandle struct{ a *assetLive }

// ObserveBatchAt is ObserveBatchClock with h, the handle of the batch's
// asset: filled on the asset's first batch, it spares the lookup after.
func (l *Live) ObserveBatchAt(h *AssetHandle, b *telemetry.Batch, late bool, c Clock) {
	l.observeBatchAt(h, b, !late, &c)
}

// observeBatch records b; c, when not nil, is what the collector measured
// of its gateway's clock (ObserveBatchClock).
func (l *Live) observeBatch(b *telemetry.Batch, attach bool, c *Clock) {
	var h AssetHandle
	l.observeBatchAt(&h, b, attach, c)
}

// observeBatchAt is observeBatch through h (see ObserveBatchAt).
func (l *Live) observeBatchAt(h *AssetHandle, b *telemetry.Batch, attach bool, c *Clock) {
	now := l.now().UnixMilli()
	site := b.Asset.Site()
	l.mu.Lock()
	defer l.mu.Unlock()
	a := h.a
	if a == nil {
		a = l.asset(site, b.Asset.ID)
		h.a = a
	}
	a.recv = now
	g := a.gw
	if g != nil && g.id == b.Gateway {
		l.touch(g, site, now)
	} else {
		g = l.gateway(b.Gateway, site, now)
		if attach {
			a.attach(g)
		}
	}
	g.batches++
	g.dataVer = g.ver
	if c != nil {
		if c.Live && !b.Historical {
			g.clk.add(c.TSGW-c.Arrival, c.Arrival)
		}
		if c.Bounded {
			g.clockAhead++
		}
	}
	// newer: as the rules judge it (rules.Engine.Process); a suspect seq is
	// no newer (gwseq.go)
	newer := l.takeSeq(g, b, b.Seq, now, attach && c != nil && c.Live && !b.Historical)
	switch {
	case b.TSGW > g.lastTSGW:
		g.lastTSGW, g.tsgwRecv = b.TSGW, now
		g.measureRate(b.TSGW, now)
	case newer && attach && b.TSGW < g.lastTSGW:
		// the gateway's newer batch (by seq, evaluated) dated before its
		// newest: its clock stepped back, and its data clock follows, as
		// the rules do (verify12 N1: its assets were shown silent, their
		// age growing by the step, while they were evaluated)
		g.lastTSGW, g.tsgwRecv = b.TSGW, now
		g.rateAt = 0 // the clock rate is measured again from here
	}
	l.settle(g, now)
	a.ver = l.ver
	a.touched = a.warm(b.Readings)
	for i := range b.Readings {
		r := &b.Readings[i]
		if r.NoValue && r.Quality.HasValue() {
			continue // text-only signal: no chart
		}
		var s *series
		if i < len(a.last) && a.last[i] != nil && a.last[i].name == r.Signal {
			s = a.last[i]
		} else {
			s = a.series[r.Signal]
			if s == nil {
				if l.nseries >= MaxSeries {
					l.stats.SeriesDropped++
					continue
				}
				s = &series{name: l.name(r.Signal),
					fine:   newTier(FineResolution.Milliseconds(), FineSpan.Milliseconds()),
					coarse: newTier(CoarseResolution.Milliseconds(), CoarseSpan.Milliseconds())}
				a.series[s.name] = s
				l.nseries++
			}
			if i < maxLast {
				if i >= len(a.last) {
					a.last = append(a.last, make([]*series, i+1-len(a.last))...)
				}
				a.last[i] = s
			}
		}
		if r.Unit != "" && r.Unit != s.unit {
			s.unit = l.name(r.Unit)
		}
		ts := r.TS
		if ts <= 0 {
			ts = b.TSGW
		}
		good := r.HasValue()
		q := uint8(r.Quality)
		if !s.fine.add(ts, r.Value, good, q) {
			l.stats.OutOfOrder++
			continue
		}
		s.coarse.add(ts, r.Value, good, q)
	}
}

// warm loads what the readings will update, in two passes of loads that
// do not depend on each other: the series of the asset's last batch with
// the bytes of their names, then the newest bucket of each tier's columns.
// With thousands of assets the store is far larger than the caches and
// every one of these loads misses; issued together, the misses overlap
// instead of following one another in the loop that updates the tiers.
// The result means nothing; it is kept so the loads are not dropped.
func (a *assetLive) warm(rs []telemetry.Reading) uint32 {
	n := min(len(rs), len(a.last))
	var x uint32
	for _, s := range a.last[:n] {
		if s != nil && s.name != "" {
			x += uint32(s.name[0])
		}
	}
	for _, s := range a.last[:n] {
		if s != nil {
			x += s.fine.warm() + s.coarse.warm()
		}
	}
	return x
}

// maxLast bounds assetLive.last: readings further into a batch find
// their series in the map.
const maxLast = 256

// rateSpan is the wall time one clock-rate measurement spans.
const rateSpan = 2000 // ms

// measureRate updates the gateway's clock rate: how fast its data clock
// (ts_gw) runs against the wall clock. A real gateway runs at 1; the demo
// at -speed 60 stamps its batches with the simulated plant clock and runs
// at 60.
func (g *gatewayLive) measureRate(tsgw, now int64) {
	if g.rateAt == 0 {
		g.rateTS, g.rateAt = tsgw, now
		return
	}
	if now-g.rateAt < rateSpan {
		return
	}
	r := min(max(float64(tsgw-g.rateTS)/float64(now-g.rateAt), 0.01), 1e4)
	if g.rate == 0 {
		g.rate = r
	} else {
		g.rate += (r - g.rate) / 2
	}
	g.rateTS, g.rateAt = tsgw, now
}

// DataClock is the data-clock time (Unix ms) of the asset's gateway at wall
// time wallNow: its newest ts_gw advanced by the wall time since it arrived
// at the gateway's measured clock rate. Ages of readings are judged on this
// clock, never on the wall clock against source time, so a plant clock set
// to another time of day or run faster than real time still shows true
// ages. ok is false for an asset no batch was seen of.
func (l *Live) DataClock(site, id string, wallNow int64) (now int64, rate float64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.assets[assetKey{site, id}]
	if a == nil || a.gateway == "" {
		return 0, 0, false
	}
	g := l.gateways[a.gateway]
	if g == nil || g.lastTSGW == 0 {
		return 0, 0, false
	}
	rate = g.rate
	if rate == 0 {
		rate = 1
	}
	return g.lastTSGW + int64(float64(wallNow-g.tsgwRecv)*rate), rate, true
}

// ObserveBirth records a birth notice for its gateway. A birth that lists
// signals is the asset's signal list, as in the rules (docs/rules.md): the
// history of a signal it does not list goes, so births that list ever
// other signals cannot grow an asset's series beyond what the collector
// takes of one birth (max_signals_per_asset).
func (l *Live) ObserveBirth(b *telemetry.Birth) {
	now := l.now().UnixMilli()
	site := b.Asset.FromJSON().Site()
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gateway(b.Gateway, site, now)
	g.births++
	l.takeSeq(g, nil, b.Seq, now, false)
	a := l.asset(site, b.Asset.ID)
	a.attach(g)
	l.settle(g, now)
	if len(b.Signals) == 0 || len(a.series) == 0 {
		return // nameplate only: no signal list
	}
	listed := make(map[string]bool, len(b.Signals))
	for _, si := range b.Signals {
		listed[si.Signal] = true
	}
	for name := range a.series {
		if !listed[name] {
			delete(a.series, name)
			l.nseries--
		}
	}
	clear(a.last)
	l.ver++
	a.ver = l.ver
}

// ObserveDeath records a death notice for its gateway.
func (l *Live) ObserveDeath(d *telemetry.Death) {
	now := l.now().UnixMilli()
	site := d.Asset.FromJSON().Site()
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gateway(d.Gateway, site, now)
	g.deaths++
	g.lastDeath = d.Asset.ID + ": " + d.Reason
	l.takeSeq(g, nil, d.Seq, now, false)
	l.settle(g, now)
	a := l.asset(site, d.Asset.ID)
	l.ver++
	a.ver = l.ver
}

// ObserveStatus records a gateway's online/offline status message. site is
// the site token of its subject.
func (l *Live) ObserveStatus(site string, s *telemetry.Status) {
	now := l.now().UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gateway(s.Gateway, site, now)
	g.statusKnown, g.online, g.statusRecv, g.statusVer = true, s.Online, now, g.ver
	l.settle(g, now)
}

// ObserveAlerts appends alert state changes to the event log.
func (l *Live) ObserveAlerts(al []alert.Alert) {
	if len(al) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range al {
		data, err := json.Marshal(&al[i])
		if err != nil {
			continue
		}
		if a := l.assets[assetKey{al[i].Site, al[i].Asset}]; a != nil {
			l.ver++
			a.ver = l.ver
		}
		l.appendEvent("alert", data)
	}
}

// ObserveKPIs keeps finished KPI windows per asset and logs them as events.
func (l *Live) ObserveKPIs(res []kpi.Result) {
	if len(res) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range res {
		a := l.asset(r.Site, r.Asset)
		r.KPIs = append([]kpi.Value(nil), r.KPIs...)
		if len(a.kpis) < KPIHistory {
			a.kpis = append(a.kpis, r)
		} else {
			a.kpis[a.kpiHead] = r
			a.kpiHead = (a.kpiHead + 1) % KPIHistory
		}
		data, err := json.Marshal(r)
		if err != nil {
			continue
		}
		l.appendEvent("kpi", data)
	}
}

// appendEvent adds to the ring and wakes waiting streams; l.mu is held.
func (l *Live) appendEvent(typ string, data []byte) {
	l.lastID++
	e := Event{ID: l.lastID, Type: typ, Data: data}
	if len(l.events) < EventLog {
		l.events = append(l.events, e)
	} else {
		l.events[l.evHead] = e
		l.evHead = (l.evHead + 1) % EventLog
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// EventsSince returns the events after id, oldest first, and the channel
// closed at the next event. lost is true when events after id already left
// the log (the client must reload its state).
func (l *Live) EventsSince(id uint64) (evs []Event, wake <-chan struct{}, lost bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.events)
	if n > 0 {
		oldest := l.events[0].ID
		if n == EventLog {
			oldest = l.events[l.evHead].ID
		}
		if id+1 < oldest {
			lost = true
		}
	}
	for i := range n {
		j := i
		if n == EventLog {
			j = (l.evHead + i) % EventLog
		}
		if l.events[j].ID > id {
			evs = append(evs, l.events[j])
		}
	}
	return evs, l.wake, lost
}

// LastEventID returns the id of the newest event (0 when none).
func (l *Live) LastEventID() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastID
}

// AssetsChangedSince returns the assets changed after version v and the
// current version.
func (l *Live) AssetsChangedSince(v uint64) (keys []assetKey, cur uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, a := range l.assets {
		if a.ver > v {
			keys = append(keys, k)
		}
	}
	return keys, l.ver
}

// GatewaysChangedSince tells whether the gateway list changed after
// version v, and returns the current version.
func (l *Live) GatewaysChangedSince(v uint64) (changed bool, cur uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gatewaysChanged(v), l.ver
}

// Version returns the store's current change version.
func (l *Live) Version() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ver
}

// EventID is the id of event n on the wire: "<epoch>-<n>", epoch the
// store's start (Unix ms), so that an id of another collector process (a
// restart, another replica) is never taken for one of this log's
// (review4 F4).
func (l *Live) EventID(n uint64) string {
	return l.epoch + "-" + strconv.FormatUint(n, 10)
}

// PlaceEventID returns the event number of id (from EventID), if id is
// one of this store's: its epoch, and a number not ahead of the newest
// event. ok is false for anything else (another process's id, a
// malformed one): the client must reload its state.
func (l *Live) PlaceEventID(id string) (n uint64, ok bool) {
	ep, num, found := strings.Cut(id, "-")
	if !found || ep != l.epoch {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return n, n <= l.lastID
}

// gatewaysChanged tells whether the gateway list changed after version v:
// a gateway was touched (the recency list is in version order, newest
// first) or removed. l.mu is held.
func (l *Live) gatewaysChanged(v uint64) bool {
	if l.recent.front != nil && l.recent.front.ver > v {
		return true
	}
	n := len(l.removals)
	return n > 0 && l.removals[(l.rmHead+n-1)%n].ver > v
}

// Received returns the wall time (Unix ms) of the asset's last batch and
// the gateway it came through.
func (l *Live) Received(site, id string) (int64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.assets[assetKey{site, id}]; a != nil {
		return a.recv, a.gateway
	}
	return 0, ""
}

// SeriesInfo names one signal with history.
type SeriesInfo struct {
	Signal string `json:"signal"`
	Unit   string `json:"unit,omitempty"`
}

// History returns the points of the asset's signals since (Unix ms); with
// no signals named, every signal. ok is false when the asset is unknown;
// missing lists named signals without history.
func (l *Live) History(site, id string, signals []string, since int64) (out map[string][]Point, units map[string]string, missing []string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.assets[assetKey{site, id}]
	if a == nil {
		return nil, nil, nil, false
	}
	out, units = map[string][]Point{}, map[string]string{}
	if len(signals) == 0 {
		for name := range a.series {
			signals = append(signals, name)
		}
	}
	for _, name := range signals {
		s := a.series[name]
		if s == nil {
			missing = append(missing, name)
			continue
		}
		out[name] = s.points(since)
		units[name] = s.unit
	}
	return out, units, missing, true
}

// KPIHistory returns the kept KPI windows of an asset, oldest first.
func (l *Live) KPIHistory(site, id string) []kpi.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.assets[assetKey{site, id}]
	if a == nil {
		return nil
	}
	out := make([]kpi.Result, 0, len(a.kpis))
	out = append(out, a.kpis[a.kpiHead:]...)
	out = append(out, a.kpis[:a.kpiHead]...)
	return out
}

// Stats returns the store's counters.
func (l *Live) Stats() LiveStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Series = l.nseries
	return s
}

// GatewayView is a gateway's health as served by /api/v1/gateways.
type GatewayView struct {
	ID        string `json:"id"`
	Site      string `json:"site"`
	Status    string `json:"status"` // online, silent, offline
	Online    *bool  `json:"online_reported,omitempty"`
	LastSeq   uint64 `json:"last_seq"`
	LastTSGW  int64  `json:"last_ts_gw,omitempty"`
	LastRecv  int64  `json:"last_recv"`
	AgeMS     int64  `json:"age_ms"`
	Batches   uint64 `json:"batches"`
	Births    uint64 `json:"births"`
	Deaths    uint64 `json:"deaths"`
	Assets    int    `json:"assets"`
	LastDeath string `json:"last_death,omitempty"`
	// ClockOffsetMS is the gateway's clock estimate (gwclock.go): the
	// median ts_gw - arrival (collector's clock, ms) of its last 5 live
	// batches of the last minute; positive: the gateway's clock is ahead.
	// A lower bound of its lead (delays only lower a sample) while most of
	// those batches are honest. Absent until a live batch came; a silent
	// or offline gateway keeps its last, no longer current. Bounded to
	// ±ClockOffsetLimit (7 days): at the bound, at least that far off.
	ClockOffsetMS *int64 `json:"clock_offset_ms,omitempty"`
	// ClockSkew is "ahead" or "behind" when ClockOffsetMS lies beyond the
	// store's clock tolerance (clock_tolerance_ms) that way and the
	// gateway is online (Status); absent else.
	ClockSkew string `json:"clock_skew,omitempty"`
	// ClockAheadTotal counts the gateway's batches, births and deaths
	// whose times the collector set to their arrival (dated ahead of it).
	ClockAheadTotal uint64 `json:"clock_ahead_total"`
	// SeqSuspectTotal counts the gateway's messages whose seq lay beyond
	// what any gateway could have numbered by then (the collector's clock
	// in Unix microseconds plus SeqAhead): not taken as its last_seq
	// (gwseq.go). Absent while 0.
	SeqSuspectTotal uint64 `json:"seq_suspect_total,omitempty"`
}

// DefaultSilentAfter is how long a gateway may send nothing before it is
// shown as silent (its assets' own staleness is judged by the stale
// rules), unless WithSilentAfter says otherwise (the collector's
// http.gateway_silent_after).
const DefaultSilentAfter = 30 * time.Second

// MinSilentAfter is the shortest silence threshold: the event streams'
// deltas may hold a publishing gateway's last_recv for up to half the
// threshold + RefreshInterval + 2 ticks (gwpublish.go), which must stay
// inside it with a margin (at 20 s: 10 + 5 + 2 = 17 s), or a client would
// call a gateway silent that keeps publishing.
const MinSilentAfter = 20 * time.Second

// LiveOption configures a Live (NewLive).
type LiveOption func(*Live)

// WithSilentAfter sets how long a gateway may send nothing before it is
// shown silent (default DefaultSilentAfter; raised to MinSilentAfter).
func WithSilentAfter(d time.Duration) LiveOption {
	return func(l *Live) {
		if d > 0 {
			l.silentAfter = max(d, MinSilentAfter)
		}
	}
}

// SilentAfter is the store's silence threshold (WithSilentAfter): sent
// to event stream clients as silent_after_ms.
func (l *Live) SilentAfter() time.Duration { return l.silentAfter }

func (g *gatewayLive) view(now, silentMS int64, clockTol time.Duration) GatewayView {
	v := GatewayView{ID: g.id, Site: g.site, LastSeq: g.lastSeq, LastTSGW: g.lastTSGW, LastRecv: g.lastRecv, AgeMS: now - g.lastRecv,
		Batches: g.batches, Births: g.births, Deaths: g.deaths, Assets: len(g.assets), LastDeath: g.lastDeath,
		ClockAheadTotal: g.clockAhead, SeqSuspectTotal: g.seqSuspect, Status: g.status(now, silentMS)}
	if off, ok := g.clk.offset(); ok {
		v.ClockOffsetMS = &off
	}
	if v.Status == "online" { // else the estimate is not current: not marked (gwclock.go)
		v.ClockSkew = g.clk.skew(clockTol)
	}
	if g.statusKnown {
		on := g.online
		v.Online = &on
	}
	return v
}

// status is how g is shown at now (Unix ms): offline, silent (nothing for
// more than silentMS) or online.
func (g *gatewayLive) status(now, silentMS int64) string {
	switch {
	case g.offline():
		return "offline"
	case now-g.lastRecv > silentMS:
		return "silent"
	}
	return "online"
}

// offline tells whether g is shown offline: its last status message said
// so and no batch came after it.
func (g *gatewayLive) offline() bool {
	return g.statusKnown && !g.online && g.statusVer > g.dataVer
}

// Gateways returns every gateway seen, sorted by id.
func (l *Live) Gateways() []GatewayView {
	gws, _, _ := l.GatewaySnapshot()
	return gws
}

// GatewaySnapshot returns every gateway seen, sorted by id, with the
// wall time (Unix ms) its views were taken at and the store's version
// they reflect: GatewayChanges(ver) continues from it.
func (l *Live) GatewaySnapshot() (gws []GatewayView, now int64, ver uint64) {
	now = l.now().UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advance(now) // the held changes due: not sent again after the snapshot
	gws = make([]GatewayView, 0, len(l.gateways))
	for _, g := range l.gateways {
		gws = append(gws, g.view(now, l.silentAfter.Milliseconds(), l.clockTol))
	}
	sortGateways(gws)
	return gws, now, l.ver
}

// GatewayChanges returns how the gateway list changed after version v
// (from GatewaySnapshot or an earlier GatewayChanges): the gateways
// published since (sorted by id; added, changed in what their row shows,
// or due for their counters' refresh: gwpublish.go) and the ids removed
// since (evicted at MaxGateways, not seen again), with the wall time (Unix
// ms) of the views and the current version. Its cost is that of what it
// returns plus the refresh slots that came up since the last call, not of
// the list: the published gateways are the front of the publication
// list, and a held change waits in its slot's bucket of a time wheel. ok is
// false when removals after v already left the removal log (RemovalLog):
// the caller must start again from a snapshot (counted in
// LiveStats.GatewayResyncs).
func (l *Live) GatewayChanges(v uint64) (changed []GatewayView, removed []string, now int64, cur uint64, ok bool) {
	now = l.now().UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	if v < l.rmLost {
		l.stats.GatewayResyncs++
		return nil, nil, now, l.ver, false
	}
	l.advance(now)
	for g := l.published.front; g != nil && g.pubVer > v; g = g.links[byPublish].next {
		changed = append(changed, g.view(now, l.silentAfter.Milliseconds(), l.clockTol))
	}
	sortGateways(changed)
	var seen map[string]bool // an id evicted, seen again and evicted again
	n := len(l.removals)
	for i := n - 1; i >= 0; i-- { // newest first, down to v
		r := l.removals[(l.rmHead+i)%n]
		if r.ver <= v {
			break
		}
		if l.gateways[r.id] != nil || seen[r.id] {
			continue // back in the list: it is among changed
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[r.id] = true
		removed = append(removed, r.id)
	}
	slices.Sort(removed)
	return changed, removed, now, l.ver, true
}

func sortGateways(gws []GatewayView) {
	slices.SortFunc(gws, func(a, b GatewayView) int { return strings.Compare(a.ID, b.ID) })
}

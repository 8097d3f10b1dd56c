package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/dashboard"
)

// shard is the rule and KPI state of one partition (partition 0 in single
// replica mode). Only the replica that owns the partition evaluates it, in
// stream order; its state is checkpointed per asset in the state bucket
// under "p<partition>.<site>.<asset>".
type shard struct {
	p   int
	tok string // p as the partition token of its subjects

	// cycle serialises evaluate-publish-checkpoint-ack cycles (the
	// partition's worker, Tick, Handle); held across I/O.
	cycle sync.Mutex

	mu     sync.Mutex // guards everything below; never held across I/O
	gone   bool       // its counts moved to Collector.retired (guarded by Collector.statsMu too)
	engine *rules.Engine
	kpis   *kpi.Tracker
	dedup  *ingest.Dedup
	births *ingest.BirthParts // parts of split births (docs/schema.md) until complete
	// partLeads: the gateway clock lead (ms) by which the parts of a
	// split batch are moved, measured on the first part seen, until its
	// last part (Collector.batchLead); at most maxPartLeads
	partLeads map[partKey]int64
	active    map[string]alert.Alert
	activeOf  map[[2]string]map[string]struct{} // keys of active, by (site, asset)
	// refs: every asset's handles into the engine, the KPI tracker and
	// the dashboard store, and its place in the dirty list; a batch looks
	// its asset up here once (assetRef). dirty lists the assets changed
	// since the last checkpoint, each once: those whose mark is epoch
	// (markDirty, clearDirty).
	refs    map[[2]string]*assetRef
	dirty   []*assetRef
	epoch   uint64
	rev     map[[2]string]uint64 // KV revision of each asset's record
	loaded  bool                 // state restored from the bucket
	scratch []alert.Alert
	// adopt: alert events the restored records lack, read back from the
	// stream (reconcile), applied in stream order (adoptBefore); adopting
	// tells the hot path whether there are any
	adopt    []adoption
	adopting atomic.Bool
	// stored: the Nats-Msg-Id of every alert event of the group read back
	// at the restore (reconcile): a redelivered message evaluated again
	// gives the same event, which is not published again (publish)
	stored  map[string]struct{}
	results []kpi.Result
	// fence: the stream sequence of the fence this shard's worker
	// published before its restore (fence.go); every output carries it, so
	// the stream refuses them once another worker fenced the partition
	// since. 0: no fence (MQTT and Handle, a server before 2.11).
	fence uint64

	// the checkpoint's reused snapshot buffers and record arena
	kst    kpi.AssetState
	alerts []alert.Alert
	arena  []byte   // the chunk records are appended to
	used   [][]byte // earlier chunks of records not known to be stored yet
	free   [][]byte // chunks whose records are stored (PubAcked): reused
}

// partKey identifies a split batch: its gateway, seq and part count (a
// batch split again under another limit is another split, as in its
// message ids).
type partKey struct {
	gateway string
	seq     uint64
	parts   int
}

// maxPartLeads bounds shard.partLeads: split batches whose parts are in
// flight at once on one partition (a batch's parts are published one after
// the other). Beyond it the map starts afresh; a part of a batch forgotten
// so is measured on its own header (at worst dropped as late, counted).
const maxPartLeads = 1024

// recordChunk is the size of the chunks records are encoded into.
const recordChunk = 256 << 10

// chunk makes room for a record: a new chunk (reused if one is free) when
// the current one has less than 16 KiB left; sh.mu is held.
func (sh *shard) chunk() {
	if cap(sh.arena)-len(sh.arena) >= 16<<10 {
		return
	}
	if sh.arena != nil {
		sh.used = append(sh.used, sh.arena)
	}
	if n := len(sh.free); n > 0 {
		sh.arena, sh.free = sh.free[n-1][:0], sh.free[:n-1]
		return
	}
	sh.arena = make([]byte, 0, recordChunk)
}

// recycle frees the chunks of the records snapshot returned once every one
// of them is stored (a PubAck each: the client neither holds nor resends
// them); sh.mu is held. After a failed checkpoint the chunks are left to
// the garbage collector instead (a publish may still be retried).
func (sh *shard) recycle() {
	if sh.arena != nil {
		sh.used = append(sh.used, sh.arena)
	}
	for _, c := range sh.used {
		if cap(c) == recordChunk { // not one grown by a huge record
			sh.free = append(sh.free, c[:0])
		}
	}
	clear(sh.used)
	sh.used, sh.arena = sh.used[:0], nil
}

// forget drops the chunks without reusing them; sh.mu is held.
func (sh *shard) forget() {
	clear(sh.used)
	sh.used, sh.arena = sh.used[:0], nil
}

func (c *Collector) newShard(p int) *shard {
	return &shard{p: p, tok: strconv.Itoa(p), engine: rules.New(c.set, c.cat, rules.Options{MaxFuture: time.Duration(c.cfg.MaxFuture)}), kpis: c.cfg.kpiTracker(c.set, c.cat),
		dedup: ingest.NewDedup(c.cfg.DedupWindow), births: ingest.NewBirthParts(256, c.birthPartsDropped), partLeads: map[partKey]int64{}, active: map[string]alert.Alert{}, activeOf: map[[2]string]map[string]struct{}{}, refs: map[[2]string]*assetRef{},
		epoch: 1, rev: map[[2]string]uint64{}}
}

// assetRef is what a shard keeps of one asset for the path of its
// batches: its key (copies, never views into a payload) and its handles
// into the rules engine, the KPI tracker and the dashboard store, so that
// a batch looks its asset up once (in shard.refs) instead of once per
// structure, and whether it is in the dirty list. Guarded by shard.mu
// (live is filled under the store's lock too, but only ever with sh.mu
// held). A shard's refs go with it (a partition released or dropped):
// the next shard of the partition starts with none.
type assetRef struct {
	key  [2]string
	eng  rules.Handle
	kpi  kpi.Handle
	live dashboard.AssetHandle
	mark uint64 // shard.epoch when listed in shard.dirty
}

// ref returns the asset's ref, created on first use (its key the
// engine's copies when the engine tracks the asset); sh.mu is held.
func (sh *shard) ref(site, id string) *assetRef {
	r := sh.refs[[2]string{site, id}]
	if r == nil {
		k, _, ok := sh.engine.Key(site, id)
		if !ok {
			k = [2]string{strings.Clone(site), strings.Clone(id)}
		}
		r = &assetRef{key: k}
		sh.refs[k] = r
	}
	return r
}

// bind makes r's asset the engine's current one and reports whether the
// engine tracks it (rules.Engine.Bind); sh.mu is held. When the engine's
// state of the asset was replaced since (a class change, a restored
// record), the KPI handle is looked up again too: a restored record
// replaces the asset's KPI entry with its rule state (shard.restore).
func (sh *shard) bind(r *assetRef) bool {
	was := r.eng
	ok := sh.engine.Bind(&r.eng, r.key[0], r.key[1])
	if r.eng != was {
		r.kpi = kpi.Handle{}
	}
	return ok
}

// markDirty lists r's asset for the next checkpoint, once; sh.mu is held.
func (sh *shard) markDirty(r *assetRef) {
	if r.mark != sh.epoch {
		r.mark = sh.epoch
		sh.dirty = append(sh.dirty, r)
	}
}

// dirtyKey lists the asset (site, id) for the next checkpoint, once;
// sh.mu is held.
func (sh *shard) dirtyKey(site, id string) { sh.markDirty(sh.ref(site, id)) }

// clearDirty empties the dirty list; sh.mu is held.
func (sh *shard) clearDirty() {
	clear(sh.dirty)
	sh.dirty = sh.dirty[:0]
	sh.epoch++
}

// record is the checkpoint of one asset in the state bucket.
type record struct {
	V      int              `json:"v"`
	Rules  rules.AssetState `json:"rules"`
	KPI    *kpi.AssetState  `json:"kpi,omitempty"`
	Alerts []alert.Alert    `json:"alerts,omitempty"` // active ones, for the API after a takeover
}

const (
	recordVersion = 1 // a JSON record: {"v":1,...}
	// recordBinary is the first byte of a binary record (a JSON one
	// starts with '{'); what follows is statebin: the rule state, a
	// presence byte and the KPI state, the active alerts as a
	// length-prefixed JSON array (empty: none).
	recordBinary = 3
	// recordBinaryV2 is the first byte of the binary records earlier
	// releases wrote: the rule state without the ts_gw of the newest
	// birth or death (rules.ReadBinaryV2). Read, never written.
	recordBinaryV2 = 2
)

// appendRecordTail appends what follows the rule state in a binary
// record (recordBinary, then the rule state: Engine.AppendBinary): the KPI
// state's presence and the state, then the active alerts.
func appendRecordTail(b []byte, k *kpi.AssetState, alerts []alert.Alert) ([]byte, error) {
	if k == nil {
		b = append(b, 0)
	} else {
		b = k.AppendBinary(append(b, 1))
	}
	if len(alerts) == 0 {
		return append(b, 0), nil
	}
	al, err := json.Marshal(alerts)
	if err != nil {
		return b, err
	}
	return append(statebin.AppendUvarint(b, uint64(len(al))), al...), nil
}

// decodeRecord reads a record of either form: binary (recordBinary) or
// JSON (version 1, as every collector before the binary form wrote).
func decodeRecord(data []byte) (record, error) {
	var r record
	switch {
	case len(data) == 0:
		return r, errors.New("empty record")
	case data[0] != recordBinary && data[0] != recordBinaryV2 && data[0] != '{':
		return r, fmt.Errorf("unknown record format (first byte %#02x: neither a binary record, version %#02x or %#02x, nor JSON): written by a newer release?", data[0], recordBinary, recordBinaryV2)
	}
	if data[0] == '{' {
		if err := json.Unmarshal(data, &r); err != nil {
			return r, err
		}
		if r.V != recordVersion {
			return r, fmt.Errorf("record version %d", r.V)
		}
		return r, nil
	}
	rd := statebin.NewReader(data[1:])
	r.V = recordVersion
	if data[0] == recordBinaryV2 {
		r.Rules = rules.ReadBinaryV2(rd)
	} else {
		r.Rules = rules.ReadBinary(rd)
	}
	if rd.Bool() {
		k := kpi.ReadBinary(rd)
		r.KPI = &k
	}
	if al := rd.Bytes(); len(al) > 0 && rd.Err() == nil {
		if err := json.Unmarshal(al, &r.Alerts); err != nil {
			return r, fmt.Errorf("record alerts: %w", err)
		}
	}
	if err := rd.Done(); err != nil {
		return r, fmt.Errorf("binary record: %w", err)
	}
	return r, nil
}

// encode is json.Marshal(r), with the rule state (most of a record)
// written by rules.AssetState.AppendJSON instead of reflection: the same
// bytes (TestRecordEncodingMatchesMarshal).
func (r *record) encode() ([]byte, error) {
	rest := *r
	rest.Rules = rules.AssetState{}
	tail, err := json.Marshal(&rest)
	if err != nil {
		return nil, err
	}
	head := `{"v":` + strconv.Itoa(r.V) + `,"rules":`
	empty := head + `{"site":"","id":"","class":""}`
	if len(tail) < len(empty) || string(tail[:len(empty)]) != empty { // the record's layout changed: reflection only
		return json.Marshal(r)
	}
	out := make([]byte, 0, len(tail)+4096)
	out = append(out, head...)
	if out, err = r.Rules.AppendJSON(out); err != nil {
		return nil, err
	}
	return append(out, tail[len(empty):]...), nil
}

// stateKey is the KV key of an asset's record.
func stateKey(p int, site, id string) string {
	return "p" + strconv.Itoa(p) + "." + site + "." + id
}

// snapshot encodes the dirty assets' records (binary unless asJSON); sh.mu
// is held. Records longer than limit bytes (the server's max_payload; 0:
// no limit) are not returned but listed in tooBig: they cannot be stored.
func (sh *shard) snapshot(dst []kvWrite, limit int, asJSON bool, tooBig func(key string, n int)) ([]kvWrite, error) {
	for _, ref := range sh.dirty {
		k := ref.key
		var data []byte
		var err error
		if asJSON {
			r := record{V: recordVersion}
			st, ok := sh.engine.Snapshot(k[0], k[1])
			if !ok {
				continue
			}
			r.Rules = st
			if ks, ok := sh.kpis.Snapshot(k[0], k[1]); ok {
				r.KPI = &ks
			}
			r.Alerts = sh.alertsOf(k, nil)
			data, err = r.encode()
		} else {
			// the rule state straight from the engine (the bytes of its
			// snapshot's AppendBinary without the copy), into chunks records
			// share: no allocation per record
			sh.chunk()
			start := len(sh.arena)
			b, ok := sh.engine.AppendBinary(append(sh.arena, recordBinary), k[0], k[1])
			if !ok {
				continue
			}
			var ks *kpi.AssetState
			if sh.kpis.SnapshotInto(&sh.kst, k[0], k[1]) {
				ks = &sh.kst
			}
			sh.alerts = sh.alertsOf(k, sh.alerts[:0])
			sh.arena, err = appendRecordTail(b, ks, sh.alerts)
			clear(sh.alerts)
			data = sh.arena[start:len(sh.arena):len(sh.arena)]
		}
		if err != nil {
			return dst, fmt.Errorf("collector: encode state of %s.%s: %w", k[0], k[1], err)
		}
		key := stateKey(sh.p, k[0], k[1])
		if limit > 0 && len(data) > limit {
			tooBig(key, len(data))
			continue
		}
		dst = append(dst, kvWrite{asset: k, key: key, data: data, rev: sh.rev[k]})
	}
	sh.clearDirty()
	return dst, nil
}

// alertsOf appends the active alerts of asset k; sh.mu is held.
func (sh *shard) alertsOf(k [2]string, dst []alert.Alert) []alert.Alert {
	for key := range sh.activeOf[k] {
		dst = append(dst, sh.active[key])
	}
	return dst
}

// setAlert records an alert's new state in active (kept while active,
// indexed by asset for the checkpoint records); sh.mu is held.
func (sh *shard) setAlert(a alert.Alert) {
	k := [2]string{a.Site, a.Asset}
	if !a.Active() {
		delete(sh.active, a.Key)
		if m := sh.activeOf[k]; m != nil {
			delete(m, a.Key)
			if len(m) == 0 {
				delete(sh.activeOf, k)
			}
		}
		return
	}
	sh.active[a.Key] = a
	m := sh.activeOf[k]
	if m == nil {
		m = map[string]struct{}{}
		sh.activeOf[k] = m
	}
	m[a.Key] = struct{}{}
}

// restore applies one record read from the bucket, stored there at
// written (Unix ms; 0: unknown, the restore time); sh.mu is held.
func (sh *shard) restore(data []byte, rev uint64, written int64) error {
	r, err := decodeRecord(data)
	if err != nil {
		return err
	}
	if r.Rules.Site == "" || r.Rules.ID == "" {
		return errors.New("record without site/id")
	}
	sh.engine.RestoreAssetAt(&r.Rules, written)
	if r.KPI != nil {
		sh.kpis.RestoreAsset(r.KPI)
		sh.kpis.RestoreBirth(r.Rules.Site, r.Rules.ID, r.Rules.Birth)
	}
	k := [2]string{r.Rules.Site, r.Rules.ID}
	for key := range sh.activeOf[k] { // a newer record of an asset restored before (follow)
		delete(sh.active, key)
	}
	delete(sh.activeOf, k)
	for _, a := range r.Alerts {
		if a.Active() {
			sh.setAlert(a)
		}
	}
	sh.rev[k] = rev
	return nil
}

// The reasons of smelter_collector_state_records_skipped_total.
const (
	skippedUnreadable     = "unreadable"
	skippedOtherPartition = "other_partition"
)

// load restores every record of the shard's partition from the bucket and
// logs msg (empty: "partition state restored").
func (c *Collector) load(ctx context.Context, kv jetstream.KeyValue, sh *shard, msg string) error {
	w, err := c.loadWatch(ctx, kv, sh, msg)
	if w != nil {
		_ = w.Stop()
	}
	return err
}

// loadWatch is load, returning the bucket's watcher of the partition's
// records once every current one is restored (nil when the shard was
// loaded already): follow applies the records written after. It logs msg
// (empty: "partition state restored") with the counts restored.
func (c *Collector) loadWatch(ctx context.Context, kv jetstream.KeyValue, sh *shard, msg string) (jetstream.KeyWatcher, error) {
	if msg == "" {
		msg = "partition state restored"
	}
	sh.mu.Lock()
	done := sh.loaded
	sh.mu.Unlock()
	if done {
		return nil, nil
	}
	w, err := kv.Watch(ctx, "p"+strconv.Itoa(sh.p)+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("collector: state bucket watch: %w", err)
	}
	n := 0
	var newest time.Time // put time of the partition's newest record
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok { // a cut connection or a lost stream leader: the worker starts again and watches again
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				c.m.rewatches.WithLabelValues(watchState).Inc()
				return nil, errors.New("collector: state bucket watch ended before the partition's records were read; watched again by the worker's next start")
			}
			if e == nil { // every current value delivered
				if io := c.js.Load(); io != nil {
					if _, err := c.reconcile(ctx, io, sh, newest); err != nil {
						_ = w.Stop()
						return nil, err
					}
				}
				sh.mu.Lock()
				sh.loaded = true
				alerts := len(sh.active)
				sh.mu.Unlock()
				c.log.Info(msg, "partition", sh.p, "assets", n, "active_alerts", alerts)
				return w, nil
			}
			if c.apply(ctx, sh, e) {
				n++
				newest = later(newest, e.Created())
			}
		}
	}
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// follow applies the records of the partition written since loadWatch (by
// the replica the server still delivers the partition to) without waiting;
// false when the watch ended.
func (c *Collector) follow(ctx context.Context, w jetstream.KeyWatcher, sh *shard) bool {
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return false
			}
			if e != nil {
				c.apply(ctx, sh, e)
			}
		default:
			return true
		}
	}
}

// apply restores one record of the bucket into the shard, and reports
// whether it did.
func (c *Collector) apply(ctx context.Context, sh *shard, e jetstream.KeyValueEntry) bool {
	site, id := siteID(e.Key())
	if parts := c.cfg.Cluster.Partitions; parts > 0 && partitionOf(site, id, parts) != sh.p {
		// written when the group had another partition count: the
		// asset's owner now is another partition, which keeps its
		// own record; restoring this one would track the asset twice
		// (a copy that never gets data raises "sent nothing")
		c.m.badState.WithLabelValues(skippedOtherPartition).Inc()
		c.log.Warn("state record of an asset another partition owns skipped (cluster.partitions changed; the asset starts afresh in its partition)",
			"key", e.Key(), "partition", sh.p)
		return false
	}
	sh.mu.Lock()
	if !sh.engine.Has(site, id) && c.tracked.Load() >= int64(c.cfg.MaxAssets) {
		sh.mu.Unlock()
		c.m.rejected.Inc()
		return false
	}
	before := sh.engine.Len()
	var written int64 // the server's time of the put: the asset's silence clock starts there (rules.Engine.RestoreAssetAt)
	if t := e.Created(); !t.IsZero() {
		written = t.UnixMilli()
	}
	err := sh.restore(e.Value(), e.Revision(), written)
	if c.log.Enabled(ctx, slog.LevelDebug) {
		st, _ := sh.engine.Snapshot(siteID(e.Key()))
		c.log.Debug("state restored", "key", e.Key(), "rev", e.Revision(), "seq", st.Seq, "batches", st.Batches)
	}
	if err != nil && site != "" && id != "" {
		// unreadable (corrupt, or a format this build does not
		// know): the asset starts afresh, and its next checkpoint
		// replaces the record at this revision; without the
		// revision every checkpoint of the partition would be
		// refused as a conflict, for ever
		sh.rev[[2]string{site, id}] = e.Revision()
	}
	c.count(sh, before)
	sh.mu.Unlock()
	if err != nil {
		c.m.badState.WithLabelValues(skippedUnreadable).Inc()
		c.log.Error("state record unreadable: the asset starts afresh, its next checkpoint replaces the record", "key", e.Key(), "rev", e.Revision(), "err", err)
		return false
	}
	return true
}

func siteID(key string) (string, string) {
	parts := strings.SplitN(key, ".", 3)
	if len(parts) != 3 {
		return "", ""
	}
	return parts[1], parts[2]
}

// expireBirths drops the shard's split births left incomplete for
// ingest.BirthPartsTTL (counted and logged by the assembler's onDrop).
func expireBirths(sh *shard) {
	sh.mu.Lock()
	sh.births.Expire(time.Now())
	sh.mu.Unlock()
}

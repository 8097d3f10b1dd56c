package collector

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// warmShard is partition 0 of a collector that evaluated 24 assets of the
// ingest fleet for 80 rounds (rule latches and evaluator memory, KPI
// windows), with active alerts on six of them (text that needs escaping).
func warmShard(t *testing.T) (*Collector, *shard) {
	t.Helper()
	c := processCollector(t)
	sh := c.shard(0)
	var cy cycle
	genIngest(24, 80, 15*time.Second, func(subject string, data []byte) { c.process(sh, subject, data, time.Now(), &cy) })
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i, v := range sh.engine.Assets()[:6] {
		sh.setAlert(alert.Alert{Schema: alert.Schema, Key: alert.MakeKey(v.Site, v.ID, "r<"+strconv.Itoa(i)+">", ""), Site: v.Site, Asset: v.ID,
			State: alert.Raised, Severity: alert.Warn, Message: "ä \"quoted\" & more", RaisedAt: 1, Values: map[string]float64{"x": 1.5}})
	}
	return c, sh
}

// records snapshots every asset of sh in one form, keyed by asset.
func records(t *testing.T, sh *shard, asJSON bool) map[[2]string][]byte {
	t.Helper()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, v := range sh.engine.Assets() {
		sh.dirtyKey(v.Site, v.ID)
	}
	ws, err := sh.snapshot(nil, 0, asJSON, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string][]byte{}
	for _, w := range ws {
		out[w.asset] = w.data
	}
	return out
}

// TestBinaryRecordDecodesAsJSON: the binary record of every warm asset
// (rule state, KPI window, active alerts) decodes to exactly what its JSON
// record decodes to, and is smaller.
func TestBinaryRecordDecodesAsJSON(t *testing.T) {
	_, sh := warmShard(t)
	js, bin := records(t, sh, true), records(t, sh, false)
	if len(js) != 24 || len(bin) != 24 {
		t.Fatalf("%d JSON and %d binary records", len(js), len(bin))
	}
	var jsonBytes, binBytes, kpis, alerts int
	for k, j := range js {
		b := bin[k]
		if b[0] != recordBinary || j[0] != '{' {
			t.Fatalf("%v: records start %q and %q", k, b[0], j[0])
		}
		want, err := decodeRecord(j)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		sortState(&got.Rules)
		sortState(&want.Rules)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%v:\nbinary %+v\n  json %+v", k, got, want)
		}
		if got.KPI != nil {
			kpis++
		}
		alerts += len(got.Alerts)
		jsonBytes += len(j)
		binBytes += len(b)
	}
	if kpis == 0 || alerts != 6 {
		t.Fatalf("%d records with KPI state, %d alerts", kpis, alerts)
	}
	if binBytes >= jsonBytes {
		t.Fatalf("binary records %d bytes, JSON %d", binBytes, jsonBytes)
	}
	t.Logf("%d assets: JSON %d B, binary %d B per record", len(js), jsonBytes/len(js), binBytes/len(bin))
	// a corrupt or truncated binary record is an error, not a panic
	for k, b := range bin {
		for _, cut := range []int{1, 2, len(b) / 2, len(b) - 1} {
			if _, err := decodeRecord(b[:cut]); err == nil {
				t.Fatalf("%v: %d of %d bytes decoded without an error", k, cut, len(b))
			}
		}
		if _, err := decodeRecord(append(b[:len(b):len(b)], 0)); err == nil {
			t.Fatalf("%v: a trailing byte decoded without an error", k)
		}
		break
	}
}

// TestRecordsOfEitherFormRestore: a partition restored from JSON records
// (what collectors before the binary form wrote), then checkpointed in
// binary and restored again, holds the state it started from: rule state,
// KPI windows and active alerts.
func TestRecordsOfEitherFormRestore(t *testing.T) {
	c, sh := warmShard(t)
	restore := func(recs map[[2]string][]byte) *shard {
		to := c.newShard(1)
		to.mu.Lock()
		defer to.mu.Unlock()
		rev := uint64(1)
		for _, data := range recs {
			if err := to.restore(data, rev, 0); err != nil {
				t.Fatal(err)
			}
			rev++
		}
		return to
	}
	fromJSON := restore(records(t, sh, true))
	again := restore(records(t, fromJSON, false))
	for _, v := range sh.engine.Assets() {
		want, _ := sh.engine.Snapshot(v.Site, v.ID)
		got, _ := again.engine.Snapshot(v.Site, v.ID)
		wk, _ := sh.kpis.Snapshot(v.Site, v.ID)
		gk, _ := again.kpis.Snapshot(v.Site, v.ID)
		if a, b := recordOf(t, want, wk), recordOf(t, got, gk); a != b {
			t.Fatalf("%s:\nrestored %s\nwant     %s", v.ID, b, a)
		}
	}
	if len(again.active) != 6 || !reflect.DeepEqual(again.active, sh.active) {
		t.Fatalf("active alerts %v, want %v", again.active, sh.active)
	}
}

// recordOf is the JSON of an asset's rule and KPI state, the birth and
// signals sorted by name (the engine keeps the birth in a map; a restore
// may list signals in another order).
func recordOf(t *testing.T, st rules.AssetState, k kpi.AssetState) string {
	t.Helper()
	sortState(&st)
	b, err := json.Marshal(record{V: recordVersion, Rules: st, KPI: &k})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sortState(st *rules.AssetState) {
	slices.SortFunc(st.Birth, func(a, b telemetry.SignalInfo) int { return strings.Compare(a.Signal, b.Signal) })
	slices.SortFunc(st.Signals, func(a, b rules.SignalState) int { return strings.Compare(a.Name, b.Name) })
}

// TestRecordChunksReusedOnlyOnceStored: the chunks records are encoded
// into are reused after a checkpoint whose every record was stored, never
// after a failed one (a publish in flight may still read them).
func TestRecordChunksReusedOnlyOnceStored(t *testing.T) {
	_, sh := warmShard(t)
	chunkOf := func(recs map[[2]string][]byte) map[*byte]bool {
		out := map[*byte]bool{}
		for _, r := range recs {
			sh.mu.Lock()
			for _, c := range append(slices.Clone(sh.used), sh.arena) {
				start := unsafe.SliceData(c[:1])
				if off := uintptr(unsafe.Pointer(unsafe.SliceData(r))) - uintptr(unsafe.Pointer(start)); off < uintptr(cap(c)) {
					out[start] = true
				}
			}
			sh.mu.Unlock()
		}
		return out
	}
	first := chunkOf(records(t, sh, false))
	sh.mu.Lock()
	sh.recycle() // every record stored
	sh.mu.Unlock()
	recs := records(t, sh, false)
	second := chunkOf(recs)
	if !reflect.DeepEqual(first, second) || len(first) == 0 {
		t.Fatalf("chunks %v, then %v after every record was stored", first, second)
	}
	for k, data := range recs {
		if r, err := decodeRecord(data); err != nil || r.Rules.ID != k[1] {
			t.Fatalf("%v: record in a reused chunk: %v", k, err)
		}
	}
	sh.mu.Lock()
	sh.forget() // a failed checkpoint
	sh.mu.Unlock()
	third := chunkOf(records(t, sh, false))
	for c := range third {
		if second[c] {
			t.Fatal("a chunk reused after a failed checkpoint")
		}
	}
}

// TestRecordsOfTheLastReleaseRead: the binary records (version byte 0x02,
// without the ts_gw of the newest birth or death) and the JSON records
// the previous release wrote (testdata/record_v2: four warm assets of
// warmShard, two with active alerts, written by commit 147147e) are read
// after the upgrade, each binary one to what its JSON twin reads to, with
// no birth or death time (LifeTSGW 0: births and deaths without a
// comparable seq are judged on the newest batch until the next birth or
// death), and restore.
func TestRecordsOfTheLastReleaseRead(t *testing.T) {
	bins, err := filepath.Glob("testdata/record_v2/*.bin")
	if err != nil || len(bins) != 4 {
		t.Fatalf("%d records, %v", len(bins), err)
	}
	c := processCollector(t)
	to := c.newShard(1)
	for i, name := range bins {
		bin, err1 := os.ReadFile(name)
		js, err2 := os.ReadFile(strings.TrimSuffix(name, ".bin") + ".json")
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if bin[0] != recordBinaryV2 {
			t.Fatalf("%s: first byte %#02x", name, bin[0])
		}
		fromBin, err1 := decodeRecord(bin)
		fromJSON, err2 := decodeRecord(js)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a, b := recordOf(t, fromJSON.Rules, *fromJSON.KPI), recordOf(t, fromBin.Rules, *fromBin.KPI); a != b || fromBin.Rules.Batches == 0 {
			t.Fatalf("%s:\nbinary %s\njson   %s", name, b, a)
		}
		if !reflect.DeepEqual(fromBin.Alerts, fromJSON.Alerts) || fromBin.Rules.LifeTSGW != 0 {
			t.Fatalf("%s: alerts %v and %v, life ts_gw %d", name, fromBin.Alerts, fromJSON.Alerts, fromBin.Rules.LifeTSGW)
		}
		to.mu.Lock()
		err = to.restore(bin, uint64(i+1), 0)
		to.mu.Unlock()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := to.engine.Len(); n != 4 || len(to.active) != 2 {
		t.Fatalf("restored %d assets, %d active alerts", n, len(to.active))
	}
}

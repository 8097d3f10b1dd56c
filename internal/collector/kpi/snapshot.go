package kpi

import (
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// AssetState is one asset's open KPI window and alert latches, in the form
// the collector checkpoints in JetStream KV so that a restart or another
// replica finishes the same window and keeps the same efficiency alerts.
type AssetState struct {
	Site      string                      `json:"site"`
	ID        string                      `json:"id"`
	Class     string                      `json:"class"`
	Nameplate map[string]float64          `json:"np,omitempty"`
	Start     int64                       `json:"start,omitempty"` // window start, Unix ms
	LastTS    int64                       `json:"ts,omitempty"`
	Covered   float64                     `json:"cov,omitempty"` // ms of the window holding data
	Acc       []float64                   `json:"acc,omitempty"`
	Sample    []float64                   `json:"v,omitempty"`
	SampleOK  []bool                      `json:"ok,omitempty"`
	Latches   map[string]alert.LatchState `json:"latches,omitempty"`
	Last      *Result                     `json:"last,omitempty"`

	latchBuf map[string]alert.LatchState // SnapshotInto's, reused
}

// Snapshot returns the KPI state of one asset; false when its class has no
// KPIs or the asset is not tracked.
func (t *Tracker) Snapshot(site, id string) (AssetState, bool) {
	a, ok := t.assets[[2]string{site, id}]
	if !ok {
		return AssetState{}, false
	}
	st := AssetState{Site: a.site, ID: a.id, Class: a.class, Nameplate: a.np, Start: a.start, LastTS: a.lastTS, Covered: a.covered,
		Acc: append([]float64(nil), a.a[:]...), Sample: a.s.v, SampleOK: a.s.ok, Last: a.last}
	for k, l := range a.latches {
		if !l.Zero() {
			if st.Latches == nil {
				st.Latches = map[string]alert.LatchState{}
			}
			st.Latches[k] = l.State()
		}
	}
	return st, true
}

// RestoreAsset puts a checkpointed asset back. A state whose shape does not
// fit its class (a different version's signal list) restores the latches
// and nameplate only and starts a fresh window.
func (t *Tracker) RestoreAsset(st *AssetState) {
	if old, ok := t.assets[[2]string{st.Site, st.ID}]; ok {
		old.gone = true // replaced: a Handle to it is stale (the engine's restore resets it too)
		delete(t.assets, [2]string{st.Site, st.ID})
	}
	a := t.asset(st.Site, st.ID, st.Class)
	if a == nil {
		return
	}
	for k, v := range st.Nameplate {
		a.np[k] = v
	}
	for k, ls := range st.Latches {
		l := &alert.Latch{}
		l.SetState(ls)
		a.latches[k] = l
	}
	a.last = st.Last
	if len(st.Acc) != nAcc || len(st.Sample) != len(a.s.v) || len(st.SampleOK) != len(a.s.ok) {
		return
	}
	a.start, a.lastTS, a.covered = st.Start, st.LastTS, st.Covered
	copy(a.a[:], st.Acc)
	copy(a.s.v, st.Sample)
	copy(a.s.ok, st.SampleOK)
}

// RestoreBirth sets the plausible ranges of a restored asset's KPI inputs
// from the signal list of its birth in force (the rules' checkpoint holds
// it; AssetState does not), as Birth did before the restart, without
// touching its nameplate or held values.
func (t *Tracker) RestoreBirth(site, id string, signals []telemetry.SignalInfo) {
	if a, ok := t.assets[[2]string{site, id}]; ok {
		t.ranges(a, signals)
	}
}

// Len returns how many assets the tracker holds.
func (t *Tracker) Len() int { return len(t.assets) }

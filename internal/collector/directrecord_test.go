package collector

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// The checkpoint builds an asset's rule state straight from the engine
// (Engine.AppendBinary) instead of a SnapshotInto copy: for every warm
// asset its bytes are exactly those of SnapshotInto + AppendBinary (the
// birth list sorted), and the part a birth sets, kept encoded with the
// asset, follows a new birth and a restore (nameplate, signals, path).
func TestRuleStateEncodedFromEngineMatchesSnapshot(t *testing.T) {
	_, sh := warmShard(t)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.engine
	check := func(what string) {
		t.Helper()
		views := e.Assets()
		if len(views) != 24 {
			t.Fatalf("%s: %d assets", what, len(views))
		}
		for _, v := range views {
			var st rules.AssetState
			if !e.SnapshotInto(&st, v.Site, v.ID) {
				t.Fatalf("%s: %s not tracked", what, v.ID)
			}
			slices.SortFunc(st.Birth, func(a, b telemetry.SignalInfo) int { return strings.Compare(a.Signal, b.Signal) })
			want := st.AppendBinary([]byte{0xee})
			for range 2 { // the second from the kept birth part
				got, ok := e.AppendBinary([]byte{0xee}, v.Site, v.ID)
				if !ok || !bytes.Equal(got, want) {
					t.Fatalf("%s: %s: %v\n got %x\nwant %x", what, v.ID, ok, got, want)
				}
			}
		}
		if _, ok := e.AppendBinary(nil, "nowhere", "none"); ok {
			t.Fatalf("%s: an untracked asset encoded", what)
		}
	}
	check("warm")

	views := e.Assets()
	v := views[0]
	var st rules.AssetState
	e.SnapshotInto(&st, v.Site, v.ID)
	// a new birth: another nameplate, one signal less, another path
	b := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-x", Asset: telemetry.Asset{ID: v.ID, Class: v.Class,
		Path: []string{"acme", v.Site, "moved", "_", "_"}}.ToJSON(), Nameplate: map[string]float64{"rated_power": 1234}}
	b.Signals = append(b.Signals, st.Birth[1:]...)
	e.Birth(b, 0, nil)
	check("after a birth")
	if got, _ := e.AppendBinary(nil, v.Site, v.ID); !bytes.Contains(got, []byte("moved")) {
		t.Fatal("the new path is not in the record")
	}

	// a restore of another asset with a changed nameplate and birth
	w := views[1]
	var rs rules.AssetState
	e.SnapshotInto(&rs, w.Site, w.ID)
	rs.Nameplate = map[string]float64{"rated_power": 4321, "extra": 1}
	rs.Birth = rs.Birth[:len(rs.Birth)/2]
	e.RestoreAsset(&rs)
	check("after a restore")
}

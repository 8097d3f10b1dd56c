package opcua

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// checkNoMislabelled fails t when the log of a polled point shows a Good
// value published while another unit was in force: newValue is the value
// only the unit newUnit gives it, and no Good value may be newValue unless
// newUnit is in force, nor anything else once it is. It also wants a
// withheld sample (Bad, statusUnitUnknown, no value) before the new unit,
// and the new unit in force at the end.
func checkNoMislabelled(t *testing.T, log []uaEvent, newUnit string, newValue float64) {
	t.Helper()
	unit, withheld := "", false
	for k, e := range log {
		switch {
		case e.isNU:
			unit = e.units
		case e.s.Quality == telemetry.QualityBad:
			if e.s.Num != 0 || e.s.Status != statusUnitUnknown {
				t.Fatalf("event %d: Bad sample %+v: want status 0x%08X and no value", k, e.s, statusUnitUnknown)
			}
			if unit != newUnit {
				withheld = true
			}
		case e.s.Quality == telemetry.QualityGood && (e.s.Num == newValue) != (unit == newUnit):
			t.Fatalf("event %d: Good %v published while the unit in force was %q: %+v", k, e.s.Num, unit, log)
		}
	}
	if !withheld || unit != newUnit {
		t.Fatalf("withheld %v, last unit %q: want a withheld sample, then %s: %+v", withheld, unit, newUnit, log)
	}
}

// TestPolledUnitChangeCheckedEveryReadByDefault changes a polled node's
// EngineeringUnits and value in one step on the simulator front (kPa ->
// bar, 210 -> 2.1) with unit_check_interval left at its default: in
// process and through a worker, on the same session, the first read that
// sees the change is withheld and no value is ever published Good in a
// unit it is not in (the default was a check every 60 s: values in bar
// were published as kPa until then).
func TestPolledUnitChangeCheckedEveryReadByDefault(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
			cfg := baseConfig(t, f)
			cfg.Isolation = iso
			if cfg.UnitCheckInterval != UnitCheckEveryRead {
				t.Fatalf("default unit check %v", cfg.UnitCheckInterval)
			}
			points := []Point{{NodeID: f.NodeID("bf-2", "top_pressure"), Mode: ModePoll, PollInterval: 50 * time.Millisecond, UnitFromNode: true}}
			c, ul := runUnitLog(t, cfg, points)
			wait.For(t, 20*time.Second, "value in kPa", ul.goodAfterUnit("kPa", 210))
			if err := f.SetUnit("bf-2", "top_pressure", "bar", 2.1, time.Now()); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 20*time.Second, "value in bar after the unit bar", ul.goodAfterUnit("bar", 2.1))
			checkNoMislabelled(t, ul.events(), "bar", 2.1)
			if st := c.Status(); iso == IsolationNone && st.Sessions != 1 {
				t.Fatalf("status %+v: want the change handled on the first session", st)
			}
		})
	}
}

// TestInteropPolledNodeGainsUnits gives a polled node that had no
// EngineeringUnits property at the session's start (node-opcua's plain
// blast_setpoint: values taken in the catalog unit) the property and a new
// value in one tick (addeu: bar, 800 -> 8): in process and through a
// worker, the next read's value is withheld, bar reaches OnUnits, and
// only then is 8 published Good; before, a node without the property was
// never checked again and 8 went out in the catalog unit.
func TestInteropPolledNodeGainsUnits(t *testing.T) {
	needNodeServer(t)
	for _, iso := range []string{IsolationNone, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			srv := startNodeServer(t, t.TempDir())
			cfg := interopConfig(t, srv, "None", "None", AuthConfig{})
			cfg.Isolation = iso
			ns := strings.SplitN(srv.Nodes[0], ";", 2)[0]
			points := []Point{{NodeID: ns + ";s=bf-2.blast_setpoint", Mode: ModePoll, PollInterval: 100 * time.Millisecond, UnitFromNode: true}}
			_, ul := runUnitLog(t, cfg, points)
			wait.For(t, 20*time.Second, "800 with no EngineeringUnits", func() bool {
				u, ok := ul.lastUnits()
				return ok && u.NoUnits == noProperty && ul.rec.has(0, telemetry.QualityGood, 800)
			})
			srv.command(t, map[string]any{"cmd": "addeu", "name": "blast_setpoint", "unit": "bar", "value": 8})
			wait.For(t, 20*time.Second, "8 in bar after the unit bar", ul.goodAfterUnit("bar", 8))
			checkNoMislabelled(t, ul.events(), "bar", 8)
		})
	}
}

// BenchmarkPollProbe1k is what a checked poll adds for 1,000 points whose
// nodes had no EngineeringUnits at the session's start: one Browse of
// their HasProperty references after the values' Read (poller.probeUnits).
// The benchmark server's nodes do have both properties, so each answer
// carries two references: an upper bound for nodes that have none.
func BenchmarkPollProbe1k(b *testing.B) {
	const n = 1000
	p := benchPoller(b, n)
	for _, j := range p.check {
		p.probe = append(p.probe, j)
		n, err := p.nodes.at(p.idx[j])
		if err != nil {
			b.Fatal(err)
		}
		p.probeReq = append(p.probeReq, propertiesOf(n))
		p.probeHad = append(p.probeHad, unitProps{})
	}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.probeUnits(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if len(p.appeared) != n {
		b.Fatalf("%d of %d probed nodes show their properties", len(p.appeared), n)
	}
}

// TestPolledUnitCheckSplitAcrossRequests runs the every_read unit check
// with max_nodes_per_read 1 and 2, and 1 advertised by the server
// (max101: nothing configured) (a value, its EngineeringUnits and its
// EURange do not fit in one request) and changes the node in one step at
// an exact point between the requests (the simulator's read hook):
//   - after the request that read the value ("after"): the value is in
//     the old unit, the properties read after it show the new one: it is
//     withheld, then the new unit applies;
//   - while the value is read and back right after ("between"): the value
//     was served in bar, the properties read before and after it say kPa;
//     only a value read with its unit in one request can be tied to it:
//     it must not be published Good as kPa (review1 F0: 2.1 bar went out
//     as 2.1 kPa Good).
func TestPolledUnitCheckSplitAcrossRequests(t *testing.T) {
	// advertised: the server's MaxNodesPerRead, nothing configured
	for _, n := range []uint32{1, 2, 101} {
		for _, step := range []string{"after", "between"} {
			t.Run(fmt.Sprintf("max%d_%s", n, step), func(t *testing.T) {
				var fc opcuafront.Config
				if n > 100 {
					fc.Limits.MaxNodesPerRead = n - 100
				}
				f := startFront(t, fc, opcuafront.Asset{ID: "bf-2", Source: furnace()})
				cfg := baseConfig(t, f)
				if n < 100 {
					cfg.Limits.MaxNodesPerRead = n
				}
				node := f.NodeID("bf-2", "top_pressure")
				points := []Point{{NodeID: node, Mode: ModePoll, PollInterval: 20 * time.Millisecond, UnitFromNode: true}}
				_, ul := runUnitLog(t, cfg, points)
				wait.For(t, 20*time.Second, "value in kPa", ul.goodAfterUnit("kPa", 210))
				var armed, fired atomic.Bool
				armed.Store(true)
				f.SetReadHook(func(nodes []string) func() {
					if !slices.Contains(nodes, node) || !armed.CompareAndSwap(true, false) {
						return nil
					}
					defer fired.Store(true)
					if step == "after" {
						return func() { _ = f.SetUnit("bf-2", "top_pressure", "bar", 2.1, time.Now()) }
					}
					if err := f.SetUnit("bf-2", "top_pressure", "bar", 2.1, time.Now()); err != nil {
						t.Error(err)
					}
					return func() { _ = f.SetUnit("bf-2", "top_pressure", "kPa", 210, time.Now()) }
				})
				t.Cleanup(func() { f.SetReadHook(nil) })
				wait.For(t, 10*time.Second, "the hook fired", fired.Load)
				if step == "after" {
					wait.For(t, 20*time.Second, "value in bar after the unit bar", ul.goodAfterUnit("bar", 2.1))
					checkNoMislabelled(t, ul.events(), "bar", 2.1)
					return
				}
				// ten more Good reads after the step: 2.1 never among them
				k0 := len(ul.events())
				wait.For(t, 20*time.Second, "reads after the step", func() bool {
					good := 0
					for _, e := range ul.events()[k0:] {
						if !e.isNU && e.s.Quality == telemetry.QualityGood {
							good++
						}
					}
					return good >= 10
				})
				unit := ""
				for k, e := range ul.events() {
					switch {
					case e.isNU:
						unit = e.units
					case e.s.Quality == telemetry.QualityGood && (unit != "kPa" || e.s.Num != 210):
						t.Fatalf("event %d: Good %v with the unit %q in force: a value served in bar published as kPa", k, e.s.Num, unit)
					}
				}
			})
		}
	}
}

// TestUnitChangeKeepsNoOldInstantGood changes a polled node's
// EngineeringUnits (kPa -> bar) without changing its value or its
// SourceTimestamp: the reading at that instant was published as 210 kPa,
// so 210 bar at the same instant must not be published Good (review1 F3:
// two different Good values for one source instant); the next value with
// a newer SourceTimestamp is published in bar.
func TestUnitChangeKeepsNoOldInstantGood(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
			cfg := baseConfig(t, f)
			cfg.Isolation = iso
			points := []Point{{NodeID: f.NodeID("bf-2", "top_pressure"), Mode: ModePoll, PollInterval: 20 * time.Millisecond, UnitFromNode: true}}
			_, ul := runUnitLog(t, cfg, points)
			wait.For(t, 20*time.Second, "value in kPa", ul.goodAfterUnit("kPa", 210))
			var ts int64
			for _, e := range ul.events() {
				if !e.isNU && e.s.Quality == telemetry.QualityGood {
					ts = e.s.TS
				}
			}
			if err := f.SetUnit("bf-2", "top_pressure", "bar", 210, time.UnixMilli(ts)); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 20*time.Second, "bar applied and a read after it", func() bool {
				unit := ""
				for _, e := range ul.events() {
					if e.isNU {
						unit = e.units
					} else if unit == "bar" {
						return true
					}
				}
				return false
			})
			if err := f.Set("bf-2", "top_pressure", 2.2, time.UnixMilli(ts+1000)); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 20*time.Second, "the new value in bar", ul.goodAfterUnit("bar", 2.2))
			unit := ""
			for k, e := range ul.events() {
				switch {
				case e.isNU:
					unit = e.units
				case unit == "bar" && e.s.Quality == telemetry.QualityGood && e.s.TS <= ts:
					t.Fatalf("event %d: Good %v in bar at the instant %d published before in kPa", k, e.s.Num, ts)
				case unit == "bar" && e.s.Quality == telemetry.QualityBad && e.s.Status != statusUnitUnknown:
					t.Fatalf("event %d: %+v", k, e.s)
				}
			}
		})
	}
}

package fleet

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/gateway/gatewaytest"
	"github.com/smelterio/smelter/internal/telemetry"
)

// shipStream is what a consumer of the gateway's stream saw of one asset.
type shipStream struct {
	mu      sync.Mutex
	births  []*telemetry.Birth
	deaths  int
	batches []*telemetry.Batch
	other   []string // subjects of other assets' data
}

func (s *shipStream) add(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := telemetry.ParseSubject(m.Subject)
	if err != nil || p.Kind == telemetry.KindStatus {
		return
	}
	if p.Asset != "ship-1" {
		s.other = append(s.other, m.Subject)
		return
	}
	switch p.Kind {
	case telemetry.KindBirth:
		b, err := telemetry.DecodeBirth(m.Data)
		if err != nil {
			s.other = append(s.other, m.Subject+": "+err.Error())
			return
		}
		s.births = append(s.births, b)
	case telemetry.KindDeath:
		s.deaths++
	case telemetry.KindData:
		if b, err := telemetry.DecodeBatch(m.Data); err == nil {
			s.batches = append(s.batches, b)
		}
	}
}

// latest returns the quality of each signal in the latest ship batch that
// carries it, and how many batches there are.
func (s *shipStream) latest() (map[string]telemetry.Quality, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := map[string]telemetry.Quality{}
	for _, b := range s.batches {
		for _, r := range b.Readings {
			q[r.Signal] = r.Quality
		}
	}
	return q, len(s.batches)
}

// TestShipOneAssetTwoSources: the demo fleet's ship read as one asset from
// two sources over real sockets, the main engine over Modbus TCP and the
// navigation over NMEA 0183 TCP, through the gateway to NATS. There is one
// birth listing both sets of signals, one data subject; when the NMEA
// talker dies, only the navigation signals turn stale while the engine's
// stay good, and the asset does not die.
func TestShipOneAssetTwoSources(t *testing.T) {
	f := startFleet(t, nil)
	if err := f.Advance(30 * time.Minute); err != nil { // at sea: the engine runs
		t.Fatal(err)
	}
	info, ok := f.Device("ship-1")
	if !ok || info.NMEA == "" || info.Addr == "" {
		t.Fatalf("ship-1 = %+v", info)
	}
	dir := t.TempDir()
	nb, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nb.Shutdown)
	nc, err := nats.Connect(nb.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var got shipStream
	if _, err := nc.Subscribe("smelter.v1.>", got.add); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	engine := []string{"me_speed", "shaft_power", "me_fuel_flow", "exhaust_temp_cyl_1"}
	nav := []string{"sog", "heading", "latitude", "longitude", "stw"}
	cfgText := fmt.Sprintf(`gateway: {id: gw-ship, enterprise: acme, site: fleet, data_dir: %s}
http: {listen: "off"}
uplinks:
  nats: {url: %q}
devices:
  - id: ship-1
    class: ship
    nameplate: {rated_power: 8600, rated_speed: 117}
    sources:
      - name: engine
        poll_interval: 200ms
        modbus: {address: %q, unit_id: %d}
        points:
          - {signal: me_speed,           table: holding, address: 0,  type: int16,  unit: /min, scale: 0.1}
          - {signal: shaft_power,        table: holding, address: 1,  type: int32,  order: ABCD, unit: kW, scale: 0.1}
          - {signal: me_fuel_flow,       table: holding, address: 3,  type: uint16, unit: kg/h, scale: 0.1}
          - {signal: exhaust_temp_cyl_1, table: holding, address: 21, type: int16,  unit: Cel,  scale: 0.1}
      - name: nav
        poll_interval: 2s
        nmea: {transport: tcp, address: %q, reconnect_min: 50ms, reconnect_max: 200ms}
        points:
          - {signal: sog,       sentence: RMC.sog}
          - {signal: heading,   sentence: HDT.heading}
          - {signal: latitude,  sentence: RMC.latitude}
          - {signal: longitude, sentence: RMC.longitude}
          - {signal: stw,       sentence: VHW.stw}
`, filepath.Join(dir, "gw"), nb.URL(), info.Addr, info.UnitID, info.NMEA)
	_, gw := gatewaytest.Start(t, cfgText)

	allGood := func(q map[string]telemetry.Quality, sigs []string) bool {
		for _, s := range sigs {
			if g, ok := q[s]; !ok || g != telemetry.QualityGood {
				return false
			}
		}
		return true
	}
	waitFor(t, 20*time.Second, "engine and navigation signals good on ship-1", func() bool {
		q, _ := got.latest()
		return allGood(q, engine) && allGood(q, nav)
	})
	got.mu.Lock()
	if len(got.births) != 1 {
		t.Fatalf("%d births of ship-1, want one (other subjects: %v)", len(got.births), got.other)
	}
	b := got.births[0]
	var signals []string
	for _, s := range b.Signals {
		signals = append(signals, s.Signal)
	}
	if want := append(slices.Clone(engine), nav...); !slices.Equal(signals, want) {
		t.Errorf("birth signals %v, want %v", signals, want)
	}
	if b.Protocol != "modbus+nmea" || b.Nameplate["rated_power"] != 8600 || b.Asset.ID != "ship-1" || b.Asset.Class != "ship" {
		t.Errorf("birth = %+v", b)
	}
	if len(got.other) != 0 {
		t.Errorf("messages on other subjects than ship-1's: %v", got.other)
	}
	got.mu.Unlock()

	// the bridge's NMEA multiplexer dies
	f.mu.Lock()
	talker := f.byID["ship-1"].nm
	f.mu.Unlock()
	talker.Stop()
	var since int
	waitFor(t, 30*time.Second, "navigation signals stale", func() bool {
		q, n := got.latest()
		for _, s := range nav {
			if g, ok := q[s]; !ok || g != telemetry.QualityStale {
				return false
			}
		}
		since = n
		return true
	})
	// the engine keeps reporting good values after the navigation went stale
	waitFor(t, 10*time.Second, "engine batches after the navigation went stale", func() bool {
		_, n := got.latest()
		return n > since+5
	})
	got.mu.Lock()
	defer got.mu.Unlock()
	for _, b := range got.batches[since:] {
		for _, r := range b.Readings {
			if slices.Contains(engine, r.Signal) && r.Quality != telemetry.QualityGood {
				t.Errorf("engine signal %s is %s after the NMEA feed died", r.Signal, r.Quality)
			}
		}
	}
	if got.deaths != 0 || len(got.births) != 1 {
		t.Errorf("%d deaths, %d births of ship-1: the asset lives on its engine source", got.deaths, len(got.births))
	}
	st := gw.Status()
	byID := map[string]bool{}
	for _, d := range st.Devices {
		byID[d.ID] = d.Dead
	}
	if dead, ok := byID["ship-1/nav"]; !ok || !dead || byID["ship-1/engine"] {
		t.Errorf("status devices %+v: want ship-1/nav dead, ship-1/engine alive", st.Devices)
	}
}

package gwconfig_test

import (
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/nmea"
	"github.com/smelterio/smelter/internal/opcua"
)

// shipHead is a gateway file up to the ship's device entry.
const shipHead = `gateway: {id: gw, site: s}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: ship-1
    class: ship
    nameplate: {rated_power: 9000}
`

// shipSources are a ship's two sources: the engine over Modbus, the
// navigation over NMEA 0183.
const shipSources = `    sources:
      - name: engine
        modbus: {address: "127.0.0.1:5020"}
        points:
          - {signal: me_speed, table: holding, address: 0, type: int16, unit: /min}
          - {signal: shaft_power, table: holding, address: 1, type: uint16, unit: kW}
      - nmea: {transport: udp, address: "127.0.0.1:10110"}
        poll_interval: 2s
        points:
          - {signal: sog, sentence: RMC.sog}
          - {signal: heading, sentence: HDT.heading}
`

func loadShip(t *testing.T, doc string) (*gwconfig.Config, error) {
	t.Helper()
	return gwconfig.LoadBytes("gw.yaml", []byte(doc), []gwconfig.Driver{modbus.Driver{}, opcua.Driver{}, nmea.Driver{}}...)
}

func TestSourcesCompileToOneAsset(t *testing.T) {
	cfg, err := loadShip(t, shipHead+shipSources)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Devices) != 2 {
		t.Fatalf("%d devices, want one per source", len(cfg.Devices))
	}
	eng, nav := cfg.Devices[0], cfg.Devices[1]
	for _, tc := range []struct {
		d                      *gwconfig.Device
		id, source, proto, fld string
		interval               time.Duration
		signals                []string
	}{
		{eng, "ship-1/engine", "engine", "modbus", "devices[0].sources[0]", time.Second, []string{"me_speed", "shaft_power"}},
		{nav, "ship-1/nmea", "nmea", "nmea", "devices[0].sources[1]", 2 * time.Second, []string{"sog", "heading"}},
	} {
		d := tc.d
		if d.ID != tc.id || d.Source != tc.source || d.Protocol != tc.proto || d.Field != tc.fld || d.Interval != tc.interval {
			t.Errorf("source = %s %s %s %s %v, want %s %s %s %s %v", d.ID, d.Source, d.Protocol, d.Field, d.Interval,
				tc.id, tc.source, tc.proto, tc.fld, tc.interval)
		}
		if d.Asset.ID != "ship-1" || d.Asset.Class != "ship" || d.Nameplate["rated_power"] != 9000 {
			t.Errorf("%s: asset %+v nameplate %v", d.ID, d.Asset, d.Nameplate)
		}
		var got []string
		for _, s := range d.Signals() {
			got = append(got, s.Signal)
		}
		if strings.Join(got, ",") != strings.Join(tc.signals, ",") {
			t.Errorf("%s: signals %v, want %v", d.ID, got, tc.signals)
		}
	}
}

func TestSourcesErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"signal read by two sources", shipHead + shipSources + "          - {signal: me_speed, sentence: VTG.sog, unit: /min}\n",
			"gw.yaml:18: devices[0].sources[1].points[2].signal: me_speed already read by devices[0].sources[0].points[0]"},
		{"class on a source", shipHead + strings.Replace(shipSources, "      - name: engine\n", "      - name: engine\n        class: diesel_engine\n", 1),
			"gw.yaml:9: devices[0].sources[0].class: the asset's class is written once, on the device (devices[0].class), not on a source"},
		{"nameplate on a source", shipHead + strings.Replace(shipSources, "      - nmea:", "      - nameplate: {rated_power: 1}\n        nmea:", 1),
			"devices[0].sources[1].nameplate: the asset's nameplate is written once, on the device (devices[0].nameplate), not on a source"},
		{"protocol block beside sources", shipHead + "    modbus: {address: \"127.0.0.1:5020\"}\n" + shipSources,
			"gw.yaml:7: devices[0].modbus: a device with sources has its protocol blocks in its sources"},
		{"points beside sources", shipHead + "    points: [{signal: sog, sentence: RMC.sog}]\n" + shipSources,
			"gw.yaml:7: devices[0].points: a device with sources lists its points in its sources"},
		{"two sources, one name", shipHead + strings.Replace(shipSources, "name: engine", "name: nmea", 1),
			"gw.yaml:13: devices[0].sources[1].name: missing: nmea is already the name of devices[0].sources[0] (the default is the protocol's name); name the sources"},
		{"two protocol blocks in a source", shipHead + strings.Replace(shipSources, "      - nmea:", "      - opcua: {endpoint: \"opc.tcp://h:4840\"}\n        nmea:", 1),
			"devices[0].sources[1].opcua: a device has one protocol block: nmea or opcua, not both"},
		{"no protocol block in a source", shipHead + "    sources:\n      - {name: x, points: [{signal: sog, sentence: RMC.sog}]}\n",
			"gw.yaml:8: devices[0].sources[0]: needs one protocol block: modbus, nmea or opcua"},
		{"empty sources", shipHead + "    sources: []\n",
			"gw.yaml:7: devices[0].sources: empty: list one source per protocol block"},
		{"unknown key on a source", shipHead + strings.Replace(shipSources, "        poll_interval: 2s\n", "        pol_interval: 2s\n", 1),
			"devices[0].sources[1].pol_interval: unknown field"},
		{"bad source interval", shipHead + strings.Replace(shipSources, "poll_interval: 2s", "poll_interval: 1ms", 1),
			"gw.yaml:14: devices[0].sources[1].poll_interval: 1ms below the minimum 10ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadShip(t, tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if cfg != nil && len(cfg.Devices) != 0 {
				t.Errorf("%d devices compiled from an invalid entry", len(cfg.Devices))
			}
		})
	}
}

// TestNameplateValuesChecked: every nameplate value is finite, positive
// where the catalog says, and a code within its set; every error is
// reported at once, each naming its field and reason.
func TestNameplateValuesChecked(t *testing.T) {
	doc := strings.Replace(shipHead+shipSources, "nameplate: {rated_power: 9000}",
		"nameplate: {rated_power: -5, rated_sfoc: 0, capacity: .inf, ship_type: 9, rated_speed: .nan}", 1)
	_, err := loadShip(t, doc)
	if err == nil {
		t.Fatal("invalid nameplate accepted")
	}
	for _, want := range []string{
		"gw.yaml:6: devices[0].nameplate.capacity: +Inf is not a finite number",
		"devices[0].nameplate.rated_power: -5 must be > 0 kW",
		"devices[0].nameplate.rated_sfoc: 0 must be > 0 g/(kW.h)",
		"devices[0].nameplate.rated_speed: NaN is not a finite number",
		"devices[0].nameplate.ship_type: 9 is not a code of ship_type (1 bulk carrier, 2 tanker, 3 container ship)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// a boiler's fuel_type is a boiler fuel's code
	boiler := "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n" +
		"  - id: b\n    class: boiler\n    nameplate: {fuel_type: 3}\n    modbus: {address: \"127.0.0.1:5020\"}\n" +
		"    points: [{signal: steam_flow, table: holding, address: 0, type: uint16}]\n"
	if _, err := loadShip(t, boiler); err == nil || !strings.Contains(err.Error(),
		"devices[0].nameplate.fuel_type: 3 is not a fuel code with use boiler (1 natural_gas, 2 fuel_oil)") {
		t.Errorf("boiler with a ship fuel: %v", err)
	}
}

// TestSourcesErrorsInOnePass: bad source names are reported beside the
// sources' other errors (a signal read twice), not only once those are fixed.
func TestSourcesErrorsInOnePass(t *testing.T) {
	doc := shipHead + strings.Replace(strings.Replace(shipSources, "name: engine", "name: nav/x", 1),
		"      - nmea:", "      - name: nav.y z\n        nmea:", 1) + "          - {signal: me_speed, sentence: VTG.sog, unit: /min}\n"
	_, err := loadShip(t, doc)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`devices[0].sources[0].name: "nav/x" must be 1-64 letters`,
		`devices[0].sources[1].name: "nav.y z" must be 1-64 letters`,
		`devices[0].sources[1].points[2].signal: me_speed already read by devices[0].sources[0].points[0]`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// a sources value that is no list is reported once, where it is
	_, err = loadShip(t, shipHead+"    sources: nav\n")
	if err == nil || strings.Count(err.Error(), "\n") > 0 || !strings.Contains(err.Error(), "devices[0].sources: want a list") {
		t.Errorf("sources: nav: %v", err)
	}
}

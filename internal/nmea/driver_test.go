package nmea_test

import (
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/nmea"
)

const head = "gateway: {id: gw, site: s}\nuplinks: {nats: {url: \"nats://127.0.0.1:4222\"}}\ndevices:\n"

// TestDriverCompiles: an nmea block and sentence points compile into the
// device's Config and Points, units defaulting to the quantity's.
func TestDriverCompiles(t *testing.T) {
	cfg, err := gwconfig.LoadBytes("gw.yaml", []byte(head+`  - id: mv-1-nav
    class: ship
    poll_interval: 2s
    nmea: {transport: udp, address: "0.0.0.0:10110", talkers: [GP, HE]}
    points:
      - {signal: sog, sentence: RMC.sog}
      - {signal: latitude, sentence: RMC.latitude}
      - {signal: heading, sentence: HDT.heading, talker: HE}
      - {signal: water_depth, sentence: DPT.depth_below_keel}
`), nmea.Driver{})
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	dc, ok := d.Driver.(*nmea.DeviceConfig)
	if !ok || d.Protocol != "nmea" || dc.Config.Transport != nmea.UDP || dc.Config.Address != "0.0.0.0:10110" || len(dc.Points) != 4 {
		t.Fatalf("%+v %+v", d, d.Driver)
	}
	if dc.Points[2] != (nmea.Point{Quantity: "HDT.heading", Talker: "HE"}) || d.Interval != 2*time.Second {
		t.Errorf("points %+v interval %v", dc.Points, d.Interval)
	}
	// sog in knots is the catalog's unit: no conversion; src names the quantity
	if d.Norm.Point(0).Unit != "[kn_i]" || d.Norm.Point(0).Src != "nmea:RMC.sog" || d.Signals()[0].IntervalMS != 2000 {
		t.Errorf("norm %+v signal %+v", d.Norm.Point(0), d.Signals()[0])
	}
	if tr, addr := dc.Endpoint(); tr != "nmea/udp" || addr != "0.0.0.0:10110" {
		t.Errorf("endpoint %s %s", tr, addr)
	}
}

// TestDriverRejects: every problem names file:line: field: reason.
func TestDriverRejects(t *testing.T) {
	_, err := gwconfig.LoadBytes("gw.yaml", []byte(head+`  - id: a
    class: ship
    nmea: {transport: serial, address: "nowhere", talkers: [GPS]}
    template: templates/ship-sim.yaml
    points:
      - {signal: sog, sentence: GGA.sog}
      - {signal: heading, sentence: HDT.heading, talker: H}
      - {signal: cog, sentence: RMC.cog, interval: 5s}
      - {signal: stw, sentence: VHW.stw, unit: furlong}
  - id: b
    class: ship
    nmea: {transport: udp, address: "127.0.0.1:10110"}
    points: [{signal: sog, sentence: RMC.sog}]
  - id: c
    class: ship
    nmea: {transport: udp, address: "127.0.0.1:10110"}
    points: [{signal: sog, sentence: RMC.sog}]
  - id: d
    class: ship
    nmea: {address: "127.0.0.1:10111"}
  - id: e
    class: ship
    nmea: {address: "127.0.0.1:10112", talkers: [GP], max_length: 40}
    points: [{signal: sog, sentence: RMC.sog}, {signal: heading, sentence: HDT.heading, talker: ZZ}]
`), nmea.Driver{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`gw.yaml:6: devices[0].nmea.transport: "serial" is not tcp or udp`,
		`devices[0].nmea.address: "nowhere" is not host:port`,
		`devices[0].nmea.talkers[0]: "GPS" is not a two-character talker id`,
		`devices[0].template: templates are Modbus register maps`,
		`devices[0].points[0].sentence: "GGA.sog" is not one of`,
		`devices[0].points[1].talker: "H" is not a two-character talker id`,
		`devices[0].points[2].interval: NMEA points share the device's poll_interval`,
		`devices[0].points[3].unit:`,
		`devices[2].nmea.address: udp 127.0.0.1:10110 is already the address of device b`,
		`devices[3].points: no points`,
		`devices[4].points[1].talker: "ZZ" is not in the device's nmea.talkers [GP]`,
		`devices[4].nmea.max_length: 40 is outside 80..1024 characters`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

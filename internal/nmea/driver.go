package nmea

import (
	"fmt"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// Driver is the NMEA 0183 protocol for smelter-gateway: it compiles a
// device's nmea block and sentence points (gwconfig.Driver) and builds its
// Source (driver.Driver). A device is one talker connection (a multiplexer
// over TCP, or UDP datagrams); its points name the quantity of a sentence
// they take ("RMC.sog").
type Driver struct{}

var _ driver.Driver = Driver{}

// PointFile is one NMEA point as written: the common fields, the sentence
// quantity (one of Quantities) and optionally the one talker it is taken
// from.
type PointFile struct {
	gwconfig.PointFile `yaml:",inline"`
	Sentence           string `yaml:"sentence"`
	Talker             string `yaml:"talker,omitempty"`
}

// DeviceConfig is a compiled NMEA device (gwconfig.Device.Driver).
type DeviceConfig struct {
	Config Config
	Points []Point
}

// Endpoint implements gwconfig.DriverConfig.
func (d *DeviceConfig) Endpoint() (string, string) {
	return "nmea/" + d.Config.Transport, d.Config.Address
}

// Name implements gwconfig.Driver: the block key.
func (Driver) Name() string { return "nmea" }

// QuantityUnit is the UCUM unit a quantity is reported in: degrees for
// positions, courses and headings, knots for speeds, metres for depths.
func QuantityUnit(q string) string {
	switch q {
	case "RMC.sog", "VTG.sog", "VHW.stw":
		return "[kn_i]"
	case "DPT.depth", "DPT.offset", "DPT.depth_below_keel":
		return "m"
	}
	return "deg"
}

// Compile implements gwconfig.Driver: the nmea block is a Config; the
// points are PointFiles listed on the device (NMEA has no templates). A
// point's unit defaults to its quantity's (QuantityUnit); the device's
// poll_interval is the cycle in which the latest value of every point is
// reported.
func (Driver) Compile(b *gwconfig.Block) gwconfig.DriverConfig {
	d, doc := b.Device(), b.Doc()
	var cfg Config
	b.Decode(&cfg)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		b.Report(doc, b.BlockField(), err)
	}
	if d.Template != "" {
		b.Bad("template", "templates are Modbus register maps; list NMEA points under points")
	}
	if b.Points() == 0 {
		b.Bad("points", "no points")
	}
	out := &DeviceConfig{Config: cfg}
	for i := range b.Points() {
		field := b.PointField(i)
		var pf PointFile
		if !b.DecodePoint(i, &pf) {
			continue
		}
		if !knownQuantity(pf.Sentence) {
			b.Errorf(doc, field+".sentence", "%q is not one of %v", pf.Sentence, Quantities)
			continue
		}
		if pf.Talker != "" && (len(pf.Talker) != 2 || !isAlnum(pf.Talker)) {
			b.Errorf(doc, field+".talker", "%q is not a two-character talker id", pf.Talker)
			continue
		}
		if pf.Talker != "" && len(cfg.Talkers) > 0 && !contains(cfg.Talkers, pf.Talker) {
			b.Errorf(doc, field+".talker", "%q is not in the device's nmea.talkers %v: its sentences are filtered, the point could never be read", pf.Talker, cfg.Talkers)
			continue
		}
		if pf.Interval != 0 {
			b.Errorf(doc, field+".interval", "NMEA points share the device's poll_interval")
			continue
		}
		common := pf.PointFile
		if common.Unit == "" {
			common.Unit = QuantityUnit(pf.Sentence)
		}
		idx, _, ok := b.Point(gwconfig.PointSpec{Doc: doc, Field: field, Point: &common, Src: "nmea:" + pf.Sentence,
			Interval: d.PollInterval, BirthInterval: d.PollInterval})
		if !ok || idx < 0 {
			continue
		}
		out.Points = append(out.Points, Point{Quantity: pf.Sentence, Talker: pf.Talker})
	}
	if !b.OK() {
		return nil
	}
	return out
}

// Check implements gwconfig.Driver: two UDP devices cannot listen on one
// address.
func (Driver) Check(c *gwconfig.Checks, devs []*gwconfig.Device) {
	seen := map[string]string{}
	for _, d := range devs {
		dc, ok := d.Driver.(*DeviceConfig)
		if !ok || dc.Config.Transport != UDP {
			continue
		}
		if other, dup := seen[dc.Config.Address]; dup {
			c.Errorf(d.Field+".nmea.address", "udp %s is already the address of device %s", dc.Config.Address, other)
			continue
		}
		seen[dc.Config.Address] = d.ID
	}
}

// Sources implements driver.Driver: the sentence counters, registered
// once per gateway.
func (Driver) Sources(env driver.Env) driver.Sources { return sources{NewMetrics(env.Registry)} }

type sources struct{ m *Metrics }

// Source returns the device's Source.
func (s sources) Source(dev driver.Device) (driver.Source, error) {
	cfg, ok := dev.Config.Driver.(*DeviceConfig)
	if !ok {
		return nil, fmt.Errorf("nmea: device %s: compiled settings are %T, not nmea", dev.Config.ID, dev.Config.Driver)
	}
	return New(dev.Config.ID, cfg.Config, cfg.Points, dev.Config.Interval, dev.Log, s.m)
}

func (sources) Close() error { return nil }

// Package fleet runs a fleet of simulated devices: equipment models stepped
// in simulated time, served over Modbus TCP (and RTU framing over TCP) and
// OPC UA, with scripted and run-time faults and a small HTTP control API.
//
// Tests and the demo start a fleet in-process:
//
//	cfg, err := fleet.Load("configs/sim-fleet.yaml")
//	f := fleet.New(cfg, logger)
//	err = f.Start(ctx)          // binds every listener (port 0 = a free port)
//	for _, d := range f.Devices() { ... d.Addr, d.UnitID, d.Template, d.OPCUA, d.NodePrefix ... }
package fleet

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/modbusfront"
	"github.com/smelterio/smelter/simulators/model"
	"github.com/smelterio/smelter/simulators/nmeafront"
	"github.com/smelterio/smelter/simulators/regmap"
)

// Transports a listener can speak.
const (
	TransportTCP        = modbusfront.TCP        // Modbus TCP (MBAP)
	TransportRTUOverTCP = modbusfront.RTUOverTCP // Modbus RTU frames with CRC over a TCP stream
)

// Config is a fleet file.
type Config struct {
	Seed  uint64          `yaml:"seed"`
	Speed float64         `yaml:"speed"` // simulated seconds per wall second; 0 = manual (Advance)
	Step  faults.Duration `yaml:"step"`  // simulated step, default 1s
	Start time.Time       `yaml:"-"`     // simulated start, default 2025-06-21T00:00:00Z
	// StartText is the file's start: as written, read like smelter-sim's
	// -start (ParseStart: an RFC 3339 time, "HH:MM" today in local time,
	// or "now") into Start by Load and Parse.
	StartText string `yaml:"start"`
	// Listeners shared by several devices (one port, several unit ids).
	Listeners map[string]ListenerConfig `yaml:"listeners"`
	// OPC UA servers shared by several devices (one folder per device).
	OPCUA   OPCUAConfig    `yaml:"opcua"`
	Devices []DeviceConfig `yaml:"devices"`

	// Dir resolves relative template paths (the fleet file's directory).
	Dir string `yaml:"-"`
	// Scenario, when set, schedules faults from simulated start.
	Scenario *faults.Scenario `yaml:"-"`
	// Catalog defaults to the embedded catalog.
	Catalog *catalog.Catalog `yaml:"-"`
}

// ListenerConfig is one TCP port.
type ListenerConfig struct {
	Address   string `yaml:"address"`   // host:port; port 0 picks a free port
	Transport string `yaml:"transport"` // tcp (default) | rtu_over_tcp
}

// DeviceConfig is one simulated asset, served over Modbus (one unit id),
// OPC UA (one folder of a server), or both from the same model and values.
// Without an opcua section the device is served over Modbus (on its own port
// when the modbus section is absent too); with an opcua section and no
// modbus section it is served over OPC UA only.
type DeviceConfig struct {
	ID        string             `yaml:"id"`
	Class     string             `yaml:"class"`
	Template  string             `yaml:"template"` // gateway template = register map (required with Modbus)
	Nameplate map[string]float64 `yaml:"nameplate"`
	Modbus    *ModbusConfig      `yaml:"modbus"`
	OPCUA     *DeviceOPCUAConfig `yaml:"opcua"`
	// NMEA, for ships, also sends the navigation signals as NMEA 0183
	// sentences (simulators/nmeafront).
	NMEA *NMEAConfig `yaml:"nmea"`
}

// NMEAConfig is a device's NMEA 0183 talker.
type NMEAConfig struct {
	Transport string          `yaml:"transport"` // tcp (default: a server the gateway connects to) | udp (datagrams to address)
	Address   string          `yaml:"address"`   // tcp: listen address (port 0 = free port); udp: destination
	Interval  faults.Duration `yaml:"interval"`  // wall-clock time between bursts, default 1s
	Corrupt   float64         `yaml:"corrupt"`   // fraction of sentences sent with a bad checksum
}

// ServesModbus reports whether the device has a Modbus front.
func (d *DeviceConfig) ServesModbus() bool { return d.Modbus != nil || d.OPCUA == nil }

// ModbusConfig says where a device answers: a named shared listener, or its
// own address.
type ModbusConfig struct {
	Listener  string `yaml:"listener"`
	Address   string `yaml:"address"`
	Transport string `yaml:"transport"`
	UnitID    int    `yaml:"unit_id"`
}

// Load reads a fleet file, applies defaults and validates it (templates
// included). Relative template paths resolve against the file's directory.
func Load(path string) (Config, error) {
	var cfg Config
	if _, err := confload.ReadFile(path, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.parseStart(path); err != nil {
		return Config{}, err
	}
	cfg.Dir = filepath.Dir(path)
	if _, err := cfg.compile(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Parse decodes a fleet document strictly (unknown fields rejected) without
// reading templates; name is used in errors ("file:line: reason").
func Parse(name string, data []byte) (Config, error) {
	var cfg Config
	if _, err := confload.Decode(name, data, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.parseStart(name); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// parseStart sets Start from StartText (when given); errors name the file.
func (c *Config) parseStart(name string) error {
	if c.StartText == "" {
		return nil
	}
	t, err := ParseStart(c.StartText, time.Now(), time.Local)
	if err != nil {
		return fmt.Errorf("%s: start: %q: want an RFC 3339 time (2025-06-21T10:00:00+08:00), a time of day (09:00) or now", name, c.StartText)
	}
	c.Start = t
	return nil
}

func (c *Config) defaults() {
	if c.Step == 0 {
		c.Step = faults.Duration(time.Second)
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2025, 6, 21, 0, 0, 0, 0, time.UTC)
	}
	if c.Catalog == nil {
		c.Catalog = catalog.Default()
	}
}

// compiled is a validated fleet: each device with its model and register map.
type compiled struct {
	devices   []compiledDevice
	listeners []compiledListener
	servers   []compiledServer
}

type compiledListener struct {
	name      string
	address   string
	transport string
	devices   []int // indexes into devices
}

type compiledDevice struct {
	cfg      DeviceConfig
	template string // resolved path
	model    model.Model
	rmap     *regmap.Map // nil without Modbus and template
	listener int         // -1: no Modbus
	server   int         // -1: no OPC UA
	nmea     *nmeafront.Config
}

// Validate checks the whole fleet, templates included (it reads them).
func (c *Config) Validate() error {
	_, err := c.compile()
	return err
}

func (c *Config) compile() (*compiled, error) {
	c.defaults()
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if math.IsNaN(c.Speed) || c.Speed < 0 || c.Speed > 1e6 {
		fail("fleet: speed: %v outside [0, 1e6] (0 = manual stepping)", c.Speed)
	}
	if c.Step.D() < time.Millisecond || c.Step.D() > time.Minute {
		fail("fleet: step: %v outside [1ms, 1m]", c.Step.D())
	}
	if len(c.Devices) == 0 {
		fail("fleet: devices: at least one device required")
	}
	out := &compiled{}
	named := map[string]int{}
	names := make([]string, 0, len(c.Listeners))
	for n := range c.Listeners {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		l := c.Listeners[n]
		if err := checkListener(l.Address, &l.Transport); err != nil {
			fail("fleet: listeners.%s: %w", n, err)
			continue
		}
		named[n] = len(out.listeners)
		out.listeners = append(out.listeners, compiledListener{name: n, address: l.Address, transport: l.Transport})
	}
	servers := c.compileServers(fail)
	ids := map[string]bool{}
	for i, d := range c.Devices {
		where := fmt.Sprintf("fleet: devices[%d]", i)
		if d.ID != "" {
			where = fmt.Sprintf("fleet: devices[%d] (%s)", i, d.ID)
		}
		if d.ID == "" {
			fail("%s.id: required", where)
			continue
		}
		if ids[d.ID] {
			fail("%s.id: %q used twice", where, d.ID)
			continue
		}
		ids[d.ID] = true
		m, err := model.New(d.Class, model.Options{ID: d.ID, Seed: c.Seed, Nameplate: d.Nameplate, Start: c.Start})
		if err != nil {
			fail("%s.class/nameplate: %w", where, err)
			continue
		}
		mbCfg := d.Modbus
		if mbCfg == nil && d.ServesModbus() {
			mbCfg = &ModbusConfig{}
		}
		if d.Template == "" && mbCfg != nil {
			fail("%s.template: required (the register map)", where)
			continue
		}
		var path string
		var rm *regmap.Map
		if d.Template != "" {
			path = d.Template
			if !filepath.IsAbs(path) && c.Dir != "" {
				path = filepath.Join(c.Dir, path)
			}
			t, err := regmap.LoadTemplate(path)
			if err != nil {
				fail("%s.template: %w", where, err)
				continue
			}
			if t.Class != d.Class {
				fail("%s.template: %s is for class %s, device is %s", where, path, t.Class, d.Class)
				continue
			}
			if rm, err = regmap.Compile(t, path, c.Catalog, m.Signals()); err != nil {
				fail("%s.template: %w", where, err)
				continue
			}
		}
		var nm *nmeafront.Config
		if d.NMEA != nil {
			nc := nmeafront.Config{Name: d.ID, Transport: d.NMEA.Transport, Address: d.NMEA.Address,
				Interval: d.NMEA.Interval.D(), Corrupt: d.NMEA.Corrupt, Seed: c.Seed}
			if nc.Transport == "" {
				nc.Transport = nmeafront.TCP
			}
			if nc.Address == "" && nc.Transport == nmeafront.TCP {
				nc.Address = "127.0.0.1:0"
			}
			if nc.Interval == 0 {
				nc.Interval = time.Second
			}
			if !slices.Contains(m.Signals(), "latitude") || !slices.Contains(m.Signals(), "sog") {
				fail("%s.nmea: the %s model has no navigation signals (latitude, sog) to send", where, d.Class)
				continue
			}
			if err := nc.Validate(); err != nil {
				fail("%s.nmea.%w", where, err)
				continue
			}
			nm = &nc
		}
		si := -1
		if d.OPCUA != nil {
			var ok bool
			if si, ok = servers.device(c, d, where, fail); !ok {
				continue
			}
		}
		if mbCfg == nil {
			if si >= 0 {
				servers.list[si].devices = append(servers.list[si].devices, len(out.devices))
			}
			out.devices = append(out.devices, compiledDevice{cfg: d, template: path, model: m, rmap: rm, listener: -1, server: si, nmea: nm})
			continue
		}
		d.Modbus = mbCfg
		if d.Modbus.UnitID < 0 || d.Modbus.UnitID > 247 {
			fail("%s.modbus.unit_id: %d outside 0..247", where, d.Modbus.UnitID)
			continue
		}
		var li int // the device's listener
		switch {
		case d.Modbus.Listener != "" && d.Modbus.Address != "":
			fail("%s.modbus: give listener or address, not both", where)
			continue
		case d.Modbus.Listener != "":
			n, ok := named[d.Modbus.Listener]
			if !ok {
				fail("%s.modbus.listener: %q not defined under listeners", where, d.Modbus.Listener)
				continue
			}
			li = n
		default:
			addr, tr := d.Modbus.Address, d.Modbus.Transport
			if addr == "" {
				addr = "127.0.0.1:0"
			}
			if err := checkListener(addr, &tr); err != nil {
				fail("%s.modbus: %w", where, err)
				continue
			}
			li = len(out.listeners)
			out.listeners = append(out.listeners, compiledListener{name: d.ID, address: addr, transport: tr})
		}
		for _, other := range out.listeners[li].devices {
			if out.devices[other].cfg.Modbus.UnitID == d.Modbus.UnitID {
				fail("%s.modbus.unit_id: %d already used by %s on the same listener", where, d.Modbus.UnitID, out.devices[other].cfg.ID)
			}
		}
		out.listeners[li].devices = append(out.listeners[li].devices, len(out.devices))
		if si >= 0 {
			servers.list[si].devices = append(servers.list[si].devices, len(out.devices))
		}
		out.devices = append(out.devices, compiledDevice{cfg: d, template: path, model: m, rmap: rm, listener: li, server: si, nmea: nm})
	}
	for _, l := range out.listeners {
		if len(l.devices) == 0 {
			fail("fleet: listeners.%s: no device uses it", l.name)
		}
	}
	out.servers = servers.list
	for _, s := range out.servers {
		if len(s.devices) == 0 {
			fail("fleet: opcua.servers.%s: no device uses it", s.name)
		}
	}
	if c.Scenario != nil {
		byID := map[string]*compiledDevice{}
		for i := range out.devices {
			byID[out.devices[i].cfg.ID] = &out.devices[i]
		}
		for i, f := range c.Scenario.Faults {
			d, ok := byID[f.Device]
			if !ok {
				if !ids[f.Device] {
					fail("scenario %s: faults[%d].device: unknown device %q", c.Scenario.Name, i, f.Device)
				}
				continue
			}
			if err := checkFront(f, d.listener >= 0, d.server >= 0, d.nmea != nil); err != nil {
				fail("scenario %s: faults[%d] (%s): %w", c.Scenario.Name, i, f.ID, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func checkListener(addr string, transport *string) error {
	if *transport == "" {
		*transport = TransportTCP
	}
	if *transport != TransportTCP && *transport != TransportRTUOverTCP {
		return fmt.Errorf("transport: %q not one of tcp, rtu_over_tcp", *transport)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address: %q: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("address: %q: bad port", addr)
	}
	return nil
}

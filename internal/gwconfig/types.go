package gwconfig

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/procs"
	"github.com/smelterio/smelter/internal/telemetry"
)

// DeviceFile is one device entry: the settings every device has, its
// protocol block and its points. The protocol block (exactly one: the key
// is the driver's name, modbus or opcua) and the points are decoded by that
// protocol's Driver (in its own package, internal/modbus, internal/opcua):
// each point is the common PointFile fields plus the driver's address
// fields.
type DeviceFile struct {
	ID           string             `yaml:"id"`
	Class        string             `yaml:"class"`
	Area         string             `yaml:"area,omitempty"`
	Line         string             `yaml:"line,omitempty"`
	Cell         string             `yaml:"cell,omitempty"`
	Nameplate    map[string]float64 `yaml:"nameplate,omitempty,flow"`
	PollInterval time.Duration      `yaml:"poll_interval,omitempty"`
	Heartbeat    time.Duration      `yaml:"heartbeat,omitempty"`
	Template     string             `yaml:"template,omitempty"`
	Disabled     bool               `yaml:"disabled,omitempty"`
	// Blocks holds the protocol block by driver name, as written.
	Blocks map[string]yaml.Node `yaml:",inline"`
	// Points are the device's own points, as written.
	Points []yaml.Node `yaml:"points,omitempty"`
	// Sources, when set, feed the one asset from several connections,
	// possibly of different protocols (navigation over NMEA 0183, the
	// main engine over Modbus): each has its protocol block and points;
	// the device then has neither. Its id, class, place and nameplate are
	// the asset's, written once here (docs/configuration.md, "One asset,
	// several sources").
	Sources []SourceFile `yaml:"sources,omitempty"`
}

// SourceFile is one source of a device with several (DeviceFile.Sources):
// one connection of one protocol and the points read over it. Its
// poll_interval and heartbeat default to the device's.
type SourceFile struct {
	// Name identifies the source in logs, metrics and the status page
	// (device "<id>/<name>"); default the protocol's name.
	Name         string        `yaml:"name,omitempty"`
	PollInterval time.Duration `yaml:"poll_interval,omitempty"`
	Heartbeat    time.Duration `yaml:"heartbeat,omitempty"`
	Template     string        `yaml:"template,omitempty"`
	// Blocks holds the protocol block by driver name, as written.
	Blocks map[string]yaml.Node `yaml:",inline"`
	Points []yaml.Node          `yaml:"points,omitempty"`
}

// SetBlock sets the source's protocol block, as DeviceFile.SetBlock.
func (s *SourceFile) SetBlock(driver string, v any) error {
	return setBlock(&s.Blocks, "source "+s.Name, driver, v)
}

// AddPoint appends a point, as DeviceFile.AddPoint.
func (s *SourceFile) AddPoint(p any) error {
	return addPoint(&s.Points, "source "+s.Name, p)
}

// SetBlock sets the device's protocol block from a driver's config struct
// (modbus.Config, opcua.Config); zero fields are left out so the driver's
// defaults apply. Used by generators (the demo) that write a file.
func (d *DeviceFile) SetBlock(driver string, v any) error {
	return setBlock(&d.Blocks, "device "+d.ID, driver, v)
}

func setBlock(blocks *map[string]yaml.Node, owner, driver string, v any) error {
	n, err := node(v)
	if err != nil {
		return fmt.Errorf("%s: %s block: %w", owner, driver, err)
	}
	if *blocks == nil {
		*blocks = map[string]yaml.Node{}
	}
	(*blocks)[driver] = *n
	return nil
}

// AddPoint appends a point given as a driver's point struct
// (modbus.PointFile, opcua.PointFile); zero fields are left out.
func (d *DeviceFile) AddPoint(p any) error {
	return addPoint(&d.Points, "device "+d.ID, p)
}

func addPoint(points *[]yaml.Node, owner string, p any) error {
	n, err := node(p)
	if err != nil {
		return fmt.Errorf("%s: point: %w", owner, err)
	}
	*points = append(*points, *n)
	return nil
}

// Marshal writes f as YAML without its zero-valued fields (so every
// default applies as if the field were not written); Load reads it back.
func Marshal(f *File) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(f); err != nil {
		return nil, fmt.Errorf("gwconfig: marshal: %w", err)
	}
	dropZero(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("gwconfig: marshal: %w", err)
	}
	return out, nil
}

// node encodes v as a flow-style YAML node without its zero-valued fields.
func node(v any) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	dropZero(&n)
	n.Style = yaml.FlowStyle
	return &n, nil
}

// dropZero removes mapping entries whose value is zero, empty or null and
// reports whether n itself is empty.
func dropZero(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !dropZero(n.Content[i+1]) {
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
		return len(kept) == 0
	case yaml.SequenceNode:
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!str":
			return n.Value == "" || n.Value == "0s"
		case "!!int", "!!float":
			return n.Value == "0"
		case "!!bool":
			return n.Value == "false"
		}
	}
	return false
}

// PointFile holds the fields every point has, whatever its protocol: what
// the point means (signal) and how its value is normalized.
type PointFile struct {
	Signal   string           `yaml:"signal"`
	Unit     string           `yaml:"unit,omitempty"`
	Scale    *float64         `yaml:"scale,omitempty"`
	Offset   float64          `yaml:"offset,omitempty"`
	Interval time.Duration    `yaml:"interval,omitempty"`
	Deadband float64          `yaml:"deadband,omitempty"`
	Enum     map[int64]string `yaml:"enum,omitempty"`
	Min      *float64         `yaml:"min,omitempty"`
	Max      *float64         `yaml:"max,omitempty"`
	// Write makes the point writable by commands, within its limits
	// (write.go, docs/commands.md).
	Write *WriteFile `yaml:"write,omitempty"`
}

// Config is a loaded, validated, compiled configuration.
type Config struct {
	File    string // path of the main file
	Raw     File
	ID      string
	Site    string
	DataDir string
	// MemoryLimit is gateway.memory_limit in bytes (0: none).
	MemoryLimit int64
	// GCPercent is gateway.gc_percent (0: memlimit.DefaultGCPercent).
	GCPercent int
	// MaxProcs is gateway.max_procs (procs.Auto by default).
	MaxProcs procs.Setting
	Devices  []*Device
	// Warnings are problems that do not stop the gateway (overlapping
	// Modbus points, units left to the device): validate prints them and
	// the gateway logs them at start.
	Warnings confload.Errors

	doc *confload.Doc // the main file, to place CheckLocal's errors
}

// Device is one compiled device: its asset, its points' normalization and
// its driver's settings. Norm, BirthIntervalMS and Writes are
// index-aligned: index i is the device's point i, the sample.Sample.Index
// its driver reports. A point's birth entry (Signal) is derived from them
// when a birth is built, not kept.
//
// A device with several sources (DeviceFile.Sources) compiles to one
// Device per source, all with the same Asset and Nameplate: ID is then
// "<device id>/<source name>", Source the source's name and Field
// "devices[3].sources[1]". The gateway publishes one birth per asset with
// the union of its sources' signals.
type Device struct {
	ID        string
	Field     string // where the device is written: "devices[3]"
	Source    string // the source's name; "" for a device without sources
	Protocol  string // the driver's name: modbus, opcua, nmea
	Asset     telemetry.Asset
	Nameplate map[string]float64
	Interval  time.Duration // the device's poll_interval
	Heartbeat time.Duration
	// Norm is the points' normalization, in point order (a compact
	// table: normalize.Table); the device's Normalizer shares it.
	Norm *normalize.Table
	// BirthIntervalMS is the interval point i's birth entry announces
	// (telemetry.SignalInfo.IntervalMS): one entry when every point
	// announces the same (read it with BirthInterval).
	BirthIntervalMS []int64
	// Driver is the protocol's compiled settings, of its driver's own
	// type (*modbus.DeviceConfig, *opcua.DeviceConfig).
	Driver DriverConfig
	// Writes is index-aligned with Norm: the point's compiled write block,
	// nil when commands may not write it; nil when no point is writable
	// (read it with Write).
	Writes []*Write

	norm []normalize.Point // Norm while the device compiles
}

// Signal returns point i's entry in the asset's birth as configured: its
// signal, canonical unit, plausible range, birth interval, source, state
// labels and write limits. A unit the device reports (a class without
// catalog unit) is the gateway's to lay over it.
func (d *Device) Signal(i int) telemetry.SignalInfo {
	p := d.Norm.Point(i)
	info := telemetry.SignalInfo{Signal: p.Signal, Unit: p.Unit, Min: p.Min, Max: p.Max, Src: p.Src,
		IntervalMS: d.BirthInterval(i), Write: d.Write(i).Limits()}
	if states := p.States(); len(states) > 0 {
		info.Enum = states
	}
	return info
}

// BirthInterval is the interval point i's birth entry announces (ms).
func (d *Device) BirthInterval(i int) int64 {
	if len(d.BirthIntervalMS) == 1 {
		return d.BirthIntervalMS[0]
	}
	return d.BirthIntervalMS[i]
}

// Write is point i's compiled write block, nil when commands may not
// write it.
func (d *Device) Write(i int) *Write {
	if d.Writes == nil {
		return nil
	}
	return d.Writes[i]
}

// Signals returns every point's birth entry (Signal), in point order.
func (d *Device) Signals() []telemetry.SignalInfo {
	out := make([]telemetry.SignalInfo, d.Norm.Len())
	for i := range out {
		out[i] = d.Signal(i)
	}
	return out
}

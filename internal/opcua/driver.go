package opcua

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// Driver is the OPC UA protocol for smelter-gateway: it compiles a
// device's opcua block and node points (gwconfig.Driver) and builds its
// Source, a Client (driver.Driver).
type Driver struct{}

var _ driver.Driver = Driver{}

// PointFile is one OPC UA point as written: the common fields and the node
// it is acquired from.
type PointFile struct {
	gwconfig.PointFile `yaml:",inline"`
	NodeID             string        `yaml:"node_id"`
	Mode               string        `yaml:"mode,omitempty"`              // subscribe (default) | poll
	SamplingInterval   time.Duration `yaml:"sampling_interval,omitempty"` // subscribe: server sampling interval
	QueueSize          uint32        `yaml:"queue_size,omitempty"`
	DeadbandType       string        `yaml:"deadband_type,omitempty"` // absolute | percent: the server applies "deadband" (device units / % of EURange)
}

// DeviceConfig is a compiled OPC UA device: its session and every point,
// in the device's point order (gwconfig.Device.Driver). A point whose
// configuration gives no unit has Point.UnitFromNode set: its node's
// EngineeringUnits decide.
type DeviceConfig struct {
	Config Config
	Points []Point
}

// Endpoint implements gwconfig.DriverConfig.
func (u *DeviceConfig) Endpoint() (string, string) {
	return "opcua/" + u.Config.SecurityPolicy, u.Config.Endpoint
}

// Name implements gwconfig.Driver: the block key.
func (Driver) Name() string { return "opcua" }

// Check implements gwconfig.Driver: OPC UA devices share nothing.
// Writable points work with either isolation: with process, commands go
// to the device's session worker (docs/opcua.md, "Session isolation").
func (Driver) Check(*gwconfig.Checks, []*gwconfig.Device) {}

// Compile implements gwconfig.Driver: the opcua block is a Config (its
// paths relative to the configuration file, its data_dir by default
// gateway.data_dir/opcua), the points are PointFiles listed on the device
// (templates are Modbus register maps).
func (Driver) Compile(b *gwconfig.Block) gwconfig.DriverConfig {
	d, doc := b.Device(), b.Doc()
	var u Config
	b.Decode(&u)
	if u.DataDir == "" {
		u.DataDir = filepath.Join(b.DataDir(), "opcua")
	}
	for _, p := range []*string{&u.Auth.PasswordFile, &u.Auth.CertFile, &u.Auth.KeyFile, &u.Certificate.CertFile,
		&u.Certificate.KeyFile, &u.DataDir, &u.TrustDir} {
		*p = b.Resolve(*p)
	}
	u.SetDefaults()
	if err := u.Validate(); err != nil {
		b.Report(doc, b.BlockField(), err)
	}
	if d.Template != "" {
		b.Bad("template", "templates are Modbus register maps; list OPC UA points under points")
	}
	if b.Points() == 0 {
		b.Bad("points", "no points")
	}
	// exact size: the table lives as long as the gateway (appending left
	// up to a quarter of it unused, ~24 bytes a point)
	out := &DeviceConfig{Config: u, Points: make([]Point, 0, b.Points())}
	// indexed: the node ids written ns=<index> with index > 0, and the
	// field of the first (one warning per device, not one per point)
	indexed, firstIndexed := 0, ""
	for i := range b.Points() {
		field := b.PointField(i)
		var pf PointFile
		if !b.DecodePoint(i, &pf) {
			continue
		}
		for _, f := range []struct{ field, id string }{{".node_id", pf.NodeID}, {".write.method.object", methodField(pf.Write, true)},
			{".write.method.method", methodField(pf.Write, false)}} {
			if idx, _, ok := nsIndex(f.id); ok && idx > 0 {
				if indexed == 0 {
					firstIndexed = field + f.field
				}
				indexed++
			}
		}
		src := "opcua:" + pf.NodeID
		// the node id is the tail of src: one string per point, not two
		// (the decoded one is left to the collector)
		// mode and deadband type as written: unknown names are reported
		// with the point's other problems
		mode, modeErr := ParseMode(pf.Mode)
		dbt, dbtErr := ParseDeadbandType(pf.DeadbandType)
		up := Point{NodeID: src[len("opcua:"):], Mode: mode, SamplingInterval: pf.SamplingInterval, PollInterval: pf.Interval,
			QueueSize: pf.QueueSize, DeadbandType: dbt}
		if w := pf.Write; w != nil && w.Method != nil {
			up.Method = &Method{Object: w.Method.Object, Method: w.Method.Method, Argument: w.Method.Argument}
			if pf.NodeID == "" {
				src = "opcua:call:" + w.Method.Method
				if w.MaxStep > 0 {
					b.Errorf(doc, field+".write.max_step", "needs the point's node_id to read the value before writing (a point without a node only calls write.method)")
				}
			}
		}
		server := dbt != DeadbandNone
		if server {
			up.Deadband = pf.Deadband
		}
		up.SetDefaults(&u)
		if err := errors.Join(modeErr, dbtErr, up.Validate()); err != nil {
			b.Report(doc, field, err)
			continue
		}
		common := pf.PointFile
		if server {
			common.Deadband = 0 // the server applies it
		}
		iv := max(pf.SamplingInterval, u.PublishInterval)
		if up.Mode == ModePoll {
			iv = up.PollInterval
		}
		birth := max(iv, u.PublishInterval)
		if common.Deadband > 0 || server || up.Mode == ModeSubscribe {
			// report by exception: a subscribed node notifies changes
			// only; the driver re-reports an unchanged value every heartbeat
			birth = d.Heartbeat
		}
		idx, fromNode, ok := b.Point(gwconfig.PointSpec{Doc: doc, Field: field, Point: &common, Src: src,
			UnitFromDevice: pf.NodeID != "", Methods: true, Interval: iv, BirthInterval: birth})
		if !ok || idx < 0 {
			continue
		}
		up.UnitFromNode = fromNode
		out.Points = append(out.Points, up)
	}
	if indexed > 0 {
		b.Warn(doc, firstIndexed, "%d node ids of the device name their namespace by index (ns=<index>, index > 0): the index depends on the server's namespace order, "+
			"which a server may change when it restarts; write nsu=<namespace URI>;... (smelter-gateway browse -write-config does). "+
			"The gateway pins each index to its URI at the first session and never reads a node under an index whose URI moved or is gone (docs/opcua.md, \"Namespace indexes and URIs\")", indexed)
	}
	if !b.OK() {
		return nil
	}
	return out
}

// methodField is w's write.method object (or method) node id, "" when
// there is none.
func methodField(w *gwconfig.WriteFile, object bool) string {
	if w == nil || w.Method == nil {
		return ""
	}
	if object {
		return w.Method.Object
	}
	return w.Method.Method
}

// Sources implements driver.Driver: the client metrics, registered once
// per gateway.
func (Driver) Sources(env driver.Env) driver.Sources {
	return clientSources{m: NewMetrics(env.Registry), now: env.Now}
}

// clientSources builds the devices' clients with the gateway's metrics and
// data clock (now; nil: time.Now), by which a SourceTimestamp ahead is
// judged (Client.vetTime).
type clientSources struct {
	m   *Metrics
	now func() time.Time
}

// Source returns the device's Client: it re-reports unchanged subscribed
// values every heartbeat and hands the units of the points whose
// configuration gives none to dev.Units.
func (s clientSources) Source(dev driver.Device) (driver.Source, error) {
	cfg, ok := dev.Config.Driver.(*DeviceConfig)
	if !ok {
		return nil, fmt.Errorf("opcua: device %s: compiled settings are %T, not opcua", dev.Config.ID, dev.Config.Driver)
	}
	c := cfg.Config
	c.Heartbeat = dev.Config.Heartbeat
	cl, err := New(dev.Config.ID, c, cfg.Points, dev.Log, s.m) // shared: neither changes them
	if err != nil {
		return nil, err
	}
	if s.now != nil {
		cl.dataNow = s.now
	}
	if dev.Units != nil {
		cl.OnUnits(func(nus []NodeUnit) {
			out := make([]driver.Unit, len(nus))
			for i, nu := range nus {
				out[i] = nu.driverUnit()
			}
			dev.Units(out)
		})
	}
	return cl, nil
}

func (clientSources) Close() error { return nil }

// driverUnit is u as the gateway takes it: no EngineeringUnits is Absent
// (the catalog unit), unusable ones carry Err (bad values).
func (u NodeUnit) driverUnit() driver.Unit {
	return driver.Unit{Index: u.Index, Absent: u.NoUnits != "", AbsentHow: u.NoUnits, UCUM: u.UCUM, UNECE: u.UNECE, Display: u.Display,
		Min: u.Min, Max: u.Max, HasRange: u.HasRange, RangeErr: u.RangeErr, Err: u.Err}
}

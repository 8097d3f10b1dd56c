package gwconfig

import (
	"fmt"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/opcua"
)

// OPCUAPoint is one OPC UA point as written: the common fields and the node
// it is acquired from.
type OPCUAPoint struct {
	PointFile        `yaml:",inline"`
	NodeID           string        `yaml:"node_id"`
	Mode             string        `yaml:"mode,omitempty"`              // subscribe (default) | poll
	SamplingInterval time.Duration `yaml:"sampling_interval,omitempty"` // subscribe: server sampling interval
	QueueSize        uint32        `yaml:"queue_size,omitempty"`
	DeadbandType     string        `yaml:"deadband_type,omitempty"` // absolute | percent: the server applies "deadband" (device units / % of EURange)
}

// OPCUADevice is a compiled OPC UA device: its session and every point, in
// the device's point order.
type OPCUADevice struct {
	Config opcua.Config
	Points []opcua.Point
	// UnitFromNode[i]: the configuration gives no unit for point i; its
	// node's EngineeringUnits decide (opcua.Point.UnitFromNode).
	UnitFromNode []bool
}

// Endpoint implements DriverConfig.
func (u *OPCUADevice) Endpoint() (string, string) {
	return "opcua/" + u.Config.SecurityPolicy, u.Config.Endpoint
}

// opcuaDriver compiles OPC UA devices.
type opcuaDriver struct{}

func (opcuaDriver) finish(*compiler) {}

func (opcuaDriver) compile(dc *deviceCompiler, block *yaml.Node) DriverConfig {
	c, d, doc := dc.c, dc.d, dc.doc
	bfield := dc.field + ".opcua"
	var u opcua.Config
	if err := doc.DecodeNode(block, bfield, &u); err != nil {
		c.decodeErr(err)
		dc.ok = false
	}
	if u.DataDir == "" {
		u.DataDir = filepath.Join(c.resolve(c.dataDir), "opcua")
	}
	for _, p := range []*string{&u.Auth.PasswordFile, &u.Auth.CertFile, &u.Auth.KeyFile, &u.Certificate.CertFile,
		&u.Certificate.KeyFile, &u.DataDir, &u.TrustDir} {
		*p = c.resolve(*p)
	}
	u.SetDefaults()
	if err := u.Validate(); err != nil {
		c.report(doc, bfield, err)
		dc.ok = false
	}
	if d.Template != "" {
		dc.bad("template", "templates are Modbus register maps; list OPC UA points under points")
	}
	if len(d.Points) == 0 {
		dc.bad("points", "no points")
	}
	out := &OPCUADevice{Config: u}
	for i := range d.Points {
		field := fmt.Sprintf("%s.points[%d]", dc.field, i)
		var pf OPCUAPoint
		if err := doc.DecodeNode(&d.Points[i], field, &pf); err != nil {
			c.decodeErr(err)
			dc.ok = false
			continue
		}
		up := opcua.Point{NodeID: pf.NodeID, Mode: pf.Mode, SamplingInterval: pf.SamplingInterval, PollInterval: pf.Interval,
			QueueSize: pf.QueueSize, DeadbandType: pf.DeadbandType}
		server := pf.DeadbandType != "" && pf.DeadbandType != "none"
		if server {
			up.Deadband = pf.Deadband
		}
		up.SetDefaults(&u)
		if err := up.Validate(); err != nil {
			c.report(doc, field, err)
			dc.ok = false
			continue
		}
		common := pf.PointFile
		if server {
			common.Deadband = 0 // the server applies it
		}
		iv := max(pf.SamplingInterval, u.PublishInterval)
		if up.Mode == opcua.ModePoll {
			iv = up.PollInterval
		}
		birth := max(iv, u.PublishInterval)
		if common.Deadband > 0 || server || up.Mode == opcua.ModeSubscribe {
			// report by exception: a subscribed node notifies changes
			// only; the driver re-reports an unchanged value every heartbeat
			birth = d.Heartbeat
		}
		idx, fromNode, ok := dc.point(pointSpec{doc: doc, field: field, p: &common, src: "opcua:" + pf.NodeID,
			unitFromDevice: true, interval: iv, birthInterval: birth})
		if !ok || idx < 0 {
			continue
		}
		out.Points = append(out.Points, up)
		out.UnitFromNode = append(out.UnitFromNode, fromNode)
	}
	if !dc.ok {
		return nil
	}
	return out
}

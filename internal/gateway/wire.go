//go:build smelter_contract

// The drivers' constructors on the CONTRACT.md APIs (modbus.Pool.Source,
// opcua.Client.Run/OnUnits). At merge, with internal/modbus and
// internal/opcua providing them, delete compat_modbus.go and
// compat_opcua.go and remove the build constraint above.

package gateway

import (
	"slices"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/opcua"
)

// modbusSource is a Modbus device's Source: its unit on the pool's shared
// link, one poller per group.
func (g *Gateway) modbusSource(d *device, drv *gwconfig.ModbusDevice) (Source, error) {
	groups := make([]modbus.Group, len(drv.Groups))
	for i, gr := range drv.Groups {
		groups[i] = modbus.Group{Interval: gr.Interval, Points: gr.Points, Index: gr.Index}
	}
	src, err := g.pool.Source(d.cfg.ID, drv.Config, groups)
	if err != nil {
		return nil, err
	}
	return src, nil
}

// opcuaSource is an OPC UA device's Source: its client, which re-reports
// unchanged subscribed values every heartbeat and reports the nodes' units
// for the points whose configuration gives none.
func (g *Gateway) opcuaSource(d *device, drv *gwconfig.OPCUADevice) (Source, error) {
	cfg := drv.Config
	cfg.Heartbeat = d.cfg.Heartbeat
	pts := slices.Clone(drv.Points)
	for i := range pts {
		pts[i].UnitFromNode = drv.UnitFromNode[i]
	}
	c, err := opcua.New(d.cfg.ID, cfg, pts, d.log, g.uaMetrics)
	if err != nil {
		return nil, err
	}
	c.OnUnits(d.applyUnits)
	return c, nil
}

// The drivers' constructors on their Source APIs: opcua.Client.Run/OnUnits
// here, modbus.Pool.Source in wire_modbus.go.

package gateway

import (
	"slices"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/opcua"
)

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

package gateway

import (
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
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

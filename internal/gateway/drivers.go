package gateway

import (
	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/nmea"
	"github.com/smelterio/smelter/internal/opcua"
)

// Drivers returns the protocol drivers smelter-gateway knows: the one
// registration list. A new protocol is its package (implementing
// driver.Driver) plus one entry here (docs/architecture.md, "Adding a
// driver"). Pass the list to gwconfig.Load; New uses it unless
// Options.Drivers says otherwise.
func Drivers() []driver.Driver {
	return []driver.Driver{modbus.Driver{}, opcua.Driver{}, nmea.Driver{}}
}

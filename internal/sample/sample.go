// Package sample holds the one value type every acquisition driver (Modbus,
// OPC UA, and the drivers to come) produces and the normalizer consumes, and
// the Cycle in which a driver hands its samples to the gateway.
//
// The package depends on internal/telemetry only.
package sample

import (
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Sample is one point's outcome in one acquisition cycle, before
// normalization (scale, unit conversion, states, deadband).
//
// The rule it carries (docs/schema.md, "bad vs stale"): while the device
// answers about a point, even with a Modbus exception or an OPC UA Bad
// StatusCode, the point is Bad with that code. Stale means the gateway has
// heard nothing about the point for k x its interval.
type Sample struct {
	// Index is the point's position in the device's point list, the order
	// the driver was configured with.
	Index int
	// Num is the value as read (device units, before scale); Str the text
	// value when IsStr.
	Num   float64
	Str   string
	IsStr bool
	// Quality is Good or Uncertain when the sample carries a value; Bad when
	// it does not; Stale only when the driver knows nothing can be heard
	// until its link is back (OPC UA session or subscription lost).
	Quality telemetry.Quality
	// Silent marks a Bad sample for which the device said nothing this cycle
	// (timeout, connection refused or lost): the normalizer reports it Bad
	// until the point has been silent for k x its interval, then Stale. A Bad
	// sample that is not Silent is the device's answer and stays Bad.
	Silent bool
	// Status is the raw protocol code published as telemetry.Reading.Status:
	// the OPC UA StatusCode, or the Modbus exception code / gateway code and
	// flags documented in internal/modbus and docs/schema.md. 0 means good.
	Status uint32
	// TS is the sample's time in Unix milliseconds: the OPC UA
	// SourceTimestamp; for Modbus, when the reply that carried it (a value
	// or an exception) arrived, read on the gateway's data clock
	// (driver.Env.Now), not the wall clock. 0 means the read time: the
	// gateway's data clock when it handles the cycle.
	TS int64
}

// Cycle is one acquisition cycle of a source: a poll of one group of points,
// or one OPC UA publish response or poll. A driver hands it to the gateway's
// emit function; Samples and the Cycle are valid only during that call.
type Cycle struct {
	// Samples holds the points with something to report this cycle (every
	// point of a polled group; the changed ones of a notification).
	Samples []Sample
	// Start is when the cycle began (wall clock): the read time of samples
	// without a source time.
	Start time.Time
	// Duration is how long the cycle's requests took (0 for notifications).
	Duration time.Duration
	// Interval is the nominal period of the cycle's points (a group's poll
	// interval, a subscription's publishing interval): liveness and
	// staleness are judged in multiples of it.
	Interval time.Duration
	// Replied says the device answered at least one request of the cycle:
	// an exception or a Bad StatusCode is an answer. Only silence
	// (timeouts, refused or lost connections, a lost session) is not.
	Replied bool
	// Lost says the source lost its link or session: nothing more arrives
	// until it is back, so the device is dead at once.
	Lost bool
	// LinkBusiest, for a device that shares its link with other devices
	// (Modbus units behind one RTU gateway or on one serial line): the
	// device (its configured id) that used the link for the longest time
	// during the cycle, this device's own id when it did, and that time
	// (LinkBusiestTime). Empty when the link is not shared. The gateway
	// names it when the cycle overran its interval.
	LinkBusiest     string
	LinkBusiestTime time.Duration
	// Err is the first cause of failure in the cycle (typed by its driver,
	// usable with errors.Is), nil when every sample is good. Its text is the
	// device's last_error, death reason and log cause.
	Err error
}

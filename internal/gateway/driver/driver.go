// Package driver declares what smelter-gateway needs of a protocol driver:
// its configuration part (gwconfig.Driver) and the Sources of samples it
// builds for the gateway's acquisition loop. It is the contract between
// internal/gateway, which consumes it, and the driver packages
// (internal/modbus, internal/opcua), which implement it; it is its own
// package, as database/sql/driver is, so that drivers need not import the
// gateway (which imports them in its one registration list,
// gateway.Drivers) and the gateway's tests may import drivers.
//
// It depends on internal/gwconfig and internal/sample only (and slog,
// Prometheus' Registerer).
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/sample"
)

// Driver is one protocol: its configuration block and its sources. A new
// protocol is a package implementing it plus one line in gateway.Drivers.
type Driver interface {
	gwconfig.Driver
	// Sources returns what builds the driver's sources inside one gateway,
	// sharing what its devices share (connections to one serial line or
	// RTU gateway, metrics registered once in env.Registry). It does no
	// I/O.
	Sources(env Env) Sources
}

// Env is what the gateway gives a driver once.
type Env struct {
	Log      *slog.Logger
	Registry prometheus.Registerer
	// Now is the gateway's data clock (gateway.Options.Now; nil:
	// time.Now), which need not be the wall clock (the demo's plant clock
	// runs behind and faster). A driver that stamps samples itself
	// (sample.Sample.TS: Modbus, when a reply arrived) reads this clock,
	// never time.Now; its timeouts and schedules stay on the wall clock.
	Now func() time.Time
}

// Sources builds the sources of one driver's devices in one gateway.
type Sources interface {
	// Source returns the source of one device whose configuration the
	// driver compiled (dev.Config.Driver is the driver's own type). It does
	// no I/O: connecting is Run's work.
	Source(dev Device) (Source, error)
	// Close releases what the sources share (open connections); the gateway
	// calls it once, after every source's Run returned.
	Close() error
}

// Device is what the gateway gives a driver for one device.
type Device struct {
	Config *gwconfig.Device
	Log    *slog.Logger // scoped with the device's id
	// Units receives the units the device reports for its points, for
	// drivers whose devices describe their points (OPC UA
	// EngineeringUnits and EURange). The driver may call it from any of its
	// goroutines, never concurrently; nil means nobody listens.
	Units func([]Unit)
}

// Source is one device's acquisition: the one interface every driver
// implements for the gateway's acquisition loop.
type Source interface {
	// Run acquires until ctx ends and calls emit once per cycle. Calls to
	// emit never overlap; the Cycle and its Samples are valid only during
	// the call. Run returns nil when ctx ends.
	Run(ctx context.Context, emit func(*sample.Cycle)) error
}

// Progresser is implemented by the Source of a driver whose cycle may take
// long while the driver works, every wait of it bounded (a Modbus read
// queued on a link shared with units that time out, or waiting for a slow
// answer within its timeout). The gateway's stall watch (docs/architecture.md,
// "stall watch") counts such progress as life: a source is stalled only
// when it has emitted no cycle and made no progress for its stall limit,
// which is at least k x bound.
type Progresser interface {
	// Progress returns when the source last made progress inside a cycle
	// in flight (zero when none is in flight) and bound, the longest the
	// source goes without progress while it works (configuration-derived,
	// constant for the source's life).
	Progress() (last time.Time, bound time.Duration)
}

// Writer is implemented by the Source of a driver that can write points
// (Modbus, OPC UA); the gateway's command path (docs/commands.md) type-asserts a
// Source to it. Values are device values: what the driver reports as
// sample.Sample.Num, before the point's scale, offset and unit conversion.
// Calls may come from any goroutine, concurrently with Run; the driver
// serialises them with its reads.
type Writer interface {
	// ReadPoint reads point index (device-wide, as Sample.Index) now; a
	// point that can be written but not read answers ErrNotReadable.
	ReadPoint(ctx context.Context, index int) (sample.Sample, error)
	// WritePoint writes v to point index and returns the device value a
	// read gives back when the device keeps it (v as the point's type
	// holds it: rounded to an integer, to float32). A device's refusal
	// carries its code: errors.As(err, &e) with e an Exception.
	WritePoint(ctx context.Context, index int, v float64) (float64, error)
}

// Exception is implemented by a driver's error that carries a code the
// device sent (a Modbus exception code) and the driver's full status.
type Exception interface {
	error
	Exception() (uint8, bool)
}

// Unit is what a device says about one point's unit and range: no unit
// (Absent: the catalog unit applies), one it cannot use (Err, or UCUM ""
// for a unit without UCUM equivalent: values are bad), or UCUM.
type Unit struct {
	Index     int    // the point's device-wide index (sample.Sample.Index)
	Absent    bool   // the device gives no unit for the point
	AbsentHow string // Absent: how (OPC UA: no EngineeringUnits property, a Null value)
	UCUM      string // UCUM code when known ("" otherwise)
	UNECE     string // UN/ECE Rec. 20 common code as the device gave it (CEL)
	Display   string // the device's display name of the unit (bounded)
	// Min, Max: the point's engineering range, in the device's unit, when
	// HasRange.
	Min, Max float64
	HasRange bool
	RangeErr string // a range the device gives that cannot be used (ignored): why
	Err      error  // the device gives a unit that cannot be used (unreadable, malformed)
}

// UnitText describes u's unit for a log line, in the same words wherever
// it is logged: "kPa", "none (no EngineeringUnits property)", "unusable
// (EngineeringUnits: a String, not an EUInformation)", "\"furlong\" (UNECE
// XYZ): no UCUM equivalent".
func (u Unit) UnitText() string {
	switch {
	case u.Err != nil:
		return "unusable (" + u.Err.Error() + ")"
	case u.Absent:
		if u.AbsentHow == "" {
			return "none"
		}
		return "none (" + u.AbsentHow + ")"
	case u.UCUM != "":
		return u.UCUM
	case u.UNECE == "":
		return fmt.Sprintf("%q (no UNECE code): no UCUM equivalent", u.Display)
	}
	return fmt.Sprintf("%q (UNECE %s): no UCUM equivalent", u.Display, u.UNECE)
}

// RangeText describes u's range for a log line: "0..320", "none",
// "unusable (EURange: ...)".
func (u Unit) RangeText() string {
	switch {
	case u.RangeErr != "":
		return "unusable (" + u.RangeErr + ")"
	case !u.HasRange:
		return "none"
	}
	return fmt.Sprintf("%g..%g", u.Min, u.Max)
}

// ErrNotReadable is wrapped by a Writer's ReadPoint error for a point that
// can be written but not read (an OPC UA point that only calls a method):
// the command path then has no old value and no read-back, and reports a
// successful write as written.
var ErrNotReadable = errors.New("driver: the point has no value to read")

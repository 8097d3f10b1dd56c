package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// ScanOptions say what Scan probes.
type ScanOptions struct {
	Units  []uint8 // unit ids to probe (default 1..247); 0 and 248..255 only on tcp
	Tables []Table // tables to map on every unit that answers (default holding and input registers)
	Start  uint16  // first address mapped
	Count  int     // addresses mapped per table (default 1000)
	// Progress, when set, is told about each step of a long scan.
	Progress func(msg string)
}

// ScanUnit is what one unit answered.
type ScanUnit struct {
	Unit   uint8
	Ranges []ScanRange // readable address ranges, in address order
}

// ScanRange is a run of readable addresses of one table.
type ScanRange struct {
	Table  Table
	Start  uint16
	Values []uint16 // registers, or 0/1 for bits
}

// Scan probes which unit ids answer at cfg's address and maps the readable
// register ranges of each. A unit is present when it returns data or a
// Modbus exception about its own registers; a timeout, a reply that is not
// its own (another unit's, a broken frame) and the gateway exceptions 10
// (gateway path unavailable) and 11 (gateway target failed to respond),
// which a TCP-to-RTU gateway sends for a unit that is not there, mean
// absent. Scan reads only; it never writes. It stops with an error when the
// connection cannot be opened (refused, unreachable, no such serial port),
// returning the units found so far. When no unit is present and something
// at the address did reply, but never with a Modbus reply (an HTTP server,
// a proxy, the wrong transport: malformed frames, bad checksums, foreign
// transaction ids), it returns ErrNotModbus with the last such reply's
// cause, so that a wrong address or transport is not reported as an empty
// bus.
func Scan(ctx context.Context, cfg Config, opts ScanOptions, log *slog.Logger) ([]ScanUnit, error) {
	cfg.SetDefaults()
	if len(opts.Units) == 0 {
		for u := 1; u <= 247; u++ {
			opts.Units = append(opts.Units, uint8(u))
		}
	}
	for _, u := range opts.Units {
		c := cfg
		c.UnitID = u
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	if len(opts.Tables) == 0 {
		opts.Tables = []Table{HoldingRegisters, InputRegisters}
	}
	if opts.Count <= 0 {
		opts.Count = 1000
	}
	if int(opts.Start)+opts.Count > 65536 {
		opts.Count = 65536 - int(opts.Start)
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	pool := NewPool(log, nil)
	defer func() { _ = pool.Close() }()

	var out []ScanUnit
	var foreign error // last reply that was no Modbus answer at all
	for i, unit := range opts.Units {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		progress(fmt.Sprintf("unit %d (%d/%d)", unit, i+1, len(opts.Units)))
		c := cfg
		c.UnitID = unit
		c.BackoffMin, c.BackoffMax = 1, 1 // a scan moves on; no pause between units
		dev := pool.device(fmt.Sprintf("scan-%d", unit), c)
		present, why, err := answers(ctx, dev, c)
		if err != nil {
			return out, err
		}
		if !present {
			if why != nil {
				foreign = why
			}
			continue
		}
		su := ScanUnit{Unit: unit}
		for _, t := range opts.Tables {
			progress(fmt.Sprintf("unit %d: mapping %s %d..%d", unit, t, opts.Start, int(opts.Start)+opts.Count-1))
			su.Ranges = append(su.Ranges, mapTable(ctx, dev, c, t, opts.Start, opts.Count)...)
		}
		out = append(out, su)
	}
	if len(out) == 0 && foreign != nil {
		return nil, fmt.Errorf("scan %s: %w: %w", cfg.Address, ErrNotModbus, foreign)
	}
	return out, nil
}

// ErrNotModbus is Scan's error when no unit is present and the replies
// that came were not Modbus (see Scan).
var ErrNotModbus = errors.New("no unit answered, and what replied does not speak Modbus " +
	"with this transport (check the address, port and -transport)")

// absent reports whether an answer says the unit is not there: a TCP-to-RTU
// gateway's exception 10 or 11.
func absent(err error) bool { return errors.Is(err, Status(10)) || errors.Is(err, Status(11)) }

// answers reports whether a unit replies at all (data or an exception of
// its own); when it does not, why is the cause if something replied that is
// no Modbus answer (malformed, bad checksum, wrong transaction id). It fails
// only when the connection cannot be opened.
func answers(ctx context.Context, dev *device, c Config) (present bool, why error, err error) {
	for _, t := range []Table{HoldingRegisters, InputRegisters, Coils} {
		typ := Uint16
		if t.IsBit() {
			typ = Bool
		}
		plan, err := NewPlan([]Point{{Table: t, Address: 0, Type: typ}}, c)
		if err != nil {
			return false, nil, err
		}
		out := make([]sample.Sample, 1)
		res := dev.read(ctx, newGroupState(plan, nil), out)
		switch {
		case absent(res.err):
			return false, nil, nil
		case res.replied:
			return true, nil, nil
		case errors.Is(res.err, StatusConnection):
			return false, nil, fmt.Errorf("scan %s: %w", c.Address, res.err)
		case errors.Is(res.err, StatusTimeout), errors.Is(res.err, StatusCanceled):
			return false, why, nil
		case errors.Is(res.err, StatusWrongUnit):
			// another unit's reply: a real bus, this unit is not on it
		default:
			why = res.err
		}
	}
	return false, why, nil
}

// mapTable reads a table in blocks; the planner's bisection isolates
// addresses that raise exceptions, so what reads good is what exists.
func mapTable(ctx context.Context, dev *device, c Config, t Table, start uint16, count int) []ScanRange {
	typ := Uint16
	if t.IsBit() {
		typ = Bool
	}
	block := c.MaxRegisters
	if t.IsBit() {
		block = min(c.MaxBits, 256)
	}
	var out []ScanRange
	var cur *ScanRange
	for base := int(start); base < int(start)+count && ctx.Err() == nil; base += block {
		n := min(block, int(start)+count-base)
		pts := make([]Point, n)
		for i := range pts {
			pts[i] = Point{Table: t, Address: uint16(base + i), Type: typ}
		}
		plan, err := NewPlan(pts, c)
		if err != nil {
			return out
		}
		vals := make([]sample.Sample, n)
		dev.read(ctx, newGroupState(plan, nil), vals)
		for i, v := range vals {
			if v.Quality != telemetry.QualityGood {
				cur = nil
				continue
			}
			if cur == nil {
				out = append(out, ScanRange{Table: t, Start: uint16(base + i)})
				cur = &out[len(out)-1]
			}
			cur.Values = append(cur.Values, uint16(v.Num))
		}
	}
	return out
}

// WriteScan prints scan results as a table: unit, table, address range, and
// the first values of each range.
func WriteScan(w io.Writer, units []ScanUnit) error {
	var b strings.Builder
	if len(units) == 0 {
		b.WriteString("no unit answered\n")
	}
	for _, u := range units {
		fmt.Fprintf(&b, "unit %d answers\n", u.Unit)
		if len(u.Ranges) == 0 {
			b.WriteString("  no readable registers in the scanned range\n")
		}
		for _, r := range u.Ranges {
			end := int(r.Start) + len(r.Values) - 1
			vals := r.Values
			more := ""
			if len(vals) > 8 {
				vals, more = vals[:8], " ..."
			}
			fmt.Fprintf(&b, "  %-8s %5d..%-5d (%d) values %v%s\n", r.Table, r.Start, end, len(r.Values), vals, more)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

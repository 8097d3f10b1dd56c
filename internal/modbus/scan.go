package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ScanOptions say what Scan probes.
type ScanOptions struct {
	Units  []uint8 // unit ids to probe (default 1..247; on tcp also 0 and 255)
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
// register ranges of each. A unit "answers" when it returns data or a Modbus
// exception; a timeout means nothing is there. Scan reads only; it never writes.
func Scan(ctx context.Context, cfg Config, opts ScanOptions, log *slog.Logger) ([]ScanUnit, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(opts.Units) == 0 {
		for u := 1; u <= 247; u++ {
			opts.Units = append(opts.Units, uint8(u))
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
	for i, unit := range opts.Units {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		progress(fmt.Sprintf("unit %d (%d/%d)", unit, i+1, len(opts.Units)))
		c := cfg
		c.UnitID = unit
		c.BackoffMin, c.BackoffMax = 1, 1 // a scan moves on; no reconnect pause between units
		dev := pool.Device(fmt.Sprintf("scan-%d", unit), c)
		if !answers(ctx, dev, c) {
			continue
		}
		su := ScanUnit{Unit: unit}
		for _, t := range opts.Tables {
			progress(fmt.Sprintf("unit %d: mapping %s %d..%d", unit, t, opts.Start, int(opts.Start)+opts.Count-1))
			su.Ranges = append(su.Ranges, mapTable(ctx, dev, c, t, opts.Start, opts.Count)...)
		}
		out = append(out, su)
	}
	return out, nil
}

// answers reports whether a unit replies at all (data or exception).
func answers(ctx context.Context, dev *Device, c Config) bool {
	for _, t := range []Table{HoldingRegisters, InputRegisters, Coils} {
		typ := Uint16
		if t.IsBit() {
			typ = Bool
		}
		plan, err := NewPlan([]Point{{Table: t, Address: 0, Type: typ}}, c)
		if err != nil {
			return false
		}
		v := make([]Value, 1)
		dev.Read(ctx, plan, v)
		var exc Exception
		switch {
		case v[0].Err == nil, errors.As(v[0].Err, &exc), errors.Is(v[0].Err, ErrQuarantined):
			return true
		case errors.Is(v[0].Err, ErrTimeout), errors.Is(v[0].Err, ErrConnection):
			return false
		}
	}
	return false
}

// mapTable reads a table in blocks; the planner's bisection isolates
// addresses that raise exceptions, so what reads good is what exists.
func mapTable(ctx context.Context, dev *Device, c Config, t Table, start uint16, count int) []ScanRange {
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
		vals := make([]Value, n)
		dev.Read(ctx, plan, vals)
		for i, v := range vals {
			if v.Err != nil {
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

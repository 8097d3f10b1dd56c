package modbus

import (
	"context"
	"fmt"

	"github.com/smelterio/smelter/internal/gateway/driver"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

var _ driver.Writer = (*Source)(nil)

// find returns the point with device-wide index idx.
func (s *Source) find(idx int) (Point, error) {
	for _, g := range s.groups {
		for j, i := range g.st.index {
			if i == idx {
				return g.st.plan.points[j], nil
			}
		}
	}
	return Point{}, fmt.Errorf("modbus: device %s has no point %d", s.dev.id, idx)
}

// WritePoint writes the device value v (what a read returns as
// sample.Sample.Num: before the point's scale, offset and unit conversion)
// to the point with device-wide index idx, in one write request through the
// link's one exchange (the same reply discipline as reads: unit, function
// and echo checked). Errors: ErrNotWritable and ErrValueRange before any
// I/O; an exception reply as its Status (errors.Is(err, Status(2)));
// *ReplyError for a reply that is not the answer (StatusBadEcho for a write
// reply that does not echo the request); link failures as their Status.
// All wrapped with the request: "write holding 100 unit 3: ...".
//
// It returns the device value a read gives back, Decode(Encode(v)): v
// rounded to the point's integer type, to float32, or 0/1.
func (s *Source) WritePoint(ctx context.Context, idx int, v float64) (float64, error) {
	p, err := s.find(idx)
	if err != nil {
		return 0, err
	}
	return s.dev.write(ctx, p, v)
}

// ReadPoint reads the point with device-wide index idx now, in one request
// of its own (a command's old value and read-back), and returns its sample
// (Num before scale; Bad with the Status on failure, with the error).
func (s *Source) ReadPoint(ctx context.Context, idx int) (sample.Sample, error) {
	p, err := s.find(idx)
	if err != nil {
		return sample.Sample{}, err
	}
	return s.dev.readPoint(ctx, p)
}

func (d *device) write(ctx context.Context, p Point, v float64) (float64, error) {
	data, err := Encode(p, v)
	if err != nil {
		return 0, fmt.Errorf("write %s %d unit %d: %w", p.Table, p.Address, d.cfg.UnitID, err)
	}
	pdu := writePDU(make([]byte, 0, 16), p, data, d.cfg.WriteMultiple)
	if _, err := d.link.exchange(ctx, d.share, d.m, d.cfg.UnitID, pdu, nil); err != nil {
		return 0, fmt.Errorf("write %s %d unit %d: %w", p.Table, p.Address, d.cfg.UnitID, err)
	}
	return Decode(p, data).Num, nil
}

func (d *device) readPoint(ctx context.Context, p Point) (sample.Sample, error) {
	pdu := readPDU(make([]byte, 0, 5), p.Table, p.Address, uint16(p.Registers()))
	reply, err := d.link.exchange(ctx, d.share, d.m, d.cfg.UnitID, pdu, nil)
	if err != nil {
		err = fmt.Errorf("read %s %d+%d unit %d: %w", p.Table, p.Address, p.Registers(), d.cfg.UnitID, err)
		return bad(StatusOf(err)), err
	}
	smp := Decode(p, reply[2:])
	if smp.Quality != telemetry.QualityGood {
		return smp, fmt.Errorf("read %s %d unit %d: %w", p.Table, p.Address, d.cfg.UnitID, Status(smp.Status))
	}
	return smp, nil
}

package gwconfig

import (
	"fmt"
	"os"
	"sort"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/modbus"
)

// ModbusPoint is one Modbus point as written: the common fields and the
// register it is read from.
type ModbusPoint struct {
	PointFile `yaml:",inline"`
	Table     string `yaml:"table"`
	Address   *int   `yaml:"address"`
	Type      string `yaml:"type,omitempty"`
	Order     string `yaml:"order,omitempty"`
	Bit       int    `yaml:"bit,omitempty"`
	Length    int    `yaml:"length,omitempty"`
}

// TemplateFile is a reusable Modbus register map.
type TemplateFile struct {
	Template string        `yaml:"template"`
	Class    string        `yaml:"class"`
	Points   []ModbusPoint `yaml:"points"`
}

// ModbusDevice is a compiled Modbus device: its connection and its points
// in groups polled together.
type ModbusDevice struct {
	Config modbus.Config
	Groups []ModbusGroup // one per distinct interval, fastest first
}

// ModbusGroup is the points of a device polled at one interval; one cycle
// (one batch) per poll.
type ModbusGroup struct {
	Interval time.Duration
	Points   []modbus.Point
	Index    []int // Index[j]: device-wide index of Points[j] (Device.Norm, sample.Sample.Index)
}

// Endpoint implements DriverConfig.
func (m *ModbusDevice) Endpoint() (string, string) {
	return "modbus/" + string(m.Config.Transport), m.Config.Address
}

// modbusDriver compiles Modbus devices.
type modbusDriver struct {
	links []modbusLink // every valid device's connection, for finish
}

type modbusLink struct {
	field, id string
	cfg       modbus.Config
}

func (m *modbusDriver) compile(dc *deviceCompiler, block *yaml.Node) DriverConfig {
	c, d, doc := dc.c, dc.d, dc.doc
	var cfg modbus.Config
	bfield := dc.field + ".modbus"
	if err := doc.DecodeNode(block, bfield, &cfg); err != nil {
		c.decodeErr(err)
		dc.ok = false
	}
	// SetDefaults fills zero fields; an explicit "max_gap: 0" (never
	// bridge gaps) must survive it.
	explicitNoGap := cfg.MaxGap == 0 && doc.Has(bfield+".max_gap")
	cfg.SetDefaults()
	if explicitNoGap {
		cfg.MaxGap = 0
	}
	if err := cfg.Validate(); err != nil {
		c.report(doc, bfield, err)
		dc.ok = false
	}

	// points: the template's first, then the device's own
	type src struct {
		doc   *confload.Doc
		field string
		p     *ModbusPoint
	}
	var pts []src
	if d.Template != "" {
		lt := c.template(d.Template)
		switch {
		case lt.err != nil:
			dc.bad("template", "%v", lt.err)
		default:
			if dc.cls != nil && lt.t.Class != "" && lt.t.Class != d.Class {
				dc.bad("template", "template %s is for class %s, device is %s", d.Template, lt.t.Class, d.Class)
			}
			for i := range lt.t.Points {
				pts = append(pts, src{lt.doc, fmt.Sprintf("points[%d]", i), &lt.t.Points[i]})
			}
		}
	}
	for i := range d.Points {
		field := fmt.Sprintf("%s.points[%d]", dc.field, i)
		var p ModbusPoint
		if err := doc.DecodeNode(&d.Points[i], field, &p); err != nil {
			c.decodeErr(err)
			dc.ok = false
		}
		pts = append(pts, src{doc, field, &p})
	}
	if len(pts) == 0 && d.Template == "" {
		dc.bad("points", "no points: give a template or points")
	}
	groups := map[time.Duration]*ModbusGroup{}
	var all []modbus.Point
	var where []loc
	for _, s := range pts {
		mp, ok := m.point(dc, s.doc, s.field, s.p)
		if !ok {
			dc.ok = false
			continue
		}
		iv := s.p.Interval
		if iv == 0 {
			iv = d.PollInterval
		}
		birth := iv
		if s.p.Deadband > 0 {
			birth = d.Heartbeat // report by exception: at least every heartbeat
		}
		idx, _, ok := dc.point(pointSpec{doc: s.doc, field: s.field, p: &s.p.PointFile, src: mp.Src(cfg.UnitID),
			text: mp.Type == modbus.String, interval: iv, birthInterval: birth})
		if !ok || idx < 0 {
			continue
		}
		g := groups[iv]
		if g == nil {
			g = &ModbusGroup{Interval: iv}
			groups[iv] = g
		}
		g.Points = append(g.Points, mp)
		g.Index = append(g.Index, idx)
		all = append(all, mp)
		where = append(where, loc{s.doc, s.field})
	}
	if !dc.ok || dc.cls == nil {
		return nil
	}
	warnOverlaps(c, all, where)
	out := &ModbusDevice{Config: cfg}
	for _, g := range groups {
		if _, err := modbus.NewPlan(g.Points, cfg); err != nil {
			c.report(doc, dc.field+".points", err)
			dc.ok = false
			return nil
		}
		out.Groups = append(out.Groups, *g)
	}
	sort.Slice(out.Groups, func(i, j int) bool { return out.Groups[i].Interval < out.Groups[j].Interval })
	m.links = append(m.links, modbusLink{field: dc.field, id: d.ID, cfg: cfg})
	return out
}

// point checks and compiles one point's register address.
func (m *modbusDriver) point(dc *deviceCompiler, doc *confload.Doc, field string, p *ModbusPoint) (modbus.Point, bool) {
	ok := true
	bad := func(sub, format string, args ...any) {
		dc.c.add(doc.Errorf(confload.Join(field, sub), format, args...))
		ok = false
	}
	var mp modbus.Point
	tbl, err := modbus.ParseTable(p.Table)
	if err != nil {
		bad("table", "%v", err)
	}
	var typ modbus.Type
	if p.Type != "" || !tbl.IsBit() {
		if typ, err = modbus.ParseType(p.Type); err != nil {
			bad("type", "%v", err)
		}
	} else {
		typ = modbus.Bool
	}
	ord, err := modbus.ParseOrder(p.Order)
	if err != nil {
		bad("order", "%v", err)
	}
	switch {
	case p.Address == nil:
		bad("address", "missing (0-based protocol address)")
	case *p.Address < 0 || *p.Address > 65535:
		bad("address", "%d out of range 0..65535", *p.Address)
	}
	if p.Bit < 0 || p.Bit > 15 {
		bad("bit", "%d out of range 0..15", p.Bit)
	}
	if p.Length < 0 || p.Length > 125 {
		bad("length", "%d out of range 0..125", p.Length)
	}
	if !ok {
		return mp, false
	}
	mp = modbus.Point{Table: tbl, Address: uint16(*p.Address), Type: typ, Order: ord, Bit: uint8(p.Bit), Length: uint16(p.Length)}
	if err := mp.Validate(); err != nil {
		dc.c.report(doc, field, err)
		return mp, false
	}
	return mp, true
}

// loc is where a point is written.
type loc struct {
	doc   *confload.Doc
	field string
}

// warnOverlaps warns about points of one device whose registers overlap
// (type bit points on different bits of one register do not): often a
// copied line whose address was not changed, sometimes deliberate (a
// register read both as a word and as bits).
func warnOverlaps(c *compiler, pts []modbus.Point, where []loc) {
	order := make([]int, len(pts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		pa, pb := pts[order[a]], pts[order[b]]
		if pa.Table != pb.Table {
			return pa.Table < pb.Table
		}
		return pa.Address < pb.Address
	})
	for k := 1; k < len(order); k++ {
		b := pts[order[k]]
		for j := k - 1; j >= 0; j-- {
			a := pts[order[j]]
			if a.Table != b.Table {
				break
			}
			if int(a.Address)+a.Registers() <= int(b.Address) {
				continue
			}
			if a.Type == modbus.Bit && b.Type == modbus.Bit && a.Address == b.Address && a.Bit != b.Bit {
				continue
			}
			wa, wb := where[order[j]], where[order[k]]
			other := wa.field
			if wa.doc != wb.doc {
				other = wa.doc.File + ":" + wa.field
			}
			c.warn(wb.doc.Errorf(wb.field+".address", "%s %d..%d overlaps %s (%s %d..%d)",
				b.Table, b.Address, int(b.Address)+b.Registers()-1, other, a.Table, a.Address, int(a.Address)+a.Registers()-1))
		}
	}
}

// finish rejects devices that share one connection (same transport and
// address: an RTU gateway or a serial bus) but disagree on its settings;
// the first device's settings would silently win otherwise.
func (m *modbusDriver) finish(c *compiler) {
	first := map[string]int{}
	for i, l := range m.links {
		key := string(l.cfg.Transport) + "|" + l.cfg.Address
		j, ok := first[key]
		if !ok {
			first[key] = i
			continue
		}
		o := m.links[j]
		switch {
		case l.cfg.Transport.Serial() && l.cfg.Serial != o.cfg.Serial:
			c.add(c.doc.Errorf(l.field+".modbus.serial",
				"%s shares serial line %s with %s but sets different line settings", l.id, l.cfg.Address, o.field))
		case l.cfg.Timeout != o.cfg.Timeout:
			c.add(c.doc.Errorf(l.field+".modbus.timeout",
				"%s shares connection %s with %s but sets timeout %v, not %v", l.id, l.cfg.Address, o.field, l.cfg.Timeout, o.cfg.Timeout))
		case l.cfg.UnitID == o.cfg.UnitID:
			c.add(c.doc.Errorf(l.field+".modbus.unit_id",
				"%s and %s both read unit %d at %s", l.id, o.field, l.cfg.UnitID, l.cfg.Address))
		}
	}
}

func (c *compiler) template(name string) *loadedTemplate {
	path := c.resolve(name)
	if lt, ok := c.templates[path]; ok {
		return lt
	}
	lt := &loadedTemplate{}
	c.templates[path] = lt
	data, err := os.ReadFile(path)
	if err != nil {
		lt.err = fmt.Errorf("cannot read template: %w", err)
		return lt
	}
	doc, err := confload.Decode(path, data, &lt.t)
	lt.doc = doc
	if doc != nil {
		c.docs[path] = doc
	}
	if err != nil {
		// report the template's own errors in full, and mark the device
		c.errs = append(c.errs, confload.AsErrors(err)...)
		lt.err = fmt.Errorf("template %s is invalid (see its errors)", name)
	}
	return lt
}

// Package regmap turns a gateway device template (register map, the format
// of docs/configuration.md) into a compiled encoder that writes canonical
// signal values into Modbus register and bit tables, the exact inverse of the
// gateway's decoding: device = canonical converted to the point's unit, raw =
// (device - offset) / scale, then the type's encoding and word order.
//
// The simulators use the templates in configs/templates as their register
// maps, so a template and the device it describes cannot drift apart.
package regmap

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/units"
)

// Table is a Modbus data table.
type Table uint8

// Tables.
const (
	Coil Table = iota
	Discrete
	Holding
	Input
)

var tableNames = [...]string{"coil", "discrete", "holding", "input"}

func (t Table) String() string { return tableNames[t] }

// Point is one template point as written in YAML.
type Point struct {
	Signal   string         `yaml:"signal"`
	Table    string         `yaml:"table"`
	Address  int            `yaml:"address"`
	Type     string         `yaml:"type"`
	Order    string         `yaml:"order"`
	Unit     string         `yaml:"unit"`
	Scale    *float64       `yaml:"scale"`
	Offset   float64        `yaml:"offset"`
	Bit      int            `yaml:"bit"`
	Length   int            `yaml:"length"`
	Interval string         `yaml:"interval"`
	Deadband float64        `yaml:"deadband"`
	Enum     map[int]string `yaml:"enum"`
	// Write: the gateway's write block (docs/commands.md); on the
	// simulator it makes the point's registers writable (Map.Decode).
	Write *gwconfig.WriteFile `yaml:"write"`
	Line  int                 `yaml:"-"`
}

// Template is a device template.
type Template struct {
	Name   string  `yaml:"template"`
	Class  string  `yaml:"class"`
	Points []Point `yaml:"points"`
}

// ParseTemplate decodes a template document strictly (unknown fields
// rejected); name is used in errors, which are confload errors
// ("file:line: field: reason").
func ParseTemplate(name string, data []byte) (*Template, error) {
	var t Template
	doc, err := confload.Decode(name, data, &t)
	if err != nil {
		return nil, err
	}
	return checkTemplate(doc, &t)
}

// LoadTemplate reads and parses a template file.
func LoadTemplate(path string) (*Template, error) {
	var t Template
	doc, err := confload.ReadFile(path, &t)
	if err != nil {
		return nil, err
	}
	return checkTemplate(doc, &t)
}

// checkTemplate records each point's line (for Compile's messages) and
// checks the fields every template needs.
func checkTemplate(doc *confload.Doc, t *Template) (*Template, error) {
	for i := range t.Points {
		t.Points[i].Line = doc.Line(fmt.Sprintf("points[%d]", i))
	}
	if t.Class == "" {
		return nil, doc.Errorf("class", "required")
	}
	if len(t.Points) == 0 {
		return nil, doc.Errorf("points", "at least one point required")
	}
	return t, nil
}

type kind uint8

const (
	kBool kind = iota
	kBit
	kInt16
	kUint16
	kInt32
	kUint32
	kInt64
	kUint64
	kFloat32
	kFloat64
)

var typeKinds = map[string]kind{
	"bool": kBool, "bit": kBit, "int16": kInt16, "uint16": kUint16, "int32": kInt32, "uint32": kUint32,
	"int64": kInt64, "uint64": kUint64, "float32": kFloat32, "float64": kFloat64,
}

// regs returns the number of registers a kind occupies.
func (k kind) regs() int {
	switch k {
	case kInt32, kUint32, kFloat32:
		return 2
	case kInt64, kUint64, kFloat64:
		return 4
	}
	return 1
}

// Compiled is one point ready to encode.
type Compiled struct {
	Signal  string
	Index   int // index into the model's signal slice
	Table   Table
	Address uint16
	Regs    int // registers (1 for bit/bool)
	Bit     int
	// Writable: the template gives the point a write block; a write of
	// exactly its registers reaches the model (Map.Decode).
	Writable bool
	kind     kind
	perm     []byte // output byte i = big-endian byte perm[i]
	conv     units.Conversion
	scale    float64
	offset   float64
	codes    []float64 // state index -> device code (nil = identity)
}

// Map is a compiled register map for one device.
type Map struct {
	Name   string
	Class  string
	Points []Compiled
	// Size of each table (highest address + width); reads beyond fail.
	Size [4]int
}

// Compile checks a template against the catalog and the signal order of a
// model, and compiles it. Errors name the point (line) and field.
func Compile(t *Template, file string, cat *catalog.Catalog, signals []string) (*Map, error) {
	m := &Map{Name: t.Name, Class: t.Class}
	if _, ok := cat.Class(t.Class); !ok {
		return nil, &confload.FieldError{File: file, Field: "class", Reason: fmt.Sprintf("unknown equipment class %q", t.Class)}
	}
	var errs confload.Errors
	type span struct {
		table     Table
		from, to  int
		bit, line int
		isBit     bool
	}
	var spans []span
	for i, p := range t.Points {
		fail := func(field, format string, a ...any) {
			errs = append(errs, &confload.FieldError{File: file, Line: p.Line,
				Field: fmt.Sprintf("points[%d].%s", i, field), Reason: fmt.Sprintf(format, a...)})
		}
		sig, err := cat.Lookup(t.Class, p.Signal)
		if err != nil {
			fail("signal", "%v", err)
			continue
		}
		idx := slices.Index(signals, p.Signal)
		if idx < 0 {
			fail("signal", "the %s model does not produce %q", t.Class, p.Signal)
			continue
		}
		c := Compiled{Signal: p.Signal, Index: idx, Bit: p.Bit, scale: 1, offset: p.Offset}
		if p.Scale != nil {
			c.scale = *p.Scale
		}
		if c.scale == 0 || math.IsNaN(c.scale) {
			fail("scale", "must be non-zero")
		}
		ti := slices.Index(tableNames[:], p.Table)
		if ti < 0 {
			fail("table", "%q is not one of coil, discrete, holding, input", p.Table)
			continue
		}
		c.Table = Table(ti)
		k, ok := typeKinds[p.Type]
		if !ok {
			fail("type", "%q not supported by the simulator (want one of bool bit int16 uint16 int32 uint32 int64 uint64 float32 float64)", p.Type)
			continue
		}
		c.kind = k
		c.Regs = k.regs()
		isBitTable := c.Table == Coil || c.Table == Discrete
		if isBitTable != (k == kBool) {
			fail("type", "%s does not fit table %s", p.Type, p.Table)
			continue
		}
		if k == kBit && (p.Bit < 0 || p.Bit > 15) {
			fail("bit", "%d outside 0..15", p.Bit)
		}
		if p.Address < 0 || p.Address+c.Regs > 65536 {
			fail("address", "%d outside 0..65535", p.Address)
			continue
		}
		c.Address = uint16(p.Address)
		if c.Regs >= 2 {
			order := p.Order
			if order == "" {
				order = "ABCD"
			}
			perm, err := permutation(order, c.Regs*2)
			if err != nil {
				fail("order", "%v", err)
			}
			c.perm = perm
		} else if p.Order != "" && p.Order != "ABCD" && p.Order != "AB" {
			fail("order", "%q: 16-bit and bit types take no word order", p.Order)
		}
		if p.Write != nil {
			if sig.IsState() || c.Regs < 1 || k == kBit || k == kBool {
				fail("write", "the simulator writes numeric register points only")
			}
			c.Writable = true
		}
		if sig.IsState() {
			if p.Unit != "" {
				fail("unit", "state signal %s takes no unit", p.Signal)
			}
			c.conv = units.Identity
			if len(p.Enum) > 0 {
				c.codes = make([]float64, len(sig.States))
				for j := range c.codes {
					c.codes[j] = math.NaN()
				}
				for code, label := range p.Enum {
					j := slices.Index(sig.States, label)
					if j < 0 {
						fail("enum", "%q is not a state of %s (%v)", label, p.Signal, sig.States)
						continue
					}
					c.codes[j] = float64(code)
				}
				for j, code := range c.codes {
					if math.IsNaN(code) {
						fail("enum", "state %q has no device code", sig.States[j])
					}
				}
			}
		} else {
			unit := p.Unit
			if unit == "" {
				unit = sig.Unit
			}
			conv, err := units.Convert(sig.Unit, unit)
			if err != nil {
				fail("unit", "%v (signal %s is in %s)", err, p.Signal, sig.Unit)
				continue
			}
			c.conv = conv
		}
		// overlap check
		sp := span{c.Table, int(c.Address), int(c.Address) + c.Regs, p.Bit, p.Line, k == kBit}
		for _, o := range spans {
			otherBitOfSameRegister := sp.isBit && o.isBit && sp.bit != o.bit
			if o.table == sp.table && sp.from < o.to && o.from < sp.to && !otherBitOfSameRegister {
				fail("address", "%s %d overlaps the point at line %d", p.Table, p.Address, o.line)
			}
		}
		spans = append(spans, sp)
		if end := int(c.Address) + c.Regs; end > m.Size[c.Table] {
			m.Size[c.Table] = end
		}
		m.Points = append(m.Points, c)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return m, nil
}

// permutation parses a byte order such as CDAB or GHEFCDAB for n bytes.
func permutation(order string, n int) ([]byte, error) {
	if n == 8 {
		switch order { // 32-bit spellings used for 64-bit values
		case "ABCD":
			order = "ABCDEFGH"
		case "DCBA":
			order = "HGFEDCBA"
		case "BADC":
			order = "BADCFEHG"
		case "CDAB":
			order = "GHEFCDAB"
		}
	}
	if len(order) != n {
		return nil, fmt.Errorf("%q is not a %d-byte order (e.g. %s)", order, n, "ABCDEFGH"[:n])
	}
	perm := make([]byte, n)
	seen := 0
	for i := range n {
		b := int(order[i]) - 'A'
		if b < 0 || b >= n || seen&(1<<b) != 0 {
			return nil, fmt.Errorf("%q is not a permutation of %s", order, "ABCDEFGH"[:n])
		}
		seen |= 1 << b
		perm[i] = byte(b)
	}
	return perm, nil
}

// Image is one consistent snapshot of a device's tables. Once published it
// is never modified.
type Image struct {
	Holding  []uint16
	Input    []uint16
	Coils    []bool
	Discrete []bool
}

// NewImage allocates an image sized for m.
func (m *Map) NewImage() *Image {
	return &Image{
		Coils:    make([]bool, m.Size[Coil]),
		Discrete: make([]bool, m.Size[Discrete]),
		Holding:  make([]uint16, m.Size[Holding]),
		Input:    make([]uint16, m.Size[Input]),
	}
}

// Encode writes canonical values (indexed like the model's signals) into img.
// Values outside a type's range saturate, as device firmware does.
func (m *Map) Encode(values []float64, img *Image) {
	clear(img.Holding)
	clear(img.Input)
	for i := range m.Points {
		p := &m.Points[i]
		v := values[p.Index]
		if p.codes != nil {
			j := int(v)
			if j >= 0 && j < len(p.codes) {
				v = p.codes[j]
			}
		}
		raw := (p.conv.Apply(v) - p.offset) / p.scale
		switch p.Table {
		case Coil:
			img.Coils[p.Address] = raw != 0
			continue
		case Discrete:
			img.Discrete[p.Address] = raw != 0
			continue
		}
		regs := img.Holding
		if p.Table == Input {
			regs = img.Input
		}
		p.put(regs[p.Address:int(p.Address)+p.Regs], raw)
	}
}

// Raw returns the raw register value that v encodes to for point p: the
// device-unit value divided by scale, before type conversion (for tests and
// docs).
func (p *Compiled) Raw(v float64) float64 { return (p.conv.Apply(v) - p.offset) / p.scale }

func sat(x, lo, hi float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return math.Max(lo, math.Min(hi, math.Round(x)))
}

func (p *Compiled) put(dst []uint16, raw float64) {
	var be [8]byte
	switch p.kind {
	case kBit:
		if raw != 0 {
			dst[0] |= 1 << p.Bit
		}
		return
	case kInt16:
		dst[0] = uint16(int16(sat(raw, math.MinInt16, math.MaxInt16)))
		return
	case kUint16:
		dst[0] = uint16(sat(raw, 0, math.MaxUint16))
		return
	case kInt32:
		binary.BigEndian.PutUint32(be[:], uint32(int32(sat(raw, math.MinInt32, math.MaxInt32))))
	case kUint32:
		binary.BigEndian.PutUint32(be[:], uint32(sat(raw, 0, math.MaxUint32)))
	case kFloat32:
		binary.BigEndian.PutUint32(be[:], math.Float32bits(float32(raw)))
	case kInt64:
		binary.BigEndian.PutUint64(be[:], uint64(int64(sat(raw, -(1<<63), (1<<63)-1024))))
	case kUint64:
		binary.BigEndian.PutUint64(be[:], uint64(sat(raw, 0, (1<<64)-2048)))
	case kFloat64:
		binary.BigEndian.PutUint64(be[:], math.Float64bits(raw))
	}
	n := len(p.perm)
	var out [8]byte
	for i := range n {
		out[i] = be[p.perm[i]]
	}
	for r := range n / 2 {
		dst[r] = uint16(out[2*r])<<8 | uint16(out[2*r+1])
	}
}

// Decode turns a write of vals (registers in wire order) at addr of table
// back into the value of a writable point, in the signal's canonical unit:
// the inverse of Encode. ok is false when no writable point spans exactly
// those registers.
func (m *Map) Decode(table Table, addr uint16, vals []uint16) (index int, v float64, ok bool) {
	for i := range m.Points {
		p := &m.Points[i]
		if !p.Writable || p.Table != table || p.Address != addr || p.Regs != len(vals) {
			continue
		}
		var raw float64
		switch p.kind {
		case kInt16:
			raw = float64(int16(vals[0]))
		case kUint16:
			raw = float64(vals[0])
		default:
			var out, be [8]byte
			for r, w := range vals {
				out[2*r], out[2*r+1] = byte(w>>8), byte(w)
			}
			for j := range len(p.perm) {
				be[p.perm[j]] = out[j]
			}
			switch p.kind {
			case kInt32:
				raw = float64(int32(binary.BigEndian.Uint32(be[:])))
			case kUint32:
				raw = float64(binary.BigEndian.Uint32(be[:]))
			case kFloat32:
				raw = float64(math.Float32frombits(binary.BigEndian.Uint32(be[:])))
			case kInt64:
				raw = float64(int64(binary.BigEndian.Uint64(be[:])))
			case kUint64:
				raw = float64(binary.BigEndian.Uint64(be[:]))
			case kFloat64:
				raw = math.Float64frombits(binary.BigEndian.Uint64(be[:]))
			default:
				return 0, 0, false
			}
		}
		dev := raw*p.scale + p.offset
		return p.Index, (dev - p.conv.Offset) / p.conv.Scale, true
	}
	return 0, 0, false
}

// Registers returns the addresses a point occupies, for faults that target a
// signal ("exception on flue_o2").
func (m *Map) Registers(signal string) (Table, uint16, int, bool) {
	for _, p := range m.Points {
		if p.Signal == signal {
			return p.Table, p.Address, p.Regs, true
		}
	}
	return 0, 0, 0, false
}

// ParseTable parses a table name.
func ParseTable(s string) (Table, error) {
	i := slices.Index(tableNames[:], strings.ToLower(s))
	if i < 0 {
		return 0, fmt.Errorf("%q is not one of coil, discrete, holding, input", s)
	}
	return Table(i), nil
}

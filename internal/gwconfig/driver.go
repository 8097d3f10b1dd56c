package gwconfig

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
)

// Driver is the configuration part of a protocol driver: it decodes the
// protocol's block of a device entry and the device's points. Each driver
// package implements it (modbus.Driver, opcua.Driver); gwconfig knows no
// driver, it compiles with the list it is given (Load's drivers).
type Driver interface {
	// Name is the key of the driver's block in a device entry ("modbus",
	// "opcua"): 1-64 lowercase letters, digits or '_'.
	Name() string
	// Compile decodes the device's block (Block.Decode) and points
	// (Block.DecodePoint, or a template with Template), hands the common
	// part of every point to Block.Point, and returns the driver's compiled
	// settings: nil when the device is invalid, every problem recorded on
	// b with its field path.
	Compile(b *Block) DriverConfig
	// Check runs checks across every valid device of the protocol, in file
	// order (two devices sharing one connection that disagree on its
	// settings), after every device was compiled.
	Check(c *Checks, devs []*Device)
}

// DriverConfig is a driver's compiled settings of one device, the
// driver's own type (modbus.DeviceConfig, opcua.DeviceConfig); only its
// driver reads it.
type DriverConfig interface {
	// Endpoint is what the status page shows: the transport
	// ("modbus/tcp", "opcua/None") and the address.
	Endpoint() (transport, address string)
}

// Block is one device entry while its driver compiles it: the device's
// common settings (already checked), its protocol block and points as
// written, and where to report problems. Errors recorded through it name
// file:line: field: reason and mark the device invalid.
type Block struct {
	c     *compiler
	doc   *confload.Doc
	field string // "devices[3]"
	name  string // the driver's name: the block's key
	node  *yaml.Node
	d     *DeviceFile
	cls   *catalog.Class // nil when the class is unknown: points are checked for syntax only
	dev   *Device
	ok    bool
	names map[string]string // signal -> where it is read
}

// Device is the device entry as written, with the defaults of its common
// settings applied (poll_interval, heartbeat). Drivers read it and must
// not change it.
func (b *Block) Device() *DeviceFile { return b.d }

// Doc is the main configuration file.
func (b *Block) Doc() *confload.Doc { return b.doc }

// Field is the device's field path in Doc: "devices[3]".
func (b *Block) Field() string { return b.field }

// BlockField is the protocol block's field path: "devices[3].modbus".
func (b *Block) BlockField() string { return b.field + "." + b.name }

// Checked reports whether the device's class is known, so points are
// checked against the catalog; with an unknown class (already reported)
// only their syntax is.
func (b *Block) Checked() bool { return b.cls != nil }

// OK reports whether no problem was recorded on the device so far.
func (b *Block) OK() bool { return b.ok }

// Decode decodes the protocol block into v (the driver's settings
// struct): every unknown key and misfit value is recorded. It reports
// whether the block decoded cleanly; v holds what did decode either way.
func (b *Block) Decode(v any) bool {
	return b.decode(b.node, b.BlockField(), v)
}

// Has reports whether the protocol block writes the key at sub (a path
// below the block: "max_gap"), to tell an explicit zero from an absent key.
func (b *Block) Has(sub string) bool { return b.doc.Has(confload.Join(b.BlockField(), sub)) }

// Points is how many points the device entry lists under points.
func (b *Block) Points() int { return len(b.d.Points) }

// PointField is the field path of the device's point i: "devices[3].points[i]".
func (b *Block) PointField(i int) string { return fmt.Sprintf("%s.points[%d]", b.field, i) }

// DecodePoint decodes the device's point i into v (the driver's point
// struct, which inlines PointFile). It reports whether it decoded cleanly.
func (b *Block) DecodePoint(i int, v any) bool {
	return b.decode(&b.d.Points[i], b.PointField(i), v)
}

func (b *Block) decode(n *yaml.Node, field string, v any) bool {
	if err := b.doc.DecodeNode(n, field, v); err != nil {
		b.c.decodeErr(err)
		b.ok = false
		return false
	}
	return true
}

// Bad records a problem with the device's field sub ("template",
// "points", "modbus.unit_id").
func (b *Block) Bad(sub, format string, args ...any) {
	b.c.add(b.doc.Errorf(confload.Join(b.field, sub), format, args...))
	b.ok = false
}

// Errorf records a problem at field of doc (the main file or a template).
func (b *Block) Errorf(doc *confload.Doc, field, format string, args ...any) {
	b.c.add(doc.Errorf(field, format, args...))
	b.ok = false
}

// Report records the error of a Validate method (a confload.Problem names
// the field below base) at base in doc.
func (b *Block) Report(doc *confload.Doc, base string, err error) {
	b.c.report(doc, base, err)
	b.ok = false
}

// Warn records a warning at field of doc: a problem that does not stop
// the gateway (Config.Warnings).
func (b *Block) Warn(doc *confload.Doc, field, format string, args ...any) {
	b.c.warn(doc.Errorf(field, format, args...))
}

// Resolve returns a path of the configuration relative to the main
// file's directory ("" and absolute paths unchanged).
func (b *Block) Resolve(p string) string { return b.c.resolve(p) }

// DataDir is gateway.data_dir, resolved: drivers keep their state below it.
func (b *Block) DataDir() string { return b.c.resolve(b.c.dataDir) }

// Template loads the template file name (relative to the main file) into
// a T, once per file and load: every device naming it gets the same
// decoded value (read it, do not change it) and its Doc, to report
// problems in the template at their own file and line. A template that
// cannot be read or decoded returns an error to report on the device's
// template field; its decoding errors are recorded once, in full.
func Template[T any](b *Block, name string) (*T, *confload.Doc, error) {
	c := b.c
	path := c.resolve(name)
	lt, ok := c.templates[path]
	if !ok {
		lt = loadTemplate[T](c, path, name)
		c.templates[path] = lt
	}
	if lt.err != nil {
		return nil, lt.doc, lt.err
	}
	v, ok := lt.v.(*T)
	if !ok {
		return nil, lt.doc, fmt.Errorf("template %s is read by another protocol's devices", name)
	}
	return v, lt.doc, nil
}

func loadTemplate[T any](c *compiler, path, name string) *loadedTemplate {
	lt := &loadedTemplate{}
	data, err := confload.Read(path)
	if err != nil {
		lt.err = fmt.Errorf("cannot read template: %s", confload.AsErrors(err)[0].Reason)
		return lt
	}
	v := new(T)
	lt.v = v
	doc, err := confload.Decode(path, data, v)
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

// loadedTemplate is a template file, loaded once.
type loadedTemplate struct {
	v   any // *T of the Template call that loaded it
	doc *confload.Doc
	err error
}

// Checks records problems found across devices (Driver.Check).
type Checks struct{ c *compiler }

// Errorf records a problem at field of the main file.
func (k *Checks) Errorf(field, format string, args ...any) {
	k.c.add(k.c.doc.Errorf(field, format, args...))
}

// Warnf records a warning at field of the main file: a problem that does
// not stop the gateway (Config.Warnings).
func (k *Checks) Warnf(field, format string, args ...any) {
	k.c.warn(k.c.doc.Errorf(field, format, args...))
}

// PointSpec is what a driver knows about one point when it hands it to
// the common compilation (Block.Point).
type PointSpec struct {
	Doc   *confload.Doc // the file the point is written in (main file or template)
	Field string        // path of the point in Doc
	Point *PointFile    // its common fields
	Src   string        // telemetry.Reading.Src: "modbus:1:hr:0", "opcua:ns=2;s=x"
	// Text: the driver reads text (Modbus string): no unit, no scale.
	Text bool
	// UnitFromDevice: when the configuration gives no unit, the device
	// reports it at run time (OPC UA EngineeringUnits).
	UnitFromDevice bool
	// Methods: the driver calls methods (OPC UA); write.method is an error
	// on any other point.
	Methods       bool
	Interval      time.Duration // nominal period (staleness)
	BirthInterval time.Duration // what the birth announces as the signal's interval
}

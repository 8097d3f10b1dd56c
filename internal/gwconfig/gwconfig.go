// Package gwconfig loads and validates smelter-gateway's configuration file
// and the device templates it names, and compiles them into the typed
// settings the gateway runs with. Every problem is reported with file, line,
// field and reason before anything starts (see docs/configuration.md).
package gwconfig

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
	"github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
)

// File is the YAML document.
type File struct {
	Gateway struct {
		ID         string `yaml:"id"`
		Enterprise string `yaml:"enterprise"`
		Site       string `yaml:"site"`
		DataDir    string `yaml:"data_dir"`
	} `yaml:"gateway"`
	HTTP struct {
		Listen string `yaml:"listen"`
		// ReadyMaxLag: /readyz reports degraded while an uplink's oldest
		// unsent batch is older than this (default 30s).
		ReadyMaxLag time.Duration `yaml:"ready_max_lag"`
	} `yaml:"http"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	Spool   spool.Config `yaml:"spool"`
	Uplinks struct {
		NATS *natsjs.Config `yaml:"nats"`
		MQTT *mqtt.Config   `yaml:"mqtt"`
	} `yaml:"uplinks"`
	Devices []DeviceFile `yaml:"devices"`
}

// DeviceFile is one device entry.
type DeviceFile struct {
	ID           string             `yaml:"id"`
	Class        string             `yaml:"class"`
	Area         string             `yaml:"area"`
	Line         string             `yaml:"line"`
	Cell         string             `yaml:"cell"`
	Nameplate    map[string]float64 `yaml:"nameplate"`
	PollInterval time.Duration      `yaml:"poll_interval"`
	Heartbeat    time.Duration      `yaml:"heartbeat"`
	Template     string             `yaml:"template"`
	Disabled     bool               `yaml:"disabled"`
	Modbus       *modbus.Config     `yaml:"modbus"`
	OPCUA        *opcua.Config      `yaml:"opcua"`
	Points       []PointFile        `yaml:"points"`
}

// PointFile is one point of a device or template.
type PointFile struct {
	Signal   string           `yaml:"signal"`
	Table    string           `yaml:"table"`
	Address  *int             `yaml:"address"`
	Type     string           `yaml:"type"`
	Order    string           `yaml:"order"`
	Unit     string           `yaml:"unit"`
	Scale    *float64         `yaml:"scale"`
	Offset   float64          `yaml:"offset"`
	Bit      int              `yaml:"bit"`
	Length   int              `yaml:"length"`
	Interval time.Duration    `yaml:"interval"`
	Deadband float64          `yaml:"deadband"`
	Enum     map[int64]string `yaml:"enum"`
	Min      *float64         `yaml:"min"`
	Max      *float64         `yaml:"max"`

	// OPC UA points
	NodeID           string        `yaml:"node_id"`
	Mode             string        `yaml:"mode"`              // subscribe (default) | poll
	SamplingInterval time.Duration `yaml:"sampling_interval"` // subscribe: server sampling interval
	QueueSize        uint32        `yaml:"queue_size"`
	DeadbandType     string        `yaml:"deadband_type"` // absolute | percent: the server applies "deadband" (device units / % of EURange)
}

// TemplateFile is a reusable register map.
type TemplateFile struct {
	Template string      `yaml:"template"`
	Class    string      `yaml:"class"`
	Points   []PointFile `yaml:"points"`
}

// Config is a loaded, validated, compiled configuration.
type Config struct {
	File    string // path of the main file
	Raw     File
	ID      string
	Site    string
	DataDir string
	Devices []*Device
}

// uaDevice compiles an OPC UA device.
func (c *compiler) uaDevice(field string, d *DeviceFile, f *File, cls *catalog.Class, known, ok bool) *Device {
	doc := c.doc
	u := d.OPCUA
	if u.DataDir == "" {
		u.DataDir = filepath.Join(c.resolve(f.Gateway.DataDir), "opcua")
	}
	for _, p := range []*string{&u.Auth.PasswordFile, &u.Auth.CertFile, &u.Auth.KeyFile, &u.Certificate.CertFile,
		&u.Certificate.KeyFile, &u.DataDir, &u.TrustDir} {
		*p = c.resolve(*p)
	}
	u.SetDefaults()
	if err := u.Validate(); err != nil {
		c.addErr(doc, field+".opcua", err)
		ok = false
	}
	if d.Template != "" {
		c.add(doc.Errorf(field+".template", "templates are Modbus register maps; list OPC UA points under points"))
		ok = false
	}
	if len(d.Points) == 0 {
		c.add(doc.Errorf(field+".points", "no points"))
		ok = false
	}
	dev := &Device{ID: d.ID, Protocol: ProtocolOPCUA, Nameplate: d.Nameplate, OPCUA: *u, Interval: d.PollInterval, Heartbeat: d.Heartbeat,
		Asset: telemetry.Asset{ID: d.ID, Class: d.Class, Path: []string{f.Gateway.Enterprise, f.Gateway.Site,
			orUnderscore(d.Area), orUnderscore(d.Line), orUnderscore(d.Cell)}}}
	signals := map[string]int{}
	for i := range d.Points {
		pf := &d.Points[i]
		pfield := fmt.Sprintf("%s.points[%d]", field, i)
		good := true
		bad := func(sub, format string, args ...any) {
			c.add(doc.Errorf(pfield+"."+sub, format, args...))
			good = false
		}
		if pf.Table != "" || pf.Address != nil || pf.Type != "" || pf.Order != "" || pf.Bit != 0 || pf.Length != 0 {
			bad("table", "table, address, type, order, bit and length are Modbus settings; an OPC UA point has node_id")
		}
		if pf.Signal == "" {
			bad("signal", "missing")
		}
		if j, dup := signals[pf.Signal]; dup && pf.Signal != "" {
			bad("signal", "%s already read by points[%d]", pf.Signal, j)
		}
		signals[pf.Signal] = i
		up := opcua.Point{NodeID: pf.NodeID, Mode: pf.Mode, SamplingInterval: pf.SamplingInterval, PollInterval: pf.Interval,
			QueueSize: pf.QueueSize, DeadbandType: pf.DeadbandType}
		if pf.DeadbandType != "" && pf.DeadbandType != "none" {
			up.Deadband = pf.Deadband
		}
		up.SetDefaults(u)
		if err := up.Validate(); err != nil {
			c.addErr(doc, pfield, err)
			good = false
		}
		if pf.Scale != nil && (*pf.Scale == 0 || math.IsNaN(*pf.Scale) || math.IsInf(*pf.Scale, 0)) {
			bad("scale", "%v must be a finite non-zero number", *pf.Scale)
		}
		if !good || !known {
			ok = false
			continue
		}
		sig, err := c.cat.Lookup(cls.Name, pf.Signal)
		if err != nil {
			bad("signal", "%v", err)
			ok = false
			continue
		}
		np := normalize.Point{Signal: pf.Signal, Offset: pf.Offset, Enum: pf.Enum, Src: "opcua:" + pf.NodeID,
			Min: sig.Min, Max: sig.Max, States: sig.States, Conv: units.Identity}
		if up.Deadband == 0 {
			np.Deadband = pf.Deadband // gateway-side report by exception
		}
		if pf.Scale != nil {
			np.Scale = *pf.Scale
		}
		if pf.Min != nil {
			np.Min = pf.Min
		}
		if pf.Max != nil {
			np.Max = pf.Max
		}
		unitSet := pf.Unit != ""
		switch {
		case sig.IsState():
			if unitSet {
				bad("unit", "%s is a state signal (%v); it takes no unit", pf.Signal, sig.States)
			}
			unitSet = true
		case cls.Open && sig.Unit == "":
			canon, okU := units.Canonical(pf.Unit)
			if !okU {
				bad("unit", "unknown unit %q", pf.Unit)
			}
			np.Unit = canon
			unitSet = true
		default:
			np.Unit = sig.Unit
			if unitSet {
				conv, err := units.Convert(pf.Unit, sig.Unit)
				if err != nil {
					bad("unit", "%v (signal %s is in %s)", err, pf.Signal, sig.Unit)
				}
				np.Conv = conv
			}
		}
		if !good {
			ok = false
			continue
		}
		iv := pf.SamplingInterval
		if up.Mode == opcua.ModePoll {
			iv = up.PollInterval
		}
		info := telemetry.SignalInfo{Signal: np.Signal, Unit: np.Unit, Min: np.Min, Max: np.Max, Src: np.Src,
			IntervalMS: max(iv, u.PublishInterval).Milliseconds()}
		if np.Deadband > 0 || up.Deadband > 0 || up.Mode == opcua.ModeSubscribe {
			// report by exception: a subscribed node notifies changes only;
			// the gateway re-reports an unchanged value every heartbeat
			info.IntervalMS = d.Heartbeat.Milliseconds()
		}
		if len(np.States) > 0 {
			info.Enum = np.States
		}
		dev.UAPoints = append(dev.UAPoints, up)
		dev.UANorm = append(dev.UANorm, np)
		dev.UAUnitSet = append(dev.UAUnitSet, unitSet)
		dev.Signals = append(dev.Signals, info)
	}
	if !ok || !known {
		return nil
	}
	return dev
}

// Protocols.
const (
	ProtocolModbus = "modbus"
	ProtocolOPCUA  = "opcua"
)

// Device is one compiled device: its asset, connection and point groups.
type Device struct {
	ID        string
	Protocol  string // ProtocolModbus or ProtocolOPCUA
	Asset     telemetry.Asset
	Nameplate map[string]float64
	Modbus    modbus.Config
	OPCUA     opcua.Config
	UAPoints  []opcua.Point     // OPC UA: every point, one subscription or poll set
	UANorm    []normalize.Point // OPC UA: normalization, same order as UAPoints
	UAUnitSet []bool            // OPC UA: the config gave the device unit (else EngineeringUnits decide)
	Interval  time.Duration
	Heartbeat time.Duration
	Groups    []*Group // one per distinct poll interval, fastest first
	Signals   []telemetry.SignalInfo
}

// Group is the points of a device polled at one interval; one batch per cycle.
type Group struct {
	Interval  time.Duration
	Points    []modbus.Point
	Norm      []normalize.Point
	Heartbeat time.Duration
}

// Defaults.
const (
	DefaultPollInterval = time.Second
	DefaultHeartbeat    = 10 * time.Minute
	DefaultHTTPListen   = "127.0.0.1:9100"
	DefaultReadyMaxLag  = 30 * time.Second
	MinPollInterval     = 10 * time.Millisecond
)

// Load reads, validates and compiles a configuration file and its templates.
// The returned error, if any, is a confload.Errors listing every problem.
func Load(path string) (*Config, error) {
	var f File
	f.Spool.SetDefaults()
	doc, err := confload.ReadFile(path, &f)
	if err != nil {
		return nil, err
	}
	return compile(path, doc, &f)
}

// LoadBytes is Load for a document already in memory; templates are
// resolved relative to dir.
func LoadBytes(name string, data []byte) (*Config, error) {
	var f File
	f.Spool.SetDefaults()
	doc, err := confload.Decode(name, data, &f)
	if err != nil {
		return nil, err
	}
	return compile(name, doc, &f)
}

type compiler struct {
	errs      confload.Errors
	doc       *confload.Doc
	dir       string
	cat       *catalog.Catalog
	templates map[string]*loadedTemplate
}

type loadedTemplate struct {
	t   TemplateFile
	doc *confload.Doc
	err error
}

func (c *compiler) add(e *confload.FieldError) { c.errs = append(c.errs, e) }

// addErr records err against field. Errors of the form "sub.field: reason"
// (every package's Validate names its field that way) are pointed at that
// sub-field, so the line number is the line of the exact key.
func (c *compiler) addErr(doc *confload.Doc, field string, err error) {
	msg := err.Error()
	if head, reason, ok := strings.Cut(msg, ": "); ok && fieldRe.MatchString(head) {
		if !strings.HasPrefix(head, field+".") && head != field {
			head = field + "." + head
		}
		c.add(doc.Errorf(head, "%s", reason))
		return
	}
	c.add(doc.Errorf(field, "%s", msg))
}

var fieldRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\[[0-9]+\])?(\.[a-z_][a-z0-9_]*(\[[0-9]+\])?)*$`)

func compile(path string, doc *confload.Doc, f *File) (*Config, error) {
	c := &compiler{doc: doc, dir: filepath.Dir(path), cat: catalog.Default(), templates: map[string]*loadedTemplate{}}
	out := &Config{File: path, Raw: *f, ID: f.Gateway.ID, Site: f.Gateway.Site}

	// gateway
	if !telemetry.ValidToken(f.Gateway.ID) {
		c.add(doc.Errorf("gateway.id", "%q must be 1-64 letters, digits, '_' or '-'", f.Gateway.ID))
	}
	if f.Gateway.Enterprise == "" {
		f.Gateway.Enterprise = "_"
	}
	if !telemetry.ValidToken(f.Gateway.Enterprise) {
		c.add(doc.Errorf("gateway.enterprise", "%q must be 1-64 letters, digits, '_' or '-'", f.Gateway.Enterprise))
	}
	if !telemetry.ValidToken(f.Gateway.Site) {
		c.add(doc.Errorf("gateway.site", "%q must be 1-64 letters, digits, '_' or '-'", f.Gateway.Site))
	}
	if f.Gateway.DataDir == "" {
		f.Gateway.DataDir = "data"
	}
	out.DataDir = c.resolve(f.Gateway.DataDir)
	if f.Spool.Dir == "" {
		f.Spool.Dir = filepath.Join(out.DataDir, "spool")
	} else {
		f.Spool.Dir = c.resolve(f.Spool.Dir)
	}
	if err := f.Spool.Validate(); err != nil {
		c.addErr(doc, "spool", err)
	}
	if f.HTTP.ReadyMaxLag == 0 {
		f.HTTP.ReadyMaxLag = DefaultReadyMaxLag
	}
	if f.HTTP.ReadyMaxLag < 0 {
		c.add(doc.Errorf("http.ready_max_lag", "%v is negative", f.HTTP.ReadyMaxLag))
	}
	switch f.HTTP.Listen {
	case "":
		f.HTTP.Listen = DefaultHTTPListen
	case "off":
		f.HTTP.Listen = ""
	}
	switch f.Log.Level {
	case "":
		f.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		c.add(doc.Errorf("log.level", "%q is not debug, info, warn or error", f.Log.Level))
	}
	switch f.Log.Format {
	case "":
		f.Log.Format = "auto"
	case "auto", "text", "json":
	default:
		c.add(doc.Errorf("log.format", "%q is not auto, text or json", f.Log.Format))
	}

	// uplinks
	if f.Uplinks.NATS == nil && f.Uplinks.MQTT == nil {
		c.add(doc.Errorf("uplinks", "no uplink configured: set uplinks.nats and/or uplinks.mqtt"))
	}
	if u := f.Uplinks.NATS; u != nil {
		u.SetDefaults(f.Gateway.ID)
		u.ResolvePaths(c.dir)
		if err := u.Validate(); err != nil {
			c.addErr(doc, "uplinks.nats", err)
		}
	}
	if u := f.Uplinks.MQTT; u != nil {
		u.SetDefaults(f.Gateway.ID, f.Gateway.Site)
		u.ResolvePaths(c.dir)
		if err := u.Validate(); err != nil {
			c.addErr(doc, "uplinks.mqtt", err)
		}
	}

	// devices
	if len(f.Devices) == 0 {
		c.add(doc.Errorf("devices", "no devices configured"))
	}
	seen := map[string]int{}
	for i := range f.Devices {
		field := fmt.Sprintf("devices[%d]", i)
		d := &f.Devices[i]
		if j, dup := seen[d.ID]; dup {
			c.add(doc.Errorf(field+".id", "%q already used by devices[%d]", d.ID, j))
		}
		seen[d.ID] = i
		if d.Disabled {
			continue
		}
		if dev := c.device(field, d, f); dev != nil {
			out.Devices = append(out.Devices, dev)
		}
	}
	c.checkSharedLinks(f)
	out.Raw = *f
	if len(c.errs) > 0 {
		return out, c.errs.Sorted()
	}
	return out, nil
}

func (c *compiler) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *compiler) device(field string, d *DeviceFile, f *File) *Device {
	doc := c.doc
	ok := true
	bad := func(sub, format string, args ...any) {
		c.add(doc.Errorf(field+"."+sub, format, args...))
		ok = false
	}
	if !telemetry.ValidToken(d.ID) {
		bad("id", "%q must be 1-64 letters, digits, '_' or '-'", d.ID)
	}
	cls, known := c.cat.Class(d.Class)
	if !known {
		bad("class", "unknown equipment class %q (known: %v)", d.Class, c.cat.ClassNames())
	}
	for _, lv := range []struct{ name, v string }{{"area", d.Area}, {"line", d.Line}, {"cell", d.Cell}} {
		if lv.v != "" && !telemetry.ValidToken(lv.v) {
			bad(lv.name, "%q must be 1-64 letters, digits, '_' or '-'", lv.v)
		}
	}
	if d.PollInterval == 0 {
		d.PollInterval = DefaultPollInterval
	}
	if d.PollInterval < MinPollInterval {
		bad("poll_interval", "%v below the minimum %v", d.PollInterval, MinPollInterval)
	}
	switch {
	case d.Heartbeat == 0:
		d.Heartbeat = DefaultHeartbeat
	case d.Heartbeat < 0:
		bad("heartbeat", "%v is negative", d.Heartbeat)
	}
	if known {
		for k := range d.Nameplate {
			if !slices.Contains(cls.Nameplate, k) && !cls.Open {
				bad("nameplate."+k, "unknown nameplate rating for class %s (known: %v)", d.Class, cls.Nameplate)
			}
		}
	}
	switch {
	case d.Modbus == nil && d.OPCUA == nil:
		bad("modbus", "missing: every device needs a protocol block (modbus or opcua)")
		return nil
	case d.Modbus != nil && d.OPCUA != nil:
		bad("opcua", "a device has one protocol block: modbus or opcua, not both")
		return nil
	case d.OPCUA != nil:
		return c.uaDevice(field, d, f, cls, known, ok)
	}
	// SetDefaults fills zero fields; an explicit "max_gap: 0" (never bridge
	// gaps) must survive it.
	explicitNoGap := d.Modbus.MaxGap == 0 && doc.Has(field+".modbus.max_gap")
	d.Modbus.SetDefaults()
	if explicitNoGap {
		d.Modbus.MaxGap = 0
	}
	if err := d.Modbus.Validate(); err != nil {
		c.addErr(doc, field+".modbus", err)
		ok = false
	}

	// points: template first, then the device's own
	type src struct {
		doc   *confload.Doc
		field string
		p     *PointFile
	}
	var pts []src
	if d.Template != "" {
		lt := c.template(d.Template)
		switch {
		case lt.err != nil:
			bad("template", "%v", lt.err)
		default:
			if known && lt.t.Class != "" && lt.t.Class != d.Class {
				bad("template", "template %s is for class %s, device is %s", d.Template, lt.t.Class, d.Class)
			}
			for i := range lt.t.Points {
				pts = append(pts, src{lt.doc, fmt.Sprintf("points[%d]", i), &lt.t.Points[i]})
			}
		}
	}
	for i := range d.Points {
		pts = append(pts, src{doc, fmt.Sprintf("%s.points[%d]", field, i), &d.Points[i]})
	}
	if len(pts) == 0 && d.Template == "" {
		bad("points", "no points: give a template or points")
	}
	if !known || !ok {
		// still check points for syntax so every error shows at once
		for _, s := range pts {
			_, _, _ = c.point(s.doc, s.field, s.p, d, nil)
		}
		return nil
	}

	dev := &Device{
		ID: d.ID,
		Asset: telemetry.Asset{ID: d.ID, Class: d.Class, Path: []string{f.Gateway.Enterprise, f.Gateway.Site,
			orUnderscore(d.Area), orUnderscore(d.Line), orUnderscore(d.Cell)}},
		Protocol:  ProtocolModbus,
		Nameplate: d.Nameplate,
		Modbus:    *d.Modbus,
		Interval:  d.PollInterval,
		Heartbeat: d.Heartbeat,
	}
	groups := map[time.Duration]*Group{}
	signals := map[string]string{}
	for _, s := range pts {
		mp, np, good := c.point(s.doc, s.field, s.p, d, cls)
		if !good {
			ok = false
			continue
		}
		if prev, dup := signals[np.Signal]; dup {
			c.add(s.doc.Errorf(s.field+".signal", "%s already read by %s", np.Signal, prev))
			ok = false
			continue
		}
		signals[np.Signal] = s.doc.File + ":" + s.field
		iv := s.p.Interval
		if iv == 0 {
			iv = d.PollInterval
		}
		g := groups[iv]
		if g == nil {
			g = &Group{Interval: iv, Heartbeat: d.Heartbeat}
			groups[iv] = g
		}
		g.Points = append(g.Points, mp)
		g.Norm = append(g.Norm, np)
		info := telemetry.SignalInfo{Signal: np.Signal, Unit: np.Unit, Min: np.Min, Max: np.Max,
			IntervalMS: iv.Milliseconds(), Src: np.Src}
		if np.Deadband > 0 {
			info.IntervalMS = d.Heartbeat.Milliseconds()
		}
		if len(np.States) > 0 {
			info.Enum = np.States
		}
		dev.Signals = append(dev.Signals, info)
	}
	if !ok {
		return nil
	}
	for _, g := range groups {
		if _, err := modbus.NewPlan(g.Points, dev.Modbus); err != nil {
			c.addErr(doc, field+".points", err)
			return nil
		}
		dev.Groups = append(dev.Groups, g)
	}
	sort.Slice(dev.Groups, func(i, j int) bool { return dev.Groups[i].Interval < dev.Groups[j].Interval })
	return dev
}

func orUnderscore(s string) string {
	if s == "" {
		return "_"
	}
	return s
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
	if err != nil {
		// report the template's own errors in full, and mark the device
		c.errs = append(c.errs, confload.AsErrors(err)...)
		lt.err = fmt.Errorf("template %s is invalid (see its errors)", name)
	}
	return lt
}

// point checks and compiles one point. cls is nil when only syntax is checked.
func (c *compiler) point(doc *confload.Doc, field string, p *PointFile, d *DeviceFile, cls *catalog.Class) (modbus.Point, normalize.Point, bool) {
	ok := true
	bad := func(sub, format string, args ...any) {
		c.add(doc.Errorf(field+"."+sub, format, args...))
		ok = false
	}
	var mp modbus.Point
	var np normalize.Point
	if p.Signal == "" {
		bad("signal", "missing")
	}
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
	if p.Interval != 0 && p.Interval < MinPollInterval {
		bad("interval", "%v below the minimum %v", p.Interval, MinPollInterval)
	}
	if p.Deadband < 0 {
		bad("deadband", "%v is negative", p.Deadband)
	}
	if p.Scale != nil && (*p.Scale == 0 || math.IsNaN(*p.Scale) || math.IsInf(*p.Scale, 0)) {
		bad("scale", "%v must be a finite non-zero number", *p.Scale)
	}
	if !ok {
		return mp, np, false
	}
	mp = modbus.Point{Table: tbl, Address: uint16(*p.Address), Type: typ, Order: ord, Bit: uint8(p.Bit), Length: uint16(p.Length)}
	if err := mp.Validate(); err != nil {
		c.addErr(doc, field, err)
		return mp, np, false
	}
	if cls == nil {
		return mp, np, true
	}
	sig, err := c.cat.Lookup(cls.Name, p.Signal)
	if err != nil {
		bad("signal", "%v", err)
		return mp, np, false
	}
	np = normalize.Point{Signal: p.Signal, Offset: p.Offset, Deadband: p.Deadband, Enum: p.Enum,
		Src: mp.Src(d.Modbus.UnitID), Min: sig.Min, Max: sig.Max, States: sig.States, Conv: units.Identity}
	if p.Scale != nil {
		np.Scale = *p.Scale
	}
	if p.Min != nil {
		np.Min = p.Min
	}
	if p.Max != nil {
		np.Max = p.Max
	}
	switch {
	case sig.IsState():
		if p.Unit != "" {
			bad("unit", "%s is a state signal (%v); it takes no unit", p.Signal, sig.States)
		}
		for code, lbl := range p.Enum {
			if !slices.Contains(sig.States, lbl) {
				bad(fmt.Sprintf("enum.%d", code), "%q is not a state of %s (%v)", lbl, p.Signal, sig.States)
			}
		}
	case typ == modbus.String:
		np.Unit = ""
	default:
		np.Unit = sig.Unit
		from := p.Unit
		if from == "" {
			from = sig.Unit
		}
		if cls.Open && sig.Unit == "" {
			canon, known := units.Canonical(from)
			if !known {
				bad("unit", "unknown unit %q", from)
				break
			}
			np.Unit = canon
			break
		}
		conv, err := units.Convert(from, sig.Unit)
		if err != nil {
			bad("unit", "%v (signal %s is in %s)", err, p.Signal, sig.Unit)
			break
		}
		np.Conv = conv
	}
	return mp, np, ok
}

// checkSharedLinks rejects devices that share one connection (same
// transport and address: an RTU gateway or a serial bus) but disagree on its
// settings; the first device's settings would silently win otherwise.
func (c *compiler) checkSharedLinks(f *File) {
	first := map[string]int{}
	for i := range f.Devices {
		m := f.Devices[i].Modbus
		if m == nil || f.Devices[i].Disabled {
			continue
		}
		key := string(m.Transport) + "|" + m.Address
		j, ok := first[key]
		if !ok {
			first[key] = i
			continue
		}
		o := f.Devices[j].Modbus
		switch {
		case m.Transport.Serial() && m.Serial != o.Serial:
			c.add(c.doc.Errorf(fmt.Sprintf("devices[%d].modbus.serial", i),
				"%s shares serial line %s with devices[%d] but sets different line settings", f.Devices[i].ID, m.Address, j))
		case m.Timeout != o.Timeout:
			c.add(c.doc.Errorf(fmt.Sprintf("devices[%d].modbus.timeout", i),
				"%s shares connection %s with devices[%d] but sets timeout %v, not %v", f.Devices[i].ID, m.Address, j, m.Timeout, o.Timeout))
		case m.UnitID == o.UnitID:
			c.add(c.doc.Errorf(fmt.Sprintf("devices[%d].modbus.unit_id", i),
				"%s and devices[%d] both read unit %d at %s", f.Devices[i].ID, j, m.UnitID, m.Address))
		}
	}
}

// Package gwconfig loads and validates smelter-gateway's configuration file
// and the device templates it names, and compiles them into the typed
// settings the gateway runs with. Every problem is reported with file, line,
// field and reason before anything starts (see docs/configuration.md).
//
// Each device's protocol block and points are compiled by the Driver of
// that protocol, from the list Load is given (gateway.Drivers()); gwconfig
// imports no driver. A Driver works through a Block: strict decoding with
// field-path errors, and Point for the fields every point has.
package gwconfig

import (
	"fmt"
	"maps"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/memlimit"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/procs"
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
		Enterprise string `yaml:"enterprise,omitempty"`
		Site       string `yaml:"site"`
		DataDir    string `yaml:"data_dir,omitempty"`
		// MemoryLimit is the Go runtime's soft memory limit in GOMEMLIMIT
		// syntax ("48MiB", "off"; default off); the GOMEMLIMIT
		// environment variable wins over it (internal/memlimit).
		MemoryLimit string `yaml:"memory_limit,omitempty"`
		// GCPercent is the garbage collector's target as GOGC's
		// percentage (10-1000; 0 or absent: memlimit.DefaultGCPercent,
		// 50); the GOGC environment variable wins over it.
		GCPercent int `yaml:"gc_percent,omitempty"`
		// MaxProcs is the Go runtime's GOMAXPROCS: auto (default: one
		// while the gateway uses little CPU, every CPU when it is busy) or
		// a whole number; the GOMAXPROCS environment variable wins over
		// it (internal/procs).
		MaxProcs string `yaml:"max_procs,omitempty"`
	} `yaml:"gateway"`
	HTTP struct {
		Listen string `yaml:"listen,omitempty"`
		// ReadyMaxLag: /readyz reports degraded while an uplink's oldest
		// unsent batch is older than this (default 30s).
		ReadyMaxLag time.Duration `yaml:"ready_max_lag,omitempty"`
		// PProf serves Go's profiles under /debug/pprof/ on the same
		// listener (default false: they reveal internals and cost CPU).
		PProf bool `yaml:"pprof,omitempty"`
	} `yaml:"http"`
	Log struct {
		Level  string `yaml:"level,omitempty"`
		Format string `yaml:"format,omitempty"`
	} `yaml:"log,omitempty"`
	Spool   spool.Config `yaml:"spool,omitempty"`
	Uplinks struct {
		NATS *natsjs.Config `yaml:"nats,omitempty"`
		MQTT *mqtt.Config   `yaml:"mqtt,omitempty"`
	} `yaml:"uplinks"`
	// Commands enables authorized writes (docs/commands.md); absent: the
	// gateway does not listen for commands.
	Commands *command.Config `yaml:"commands,omitempty"`
	Devices  []DeviceFile    `yaml:"devices"`
}

// Defaults.
const (
	DefaultPollInterval = time.Second
	DefaultHeartbeat    = 10 * time.Minute
	DefaultHTTPListen   = "127.0.0.1:9100"
	DefaultReadyMaxLag  = 30 * time.Second
	MinPollInterval     = 10 * time.Millisecond
)

// Load reads, validates and compiles a configuration file and its
// templates, each device's protocol block by the driver of that name among
// drivers (smelter-gateway passes gateway.Drivers()). The returned error,
// if any, is a confload.Errors listing every problem.
//
// D is any interface or type that is a Driver, so a list of a wider
// driver interface (gateway's driver.Driver) is passed as it is.
func Load[D Driver](path string, drivers ...D) (*Config, error) {
	var f File
	f.Spool.SetDefaults()
	doc, err := confload.ReadFile(path, &f)
	if doc == nil {
		return nil, err
	}
	return compile(path, doc, &f, err, byName(drivers))
}

// LoadBytes is Load for a document already in memory named name;
// templates are resolved relative to name's directory.
func LoadBytes[D Driver](name string, data []byte, drivers ...D) (*Config, error) {
	var f File
	f.Spool.SetDefaults()
	doc, err := confload.Decode(name, data, &f)
	if doc == nil {
		return nil, err
	}
	return compile(name, doc, &f, err, byName(drivers))
}

// byName indexes drivers by block name; a later driver of the same name
// replaces an earlier one.
func byName[D Driver](drivers []D) map[string]Driver {
	m := make(map[string]Driver, len(drivers))
	for _, d := range drivers {
		m[d.Name()] = d
	}
	return m
}

type compiler struct {
	errs      confload.Errors
	warns     confload.Errors
	doc       *confload.Doc
	docs      map[string]*confload.Doc // by file: templates too
	dir       string
	cat       *catalog.Catalog
	templates map[string]*loadedTemplate
	drivers   map[string]Driver
	dataDir   string // gateway.data_dir as written
	// names interns signal names while compiling: the devices of a
	// configuration that read the same signals (one class, or one
	// generated list of nodes) keep one copy of each name, not one per
	// point, and no point keeps the YAML scalar it was decoded from.
	names map[string]string
}

// intern returns s as the configuration's one copy of it.
func (c *compiler) intern(s string) string {
	if v, ok := c.names[s]; ok {
		return v
	}
	if c.names == nil {
		c.names = map[string]string{}
	}
	v := strings.Clone(s)
	c.names[v] = v
	return v
}

// add records errors, leaving out those about a field that did not decode
// (its decoding error is already there).
func (c *compiler) add(es ...*confload.FieldError) {
	for _, e := range es {
		if d := c.docs[e.File]; d != nil && e.Field != "" && d.Broken(e.Field) {
			continue
		}
		c.errs = append(c.errs, e)
	}
}

// report records the error of a package's Validate against the field at
// base.
func (c *compiler) report(doc *confload.Doc, base string, err error) {
	c.add(doc.Report(base, err)...)
}

// decodeErr records the errors of decoding a part of the file.
func (c *compiler) decodeErr(err error) {
	c.errs = append(c.errs, confload.AsErrors(err)...)
}

func (c *compiler) warn(e *confload.FieldError) { c.warns = append(c.warns, e) }

// compile validates and compiles f; decodeErr holds the errors of
// decoding it (reported with the rest; the fields concerned are skipped).
func compile(path string, doc *confload.Doc, f *File, decodeErr error, drivers map[string]Driver) (*Config, error) {
	c := &compiler{doc: doc, docs: map[string]*confload.Doc{doc.File: doc}, dir: filepath.Dir(path), cat: catalog.Default(),
		templates: map[string]*loadedTemplate{}, drivers: drivers}
	c.errs = append(c.errs, confload.AsErrors(decodeErr)...)
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
	c.dataDir = f.Gateway.DataDir
	out.DataDir = c.resolve(f.Gateway.DataDir)
	if v, err := memlimit.Parse(f.Gateway.MemoryLimit); err != nil {
		c.add(doc.Errorf("gateway.memory_limit", "%v", err))
	} else {
		out.MemoryLimit = v
	}
	if err := memlimit.CheckGCPercent(f.Gateway.GCPercent); err != nil {
		c.add(doc.Errorf("gateway.gc_percent", "%v", err))
	}
	out.GCPercent = f.Gateway.GCPercent
	if v, err := procs.Parse(f.Gateway.MaxProcs); err != nil {
		c.add(doc.Errorf("gateway.max_procs", "%v", err))
	} else {
		out.MaxProcs = v
	}
	if f.Spool.Dir == "" {
		f.Spool.Dir = filepath.Join(out.DataDir, "spool")
	} else {
		f.Spool.Dir = c.resolve(f.Spool.Dir)
	}
	if err := f.Spool.Validate(); err != nil {
		c.report(doc, "spool", err)
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
	default:
		if err := checkListen(f.HTTP.Listen); err != nil {
			c.add(doc.Errorf("http.listen", "%q %v", f.HTTP.Listen, err))
		}
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
			c.report(doc, "uplinks.nats", err)
		}
	}
	if u := f.Uplinks.MQTT; u != nil {
		u.SetDefaults(f.Gateway.ID, f.Gateway.Site)
		u.ResolvePaths(c.dir)
		if err := u.Validate(); err != nil {
			c.report(doc, "uplinks.mqtt", err)
		}
	}

	if cm := f.Commands; cm != nil {
		cm.SetDefaults()
		if err := cm.Validate(); err != nil {
			c.report(doc, "commands", err)
		}
		if f.Uplinks.NATS == nil {
			c.add(doc.Errorf("commands", "commands arrive over NATS: set uplinks.nats"))
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
		for _, dev := range c.device(field, d, f) {
			// Exact-size copies: the point tables live as long as the
			// gateway, and appending left up to half of each unused
			// (a 100-device, 10,000-point gateway: about 3 MB).
			dev.Norm, dev.norm = normalize.NewTable(dev.norm), nil
			dev.BirthIntervalMS, dev.Writes = compactIntervals(dev.BirthIntervalMS), compactWrites(dev.Writes)
			out.Devices = append(out.Devices, dev)
		}
		c.release(field, d)
	}
	for _, name := range slices.Sorted(maps.Keys(c.drivers)) {
		var devs []*Device
		for _, d := range out.Devices {
			if d.Protocol == name {
				devs = append(devs, d)
			}
		}
		c.drivers[name].Check(&Checks{c: c}, devs)
	}
	out.Raw = *f
	out.doc = doc
	out.Warnings = c.warns.Sorted()
	if len(c.errs) > 0 {
		return out, c.errs.Sorted()
	}
	return out, nil
}

// release lets the device's points as written go once it is compiled:
// its entries in f and their nodes in the file's tree, which is what loading
// a large configuration holds most of (about 2 KB per point written inline:
// 40 MB for 20,000 points; issue 17). Nothing reads a device's points after
// its compile (Compact drops the rest of the tree later); an error placed
// below them afterwards would name the points list's line.
func (c *compiler) release(field string, d *DeviceFile) {
	c.doc.Release(field + ".points")
	d.Points = nil
	for j := range d.Sources {
		c.doc.Release(fmt.Sprintf("%s.sources[%d].points", field, j))
		d.Sources[j].Points = nil
	}
}

// compactIntervals returns the birth intervals as an exact-size copy, or
// one entry when every point announces the same (Device.BirthInterval).
func compactIntervals(ivs []int64) []int64 {
	if len(ivs) > 0 && !slices.ContainsFunc(ivs, func(v int64) bool { return v != ivs[0] }) {
		return []int64{ivs[0]}
	}
	return slices.Clone(ivs)
}

// compactWrites returns the write blocks as an exact-size copy, nil when
// no point is writable (Device.Write).
func compactWrites(ws []*Write) []*Write {
	if !slices.ContainsFunc(ws, func(w *Write) bool { return w != nil }) {
		return nil
	}
	return slices.Clone(ws)
}

// checkListen checks an http.listen address as net.Listen("tcp") takes it:
// host:port (host may be empty or an IP or a name), port a number
// 0..65535, without binding it.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("is not host:port (127.0.0.1:9100, [::1]:9100, :9100) or off")
	}
	if port == "" {
		return fmt.Errorf("has no port")
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("port %q is not a number", port)
	}
	if n < 0 || n > 65535 {
		return fmt.Errorf("port %d is outside 0..65535", n)
	}
	return nil
}

// Compact drops what only loading and CheckLocal's error placement need:
// the file's YAML parse tree and the raw protocol blocks and points of
// Raw.Devices (compiled into Devices). A gateway keeps its configuration
// while it runs, and the tree of a 20,000-point file is over 20 MB. After
// Compact, CheckLocal's errors name the file and field without a line.
func (cfg *Config) Compact() {
	cfg.doc = cfg.doc.WithoutTree()
	for i := range cfg.Raw.Devices {
		cfg.Raw.Devices[i].Blocks, cfg.Raw.Devices[i].Points = nil, nil
	}
}

// CheckLocal checks what the configuration names on this machine and
// what Load does not touch: the uplinks' password variables and files,
// token, creds and TLS files (readable; TLS files PEM), and what a device's
// driver names (its DriverConfig's optional CheckLocal() error method: the
// OPC UA password and certificate files). Nothing connects
// and nothing is bound. It returns confload.Errors placed at the fields'
// lines, or nil; the gateway would fail to start on any of them.
// `smelter-gateway validate` runs it unless given -offline.
func (cfg *Config) CheckLocal() error {
	var es confload.Errors
	add := func(base string, err error) {
		for _, e := range cfg.doc.Report(base, err) {
			if !cfg.doc.Broken(e.Field) { // its decoding error says it already
				es = append(es, e)
			}
		}
	}
	if u := cfg.Raw.Uplinks.NATS; u != nil {
		add("uplinks.nats", u.CheckLocal())
	}
	if u := cfg.Raw.Uplinks.MQTT; u != nil {
		add("uplinks.mqtt", u.CheckLocal())
	}
	for _, d := range cfg.Devices {
		// a driver whose block names secrets or files says so by this method
		if lc, ok := d.Driver.(interface{ CheckLocal() error }); ok {
			add(d.Field+"."+d.Protocol, lc.CheckLocal())
		}
	}
	if len(es) > 0 {
		return es.Sorted()
	}
	return nil
}

func (c *compiler) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// device checks and compiles one device entry: one Device, or one per
// source for a device with sources; none when anything is invalid.
func (c *compiler) device(field string, d *DeviceFile, f *File) []*Device {
	doc := c.doc
	dc := &Block{c: c, doc: doc, field: field, d: d, ok: true, names: map[string]string{}}
	if !telemetry.ValidToken(d.ID) {
		dc.Bad("id", "%q must be 1-64 letters, digits, '_' or '-'", d.ID)
	}
	cls, known := c.cat.Class(d.Class)
	if known {
		dc.cls = cls
	} else {
		dc.Bad("class", "unknown equipment class %q (known: %v)", d.Class, c.cat.ClassNames())
	}
	for _, lv := range []struct{ name, v string }{{"area", d.Area}, {"line", d.Line}, {"cell", d.Cell}} {
		if lv.v != "" && !telemetry.ValidToken(lv.v) {
			dc.Bad(lv.name, "%q must be 1-64 letters, digits, '_' or '-'", lv.v)
		}
	}
	c.timing(dc, &d.PollInterval, &d.Heartbeat, DefaultPollInterval, DefaultHeartbeat)
	if known {
		if len(d.Nameplate) > telemetry.MaxNameplate {
			dc.Bad("nameplate", "%d ratings, more than the %d a birth may carry (docs/schema.md, \"Bounds\")", len(d.Nameplate), telemetry.MaxNameplate)
		}
		for _, k := range slices.Sorted(maps.Keys(d.Nameplate)) {
			v := d.Nameplate[k]
			if !telemetry.ValidToken(k) {
				dc.Bad("nameplate."+k, "a rating's name must be 1-64 letters, digits, '_' or '-'")
			} else if !slices.Contains(cls.Nameplate, k) && !cls.Open {
				dc.Bad("nameplate."+k, "unknown nameplate rating for class %s (known: %v)", d.Class, cls.Nameplate)
			} else if r, ok := c.cat.Ratings[k]; ok {
				if err := r.Check(c.cat, v); err != nil {
					dc.Bad("nameplate."+k, "%v", err)
				}
			} else if math.IsNaN(v) || math.IsInf(v, 0) {
				dc.Bad("nameplate."+k, "%v is not a finite number", v)
			}
		}
	}
	asset := telemetry.Asset{ID: d.ID, Class: d.Class, Path: []string{f.Gateway.Enterprise, f.Gateway.Site,
		orUnderscore(d.Area), orUnderscore(d.Line), orUnderscore(d.Cell)}}
	if sf := field + ".sources"; c.doc.Has(sf) {
		if c.doc.Broken(sf) {
			return nil // reported where it failed to decode ("want a list")
		}
		if len(d.Sources) == 0 {
			dc.Bad("sources", "empty: list one source per protocol block, or leave sources out and give the device its protocol block")
			return nil
		}
	}
	if len(d.Sources) == 0 {
		dev := c.compileBlock(dc, d.Blocks, asset, "", confload.Fields(DeviceFile{}))
		if dev == nil || !dc.ok {
			return nil
		}
		return []*Device{dev}
	}
	return c.sources(dc, d, asset)
}

// sources compiles a device with sources: one Device per source, sharing
// the device's asset and one signal namespace (a signal read by two
// sources is an error naming both).
func (c *compiler) sources(dc *Block, d *DeviceFile, asset telemetry.Asset) []*Device {
	if d.Template != "" {
		dc.Bad("template", "a device with sources names templates in its sources")
	}
	if len(d.Points) > 0 {
		dc.Bad("points", "a device with sources lists its points in its sources")
	}
	var odd []string
	for _, k := range slices.Sorted(maps.Keys(d.Blocks)) {
		_, isDriver := c.drivers[k]
		switch {
		case !confload.PlausibleKey(k):
			odd = append(odd, k) // never echoed: may be a secret pasted by mistake
		case isDriver:
			dc.Bad(k, "a device with sources has its protocol blocks in its sources")
		default:
			dc.Bad(k, "%s", confload.Unknown(k, confload.Fields(DeviceFile{})))
		}
	}
	if len(odd) > 0 {
		c.add(c.doc.OddKeys(dc.field, odd))
		dc.ok = false
	}
	var devs []*Device
	valid := dc.ok
	names := map[string]string{} // source name -> its field
	for j := range d.Sources {
		s := &d.Sources[j]
		field := fmt.Sprintf("%s.sources[%d]", dc.field, j)
		// the source as a device entry of its own, for its driver
		sd := &DeviceFile{ID: d.ID, Class: d.Class, Area: d.Area, Line: d.Line, Cell: d.Cell, Nameplate: d.Nameplate,
			PollInterval: s.PollInterval, Heartbeat: s.Heartbeat, Template: s.Template, Blocks: s.Blocks, Points: s.Points}
		sb := &Block{c: c, doc: dc.doc, field: field, d: sd, ok: true, cls: dc.cls, names: dc.names}
		if !c.doc.Has(field + ".poll_interval") {
			sd.PollInterval = d.PollInterval
		}
		if !c.doc.Has(field + ".heartbeat") {
			sd.Heartbeat = d.Heartbeat
		}
		c.timing(sb, &sd.PollInterval, &sd.Heartbeat, d.PollInterval, d.Heartbeat)
		for _, k := range []string{"id", "class", "area", "line", "cell", "nameplate", "disabled"} {
			if _, set := s.Blocks[k]; set {
				delete(sd.Blocks, k)
				sb.Bad(k, "the asset's %s is written once, on the device (%s.%s), not on a source", k, dc.field, k)
			}
		}
		// a written name is checked before the source compiles, so its
		// errors come in the same pass as the source's other errors
		if s.Name != "" {
			switch prev, dup := names[s.Name]; {
			case !telemetry.ValidToken(s.Name):
				sb.Bad("name", "%q must be 1-64 letters, digits, '_' or '-'", s.Name)
			case dup:
				sb.Bad("name", "%q is already the name of %s", s.Name, prev)
			default:
				names[s.Name] = field
			}
		}
		dev := c.compileBlock(sb, sd.Blocks, asset, s.Name, confload.Fields(SourceFile{}))
		if dev == nil || !sb.ok {
			valid = false
			continue
		}
		if s.Name == "" {
			dev.Source = dev.Protocol
			if prev, dup := names[dev.Source]; dup {
				sb.Bad("name", "missing: %s is already the name of %s (the default is the protocol's name); name the sources", dev.Source, prev)
				valid = false
				continue
			}
			names[dev.Source] = field
		}
		dev.ID = d.ID + "/" + dev.Source
		devs = append(devs, dev)
	}
	if !valid || !dc.ok {
		return nil
	}
	return devs
}

// timing applies the defaults of a device's or source's poll_interval
// and heartbeat and checks them.
func (c *compiler) timing(b *Block, poll, heartbeat *time.Duration, defPoll, defHeartbeat time.Duration) {
	if *poll == 0 {
		*poll = defPoll
	}
	if *poll < MinPollInterval {
		b.Bad("poll_interval", "%v below the minimum %v", *poll, MinPollInterval)
	}
	hbField := b.field + ".heartbeat"
	switch {
	case *heartbeat == 0 && c.doc.Has(hbField) && !c.doc.Broken(hbField):
		// "never" or "the default"? Neither is safe to guess.
		b.Bad("heartbeat", "0s is not allowed: give a positive duration, or leave heartbeat out for the default %v", DefaultHeartbeat)
	case *heartbeat == 0:
		*heartbeat = defHeartbeat
	case *heartbeat < 0:
		b.Bad("heartbeat", "%v is negative", *heartbeat)
	}
}

// compileBlock finds the one protocol block among blocks (a device's or
// a source's keys beyond its own fields, known) and has its driver compile
// it with its points into a Device of asset.
func (c *compiler) compileBlock(dc *Block, blocks map[string]yaml.Node, asset telemetry.Asset, source string, known []string) *Device {
	doc, field, d := c.doc, dc.field, dc.d
	var name string
	var odd []string
	for _, k := range slices.Sorted(maps.Keys(blocks)) {
		if !confload.PlausibleKey(k) {
			odd = append(odd, k) // never echoed: may be a secret pasted by mistake
			continue
		}
		if _, isDriver := c.drivers[k]; !isDriver {
			dc.Bad(k, "%s", confload.Unknown(k, append(slices.Sorted(maps.Keys(c.drivers)), known...)))
			continue
		}
		if name != "" {
			dc.Bad(k, "a device has one protocol block: %s or %s, not both (give each its own source: sources)", name, k)
			return nil
		}
		name = k
	}
	if len(odd) > 0 {
		c.add(doc.OddKeys(field, odd))
		dc.ok = false
	}
	if name == "" {
		if names := slices.Sorted(maps.Keys(c.drivers)); dc.ok && !doc.Broken(field) && len(names) > 0 {
			if strings.Contains(field, ".sources[") {
				dc.Errorf(doc, field, "needs one protocol block: %s", orList(names))
			} else {
				dc.Bad(names[0], "missing: every device needs a protocol block (%s)", orList(names))
			}
		}
		return nil
	}
	dc.dev = &Device{ID: d.ID, Field: field, Source: source, Protocol: name, Nameplate: d.Nameplate, Interval: d.PollInterval,
		Heartbeat: d.Heartbeat, Asset: asset}
	block := blocks[name]
	dc.name, dc.node = name, &block
	drv := c.drivers[name].Compile(dc)
	if drv == nil || !dc.ok || dc.cls == nil {
		return nil
	}
	dc.dev.Driver = drv
	return dc.dev
}

func orList(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	return fmt.Sprintf("%s or %s", joinComma(xs[:len(xs)-1]), xs[len(xs)-1])
}

func joinComma(xs []string) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}

func orUnderscore(s string) string {
	if s == "" {
		return "_"
	}
	return s
}

// UnitPlaceholder is the unit a generated configuration (smelter-gateway
// browse -write-config) gives a point whose node reports no usable unit:
// Point refuses it, so the configuration does not load until the user sets
// the device's unit.
const UnitPlaceholder = "?"

// Point checks and compiles the common part of one point (its signal,
// unit, scale, range, deadband) and appends it to the device's
// normalization and signals. It returns the point's device-wide index (the
// sample.Sample.Index the driver reports for it), whether its unit is left
// to the device (ps.UnitFromDevice and no unit given), and false when the
// point is invalid (errors recorded). With an unknown class only the syntax
// is checked and the index is -1.
func (dc *Block) Point(ps PointSpec) (int, bool, bool) {
	c, p, doc := dc.c, ps.Point, ps.Doc
	ok := true
	bad := func(sub, format string, args ...any) {
		c.add(doc.Errorf(confload.Join(ps.Field, sub), format, args...))
		ok = false
	}
	switch {
	case p.Signal == "":
		bad("signal", "missing")
	case !telemetry.ValidSignal(p.Signal):
		bad("signal", "%q must be 1-%d letters, digits, '_' or '-' (docs/schema.md, \"Bounds\")", p.Signal, telemetry.MaxSignalLen)
	}
	for _, code := range slices.Sorted(maps.Keys(p.Enum)) {
		if lbl := p.Enum[code]; !telemetry.ValidLabel(lbl) {
			bad(fmt.Sprintf("enum.%d", code), "%q must be 1-%d bytes without control characters", lbl, telemetry.MaxLabelLen)
		}
	}
	if len(p.Enum) > telemetry.MaxLabels {
		bad("enum", "%d labels, more than %d", len(p.Enum), telemetry.MaxLabels)
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
	for _, b := range []struct {
		name string
		v    *float64
	}{{"min", p.Min}, {"max", p.Max}} {
		if b.v != nil && (math.IsNaN(*b.v) || math.IsInf(*b.v, 0)) {
			bad(b.name, "%v must be a finite number (leave it out for no bound)", *b.v)
		}
	}
	if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
		bad("min", "%v above max %v", *p.Min, *p.Max)
	}
	if p.Unit == UnitPlaceholder {
		bad("unit", "%q is the placeholder smelter-gateway browse -write-config writes for a node without a usable unit: give the unit the device reports in (UCUM: Cel, kPa, m3/h, ...)", p.Unit)
	}
	if dc.cls == nil || !ok {
		dc.ok = dc.ok && ok
		return -1, false, ok
	}
	cls := dc.cls
	sig, err := c.cat.Lookup(cls.Name, p.Signal)
	if err != nil {
		bad("signal", "%v", err)
		dc.ok = false
		return -1, false, false
	}
	np := normalize.Point{Signal: c.intern(p.Signal), Offset: p.Offset, Deadband: p.Deadband, Src: ps.Src,
		Min: sig.Min, Max: sig.Max, Conv: units.Identity, IntervalMS: ps.Interval.Milliseconds()}
	if p.Enum != nil || sig.States != nil {
		np.Labels = &normalize.Labels{States: sig.States, Enum: p.Enum}
	}
	np.Scale = 1
	if p.Scale != nil && *p.Scale != 0 { // 0 means 1, as normalize reads it
		np.Scale = *p.Scale
	}
	if p.Min != nil {
		np.Min = p.Min
	}
	if p.Max != nil {
		np.Max = p.Max
	}
	if np.Min != nil && np.Max != nil && *np.Min > *np.Max && (p.Min == nil || p.Max == nil) {
		bad("min", "range %v..%v is empty (min or max from the catalog's range of %s)", *np.Min, *np.Max, p.Signal)
	}
	fromDevice := false
	switch {
	case sig.IsState():
		if p.Unit != "" {
			bad("unit", "%s is a state signal (%v); it takes no unit", p.Signal, sig.States)
		}
		for _, code := range slices.Sorted(maps.Keys(p.Enum)) {
			if lbl := p.Enum[code]; !slices.Contains(sig.States, lbl) {
				bad(fmt.Sprintf("enum.%d", code), "%q is not a state of %s (%v)", lbl, p.Signal, sig.States)
			}
		}
	case ps.Text:
		np.Unit = ""
	case sig.Unit == "" && cls.Open:
		// no catalog unit: the configuration or the device must give it
		switch {
		case p.Unit != "":
			canon, known := units.Canonical(p.Unit)
			if !known {
				bad("unit", "unknown unit %q", p.Unit)
			}
			np.Unit = canon
		case ps.UnitFromDevice:
			fromDevice = true
			np.NoUnit = true
			c.warn(doc.Errorf(confload.Join(ps.Field, "unit"), "not given and class %s has no catalog unit for %s: taken from the node's EngineeringUnits at run time; readings are bad (status 0x%08X) if the node has none",
				cls.Name, p.Signal, normalize.StatusNoUnit))
		default:
			bad("unit", "missing: class %s has no catalog unit for %s; give the unit the device reports in", cls.Name, p.Signal)
		}
	default:
		np.Unit = sig.Unit
		switch {
		case p.Unit != "":
			conv, err := units.Convert(p.Unit, sig.Unit)
			if err != nil {
				bad("unit", "%v (signal %s is in %s)", err, p.Signal, sig.Unit)
			}
			np.Conv = conv
		case ps.UnitFromDevice:
			fromDevice = true // converted from the node's unit; the catalog unit if it has none
		}
	}
	if prev, dup := dc.names[p.Signal]; dup {
		bad("signal", "%s already read by %s", p.Signal, prev)
	}
	var wr *Write
	if p.Write != nil {
		wr = compileWrite(p.Write, np.States(), ps.Text, ps.Methods, bad)
	}
	if !ok {
		dc.ok = false
		return -1, false, false
	}
	where := ps.Field
	if doc != dc.doc {
		where = doc.File + ":" + ps.Field
	}
	dc.names[p.Signal] = where
	dc.dev.norm = append(dc.dev.norm, np)
	dc.dev.BirthIntervalMS = append(dc.dev.BirthIntervalMS, ps.BirthInterval.Milliseconds())
	dc.dev.Writes = append(dc.dev.Writes, wr)
	return len(dc.dev.norm) - 1, fromDevice, true
}

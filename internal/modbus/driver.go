package modbus

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// Driver is the Modbus protocol for smelter-gateway: it compiles a
// device's modbus block and register points (gwconfig.Driver) and builds
// its Source on a Pool shared by the gateway's devices (driver.Driver).
type Driver struct{}

var _ driver.Driver = Driver{}

// PointFile is one Modbus point as written: the common fields and the
// register it is read from.
type PointFile struct {
	gwconfig.PointFile `yaml:",inline"`
	Table              string `yaml:"table"`
	Address            *int   `yaml:"address"`
	Type               string `yaml:"type,omitempty"`
	Order              string `yaml:"order,omitempty"`
	Bit                int    `yaml:"bit,omitempty"`
	Length             int    `yaml:"length,omitempty"`
}

// TemplateFile is a reusable register map: the file a device's template
// field names.
type TemplateFile struct {
	Template string      `yaml:"template"`
	Class    string      `yaml:"class"`
	Points   []PointFile `yaml:"points"`
}

// DeviceConfig is a compiled Modbus device: its connection and its points
// in groups polled together (gwconfig.Device.Driver).
type DeviceConfig struct {
	Config Config
	Groups []Group // one per distinct interval, fastest first
}

// Endpoint implements gwconfig.DriverConfig.
func (m *DeviceConfig) Endpoint() (string, string) {
	return "modbus/" + string(m.Config.Transport), m.Config.Address
}

// Name implements gwconfig.Driver: the block key.
func (Driver) Name() string { return "modbus" }

// Compile implements gwconfig.Driver: the modbus block is a Config, the
// points are the template's (a TemplateFile) then the device's own
// PointFiles, grouped by interval; each group must make a valid Plan.
func (Driver) Compile(b *gwconfig.Block) gwconfig.DriverConfig {
	d, doc := b.Device(), b.Doc()
	var cfg Config
	b.Decode(&cfg)
	// SetDefaults fills zero fields; an explicit "max_gap: 0" (never
	// bridge gaps) must survive it.
	explicitNoGap := cfg.MaxGap == 0 && b.Has("max_gap")
	cfg.SetDefaults()
	if explicitNoGap {
		cfg.MaxGap = 0
	}
	if err := cfg.Validate(); err != nil {
		b.Report(doc, b.BlockField(), err)
	}
	if cfg.Transport == TCP && b.Has("serial") {
		// a serial line's settings on Modbus TCP: a transport mistyped
		// (rtu_over_tcp meant?) or a block left over; either way the
		// settings would be ignored in silence
		b.Errorf(doc, confload.Join(b.BlockField(), "serial"),
			"transport tcp has no serial line: serial is for rtu and ascii (on rtu_over_tcp and ascii_over_tcp, serial.baud sizes the default silence)")
	}

	// points: the template's first, then the device's own
	type src struct {
		doc   *confload.Doc
		field string
		p     *PointFile
	}
	var pts []src
	if d.Template != "" {
		t, tdoc, err := gwconfig.Template[TemplateFile](b, d.Template)
		switch {
		case err != nil:
			b.Bad("template", "%v", err)
		case b.Checked() && t.Class != "" && t.Class != d.Class:
			// one error: its points would each fail against the wrong class
			b.Bad("template", "template %s is for class %s, device is %s", d.Template, t.Class, d.Class)
		default:
			for i := range t.Points {
				pts = append(pts, src{tdoc, fmt.Sprintf("points[%d]", i), &t.Points[i]})
			}
		}
	}
	for i := range b.Points() {
		var p PointFile
		b.DecodePoint(i, &p)
		pts = append(pts, src{doc, b.PointField(i), &p})
	}
	if len(pts) == 0 && d.Template == "" {
		b.Bad("points", "no points: give a template or points")
	}
	groups := map[time.Duration]*Group{}
	var all []Point
	var where []loc
	for _, s := range pts {
		mp, pok := compilePoint(b, s.doc, s.field, s.p)
		if !pok {
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
		idx, _, pok := b.Point(gwconfig.PointSpec{Doc: s.doc, Field: s.field, Point: &s.p.PointFile, Src: mp.Src(cfg.UnitID),
			Text: mp.Type == String, Interval: iv, BirthInterval: birth})
		if !pok || idx < 0 {
			continue
		}
		g := groups[iv]
		if g == nil {
			g = &Group{Interval: iv}
			groups[iv] = g
		}
		g.Points = append(g.Points, mp)
		g.Index = append(g.Index, idx)
		all = append(all, mp)
		where = append(where, loc{s.doc, s.field})
	}
	if !b.OK() || !b.Checked() {
		return nil
	}
	warnOverlaps(b, all, where)
	out := &DeviceConfig{Config: cfg}
	for _, g := range groups {
		if _, err := NewPlan(g.Points, cfg); err != nil {
			b.Report(doc, b.Field()+".points", err)
			return nil
		}
		// right-sized: the compiled configuration keeps them for the
		// gateway's life (grown by append they are up to half empty)
		out.Groups = append(out.Groups, Group{Interval: g.Interval, Points: slices.Clone(g.Points), Index: slices.Clone(g.Index)})
	}
	sort.Slice(out.Groups, func(i, j int) bool { return out.Groups[i].Interval < out.Groups[j].Interval })
	return out
}

// compilePoint checks and compiles one point's register address.
func compilePoint(b *gwconfig.Block, doc *confload.Doc, field string, p *PointFile) (Point, bool) {
	ok := true
	bad := func(sub, format string, args ...any) {
		b.Errorf(doc, confload.Join(field, sub), format, args...)
		ok = false
	}
	var mp Point
	tbl, err := ParseTable(p.Table)
	if err != nil {
		bad("table", "%v", err)
	}
	var typ Type
	if p.Type != "" || !tbl.IsBit() {
		if typ, err = ParseType(p.Type); err != nil {
			bad("type", "%v", err)
		}
	} else {
		typ = Bool
	}
	ord, err := ParseOrder(p.Order)
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
	mp = Point{Table: tbl, Address: uint16(*p.Address), Type: typ, Order: ord, Bit: uint8(p.Bit), Length: uint16(p.Length)}
	if err := mp.Validate(); err != nil {
		b.Report(doc, field, err)
		return mp, false
	}
	if p.Write != nil && (tbl == DiscreteInputs || tbl == InputRegisters || typ == String) {
		bad("write", "a %s %s point cannot be written (only coils and holding registers, not strings)", typ, tbl)
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
func warnOverlaps(b *gwconfig.Block, pts []Point, where []loc) {
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
		pb := pts[order[k]]
		for j := k - 1; j >= 0; j-- {
			pa := pts[order[j]]
			if pa.Table != pb.Table {
				break
			}
			if int(pa.Address)+pa.Registers() <= int(pb.Address) {
				continue
			}
			if pa.Type == Bit && pb.Type == Bit && pa.Address == pb.Address && pa.Bit != pb.Bit {
				continue
			}
			wa, wb := where[order[j]], where[order[k]]
			other := wa.field
			if wa.doc != wb.doc {
				other = wa.doc.File + ":" + wa.field
			}
			b.Warn(wb.doc, wb.field+".address", "%s %d..%d overlaps %s (%s %d..%d)",
				pb.Table, pb.Address, int(pb.Address)+pb.Registers()-1, other, pa.Table, pa.Address, int(pa.Address)+pa.Registers()-1)
		}
	}
}

// Check implements gwconfig.Driver: it rejects devices that share one
// connection (same transport and address: an RTU gateway or a serial bus)
// but disagree on its settings; the first device's settings would silently
// win otherwise.
//
// Devices whose addresses name one endpoint differently (a host name and
// its IP address, a serial device and a link to it: endpointKeys) share one
// connection too, as the Pool makes them: they are checked as one, and
// warned about, as the connection's label is the first device's address.
func (Driver) Check(c *gwconfig.Checks, devs []*gwconfig.Device) {
	conn, keys := sharedConnections(devs)
	first := map[string]int{}           // connection -> first device on it
	units := map[string]map[uint8]int{} // connection -> unit -> first device reading it
	for i, d := range devs {
		l := d.Driver.(*DeviceConfig).Config
		key := conn[i]
		j, ok := first[key]
		if !ok {
			first[key] = i
			units[key] = map[uint8]int{l.UnitID: i}
			continue
		}
		// every mismatch at once, each against the device that set the connection
		o := devs[j]
		ocfg := o.Driver.(*DeviceConfig).Config
		if l.Address != ocfg.Address {
			c.Warnf(d.Field+".modbus.address",
				"%s names %s, which %s names %s: the same endpoint, one shared connection (the protection of replies is per connection: a converter's late answer is never given to the other name's requests); name it the same way in both",
				d.ID, l.Address, o.Field, ocfg.Address)
		}
		if l.Transport.Serial() && l.Serial != ocfg.Serial {
			c.Errorf(d.Field+".modbus.serial",
				"%s shares serial line %s with %s but sets different line settings", d.ID, l.Address, o.Field)
		}
		if l.Timeout != ocfg.Timeout {
			c.Errorf(d.Field+".modbus.timeout",
				"%s shares connection %s with %s but sets timeout %v, not %v", d.ID, l.Address, o.Field, l.Timeout, ocfg.Timeout)
		}
		if l.Transport != TCP && l.Silence != 0 && ocfg.Silence != 0 && l.Silence != ocfg.Silence {
			// both set (one left out takes the connection's): the one
			// connection keeps one silence, the other would be dropped
			c.Errorf(d.Field+".modbus.silence",
				"%s shares connection %s with %s but sets silence %v, not %v: one connection keeps one silence; set the same on both, or leave it out on one", d.ID, l.Address, o.Field, l.Silence, ocfg.Silence)
		}
		if k, dup := units[key][l.UnitID]; dup {
			c.Errorf(d.Field+".modbus.unit_id",
				"%s and %s both read unit %d at %s", d.ID, devs[k].Field, l.UnitID, l.Address)
		} else {
			units[key][l.UnitID] = i
		}
	}
	refuseMixedFraming(c, devs, keys)
	warnLoopbackFamilies(c, devs, conn, keys)
	warnSlowDeath(c, devs, conn, first)
	announceSharedGaps(devs, conn)
}

// refuseMixedFraming refuses a device whose address names the endpoint
// (host:port, or a serial device) another device names with another
// transport (attack run LOW-2a: tcp and rtu_over_tcp to one converter
// port): one socket or line carries one framing, so one of them is wrong
// and its requests would be garbage to the peer, its replies misframed.
// Each such device is reported once, against the first device naming the
// endpoint. keys are each device's endpointKeys ("transport|endpoint").
func refuseMixedFraming(c *gwconfig.Checks, devs []*gwconfig.Device, keys [][]string) {
	first := map[string]int{} // endpoint -> first device naming it
	for i, ks := range keys {
		tr := devs[i].Driver.(*DeviceConfig).Config.Transport
		for _, k := range ks {
			_, ep, _ := strings.Cut(k, "|")
			j, ok := first[ep]
			if !ok {
				first[ep] = i
				continue
			}
			o := devs[j].Driver.(*DeviceConfig).Config
			if o.Transport == tr {
				continue
			}
			c.Errorf(devs[i].Field+".modbus.transport",
				"%s reads %s with transport %s, but %s (%s) reads %s with transport %s: one connection carries one framing, so one of them is wrong; set the transport the device server is configured for on both",
				devs[i].ID, devs[i].Driver.(*DeviceConfig).Config.Address, tr, devs[j].ID, devs[j].Field, o.Address, o.Transport)
			break
		}
	}
}

// warnLoopbackFamilies warns about a device whose address names the IPv4
// (127.0.0.0/8) or IPv6 (::1) loopback at a port where another connection
// of its transport names the other family's (review attack-mb M2): one
// dual-stack converter listening on both is then two connections, two
// masters to it, and the protection of replies is per connection (its late
// answer to one may be relayed to the other's requests). The gateway cannot
// tell one listener on both from two programs: warned (once per pair of
// connections), not joined. keys are each device's endpointKeys.
func warnLoopbackFamilies(c *gwconfig.Checks, devs []*gwconfig.Device, conn []string, keys [][]string) {
	type spot struct {
		transport string
		port      uint16
		v6        bool
	}
	seen := map[spot]int{}         // the first device naming each loopback spot
	warned := map[[2]string]bool{} // pairs of connections warned about
	for i, ks := range keys {
		for _, k := range ks {
			tr, ep, ok := strings.Cut(k, "|")
			ap, err := netip.ParseAddrPort(ep)
			if !ok || err != nil || !ap.Addr().IsLoopback() {
				continue
			}
			sp := spot{tr, ap.Port(), ap.Addr().Is6()}
			if _, ok := seen[sp]; !ok {
				seen[sp] = i
			}
			other := sp
			other.v6 = !sp.v6
			j, ok := seen[other]
			pair := [2]string{min(conn[i], conn[j]), max(conn[i], conn[j])}
			if !ok || conn[j] == conn[i] || warned[pair] {
				continue
			}
			warned[pair] = true
			o := devs[j]
			c.Warnf(devs[i].Field+".modbus.address",
				"%s names %s, %s names %s: IPv4 and IPv6 loopback at one port, two connections; if one dual-stack converter listens on both, it has two masters and the protection of replies (per connection) cannot see one's late answers relayed to the other's requests; name it one way",
				devs[i].ID, devs[i].Driver.(*DeviceConfig).Config.Address, o.Field, o.Driver.(*DeviceConfig).Config.Address)
		}
	}
}

// sharedConnections returns the key of the connection each device of devs
// reads through (connections.join over endpointKeys, each host name
// resolved once, bounded by the device's timeout): devices naming one
// endpoint differently get the first one's key; and each device's
// endpointKeys.
func sharedConnections(devs []*gwconfig.Device) (conn []string, keys [][]string) {
	look, conns := cachedLookup(), connections{}
	conn, keys = make([]string, len(devs)), make([][]string, len(devs))
	for i, d := range devs {
		l := d.Driver.(*DeviceConfig).Config
		l.runtimeDefaults()
		ctx, cancel := context.WithTimeout(context.Background(), l.Timeout)
		keys[i] = endpointKeys(ctx, look, l)
		conn[i] = conns.join(l.linkKey(), keys[i])
		cancel()
	}
	return conn, keys
}

// slowDeath is the least worst-case death judgement validate warns about.
const slowDeath = 30 * time.Second

// warnSlowDeath warns, once per connection, when a silent device on it is
// known dead much later than 3 x its poll interval: the gateway judges
// silence when a read's requests time out (docs/schema.md), and a read
// waits at most one request of each other device on the connection
// before its own (turns), a request of a silent unit costing its timeout
// (+ the silence that follows it on an RTU or ASCII line, linkStep):
// about n x that after it fell silent, n the devices on the connection.
// Warned when that exceeds both 3 x the shortest poll interval on the
// connection and slowDeath.
//
// On a shared connection the warning also gives the cost to the devices
// that still answer (sharedGap: what their births announce). Silent units
// retry at every poll at first, then once per backoff (device.account:
// backoff_min doubling to backoff_max, jittered down to half): when
// k x step exceeds backoff_max they are always waiting and the long gaps
// recur while they are silent; otherwise their retries spread out and
// they come in bursts.
func warnSlowDeath(c *gwconfig.Checks, devs []*gwconfig.Device, conn []string, first map[string]int) {
	n := map[string]int{}
	shortest := map[string]time.Duration{}
	backoffMax := map[string]time.Duration{} // the longest on the connection
	for i, d := range devs {
		l := d.Driver.(*DeviceConfig).Config
		key := conn[i]
		n[key]++
		l.runtimeDefaults()
		backoffMax[key] = max(backoffMax[key], l.BackoffMax)
		if iv, ok := shortest[key]; !ok || d.Interval < iv {
			shortest[key] = d.Interval
		}
	}
	for key, i := range first {
		d := devs[i]
		l := d.Driver.(*DeviceConfig).Config
		step := linkStep(l)
		worst := time.Duration(n[key]) * step
		if worst <= slowDeath || worst <= 3*shortest[key] {
			continue
		}
		healthy := ""
		if k := n[key] - 1; k > 0 {
			wait := time.Duration(k) * step
			lasts := "in bursts as their backoff grows (up to backoff_max " + backoffMax[key].String() + ")"
			if wait > backoffMax[key] {
				lasts = "for as long as they are silent (their backoff_max " + backoffMax[key].String() + " is shorter)"
			}
			healthy = fmt.Sprintf("; meanwhile, with %d silent unit(s), healthy devices on this connection can go ~%v between two reads (instead of %v): a read may wait for one timed-out request of each silent unit (%d x %v, + up to one of its own), at every poll at first, then %s; their births announce this as their interval",
				k, roundDur(sharedGap(shortest[key], k, step)), shortest[key], k, roundDur(step), lasts)
		}
		c.Warnf(d.Field+".modbus.timeout",
			"a silent device on connection %s is known dead (its points stale) only once its requests time out: up to %v after its last answer (%d device(s) x %v, one request timing out; up to one poll interval more after it falls silent), not 3 x its poll interval (%v)%s; lower timeout (or silence), or put fewer devices on the connection",
			l.Address, roundDur(worst), n[key], roundDur(step), 3*shortest[key], healthy)
	}
}

// linkStep is the longest one request of a device can hold a connection
// with cfg's settings: its timeout, + the silence that follows a failed
// exchange on an RTU or ASCII line.
func linkStep(cfg Config) time.Duration {
	cfg.runtimeDefaults()
	step := cfg.Timeout
	if cfg.Transport != TCP {
		step += cfg.silence()
	}
	return step
}

// sharedGap is the longest a device polled every interval goes between
// two reads that get its reply (so between two of its reports) on a
// connection where k other devices may be silent, each request holding
// the connection at most step (linkStep). Devices with one interval share
// the pool's grid, so units that fall silent together queue for the link
// at the same tick as a healthy device, levelled with it (turns: back
// from idle at the floor, equals in arrival order), and its read waits
// for one request of each, each timing out (k x step), after a read one
// interval before that waited for none; its own read (short beside a
// timeout, counted as one request: step) and the timers' slack come on
// top: interval + (k + 1) x step (TestTurnsHealthyBehindSilentUnits,
// gateway TestSharedLinkBirthCoversGaps). That is the longest gap, not its
// usual period: a silent unit that has used the link more than the
// healthy device since both were levelled goes after it, so most of its
// reads come sooner.
func sharedGap(interval time.Duration, k int, step time.Duration) time.Duration {
	return interval + time.Duration(k+1)*step
}

// announceSharedGaps raises the birth interval of every point of a device
// on a connection shared with others to the longest time between two of
// its reports while it answers (docs/schema.md, interval_ms): the
// announced interval (poll interval, or heartbeat) + sharedGap's wait, k
// every other device on the connection, in whole milliseconds rounded
// up. Static, from the configuration: the worst case whether or not other
// units are silent now (a rebirth at every change of the silent set would
// be heavier than the later silence judgement this costs a consumer:
// docs/configuration.md). It assumes silent units say nothing: a line
// kept busy by noise can hold a request up to link.stepBound.
func announceSharedGaps(devs []*gwconfig.Device, conn []string) {
	n := map[string]int{}
	for _, key := range conn {
		n[key]++
	}
	for i, d := range devs {
		l := d.Driver.(*DeviceConfig).Config
		k := n[conn[i]] - 1
		if k == 0 {
			continue
		}
		wait := sharedGap(0, k, linkStep(l))
		ms := int64((wait + time.Millisecond - 1) / time.Millisecond) // rounded up
		for i := range d.BirthIntervalMS {
			d.BirthIntervalMS[i] += ms
		}
	}
}

// roundDur rounds d for a message: to 0.1 s from 10 s up, else to 1 ms.
func roundDur(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// Sources implements driver.Driver: one Pool per gateway, so devices on
// one connection share its link.
func (Driver) Sources(env driver.Env) driver.Sources {
	return poolSources{NewPool(env.Log.With("component", "modbus"), NewMetrics(env.Registry), WithClock(env.Now))}
}

type poolSources struct{ pool *Pool }

// Source returns the device's unit on the pool's shared link, one poller
// per group.
func (s poolSources) Source(dev driver.Device) (driver.Source, error) {
	cfg, ok := dev.Config.Driver.(*DeviceConfig)
	if !ok {
		return nil, fmt.Errorf("modbus: device %s: compiled settings are %T, not modbus", dev.Config.ID, dev.Config.Driver)
	}
	src, err := s.pool.Source(dev.Config.ID, cfg.Config, cfg.Groups)
	if err != nil {
		return nil, err
	}
	return src, nil
}

func (s poolSources) Close() error { return s.pool.Close() }

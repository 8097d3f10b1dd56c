package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/modbusfront"
	"github.com/smelterio/smelter/simulators/model"
	"github.com/smelterio/smelter/simulators/nmeafront"
	"github.com/smelterio/smelter/simulators/opcuafront"
	"github.com/smelterio/smelter/simulators/regmap"
)

// DeviceInfo describes a running simulated device.
type DeviceInfo struct {
	ID        string             `json:"id"`
	Class     string             `json:"class"`
	Protocol  string             `json:"protocol"` // "modbus" (also when OPC UA serves it too), "opcua" when served over OPC UA only
	Transport string             `json:"transport"`
	Addr      string             `json:"addr"` // real host:port once started; "" without Modbus
	UnitID    uint8              `json:"unit_id"`
	Template  string             `json:"template"` // path of the gateway template (register map)
	Nameplate map[string]float64 `json:"nameplate"`

	// OPC UA (empty when the device has no OPC UA front). A signal's node id
	// is NodePrefix + signal, e.g. ns=1;s=ac-1.discharge_pressure; values
	// are in the catalog's canonical unit.
	OPCUA          string   `json:"opcua,omitempty"`           // endpoint URL, opc.tcp://127.0.0.1:port once started
	OPCUAServer    string   `json:"opcua_server,omitempty"`    // server name (opcua.servers key, or the device id for its own)
	NodePrefix     string   `json:"node_prefix,omitempty"`     // ns=1;s=<device>.
	OPCUANamespace string   `json:"opcua_namespace,omitempty"` // URI of namespace 1
	OPCUASecurity  []string `json:"opcua_security,omitempty"`  // offered endpoints: None, Basic256Sha256/SignAndEncrypt...
	OPCUAAnonymous bool     `json:"opcua_anonymous,omitempty"` // anonymous logins accepted
	OPCUAUsers     []string `json:"opcua_users,omitempty"`     // username logins (passwords: Fleet.OPCUAPassword)

	// NMEA 0183 (ships; empty without): the talker's address (tcp: where
	// it listens for the gateway, udp: where it sends) and transport.
	NMEA          string `json:"nmea,omitempty"`
	NMEATransport string `json:"nmea_transport,omitempty"`
}

// FaultStatus is a fault known to the fleet.
type FaultStatus struct {
	faults.Spec
	State string    `json:"state"` // pending | active | ended
	Onset time.Time `json:"onset"` // simulated
	End   time.Time `json:"end,omitzero"`
}

// Option configures a Fleet.
type Option func(*Fleet)

// WithRegisterer registers the fleet's metrics (default: not registered).
func WithRegisterer(r prometheus.Registerer) Option { return func(f *Fleet) { f.reg = r } }

// Fleet runs simulated devices. Create it with New, then Start.
type Fleet struct {
	cfg Config
	log *slog.Logger
	reg prometheus.Registerer
	met *metrics

	mu        sync.Mutex // guards simulation state below and faults
	started   bool
	closed    bool // listeners and servers closed: nothing may restart
	now       time.Time
	devices   []*device
	byID      map[string]*device
	listeners []*modbusfront.Front
	servers   []*uaServer
	faults    map[string]*faultRun
	order     []string // fault ids in creation order
	nextID    int

	stop context.Context
	wg   sync.WaitGroup
	err  atomic.Pointer[error]
}

// New prepares a fleet; it does no I/O.
func New(cfg Config, log *slog.Logger, opts ...Option) *Fleet {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg, log: log, byID: map[string]*device{}, faults: map[string]*faultRun{}}
	for _, o := range opts {
		o(f)
	}
	f.met = newMetrics(f.reg)
	if f.reg != nil {
		f.reg.MustRegister(writesCollector{f})
	}
	return f
}

// Start builds the devices, binds every listener and starts the simulation.
// It returns once every device answers; everything stops when ctx is done
// (Wait waits for that).
func (f *Fleet) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		return errors.New("fleet: already started")
	}
	comp, err := f.cfg.compile()
	if err != nil {
		return err
	}
	f.started = true
	f.stop = ctx
	f.now = f.cfg.Start
	for _, cd := range comp.devices {
		d := newDevice(cd, f.met, f.log)
		f.setWriter(d)
		d.publish(f.now)
		f.devices = append(f.devices, d)
		f.byID[d.id] = d
	}
	for _, cl := range comp.listeners {
		units := make([]modbusfront.Unit, 0, len(cl.devices))
		for _, di := range cl.devices {
			units = append(units, modbusfront.Unit{ID: f.devices[di].unit, Device: f.devices[di].mb})
		}
		l, err := modbusfront.New(modbusfront.Config{Name: cl.name, Address: cl.address, Transport: cl.transport}, units, f.log)
		if err == nil {
			err = l.Start(ctx)
		}
		if err != nil {
			f.closeLocked()
			return fmt.Errorf("fleet: listener %s (%s): %w", cl.name, cl.address, err)
		}
		for _, di := range cl.devices {
			f.devices[di].lst = l
		}
		f.listeners = append(f.listeners, l)
	}
	for _, cs := range comp.servers {
		s := &uaServer{name: cs.name, c: cs}
		assets := make([]opcuafront.Asset, 0, len(cs.devices))
		for _, di := range cs.devices {
			d := f.devices[di]
			d.ua = s
			d.uaStatus = make([]uint32, len(d.out))
			s.devices = append(s.devices, d)
			assets = append(assets, opcuafront.Asset{ID: d.id, Source: source{d}})
		}
		fr, err := opcuafront.New(cs.cfg, assets, f.log.With("opcua_server", cs.name))
		if err == nil {
			fr.SetWriter(func(asset, sig string, v float64) ua.StatusCode {
				if err := f.setpoint(f.byID[asset], sig, v); err != nil {
					return ua.StatusBadOutOfRange
				}
				return ua.StatusOK
			})
			fr.Refresh(f.now) // values and SourceTimestamps of the simulated start
			err = fr.Start(ctx)
		}
		if err != nil {
			f.closeLocked()
			return fmt.Errorf("fleet: opc ua server %s (%s): %w", cs.name, cs.cfg.Addr, err)
		}
		s.front = fr
		f.servers = append(f.servers, s)
	}
	for _, d := range f.devices {
		if d.nmCfg == nil {
			continue
		}
		fr, err := nmeafront.New(*d.nmCfg, f.log)
		if err == nil {
			err = fr.Start(ctx)
		}
		if err != nil {
			f.closeLocked()
			return fmt.Errorf("fleet: nmea talker of %s (%s): %w", d.id, d.nmCfg.Address, err)
		}
		d.nm = fr
		d.publish(f.now)
	}
	if sc := f.cfg.Scenario; sc != nil {
		for _, s := range sc.Faults {
			if _, err := f.addFaultLocked(s, f.cfg.Start.Add(s.At.D())); err != nil {
				f.closeLocked()
				return fmt.Errorf("fleet: scenario %s: fault %s: %w", sc.Name, s.ID, err)
			}
		}
		f.applyScheduleLocked()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.run(ctx)
	}()
	f.log.Info("fleet started", "devices", len(f.devices), "listeners", len(f.listeners), "opcua_servers", len(f.servers),
		"speed", f.cfg.Speed, "seed", f.cfg.Seed)
	return nil
}

// Run starts the fleet and blocks until ctx is done and everything stopped.
func (f *Fleet) Run(ctx context.Context) error {
	if err := f.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return f.Wait()
}

// Wait blocks until the fleet has stopped (after the Start context ended).
func (f *Fleet) Wait() error {
	f.wg.Wait()
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

// run steps the simulation against the wall clock and closes everything when
// ctx ends.
func (f *Fleet) run(ctx context.Context) {
	defer func() {
		f.mu.Lock()
		f.closeLocked()
		f.mu.Unlock()
		f.log.Info("fleet stopped")
	}()
	if f.cfg.Speed == 0 {
		<-ctx.Done()
		return
	}
	step := f.cfg.Step.D()
	tick := time.Duration(float64(step) / f.cfg.Speed)
	tick = min(max(tick, 10*time.Millisecond), 200*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	wall0 := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		target := f.cfg.Start.Add(time.Duration(float64(time.Since(wall0)) * f.cfg.Speed))
		f.mu.Lock()
		n := 0
		for !f.now.Add(step).After(target) && n < 100000 {
			f.stepLocked(step)
			n++
		}
		if n > 0 {
			f.publishLocked()
		}
		f.mu.Unlock()
	}
}

// closeLocked closes every listener and stops every OPC UA server.
func (f *Fleet) closeLocked() {
	f.closed = true
	for _, d := range f.devices {
		if d.nm != nil {
			d.nm.Stop()
		}
	}
	for _, l := range f.listeners {
		l.Stop()
	}
	for _, s := range f.servers {
		if s.front != nil {
			if err := s.front.Stop(); err != nil {
				f.log.Debug("opc ua server stop", "server", s.name, "err", err)
			}
		}
	}
}

// stepLocked advances every device by one step and applies the schedule.
func (f *Fleet) stepLocked(step time.Duration) {
	f.now = f.now.Add(step)
	f.applyScheduleLocked()
	for _, d := range f.devices {
		d.model.Step(f.now, step)
	}
	f.met.steps.Inc()
}

// publishLocked publishes every device's values, then refreshes every OPC
// UA server once: Modbus images and OPC UA nodes show the same step.
func (f *Fleet) publishLocked() {
	for _, d := range f.devices {
		d.publish(f.now)
	}
	for _, s := range f.servers {
		s.front.Refresh(f.now)
	}
	f.met.simTime.Set(float64(f.now.UnixMilli()) / 1000)
}

// Advance steps the simulation by d (rounded up to whole steps) and publishes
// the new values. It is for manual fleets (speed 0): tests use it to reach a
// simulated time exactly.
func (f *Fleet) Advance(d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		return errors.New("fleet: not started")
	}
	if f.cfg.Speed != 0 {
		return fmt.Errorf("fleet: advance needs a manual fleet (speed 0), this one runs at speed %v", f.cfg.Speed)
	}
	step := f.cfg.Step.D()
	for range (d + step - 1) / step {
		f.stepLocked(step)
	}
	f.publishLocked()
	return nil
}

// Now returns the current simulated time.
func (f *Fleet) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Devices lists the devices in fleet-file order, with real addresses once
// started.
func (f *Fleet) Devices() []DeviceInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]DeviceInfo, 0, len(f.devices))
	for _, d := range f.devices {
		out = append(out, d.info())
	}
	return out
}

// Device returns one device's info.
func (f *Fleet) Device(id string) (DeviceInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.byID[id]
	if !ok {
		return DeviceInfo{}, false
	}
	return d.info(), true
}

// Values returns a device's currently published values (canonical units,
// sensor faults applied) keyed by signal, and their simulated time.
func (f *Fleet) Values(id string) (map[string]float64, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.byID[id]
	if !ok {
		return nil, time.Time{}, fmt.Errorf("fleet: unknown device %q", id)
	}
	out := make(map[string]float64, len(d.out))
	for i, s := range d.model.Signals() {
		out[s] = d.out[i]
	}
	return out, d.at, nil
}

// device is one running simulated device.
type device struct {
	id       string
	class    string
	unit     uint8
	template string
	model    model.Model
	rmap     *regmap.Map
	lst      *modbusfront.Front  // nil without Modbus
	mb       *modbusfront.Device // the device as the Modbus front serves it
	ua       *uaServer           // nil without OPC UA
	nm       *nmeafront.Front    // nil without NMEA
	nmCfg    *nmeafront.Config
	log      *slog.Logger

	// owned by the fleet mutex
	sensors  []*faultRun // active sensor faults
	out      []float64   // published values (faults applied)
	at       time.Time
	uaStatus []uint32 // status code each OPC UA node serves
}

func newDevice(cd compiledDevice, m *metrics, log *slog.Logger) *device {
	var unit uint8
	if cd.cfg.Modbus != nil {
		unit = uint8(cd.cfg.Modbus.UnitID)
	}
	return &device{
		id:       cd.cfg.ID,
		class:    cd.cfg.Class,
		unit:     unit,
		template: cd.template,
		model:    cd.model,
		rmap:     cd.rmap,
		log:      log.With("device", cd.cfg.ID),
		nmCfg:    cd.nmea,
		out:      make([]float64, len(cd.model.Signals())),
		mb:       modbusfront.NewDevice(m.requests.WithLabelValues(cd.cfg.ID), m.exceptions.WithLabelValues(cd.cfg.ID)),
	}
}

func (d *device) info() DeviceInfo {
	np := d.model.Nameplate()
	di := DeviceInfo{ID: d.id, Class: d.class, Protocol: "modbus", Template: d.template, Nameplate: maps.Clone(np)}
	if d.lst != nil {
		di.Transport, di.Addr, di.UnitID = d.lst.Transport(), d.lst.Addr(), d.unit
	} else {
		di.Protocol = "opcua"
	}
	if s := d.ua; s != nil {
		di.OPCUA = s.front.Endpoint()
		di.OPCUAServer = s.name
		di.NodePrefix = s.front.NodeID(d.id, "") // ns=1;s=<device>.
		di.OPCUANamespace = s.front.NamespaceURI()
		di.OPCUASecurity = slices.Clone(s.c.security)
		di.OPCUAAnonymous = s.c.anonymous
		di.OPCUAUsers = slices.Clone(s.c.users)
	}
	if d.nm != nil {
		di.NMEA, di.NMEATransport = d.nm.Addr(), d.nmCfg.Transport
	}
	return di
}

// publish applies sensor faults to the model's values and swaps in a fresh
// register image, so a read never mixes two steps. (The OPC UA front copies
// d.out in its Refresh.)
func (d *device) publish(now time.Time) {
	copy(d.out, d.model.Values())
	for _, fr := range d.sensors {
		d.out[fr.signal] = fr.sensor.Apply(now, d.out[fr.signal])
	}
	d.at = now
	if d.nm != nil {
		vals := make(map[string]float64, len(d.out))
		for i, s := range d.model.Signals() {
			vals[s] = d.out[i]
		}
		d.nm.Update(vals, now)
	}
	if d.rmap == nil {
		return
	}
	img := d.rmap.NewImage()
	d.rmap.Encode(d.out, img)
	d.mb.Publish(img)
}

// sortedFaults returns fault statuses in creation order.
func (f *Fleet) sortedFaults() []FaultStatus {
	out := make([]FaultStatus, 0, len(f.order))
	for _, id := range f.order {
		out = append(out, f.faults[id].status())
	}
	return out
}

// setWriter routes Modbus writes of the device's writable points (template
// points with a write block) to its model's setpoints (model.Setter), so a
// command changes what the model does; the new value shows at once on
// both fronts. Values the model refuses answer exception 3 (illegal data
// value).
func (f *Fleet) setWriter(d *device) {
	if _, ok := d.model.(model.Setter); !ok || d.rmap == nil {
		return
	}
	d.mb.SetWriter(func(addr uint16, vals []uint16) modbusfront.Exception {
		idx, v, ok := d.rmap.Decode(regmap.Holding, addr, vals)
		if !ok {
			return modbusfront.IllegalDataAddress
		}
		if err := f.setpoint(d, d.model.Signals()[idx], v); err != nil {
			return modbusfront.IllegalDataValue
		}
		return 0
	})
}

// setpoint applies a write to the device's model and republishes the
// device on every front.
func (f *Fleet) setpoint(d *device, sig string, v float64) error {
	st, ok := d.model.(model.Setter)
	if !ok {
		return model.ErrNotSettable
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := st.Set(sig, v); err != nil {
		d.log.Info("simulated device refused a write", "signal", sig, "value", v, "err", err)
		return err
	}
	d.log.Info("simulated setpoint written", "signal", sig, "value", v)
	f.republishLocked(d)
	return nil
}

// Writes returns how many Modbus write requests device id received
// (applied or refused), and false for an unknown device.
func (f *Fleet) Writes(id string) (int64, bool) {
	f.mu.Lock()
	d := f.byID[id]
	f.mu.Unlock()
	if d == nil {
		return 0, false
	}
	return d.mb.Writes(), true
}

// UAWrites returns how many node writes and method calls the fleet's OPC
// UA servers received (applied or refused).
func (f *Fleet) UAWrites() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n uint64
	for _, s := range f.servers {
		n += s.front.Writes() + s.front.Calls()
	}
	return n
}

package fleet

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/modbusfront"
	"github.com/smelterio/smelter/simulators/model"
	"github.com/smelterio/smelter/simulators/regmap"
)

// Fault states.
const (
	statePending = "pending"
	stateActive  = "active"
	stateEnded   = "ended"
)

// faultRun is one fault's life in the fleet.
type faultRun struct {
	spec       faults.Spec
	dev        *device
	onset, end time.Time // end zero = until cleared
	state      string
	signal     int // sensor faults: index of the signal
	sensor     *faults.SignalFault
	exc        modbusfront.ExceptionRange // exception faults
	uaCode     uint32                     // ua_status faults
	nextDrop   time.Time
	wake       chan struct{} // silent faults: closed when the silence ends
}

func (fr *faultRun) status() FaultStatus {
	return FaultStatus{Spec: fr.spec, State: fr.state, Onset: fr.onset, End: fr.end}
}

// InjectFault adds a fault at run time. Its onset is now + spec.At
// (simulated); with a Duration it ends by itself, else at ClearFault. An
// empty ID gets f1, f2, ...
func (f *Fleet) InjectFault(spec faults.Spec) (FaultStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		return FaultStatus{}, errors.New("fleet: not started")
	}
	if spec.ID == "" {
		for {
			f.nextID++
			spec.ID = fmt.Sprintf("f%d", f.nextID)
			if _, used := f.faults[spec.ID]; !used {
				break
			}
		}
	}
	fr, err := f.addFaultLocked(spec, f.now.Add(spec.At.D()))
	if err != nil {
		return FaultStatus{}, err
	}
	f.applyScheduleLocked()
	if fr.state == stateActive || fr.state == stateEnded {
		// make the effect visible at once
		f.republishLocked(fr.dev)
	}
	f.log.Info("fault injected", "id", spec.ID, "device", spec.Device, "kind", spec.Kind, "signal", spec.Signal)
	return fr.status(), nil
}

// ClearFault ends and forgets a fault (scripted or injected).
func (f *Fleet) ClearFault(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr, ok := f.faults[id]
	if !ok {
		return fmt.Errorf("fleet: no fault %q", id)
	}
	delete(f.faults, id)
	f.order = slices.DeleteFunc(f.order, func(s string) bool { return s == id })
	if fr.state == stateActive {
		f.deactivateLocked(fr)
		f.republishLocked(fr.dev)
	}
	f.met.faults.Set(float64(f.activeCount()))
	f.log.Info("fault cleared", "id", id, "device", fr.spec.Device)
	return nil
}

// Faults lists every fault known to the fleet in creation order.
func (f *Fleet) Faults() []FaultStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sortedFaults()
}

func (f *Fleet) activeCount() int {
	n := 0
	for _, fr := range f.faults {
		if fr.state == stateActive {
			n++
		}
	}
	return n
}

// addFaultLocked validates a fault against its device and schedules it.
func (f *Fleet) addFaultLocked(spec faults.Spec, onset time.Time) (*faultRun, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	if _, dup := f.faults[spec.ID]; dup {
		return nil, fmt.Errorf("fault: id: %q already exists", spec.ID)
	}
	d, ok := f.byID[spec.Device]
	if !ok {
		return nil, fmt.Errorf("fault: device: unknown device %q", spec.Device)
	}
	fr := &faultRun{spec: spec, dev: d, onset: onset, state: statePending, signal: -1}
	if spec.Duration > 0 {
		fr.end = onset.Add(spec.Duration.D())
	}
	switch faults.ClassOf(spec.Kind) {
	case faults.SensorFault:
		fr.signal = slices.Index(d.model.Signals(), spec.Signal)
		if fr.signal < 0 {
			return nil, fmt.Errorf("fault: signal: %s (%s) has no signal %q", d.id, d.class, spec.Signal)
		}
	case faults.Degradation:
		limit, ok := d.model.Degradations()[string(spec.Kind)]
		if !ok {
			kinds := make([]string, 0)
			for k := range d.model.Degradations() {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds)
			return nil, fmt.Errorf("fault: kind: %q is not a fault kind, nor a degradation of %s (%s): want stuck, drift, spike, noise, exception, slow, drop, silent, ua_status or one of %v",
				spec.Kind, d.id, d.class, kinds)
		}
		if spec.Level > limit {
			return nil, fmt.Errorf("fault: level: %v above the %s limit %v", spec.Level, spec.Kind, limit)
		}
	case faults.ProtocolFault:
		if err := checkFront(spec, d.lst != nil, d.ua != nil, d.nmCfg != nil); err != nil {
			return nil, fmt.Errorf("fault: %w", err)
		}
		if spec.Kind == faults.UAStatus {
			fr.uaCode, _ = statusCode(spec) // checked by checkFront
			if spec.Signal != "" {
				fr.signal = slices.Index(d.model.Signals(), spec.Signal)
				if fr.signal < 0 {
					return nil, fmt.Errorf("fault: signal: %s (%s) has no signal %q", d.id, d.class, spec.Signal)
				}
			}
		}
		if spec.Kind == faults.Exception {
			code, ok := modbusfront.ParseException(spec.Code)
			if !ok {
				return nil, fmt.Errorf("fault: code: %d not one the front can send (1-6, 8, 10, 11)", spec.Code)
			}
			r := modbusfront.ExceptionRange{Code: code}
			if spec.Signal != "" {
				t, a, n, ok := d.rmap.Registers(spec.Signal)
				if !ok {
					return nil, fmt.Errorf("fault: signal: %s's register map has no point for %q", d.id, spec.Signal)
				}
				r.Table, r.From, r.To = t, int(a), int(a)+n
			} else {
				t := regmap.Holding
				if spec.Table != "" {
					var err error
					if t, err = regmap.ParseTable(spec.Table); err != nil {
						return nil, fmt.Errorf("fault: table: %w", err)
					}
				}
				n := max(spec.Count, 1)
				r.Table, r.From, r.To = t, *spec.Address, *spec.Address+n
			}
			fr.exc = r
		}
	}
	f.faults[spec.ID] = fr
	f.order = append(f.order, spec.ID)
	return fr, nil
}

// applyScheduleLocked starts and ends faults due at the current time.
func (f *Fleet) applyScheduleLocked() {
	changed := false
	for _, id := range f.order {
		fr := f.faults[id]
		if fr.state == statePending && !fr.onset.After(f.now) {
			f.activateLocked(fr)
			changed = true
		}
		if fr.state == stateActive && !fr.end.IsZero() && !fr.end.After(f.now) {
			f.deactivateLocked(fr)
			changed = true
		}
		if fr.state == stateActive && fr.spec.Kind == faults.Drop && fr.spec.Every > 0 && !f.now.Before(fr.nextDrop) {
			f.dropLocked(fr.dev, &fr.spec)
			fr.nextDrop = fr.nextDrop.Add(fr.spec.Every.D())
		}
	}
	if changed {
		f.met.faults.Set(float64(f.activeCount()))
	}
}

func (f *Fleet) activateLocked(fr *faultRun) {
	fr.state = stateActive
	d := fr.dev
	switch faults.ClassOf(fr.spec.Kind) {
	case faults.SensorFault:
		fr.sensor = faults.NewSignalFault(fr.spec, f.now, model.NewRand(f.cfg.Seed, "fault/"+fr.spec.ID))
		d.sensors = append(d.sensors, fr)
	case faults.Degradation:
		if err := d.model.Degrade(string(fr.spec.Kind), fr.spec.Level); err != nil {
			d.log.Error("degradation refused", "fault", fr.spec.ID, "err", err)
		}
	case faults.ProtocolFault:
		switch fr.spec.Kind {
		case faults.Drop:
			f.dropLocked(d, &fr.spec)
			if fr.spec.Every > 0 {
				fr.nextDrop = f.now.Add(fr.spec.Every.D())
			} else if fr.spec.Duration == 0 {
				fr.state = stateEnded // one-shot
			}
		case faults.Silent:
			fr.wake = make(chan struct{})
		}
		f.rebuildProtoLocked(d)
		f.applyUALocked(d)
	}
	d.log.Info("fault active", "fault", fr.spec.ID, "kind", fr.spec.Kind, "signal", fr.spec.Signal)
}

func (f *Fleet) deactivateLocked(fr *faultRun) {
	fr.state = stateEnded
	d := fr.dev
	switch faults.ClassOf(fr.spec.Kind) {
	case faults.SensorFault:
		d.sensors = slices.DeleteFunc(d.sensors, func(x *faultRun) bool { return x == fr })
	case faults.Degradation:
		_ = d.model.Degrade(string(fr.spec.Kind), 0)
	case faults.ProtocolFault:
		f.rebuildProtoLocked(d)
		f.applyUALocked(d)
		if fr.spec.Kind == faults.Silent {
			close(fr.wake)
			// the device comes back as after a reboot: stale requests are gone
			if d.lst != nil && fr.spec.On(faults.FrontModbus) {
				d.lst.DropConnections()
			}
			if d.ua != nil && d.ua.dedicated() && fr.spec.On(faults.FrontOPCUA) && !f.silentLocked(d) && !f.closed {
				// its own OPC UA server restarts on the same port: sessions are gone too
				if err := d.ua.front.Restart(f.stop); err != nil {
					d.log.Error("opc ua server restart after silence", "err", err)
				}
			}
		}
	}
	d.log.Info("fault ended", "fault", fr.spec.ID, "kind", fr.spec.Kind)
}

// dropLocked closes every connection of the device's Modbus port, NMEA
// talker and OPC UA server when the server is its own (only the fault's
// front when it names one). A shared OPC UA
// server (an aggregating server serving several assets) keeps its
// sessions: a fault on one asset affects only that asset.
func (f *Fleet) dropLocked(d *device, spec *faults.Spec) {
	if d.lst != nil && spec.On(faults.FrontModbus) {
		d.lst.DropConnections()
	}
	if d.ua != nil && d.ua.dedicated() && spec.On(faults.FrontOPCUA) {
		d.ua.front.DropConnections()
	}
	if d.nm != nil && spec.On(faults.FrontNMEA) {
		d.nm.DropConnections()
	}
	f.met.drops.Inc()
}

// silentLocked reports whether another silent fault of d is still active.
func (f *Fleet) silentLocked(d *device) bool {
	for _, id := range f.order {
		if fr := f.faults[id]; fr.dev == d && fr.state == stateActive && fr.spec.Kind == faults.Silent {
			return true
		}
	}
	return false
}

// rebuildProtoLocked recomputes a device's protocol fault snapshot.
func (f *Fleet) rebuildProtoLocked(d *device) {
	var ps modbusfront.Faults
	nmSilent := false
	any := false
	for _, id := range f.order {
		fr := f.faults[id]
		if fr.dev != d || fr.state != stateActive {
			continue
		}
		switch fr.spec.Kind {
		case faults.Slow:
			ps.Delay = max(ps.Delay, fr.spec.Delay.D())
			any = true
		case faults.Silent:
			if fr.spec.On(faults.FrontNMEA) {
				nmSilent = true
			}
			if !fr.spec.On(faults.FrontModbus) {
				break
			}
			if ps.Silent == nil {
				ps.Silent = fr.wake
			}
			any = true
		case faults.Exception:
			ps.Exceptions = append(ps.Exceptions, fr.exc)
			any = true
		}
	}
	if any {
		d.mb.SetFaults(&ps)
	} else {
		d.mb.SetFaults(nil)
	}
	if d.nm != nil {
		d.nm.SetSilent(nmSilent) // the NMEA talker falls quiet too
	}
}

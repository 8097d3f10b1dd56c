// Package faults describes the faults a simulated device can suffer — sensor
// faults on a signal, efficiency degradations of the equipment, and protocol
// faults of its Modbus and OPC UA fronts — and schedules them from scenario files.
//
// A Spec is plain data (YAML in scenario files, JSON in the control API).
// Sensor faults are applied to a model's output by SignalFault; degradations
// are forwarded to the model (model.Model.Degrade); protocol faults are
// enforced by the protocol front. Times in a Spec are simulated time, except
// Delay (slow responses), which is wall-clock time on the wire.
package faults

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/confload"
)

// Kind names a fault.
type Kind string

// Sensor faults (need Signal).
const (
	Stuck Kind = "stuck" // value frozen (at Value, or the value at onset)
	Drift Kind = "drift" // offset growing by Rate per simulated hour
	Spike Kind = "spike" // Magnitude added for Width every Every (or with Probability per step)
	Noise Kind = "noise" // gaussian noise of deviation Sigma
)

// Protocol faults.
const (
	Exception Kind = "exception" // Modbus exception Code on Signal's registers or Table/Address/Count
	Slow      Kind = "slow"      // every response delayed by Delay (wall clock)
	Drop      Kind = "drop"      // connections closed at onset, and every Every while active
	Silent    Kind = "silent"    // no responses while active; connections reset when it ends
	UAStatus  Kind = "ua_status" // OPC UA StatusCode Code (or Status, a name) on Signal's node, or on every node of the device
)

// Class groups kinds by where they act.
type Class int

// Fault classes.
const (
	SensorFault Class = iota
	ProtocolFault
	Degradation // any other kind: forwarded to the model
)

// ClassOf returns where a kind acts.
func ClassOf(k Kind) Class {
	switch k {
	case Stuck, Drift, Spike, Noise:
		return SensorFault
	case Exception, Slow, Drop, Silent, UAStatus:
		return ProtocolFault
	}
	return Degradation
}

// Duration is a time.Duration written as "90s", "1h30m" in YAML and JSON.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var f float64
		if err2 := json.Unmarshal(b, &f); err2 != nil {
			return fmt.Errorf("duration: want a string like \"90s\" or seconds, got %s", b)
		}
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML accepts "1m30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: %w", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// Want says what a Duration field takes, for confload's errors.
func (Duration) Want() string { return confload.WantDuration }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Spec describes one fault.
type Spec struct {
	ID       string   `json:"id,omitempty" yaml:"id"`
	Device   string   `json:"device" yaml:"device"`
	Kind     Kind     `json:"kind" yaml:"kind"`
	Signal   string   `json:"signal,omitempty" yaml:"signal"`
	At       Duration `json:"at,omitempty" yaml:"at"`             // onset: scenario = after simulated start; API = after now
	Duration Duration `json:"duration,omitempty" yaml:"duration"` // 0 = until cleared

	Value       *float64 `json:"value,omitempty" yaml:"value"`             // stuck
	Rate        float64  `json:"rate,omitempty" yaml:"rate"`               // drift, canonical units per hour
	Magnitude   float64  `json:"magnitude,omitempty" yaml:"magnitude"`     // spike, canonical units
	Every       Duration `json:"every,omitempty" yaml:"every"`             // spike period; drop repeat period
	Width       Duration `json:"width,omitempty" yaml:"width"`             // spike width (default 5s)
	Probability float64  `json:"probability,omitempty" yaml:"probability"` // spike chance per step (instead of Every)
	Sigma       float64  `json:"sigma,omitempty" yaml:"sigma"`             // noise, canonical units
	Level       float64  `json:"level,omitempty" yaml:"level"`             // degradations
	Delay       Duration `json:"delay,omitempty" yaml:"delay"`             // slow, wall clock
	Code        int      `json:"code,omitempty" yaml:"code"`               // exception code (default 2); ua_status: StatusCode (0x808C0000)
	Status      string   `json:"status,omitempty" yaml:"status"`           // ua_status: StatusCode name (BadSensorFailure) instead of code
	Table       string   `json:"table,omitempty" yaml:"table"`             // exception target
	Address     *int     `json:"address,omitempty" yaml:"address"`         // exception target
	Count       int      `json:"count,omitempty" yaml:"count"`             // exception target (default 1)
	// Front limits a silent or drop fault to one of the device's fronts:
	// modbus, opcua or nmea ("" = every front of the device).
	Front string `json:"front,omitempty" yaml:"front"`
}

// Fronts a silent or drop fault may be limited to (Spec.Front).
const (
	FrontModbus = "modbus"
	FrontOPCUA  = "opcua"
	FrontNMEA   = "nmea"
)

// On reports whether the fault acts on the named front.
func (s *Spec) On(front string) bool { return s.Front == "" || s.Front == front }

// Validate checks the fields every kind needs. Whether the device, signal
// and degradation exist is checked by the fleet, which knows them.
func (s *Spec) Validate() error {
	if s.Device == "" {
		return fmt.Errorf("device: required")
	}
	if s.Kind == "" {
		return fmt.Errorf("kind: required")
	}
	if s.At < 0 || s.Duration < 0 {
		return fmt.Errorf("at/duration: must not be negative")
	}
	bad := func(field, reason string) error { return fmt.Errorf("%s: %s for a %s fault", field, reason, s.Kind) }
	if s.Front != "" {
		if s.Kind != Silent && s.Kind != Drop {
			return bad("front", "not allowed (only silent and drop faults take a front)")
		}
		if s.Front != FrontModbus && s.Front != FrontOPCUA && s.Front != FrontNMEA {
			return bad("front", fmt.Sprintf("%q is not modbus, opcua or nmea", s.Front))
		}
	}
	if ClassOf(s.Kind) == SensorFault && s.Signal == "" {
		return bad("signal", "required")
	}
	switch s.Kind {
	case Drift:
		if s.Rate == 0 || math.IsNaN(s.Rate) {
			return bad("rate", "required (canonical units per hour, non-zero)")
		}
	case Spike:
		if s.Magnitude == 0 {
			return bad("magnitude", "required (non-zero)")
		}
		if s.Probability < 0 || s.Probability > 1 {
			return bad("probability", "must be within [0, 1]")
		}
		if s.Every < 0 || s.Width < 0 {
			return bad("every/width", "must not be negative")
		}
	case Noise:
		if s.Sigma <= 0 {
			return bad("sigma", "required (positive)")
		}
	case Slow:
		if s.Delay <= 0 || s.Delay > Duration(time.Minute) {
			return bad("delay", "required, within (0, 1m]")
		}
	case Exception:
		if s.Code == 0 {
			s.Code = 2
		}
		if s.Code < 1 || s.Code > 255 {
			return bad("code", "must be a Modbus exception code 1..255")
		}
		if s.Signal == "" && s.Address == nil {
			return bad("signal", "or table/address required")
		}
		if s.Address != nil && (*s.Address < 0 || *s.Address > 65535) {
			return bad("address", "must be within 0..65535")
		}
		if s.Count < 0 || s.Count > 125 {
			return bad("count", "must be within 0..125")
		}
	case UAStatus:
		if (s.Code == 0) == (s.Status == "") {
			return bad("code", "or status required (one of them): an OPC UA StatusCode such as 0x808C0000 or a name such as BadSensorFailure")
		}
		if s.Code != 0 && (s.Code < 0 || int64(s.Code) > math.MaxUint32 || (s.Code>>30 != 1 && s.Code>>30 != 2)) {
			return bad("code", fmt.Sprintf("0x%X is not a Bad (0x8...) or Uncertain (0x4...) OPC UA StatusCode", s.Code))
		}
	case Drop:
		if s.Every < 0 {
			return bad("every", "must not be negative")
		}
	case Stuck, Silent:
	default:
		if s.Level <= 0 {
			return bad("level", "required (positive)")
		}
	}
	return nil
}

// Scenario is a scripted set of faults.
type Scenario struct {
	Name   string `yaml:"scenario"`
	Faults []Spec `yaml:"faults"`
}

// ParseScenario decodes a scenario document strictly (unknown fields
// rejected); name is used in errors, which are confload errors
// ("file:line: field: reason"). Fault ids default to s1, s2, ... in file
// order.
func ParseScenario(name string, data []byte) (*Scenario, error) {
	var sc Scenario
	doc, err := confload.Decode(name, data, &sc)
	if err != nil {
		return nil, err
	}
	return checkScenario(doc, &sc)
}

// LoadScenario reads and parses a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	var sc Scenario
	doc, err := confload.ReadFile(path, &sc)
	if err != nil {
		return nil, err
	}
	return checkScenario(doc, &sc)
}

// checkScenario gives faults their default ids and validates each one; an
// error carries the line of the fault in the file.
func checkScenario(doc *confload.Doc, sc *Scenario) (*Scenario, error) {
	seen := map[string]bool{}
	for i := range sc.Faults {
		f := &sc.Faults[i]
		if f.ID == "" {
			f.ID = fmt.Sprintf("s%d", i+1)
		}
		if seen[f.ID] {
			return nil, doc.Errorf(fmt.Sprintf("faults[%d].id", i), "%q used twice", f.ID)
		}
		seen[f.ID] = true
		if err := f.Validate(); err != nil {
			// the field is the fault and its id (the id the control API and
			// the logs use); Validate's message names the fault's own field
			return nil, &confload.FieldError{File: doc.File, Line: doc.Line(fmt.Sprintf("faults[%d]", i)),
				Field: fmt.Sprintf("faults[%d] (%s)", i, f.ID), Reason: err.Error()}
		}
	}
	return sc, nil
}

// SignalFault applies one sensor fault to a value stream.
type SignalFault struct {
	spec    Spec
	onset   time.Time
	stuck   float64
	started bool
	rng     *rand.Rand
	spikeTo time.Time
}

// NewSignalFault prepares a sensor fault that begins at onset; rng drives
// noise and random spikes.
func NewSignalFault(s Spec, onset time.Time, rng *rand.Rand) *SignalFault {
	return &SignalFault{spec: s, onset: onset, rng: rng}
}

// Apply returns the faulty reading of the true value v at simulated time now.
func (f *SignalFault) Apply(now time.Time, v float64) float64 {
	s := &f.spec
	switch s.Kind {
	case Stuck:
		if !f.started {
			f.started = true
			f.stuck = v
			if s.Value != nil {
				f.stuck = *s.Value
			}
		}
		return f.stuck
	case Drift:
		return v + s.Rate*now.Sub(f.onset).Hours()
	case Noise:
		return v + s.Sigma*f.rng.NormFloat64()
	case Spike:
		width := s.Width.D()
		if width <= 0 {
			width = 5 * time.Second
		}
		if s.Probability > 0 {
			if !now.Before(f.spikeTo) && f.rng.Float64() < s.Probability {
				f.spikeTo = now.Add(width)
			}
			if now.Before(f.spikeTo) {
				return v + s.Magnitude
			}
			return v
		}
		every := s.Every.D()
		if every <= 0 {
			every = 5 * time.Minute
		}
		if now.Sub(f.onset)%every < width {
			return v + s.Magnitude
		}
	}
	return v
}

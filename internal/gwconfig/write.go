package gwconfig

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/telemetry"
)

// WriteFile is a point's write block: the point is writable by commands
// (docs/commands.md) only when it has one, and only within it. Limits are
// in the signal's canonical unit (the catalog's), whatever unit the device
// uses.
type WriteFile struct {
	// Min, Max: the range a command may set (canonical units); both
	// required on a numeric signal.
	Min *float64 `yaml:"min,omitempty"`
	Max *float64 `yaml:"max,omitempty"`
	// Allowed: the state labels a command may set on a state signal
	// (required there; numeric signals take min/max instead).
	Allowed []string `yaml:"allowed,omitempty"`
	// MaxStep: the largest change one command may make from the value read
	// just before writing (canonical units; 0: no limit).
	MaxStep float64 `yaml:"max_step,omitempty"`
	// MinInterval: the least time between two writes of the point (0: no
	// limit).
	MinInterval time.Duration `yaml:"min_interval,omitempty"`
	// Method: a command calls this OPC UA method instead of writing the
	// point's node (OPC UA points only; the driver checks the node ids).
	Method *MethodFile `yaml:"method,omitempty"`
}

// MethodFile is an OPC UA method a command calls (docs/commands.md, "OPC
// UA method calls").
type MethodFile struct {
	Object string `yaml:"object"` // node id of the object the method is called on
	Method string `yaml:"method"` // node id of the method
	// Argument: value (default), the command's value is the method's one
	// input argument; none, the method takes no argument and the command
	// only triggers it (an action such as a fault acknowledgement).
	Argument string `yaml:"argument,omitempty"`
}

// Write is a compiled write block (Device.Writes[i] for point i; nil when
// the point is not writable).
type Write struct {
	Min, Max    float64  // canonical units (numeric signals)
	Allowed     []string // state labels (state signals)
	States      []string // the signal's state labels, index = value (state signals)
	MaxStep     float64
	MinInterval time.Duration
}

// Limits returns the write block as births carry it (nil for nil: the
// point is not writable).
func (w *Write) Limits() *telemetry.WriteLimits {
	if w == nil {
		return nil
	}
	l := &telemetry.WriteLimits{Allowed: w.Allowed, MaxStep: w.MaxStep, MinIntervalMS: w.MinInterval.Milliseconds()}
	if len(w.States) == 0 {
		lo, hi := w.Min, w.Max
		l.Min, l.Max = &lo, &hi
	}
	return l
}

// compileWrite checks a point's write block against its signal: a numeric
// signal needs min <= max (finite), a state signal allowed labels among
// its states. text: the point reads text, which no command writes;
// methods: the driver calls methods (write.method).
func compileWrite(w *WriteFile, states []string, text, methods bool, bad func(sub, format string, args ...any)) *Write {
	out := &Write{MaxStep: w.MaxStep, MinInterval: w.MinInterval, States: states}
	ok := true
	fail := func(sub, format string, args ...any) {
		bad(confload.Join("write", sub), format, args...)
		ok = false
	}
	if text {
		fail("", "a text point cannot be written")
		return nil
	}
	if w.Method != nil && !methods {
		fail("method", "only OPC UA points call methods")
	}
	if w.MaxStep < 0 || math.IsNaN(w.MaxStep) {
		fail("max_step", "%v must be zero (no limit) or positive", w.MaxStep)
	}
	if w.MinInterval < 0 {
		fail("min_interval", "%v is negative", w.MinInterval)
	}
	if len(states) > 0 {
		if w.Min != nil || w.Max != nil {
			fail("min", "a state signal takes allowed states, not min/max")
		}
		if len(w.Allowed) == 0 {
			fail("allowed", "missing: the states a command may set (of %v)", states)
		}
		for i, a := range w.Allowed {
			if !slices.Contains(states, a) {
				fail(fmt.Sprintf("allowed[%d]", i), "%q is not a state of the signal (%v)", a, states)
			}
		}
		out.Allowed = w.Allowed
	} else {
		if len(w.Allowed) > 0 {
			fail("allowed", "a numeric signal takes min and max, not allowed states")
		}
		switch {
		case w.Min == nil:
			fail("min", "missing: the lowest value a command may set, in the signal's canonical unit")
		case w.Max == nil:
			fail("max", "missing: the highest value a command may set, in the signal's canonical unit")
		case math.IsNaN(*w.Min) || math.IsInf(*w.Min, 0) || math.IsNaN(*w.Max) || math.IsInf(*w.Max, 0):
			fail("min", "min %v and max %v must be finite", *w.Min, *w.Max)
		case *w.Min > *w.Max:
			fail("min", "%v above max %v", *w.Min, *w.Max)
		default:
			out.Min, out.Max = *w.Min, *w.Max
		}
	}
	if !ok {
		return nil
	}
	return out
}

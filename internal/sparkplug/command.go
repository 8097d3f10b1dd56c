package sparkplug

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/smelterio/smelter/internal/sparkplug/sppb"
)

// MetricCommand is the String metric of a DCMD that carries a signed
// Smelter command: its value is the command's JSON (schema
// smelter.command/1, docs/commands.md, "Sparkplug DCMD"), checked by the
// gateway exactly like a command on NATS.
const MetricCommand = "smelter/command"

// ErrCommand: a DCMD that is neither a plain Sparkplug write nor a
// well-formed smelter/command metric.
var ErrCommand = errors.New("sparkplug: malformed DCMD")

// DeviceCommand is what one DCMD payload asks of a device.
type DeviceCommand struct {
	// Signed is the value of the MetricCommand metric (the command's
	// JSON), nil for a plain DCMD.
	Signed []byte
	// Plain lists a plain DCMD's writes as "name=value" (a metric sent by
	// alias as "alias <n>=value"), for the audit; a plain DCMD carries no
	// signature, so the gateway refuses it.
	Plain []string
}

// ParseDeviceCommand decodes a DCMD payload. A payload whose metrics
// include MetricCommand must hold it alone, as a String that is not null;
// any other payload is a plain DCMD. Errors wrap ErrPayload (the protobuf)
// or ErrCommand.
func ParseDeviceCommand(data []byte) (DeviceCommand, error) {
	p, err := Decode(data)
	if err != nil {
		return DeviceCommand{}, err
	}
	var dc DeviceCommand
	for _, m := range p.Metrics {
		if m.GetName() == MetricCommand {
			s, ok := m.Value.(*sppb.Payload_Metric_StringValue)
			switch {
			case len(p.Metrics) != 1:
				return DeviceCommand{}, fmt.Errorf("%w: metric %s must be the DCMD's only metric (it has %d)", ErrCommand, MetricCommand, len(p.Metrics))
			case !ok || m.GetIsNull():
				return DeviceCommand{}, fmt.Errorf("%w: metric %s must be a String holding the signed command's JSON", ErrCommand, MetricCommand)
			}
			dc.Signed = []byte(s.StringValue)
			return dc, nil
		}
		name := m.GetName()
		if name == "" {
			name = "alias " + strconv.FormatUint(m.GetAlias(), 10)
		}
		dc.Plain = append(dc.Plain, name+"="+metricText(m))
	}
	if len(dc.Plain) == 0 {
		return DeviceCommand{}, fmt.Errorf("%w: no metrics", ErrCommand)
	}
	return dc, nil
}

// metricText formats a metric's value for the audit (at most 64 bytes of
// a string).
func metricText(m *sppb.Payload_Metric) string {
	if v, ok := MetricNumber(m); ok {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if s, ok := m.Value.(*sppb.Payload_Metric_StringValue); ok && !m.GetIsNull() {
		t := s.StringValue
		if len(t) > 64 {
			t = strings.ToValidUTF8(t[:64], "") + "..."
		}
		return strconv.Quote(t)
	}
	return "null"
}

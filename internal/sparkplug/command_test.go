package sparkplug

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/sparkplug/sppb"
)

func TestParseDeviceCommand(t *testing.T) {
	str := func(name, v string) *sppb.Payload_Metric {
		return &sppb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(sppb.DataType_String)),
			Value: &sppb.Payload_Metric_StringValue{StringValue: v}}
	}
	dbl := func(name string, v float64) *sppb.Payload_Metric {
		return &sppb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(sppb.DataType_Double)),
			Value: &sppb.Payload_Metric_DoubleValue{DoubleValue: v}}
	}
	enc := func(ms ...*sppb.Payload_Metric) []byte {
		b, err := Encode(&sppb.Payload{Timestamp: proto.Uint64(1), Metrics: ms})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	byAlias := &sppb.Payload_Metric{Alias: proto.Uint64(7), Datatype: proto.Uint32(uint32(sppb.DataType_Boolean)),
		Value: &sppb.Payload_Metric_BooleanValue{BooleanValue: true}}
	cases := []struct {
		name    string
		data    []byte
		signed  string
		plain   []string
		wantErr error
	}{
		{"signed", enc(str(MetricCommand, `{"schema":"smelter.command/1"}`)), `{"schema":"smelter.command/1"}`, nil, nil},
		{"plain", enc(dbl("unload_pressure_setpoint", 7.2), byAlias, str("note", "hi")), "",
			[]string{"unload_pressure_setpoint=7.2", "alias 7=1", `note="hi"`}, nil},
		{"command with another metric", enc(str(MetricCommand, "{}"), dbl("x", 1)), "", nil, ErrCommand},
		{"command not a string", enc(dbl(MetricCommand, 1)), "", nil, ErrCommand},
		{"no metrics", enc(), "", nil, ErrCommand},
		{"not protobuf", []byte{0xff, 0xff}, "", nil, ErrPayload},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dc, err := ParseDeviceCommand(tc.data)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(dc.Signed) != tc.signed || !slices.Equal(dc.Plain, tc.plain) {
				t.Fatalf("got signed %q plain %q", dc.Signed, dc.Plain)
			}
		})
	}
}

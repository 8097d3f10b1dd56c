package telemetry

import "testing"

func TestParseSentAt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1763812345123", 1763812345123, true},
		{"1", 1, true},
		{"", 0, false},
		{"0", 0, false},
		{"-1763812345123", 0, false},
		{"+1763812345123", 0, false},
		{" 1763812345123", 0, false},
		{"1763812345123.5", 0, false},
		{"1e12", 0, false},
		{"99999999999999999", 0, false}, // 17 digits
		{"9223372036854775808", 0, false},
	} {
		got, ok := ParseSentAt(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseSentAt(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := ParseSentAt(string(AppendSentAt(nil, 1763812345123))); !ok || got != 1763812345123 {
		t.Errorf("round trip: %d, %v", got, ok)
	}
}

func TestGatewayStamped(t *testing.T) {
	for src, want := range map[string]bool{
		"modbus:3:hr:40001":        true,
		"nmea:RMC":                 true,
		"opcua:ns=2;s=Boiler.Temp": false,
		"":                         false,
		"sparkplug:node/dev:temp":  false,
		"Modbus:3:hr:40001":        false,
		"modbusx":                  false,
	} {
		if got := GatewayStamped(src); got != want {
			t.Errorf("GatewayStamped(%q) = %v, want %v", src, got, want)
		}
	}
}

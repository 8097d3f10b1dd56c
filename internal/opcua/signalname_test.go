package opcua

import (
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A browse name longer than the schema's signal bound gives a name within
// it, so a generated configuration never publishes names a collector refuses.
func TestSignalNameBounded(t *testing.T) {
	for _, in := range []string{"DischargeTemp", strings.Repeat("VeryLongBrowseName", 20), strings.Repeat("a", 127) + "_b", "¿?"} {
		if got := signalName(in); !telemetry.ValidSignal(got) {
			t.Errorf("signalName(%q) = %q: not a valid signal name", in, got)
		}
	}
}

package rules

import (
	"testing"
	"unsafe"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// A signal keeps no view into the payload of the message its reading
// came in: the collector decodes JetStream messages in place
// (telemetry.DecodeBatchStringInto), and a text or unit kept as a view
// would keep that whole payload alive as long as the signal holds it.
func TestHeldStringsAreNoPayloadViews(t *testing.T) {
	set, err := Load(catalog.Default(), true)
	if err != nil {
		t.Fatal(err)
	}
	e := New(set, catalog.Default(), Options{Now: func() int64 { return 1763812400000 }})
	payload := `{"schema":"smelter.telemetry/1","gateway":"gw-1","seq":1,"ts_gw":1763812400000,"asset":{"id":"ac-1","class":"air_compressor","path":["acme","site1","_","_","_"]},` +
		`"readings":[{"signal":"program","text":"P-4711 roughing","quality":"good","ts":1763812400000},` +
		`{"signal":"vendor_temp","value":71.5,"unit":"K","quality":"good","ts":1763812400000}]}`
	var b telemetry.Batch
	if err := telemetry.DecodeBatchStringInto(&b, payload); err != nil {
		t.Fatal(err)
	}
	within := func(s string) bool {
		p, lo := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(payload)))
		return len(s) > 0 && p >= lo && p < lo+uintptr(len(payload))
	}
	if !within(b.Readings[0].Text) {
		t.Fatal("the decoder copied the text: this test no longer shows the case")
	}
	e.Process(&b, 1763812400000, nil)
	v, ok := e.Asset("site1", "ac-1")
	if !ok {
		t.Fatal("asset not tracked")
	}
	seen := 0
	for _, s := range v.Signals {
		switch s.Signal {
		case "program":
			seen++
			if s.Text != "P-4711 roughing" || within(s.Text) {
				t.Errorf("text %q held as a view into the payload: %v", s.Text, within(s.Text))
			}
		case "vendor_temp":
			seen++
			if s.Unit != "K" || within(s.Unit) {
				t.Errorf("unit %q held as a view into the payload: %v", s.Unit, within(s.Unit))
			}
		}
	}
	if seen != 2 {
		t.Fatalf("signals %+v", v.Signals)
	}
}

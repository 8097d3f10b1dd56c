package opcua

import (
	"strings"
	"testing"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/opcua/uaunits"
)

// TestSetEU: what a node's EngineeringUnits value means (review1 sec. 2).
// No EngineeringUnits (the catalog unit) only when the server says the
// property is not there (BadNoMatch, BadAttributeIdInvalid) or its value is
// Null; an unknown code (-1 is Part 8's "not available") falls back to the
// DisplayName; anything else present but unusable is Err, never "none".
func TestSetEU(t *testing.T) {
	eu := func(ns string, id int32, display string) *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(ua.NewExtensionObject(&ua.EUInformation{
			NamespaceURI: ns, UnitID: id, DisplayName: &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: display}, Description: &ua.LocalizedText{}}))}
	}
	val := func(v any) *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(v)}
	}
	status := func(code ua.StatusCode) *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueStatusCode, Status: code}
	}
	const cefact = uaunits.NamespaceURI
	for _, tc := range []struct {
		name    string
		dv      *ua.DataValue
		ucum    string // want UCUM
		noUnits string // want NoUnits ("": there are units)
		err     string // want Err containing it ("": none)
	}{
		{"KPA", eu(cefact, uaunits.UnitID("KPA"), "kPa"), "kPa", "", ""},
		{"code wins over display", eu(cefact, uaunits.UnitID("KPA"), "bar"), "kPa", "", ""},
		{"unitId -1 + bar", eu(cefact, -1, "bar"), "bar", "", ""},
		{"unitId -1 + bar, other namespace", eu("evil", -1, "bar"), "bar", "", ""},
		{"unknown code + bar", eu(cefact, 99999, "bar"), "bar", "", ""},
		{"unitId -1 + alias", eu(cefact, -1, "°C"), "Cel", "", ""},
		{"unitId -1 + unknown display", eu(cefact, -1, "furlong"), "", "", ""},
		{"unitId -1 + empty display", eu(cefact, -1, ""), "", "", ""},
		{"String", val("kPa"), "", "", "EngineeringUnits: a String, not an EUInformation"},
		{"Double", val(42.0), "", "", "EngineeringUnits: a Double, not an EUInformation"},
		{"String array", val([]string{"kPa"}), "", "", "a String array"},
		{"a Range", val(ua.NewExtensionObject(&ua.Range{Low: 0, High: 1})), "", "", "an ExtensionObject of type"},
		{"unknown structure", val(&ua.ExtensionObject{TypeID: ua.NewFourByteExpandedNodeID(0, 9999), EncodingMask: ua.ExtensionObjectBinary}),
			"", "", "an ExtensionObject of type i=9999, not an EUInformation"},
		{"Null", &ua.DataValue{EncodingMask: ua.DataValueValue, Value: &ua.Variant{}}, "", "EngineeringUnits is Null", ""},
		{"no value", &ua.DataValue{}, "", "EngineeringUnits is Null", ""},
		{"BadNoMatch", status(ua.StatusBadNoMatch), "", "EngineeringUnits read BadNoMatch", ""},
		{"BadAttributeIdInvalid", status(ua.StatusBadAttributeIDInvalid), "", "EngineeringUnits read BadAttributeIDInvalid", ""},
		{"BadNodeIdUnknown", status(ua.StatusBadNodeIDUnknown), "", "", "EngineeringUnits: read BadNodeIDUnknown"},
		{"BadInternalError", status(ua.StatusBadInternalError), "", "", "EngineeringUnits: read BadInternalError"},
		{"no result", nil, "", "", "EngineeringUnits: no result"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := nodeUnit(3)
			u.setEU(tc.dv)
			if u.UCUM != tc.ucum || u.NoUnits != tc.noUnits || (u.Err == nil) != (tc.err == "") || (u.Err != nil && !strings.Contains(u.Err.Error(), tc.err)) {
				t.Fatalf("%+v: want UCUM %q, NoUnits %q, Err %q", u, tc.ucum, tc.noUnits, tc.err)
			}
			d := u.driverUnit()
			if d.Absent != (tc.noUnits != "") {
				t.Fatalf("driver unit %+v: Absent want %v", d, tc.noUnits != "")
			}
			if tc.err != "" && !strings.HasPrefix(d.UnitText(), "unusable (") {
				t.Fatalf("UnitText %q", d.UnitText())
			}
		})
	}
}

// TestSetEUClipsTheDisplayName: a 100 kB DisplayName is kept (and logged)
// as 128 bytes and a mark; the match against UCUM uses it whole.
func TestSetEUClipsTheDisplayName(t *testing.T) {
	u := nodeUnit(0)
	long := strings.Repeat("x", 100000)
	u.setEU(&ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(ua.NewExtensionObject(&ua.EUInformation{
		NamespaceURI: uaunits.NamespaceURI, UnitID: 12345, DisplayName: &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: long}, Description: &ua.LocalizedText{}}))})
	if u.UCUM != "" || u.Err != nil || len(u.Display) > maxServerText+20 || !strings.HasSuffix(u.Display, "…(100000 bytes)") {
		t.Fatalf("display %d bytes %q..., UCUM %q, err %v", len(u.Display), u.Display[:min(len(u.Display), 20)], u.UCUM, u.Err)
	}
	if text := u.driverUnit().UnitText(); len(text) > 200 {
		t.Fatalf("UnitText is %d bytes", len(text))
	}
}

// TestSetRangeErrorKeepsTheUnit: an EURange that is there but not a Range
// is ignored (RangeErr); it neither hides the unit nor makes it unusable.
func TestSetRangeErrorKeepsTheUnit(t *testing.T) {
	u := nodeUnit(0)
	u.setEU(&ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(ua.NewExtensionObject(&ua.EUInformation{
		NamespaceURI: uaunits.NamespaceURI, UnitID: uaunits.UnitID("BAR"), DisplayName: &ua.LocalizedText{}, Description: &ua.LocalizedText{}}))})
	u.setRange(&ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant("0..320")})
	d := u.driverUnit()
	if d.Err != nil || d.Absent || d.UCUM != "bar" || d.HasRange || !strings.HasPrefix(d.RangeText(), "unusable (EURange") {
		t.Fatalf("%+v (range %s)", d, d.RangeText())
	}
}

// TestUnitChangeSaysWhatChanged: the change WARN names what changed and
// prints a range only when it changed (or is kept under a new unit).
func TestUnitChangeSaysWhatChanged(t *testing.T) {
	kpa := NodeUnit{UnitID: uaunits.UnitID("KPA"), UNECE: "KPA", UCUM: "kPa", Min: 0, Max: 320, HasRange: true}
	bar := kpa
	bar.UnitID, bar.UNECE, bar.UCUM = uaunits.UnitID("BAR"), "BAR", "bar"
	wider := kpa
	wider.Max = 400
	both := bar
	both.Max = 3.2
	renamed := kpa
	renamed.Display = "kilopascal"
	for _, tc := range []struct {
		name     string
		was, now NodeUnit
		want     string
	}{
		{"unit", kpa, bar, "changed=unit was=kPa now=bar range_kept=0..320"},
		{"range", kpa, wider, "changed=range range_was=0..320 range_now=0..400"},
		{"both", kpa, both, "changed=unit and range was=kPa now=bar range_was=0..320 range_now=0..3.2"},
		{"details", kpa, renamed, "changed=details"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := unitChange(tc.was, true, tc.now)
			var b strings.Builder
			for k := 0; k+1 < len(attrs); k += 2 {
				if k > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(attrs[k].(string) + "=" + attrs[k+1].(string))
			}
			if b.String() != tc.want {
				t.Fatalf("%s, want %s", b.String(), tc.want)
			}
		})
	}
}

// TestStatusErrorNamesTheCodeOnce: the "device answers with errors" line
// printed "StatusBadConfigurationError (0x80890000) (0x80890000)".
func TestStatusErrorNamesTheCodeOnce(t *testing.T) {
	got := (&StatusError{Index: 2, Status: ua.StatusCode(statusUnitUnknown)}).Error()
	if want := "opcua: point 2: status StatusBadConfigurationError (0x80890000)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := (&StatusError{Index: 0, Status: 0x80FF0000}).Error(); strings.Count(got, "0x80FF0000") != 1 {
		t.Fatalf("%q: the code twice", got)
	}
}

// Package uaunits maps between UCUM codes (Smelter's canonical units) and the
// UNECE Recommendation 20 common codes that OPC UA carries in EUInformation
// (namespace http://www.opcfoundation.org/UA/units/un/cefact). The UnitId of
// a code is its ASCII characters packed big-endian into an int32: CEL is
// 0x43454C = 4408652.
package uaunits

// NamespaceURI is the EUInformation namespace of UNECE codes.
const NamespaceURI = "http://www.opcfoundation.org/UA/units/un/cefact"

// pair is one row of the table: a UCUM code and its UNECE common code.
type pair struct {
	ucum, unece string
}

// table holds the catalog's units and the common device units around them.
// The first row for a UCUM code is the one UNECECode returns; several UNECE
// codes may map to one UCUM code (RPM and C94 are both "/min").
var table = []pair{
	{"Cel", "CEL"}, {"K", "KEL"}, {"[degF]", "FAH"},
	{"Pa", "PAL"}, {"hPa", "A97"}, {"kPa", "KPA"}, {"MPa", "MPA"}, {"bar", "BAR"}, {"mbar", "MBR"}, {"[psi]", "PS"},
	{"W", "WTT"}, {"kW", "KWT"}, {"MW", "MAW"}, {"kV.A", "KVA"}, {"V.A", "D46"},
	{"J", "JOU"}, {"kJ", "KJO"}, {"MJ", "3B"}, {"W.h", "WHR"}, {"kW.h", "KWH"}, {"MW.h", "MWH"},
	{"m3/s", "MQS"}, {"m3/min", "G53"}, {"m3/h", "MQH"}, {"L/s", "G51"}, {"L/min", "L2"}, {"L/h", "E32"},
	{"kg/s", "KGS"}, {"kg/h", "E93"}, {"t/h", "E18"}, {"kg/min", "F31"},
	{"1", "C62"}, {"%", "P1"}, {"[ppm]", "59"},
	{"m", "MTR"}, {"cm", "CMT"}, {"mm", "MMT"}, {"um", "4H"},
	{"m/s", "MTS"}, {"km/h", "KMH"}, {"mm/s", "C16"}, {"mm/min", "H81"}, {"m/min", "2X"},
	{"/min", "RPM"}, {"/min", "C94"}, {"/s", "RPS"},
	{"Hz", "HTZ"}, {"kHz", "KHZ"},
	{"V", "VLT"}, {"mV", "2Z"}, {"kV", "KVT"},
	{"A", "AMP"}, {"mA", "4K"}, {"kA", "B22"},
	{"Ohm", "OHM"}, {"kOhm", "B49"}, {"MOhm", "B75"}, {"GOhm", "A87"},
	{"rad", "C81"}, {"deg", "DD"},
	{"W/m2", "D54"},
	{"s", "SEC"}, {"min", "MIN"}, {"h", "HUR"}, {"d", "DAY"},
	{"m3", "MTQ"}, {"L", "LTR"},
	{"kg", "KGM"}, {"t", "TNE"}, {"g", "GRM"},
}

// UnitID packs a UNECE common code into the OPC UA UnitId.
func UnitID(code string) int32 {
	var v int32
	for i := 0; i < len(code) && i < 3; i++ {
		v = v<<8 | int32(code[i])
	}
	return v
}

// Code unpacks a UnitId into its UNECE common code ("" for -1 or garbage).
func Code(id int32) string {
	if id <= 0 {
		return ""
	}
	var b []byte
	for s := 16; s >= 0; s -= 8 {
		c := byte(id >> s)
		if c == 0 {
			if len(b) > 0 {
				return ""
			}
			continue
		}
		if c < '0' || c > 'Z' || (c > '9' && c < 'A') {
			return ""
		}
		b = append(b, c)
	}
	return string(b)
}

// UNECE returns the UNECE common code and UnitId for a UCUM code.
func UNECE(ucum string) (code string, id int32, ok bool) {
	for _, p := range table {
		if p.ucum == ucum {
			return p.unece, UnitID(p.unece), true
		}
	}
	return "", -1, false
}

// UCUM returns the UCUM code for an OPC UA UnitId.
func UCUM(id int32) (string, bool) {
	code := Code(id)
	if code == "" {
		return "", false
	}
	for _, p := range table {
		if p.unece == code {
			return p.ucum, true
		}
	}
	return "", false
}

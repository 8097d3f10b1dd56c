package nmea

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func near(t *testing.T, name string, got Opt, want float64) {
	t.Helper()
	if !got.OK || math.Abs(got.V-want) > 1e-9 {
		t.Errorf("%s = %+v, want %v", name, got, want)
	}
}

func mustParse(t *testing.T, line string) Sentence {
	t.Helper()
	s, err := Parse(line)
	if err != nil {
		t.Fatalf("Parse(%q): %v", line, err)
	}
	return s
}

// Published example sentences, each with its source. Their checksums are
// the publishers'; Parse verifies them.
func TestPublishedRMC(t *testing.T) {
	// Dale DePriest, "NMEA data" (gpsinformation.org), RMC example, quoted
	// by gpsd's "NMEA Revealed": 12:35:19 UTC 23 March 1994, 48 deg 07.038'
	// N, 11 deg 31.000' E, 22.4 kn, 84.4 deg true, variation 3.1 W.
	s := mustParse(t, "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n")
	if s.Talker != "GP" || s.Type != "RMC" {
		t.Fatalf("%+v", s)
	}
	r, err := DecodeRMC(&s)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "lat", r.Lat, 48+7.038/60)
	near(t, "lon", r.Lon, 11+31.0/60)
	near(t, "sog", r.SOG, 22.4)
	near(t, "cog", r.COG, 84.4)
	if !r.Valid || !r.Time.Equal(time.Date(1994, 3, 23, 12, 35, 19, 0, time.UTC)) {
		t.Errorf("valid %v time %v", r.Valid, r.Time)
	}
	// gpsd, "NMEA Revealed", RMC (NMEA 2.3 with mode A; empty course and
	// variation): 00:10:31 UTC 10 January 2017, 44 deg 04.13993' N, 121 deg
	// 18.86023' W, 0.146 kn.
	s = mustParse(t, "$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B")
	r, err = DecodeRMC(&s)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "lat", r.Lat, 44+4.13993/60)
	near(t, "lon", r.Lon, -(121 + 18.86023/60))
	near(t, "sog", r.SOG, 0.146)
	if r.COG.OK || r.Mode != "A" || !r.Valid || r.Time.Year() != 2017 {
		t.Errorf("%+v", r)
	}
}

func TestPublishedOthers(t *testing.T) {
	// DePriest, "NMEA data", VTG example: 54.7 deg true, 34.4 magnetic,
	// 5.5 kn, 10.2 km/h.
	s := mustParse(t, "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48")
	v, err := DecodeVTG(&s)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "vtg cog", v.COGTrue, 54.7)
	near(t, "vtg sog", v.SOG, 5.5)
	near(t, "vtg km/h", v.SOGKmh, 10.2)
	// Signal K signalk-to-nmea0183, sentences/VHW.js encoder example:
	// heading 201.1 true, 209.2 magnetic, 6.5 kn, 12.0 km/h through water.
	s = mustParse(t, "$IIVHW,201.1,T,209.2,M,6.5,N,12.0,K*6E")
	w, err := DecodeVHW(&s)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "vhw heading", w.HeadingTrue, 201.1)
	near(t, "vhw stw", w.STW, 6.5)
	// Java Marine API, VHWSentence example: no true heading, 213 magnetic.
	s = mustParse(t, "$IIVHW,,,213,M,0.00,N,,K*2F")
	if w, err = DecodeVHW(&s); err != nil || w.HeadingTrue.OK || !w.HeadingMag.OK || w.STW.V != 0 || !w.STW.OK {
		t.Fatalf("%+v %v", w, err)
	}
	// adrianmo/go-nmea hdt_test.go (also used by Signal K nmea0183
	// -signalk): 123.456 deg true.
	s = mustParse(t, "$GPHDT,123.456,T*32")
	h, err := DecodeHDT(&s)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "hdt", h.Heading, 123.456)
	// NOAA NCEI, Shipboard Computer System format "scs_dpt" (archive
	// 0086548): 6.29 m below the transducer, which is 2.40 m below the
	// waterline.
	s = mustParse(t, "$SDDPT,0006.29,002.40*6C")
	d, err := DecodeDPT(&s)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "dpt depth", d.Depth, 6.29)
	near(t, "dpt offset", d.Offset, 2.40)
	if d.BelowKeel().OK {
		t.Error("a positive offset gives no depth below the keel")
	}
}

func TestValues(t *testing.T) {
	got := map[string]float64{}
	for _, line := range []string{
		"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
		"$GPHDT,123.456,T*32",
		"$IIVHW,201.1,T,209.2,M,6.5,N,12.0,K*6E",
		string(Append(nil, "SD", "DPT", "25.0", "-1.5")),
	} {
		s := mustParse(t, line)
		if err := Values(&s, func(q string, v float64) { got[q] = v }); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]float64{"RMC.latitude": 48 + 7.038/60, "RMC.longitude": 11 + 31.0/60, "RMC.sog": 22.4, "RMC.cog": 84.4,
		"HDT.heading": 123.456, "VHW.heading": 201.1, "VHW.heading_magnetic": 209.2, "VHW.stw": 6.5,
		"DPT.depth": 25, "DPT.offset": -1.5, "DPT.depth_below_keel": 23.5}
	for q, w := range want {
		if math.Abs(got[q]-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", q, got[q], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
	for q := range got {
		found := false
		for _, k := range Quantities {
			found = found || k == q
		}
		if !found {
			t.Errorf("%s is not listed in Quantities", q)
		}
	}
	// a void fix yields nothing
	void := mustParse(t, string(Append(nil, "GP", "RMC", "123519", "V", "4807.038", "N", "01131.000", "E", "0.0", "", "230394", "", "")))
	n := 0
	if err := Values(&void, func(string, float64) { n++ }); err != nil || n != 0 {
		t.Errorf("void RMC: %d values, %v", n, err)
	}
	gga := mustParse(t, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47")
	if err := Values(&gga, func(string, float64) {}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("GGA: %v", err)
	}
}

func TestAppendRoundTrip(t *testing.T) {
	b := Append(nil, "GP", "HDT", "123.456", "T")
	if string(b) != "$GPHDT,123.456,T*32\r\n" {
		t.Fatalf("%q", b)
	}
}

// TestBad: every broken sentence is an error of the right kind, and says
// why.
func TestBad(t *testing.T) {
	for _, tc := range []struct {
		line string
		want error
		msg  string
	}{
		{"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B", ErrChecksum, "computed 6A, sentence says 6B"},
		{"$GPHDT,123.456,T*23", ErrChecksum, "computed 32"},
		{"$GPHDT,123.456,T", ErrMalformed, "no checksum"},
		{"$GPHDT,123.456,T*3", ErrMalformed, "not two hex digits"},
		{"$GPHDT,123.456,T*3G", ErrMalformed, "not two hex digits"},
		{"GPHDT,123.456,T*32", ErrMalformed, "does not start with $"},
		{"", ErrMalformed, "empty line"},
		{"$" + strings.Repeat("A", 140) + "*00", ErrMalformed, "more than 80"},
		{string(Append(nil, "GP", "HD", "1")), ErrMalformed, "address field"},
		{"$PGRME,15.0,M,45.0,M,25.0,M*1C", ErrUnsupported, "proprietary"},
		{"!AIVDM,1,1,,B,177KQJ5000G?tO`K>RA1wUbN0TKH,0*5C", ErrUnsupported, "encapsulated"},
	} {
		_, err := Parse(tc.line)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Parse(%q) = %v, want %v with %q", tc.line, err, tc.want, tc.msg)
		}
	}
	for _, tc := range []struct {
		typ    string
		fields []string
		msg    string
	}{
		{"RMC", []string{"123519", "A", "4867.038", "N", "01131.000", "E", "1", "", "230394", "", ""}, "minutes must be below 60"},
		{"RMC", []string{"123519", "A", "4807.038", "X", "01131.000", "E", "1", "", "230394", "", ""}, "hemisphere"},
		{"RMC", []string{"123519", "A", "9107.038", "N", "01131.000", "E", "1", "", "230394", "", ""}, "beyond 90"},
		{"RMC", []string{"123519", "Q", "4807.038", "N", "01131.000", "E", "1", "", "230394", "", ""}, "status"},
		{"RMC", []string{"123519", "A", "4807.038", "N", "01131.000", "E", "1", "", "310294", "", ""}, "does not exist"},
		{"RMC", []string{"123519", "A"}, "at least 11"},
		{"VTG", []string{"054.7", "T", "034.4", "M", "fast", "N", "010.2", "K"}, "not a decimal number"},
		{"VTG", []string{"054.7", "T", "034.4", "M", "5.5", "K", "010.2", "K"}, `"K", want "N"`},
		{"VTG", []string{"454.7", "T", "034.4", "M", "5.5", "N", "010.2", "K"}, "outside 0..360"},
		{"HDT", []string{"NaN", "T"}, "not a decimal number"},
		{"HDT", []string{"1e2", "T"}, "not a decimal number"},
		{"DPT", []string{"-3", "0"}, "outside 0..12000"},
	} {
		s := mustParse(t, string(Append(nil, "GP", tc.typ, tc.fields...)))
		err := Values(&s, func(string, float64) {})
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s %v: %v, want %q", tc.typ, tc.fields, err, tc.msg)
		}
	}
}

// FuzzParse: no input panics; whatever Parse accepts re-encodes to a
// sentence Parse accepts with the same fields, and Values either decodes it
// or says why with one of the package's errors.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
		"$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B",
		"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48",
		"$IIVHW,201.1,T,209.2,M,6.5,N,12.0,K*6E",
		"$GPHDT,123.456,T*32",
		"$SDDPT,0006.29,002.40*6C",
		"$GPHDT,123.456,T",
		"!AIVDM,1,1,,B,177KQJ5000G?tO`K>RA1wUbN0TKH,0*5C",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		s, err := Parse(line)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Parse(%q): untyped error %v", line, err)
			}
			return
		}
		again, err := Parse(string(Append(nil, s.Talker, s.Type, s.Fields...)))
		if err != nil || again.Talker != s.Talker || again.Type != s.Type || strings.Join(again.Fields, ",") != strings.Join(s.Fields, ",") {
			t.Fatalf("round trip of %q: %+v, %v", line, again, err)
		}
		err = Values(&s, func(q string, v float64) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%q: %s = %v", line, q, v)
			}
		})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Values(%q): untyped error %v", line, err)
		}
	})
}

// FuzzDecode frames fuzzed fields with a valid checksum so the decoders,
// not the checksum, meet the input: no panic, no NaN, typed errors only.
func FuzzDecode(f *testing.F) {
	f.Add("RMC", "123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
	f.Add("VTG", "054.7,T,034.4,M,005.5,N,010.2,K")
	f.Add("VHW", "201.1,T,209.2,M,6.5,N,12.0,K")
	f.Add("HDT", "123.456,T")
	f.Add("DPT", "0006.29,002.40")
	f.Fuzz(func(t *testing.T, typ, body string) {
		if len(typ) != 3 || strings.ContainsAny(body, "$*!\r\n") {
			return
		}
		s, err := Parse(string(Append(nil, "GP", typ, strings.Split(body, ",")...)))
		if err != nil {
			return
		}
		err = Values(&s, func(q string, v float64) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s: %s = %v", body, q, v)
			}
		})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Values(%q): untyped error %v", body, err)
		}
	})
}

// BenchmarkParseValues: one RMC sentence through Parse and Values, the
// per-sentence work of the gateway's NMEA source.
func BenchmarkParseValues(b *testing.B) {
	line := "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"
	var sum float64
	b.ReportAllocs()
	for b.Loop() {
		s, err := Parse(line)
		if err != nil {
			b.Fatal(err)
		}
		if err := Values(&s, func(_ string, v float64) { sum += v }); err != nil {
			b.Fatal(err)
		}
	}
	_ = sum
}

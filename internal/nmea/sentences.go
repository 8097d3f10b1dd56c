package nmea

import (
	"fmt"
	"strconv"
	"time"
)

// RMC is the recommended minimum specific GNSS data:
//
//	$--RMC,hhmmss.ss,A,llll.ll,a,yyyyy.yy,a,x.x,x.x,ddmmyy,x.x,a[,m[,s]]*hh
//
// time, status (A valid, V void), latitude, N/S, longitude, E/W, speed over
// ground (kn), course over ground (deg true), date, magnetic variation, E/W,
// and from NMEA 2.3 the mode indicator (A autonomous, D differential, E
// estimated, M manual, S simulator, N not valid) and from 4.1 the
// navigational status.
type RMC struct {
	Time     time.Time // UTC; zero when the time or date field is empty
	Valid    bool      // status A and a mode other than N
	Lat, Lon Opt       // decimal degrees, north and east positive
	SOG      Opt       // kn
	COG      Opt       // deg true
	Mode     string    // "" before NMEA 2.3
}

// VTG is course over ground and ground speed:
//
//	$--VTG,x.x,T,x.x,M,x.x,N,x.x,K[,m]*hh
type VTG struct {
	COGTrue, COGMag Opt // deg
	SOG             Opt // kn
	SOGKmh          Opt // km/h
	Mode            string
}

// VHW is water speed and heading:
//
//	$--VHW,x.x,T,x.x,M,x.x,N,x.x,K*hh
type VHW struct {
	HeadingTrue, HeadingMag Opt // deg
	STW                     Opt // speed through water, kn
	STWKmh                  Opt // km/h
}

// HDT is the true heading: $--HDT,x.x,T*hh.
type HDT struct {
	Heading Opt // deg true
}

// DPT is the depth of water: $--DPT,x.x,x.x[,x.x]*hh: depth relative to
// the transducer (m), the transducer's offset (m; positive: distance to the
// waterline, negative: distance to the keel) and, from NMEA 3.0, the
// maximum range scale in use (m).
type DPT struct {
	Depth  Opt
	Offset Opt
	Range  Opt
}

// BelowKeel is the depth below the keel when the offset gives it (a
// negative offset), else not OK.
func (d DPT) BelowKeel() Opt {
	if !d.Depth.OK || !d.Offset.OK || d.Offset.V > 0 {
		return Opt{}
	}
	return Opt{V: d.Depth.V + d.Offset.V, OK: true}
}

// DecodeRMC decodes an RMC sentence.
func DecodeRMC(s *Sentence) (RMC, error) {
	f := &fields{s: s}
	var r RMC
	if !f.minFields(11) {
		return r, f.err
	}
	status := f.str(1)
	if status != "A" && status != "V" {
		f.fail(1, "status %q, want A or V", status)
	}
	r.Lat = f.coord(2, 2, 'N', 'S', 90)
	r.Lon = f.coord(4, 3, 'E', 'W', 180)
	r.SOG = f.num(6, 0, 1000)
	r.COG = f.num(7, 0, 360)
	f.num(9, 0, 180)
	if len(s.Fields) > 11 {
		r.Mode = f.str(11)
		if len(r.Mode) > 1 {
			f.fail(11, "mode %q is not one letter", r.Mode)
		}
	}
	r.Valid = status == "A" && r.Mode != "N"
	tm, dt := f.str(0), f.str(8)
	if tm != "" && dt != "" {
		r.Time = f.datetime(0, tm, dt)
	}
	return r, f.err
}

// datetime reads hhmmss[.ss] and ddmmyy; two-digit years are 1980-2079.
func (f *fields) datetime(i int, tm, dt string) time.Time {
	if len(tm) < 6 || !isDigits(tm[:6]) || len(dt) != 6 || !isDigits(dt) {
		f.fail(i, "time %q / date %q is not hhmmss.ss / ddmmyy", tm, dt)
		return time.Time{}
	}
	frac := 0.0
	if len(tm) > 6 {
		if tm[6] != '.' || !isDigits(tm[7:]) {
			f.fail(i, "time %q is not hhmmss.ss", tm)
			return time.Time{}
		}
		frac, _ = strconv.ParseFloat("0"+tm[6:], 64) // digits after a dot: cannot fail
	}
	a := func(s string) int { return int(s[0]-'0')*10 + int(s[1]-'0') }
	h, m, sec := a(tm[0:2]), a(tm[2:4]), a(tm[4:6])
	d, mo, y := a(dt[0:2]), a(dt[2:4]), a(dt[4:6])
	if h > 23 || m > 59 || sec > 60 || d < 1 || d > 31 || mo < 1 || mo > 12 {
		f.fail(i, "time %q / date %q out of range", tm, dt)
		return time.Time{}
	}
	if y < 80 {
		y += 2000
	} else {
		y += 1900
	}
	t := time.Date(y, time.Month(mo), d, h, m, sec, int(frac*1e9), time.UTC)
	if t.Day() != d {
		f.fail(8, "date %q does not exist", dt)
		return time.Time{}
	}
	return t
}

// DecodeVTG decodes a VTG sentence (the NMEA 2.0+ form with unit letters).
func DecodeVTG(s *Sentence) (VTG, error) {
	f := &fields{s: s}
	var v VTG
	if !f.minFields(8) {
		return v, f.err
	}
	v.COGTrue = f.num(0, 0, 360)
	f.unit(1, "T", v.COGTrue.OK)
	v.COGMag = f.num(2, 0, 360)
	f.unit(3, "M", v.COGMag.OK)
	v.SOG = f.num(4, 0, 1000)
	f.unit(5, "N", v.SOG.OK)
	v.SOGKmh = f.num(6, 0, 2000)
	f.unit(7, "K", v.SOGKmh.OK)
	if len(s.Fields) > 8 {
		v.Mode = f.str(8)
		if v.Mode == "N" { // data not valid
			v.COGTrue, v.COGMag, v.SOG, v.SOGKmh = Opt{}, Opt{}, Opt{}, Opt{}
		}
	}
	return v, f.err
}

// DecodeVHW decodes a VHW sentence.
func DecodeVHW(s *Sentence) (VHW, error) {
	f := &fields{s: s}
	var v VHW
	if !f.minFields(8) {
		return v, f.err
	}
	v.HeadingTrue = f.num(0, 0, 360)
	f.unit(1, "T", v.HeadingTrue.OK)
	v.HeadingMag = f.num(2, 0, 360)
	f.unit(3, "M", v.HeadingMag.OK)
	v.STW = f.num(4, -100, 1000)
	f.unit(5, "N", v.STW.OK)
	v.STWKmh = f.num(6, -200, 2000)
	f.unit(7, "K", v.STWKmh.OK)
	return v, f.err
}

// DecodeHDT decodes an HDT sentence.
func DecodeHDT(s *Sentence) (HDT, error) {
	f := &fields{s: s}
	var h HDT
	if !f.minFields(2) {
		return h, f.err
	}
	h.Heading = f.num(0, 0, 360)
	f.unit(1, "T", h.Heading.OK)
	return h, f.err
}

// DecodeDPT decodes a DPT sentence.
func DecodeDPT(s *Sentence) (DPT, error) {
	f := &fields{s: s}
	var d DPT
	if !f.minFields(2) {
		return d, f.err
	}
	d.Depth = f.num(0, 0, 12000)
	d.Offset = f.num(1, -100, 100)
	d.Range = f.num(2, 0, 100000)
	return d, f.err
}

// Quantities are the names Values reports, "<type>.<quantity>": the names a
// gateway configuration maps to signals.
var Quantities = []string{
	"RMC.latitude", "RMC.longitude", "RMC.sog", "RMC.cog",
	"VTG.cog", "VTG.sog",
	"VHW.heading", "VHW.heading_magnetic", "VHW.stw",
	"HDT.heading",
	"DPT.depth", "DPT.offset", "DPT.depth_below_keel",
}

// Values decodes a sentence and calls yield for every quantity it carries
// (names in Quantities, degrees, knots and metres). A void RMC fix yields
// nothing. Errors: ErrMalformed for a bad field, ErrUnsupported for a type
// other than RMC, VTG, VHW, HDT and DPT.
func Values(s *Sentence, yield func(quantity string, v float64)) error {
	put := func(q string, o Opt) {
		if o.OK {
			yield(q, o.V)
		}
	}
	switch s.Type {
	case "RMC":
		r, err := DecodeRMC(s)
		if err != nil {
			return err
		}
		if r.Valid {
			put("RMC.latitude", r.Lat)
			put("RMC.longitude", r.Lon)
			put("RMC.sog", r.SOG)
			put("RMC.cog", r.COG)
		}
	case "VTG":
		v, err := DecodeVTG(s)
		if err != nil {
			return err
		}
		put("VTG.cog", v.COGTrue)
		put("VTG.sog", v.SOG)
	case "VHW":
		v, err := DecodeVHW(s)
		if err != nil {
			return err
		}
		put("VHW.heading", v.HeadingTrue)
		put("VHW.heading_magnetic", v.HeadingMag)
		put("VHW.stw", v.STW)
	case "HDT":
		h, err := DecodeHDT(s)
		if err != nil {
			return err
		}
		put("HDT.heading", h.Heading)
	case "DPT":
		d, err := DecodeDPT(s)
		if err != nil {
			return err
		}
		put("DPT.depth", d.Depth)
		put("DPT.offset", d.Offset)
		put("DPT.depth_below_keel", d.BelowKeel())
	default:
		return fmt.Errorf("%w: %s%s", ErrUnsupported, s.Talker, s.Type)
	}
	return nil
}

// Append appends a sentence framed with "$", its checksum and CR LF: the
// encoder of the simulators' NMEA talker. talker is 2 characters, typ 3.
func Append(dst []byte, talker, typ string, fields ...string) []byte {
	start := len(dst)
	dst = append(dst, '$')
	dst = append(dst, talker...)
	dst = append(dst, typ...)
	for _, f := range fields {
		dst = append(dst, ',')
		dst = append(dst, f...)
	}
	var sum byte
	for _, c := range dst[start+1:] {
		sum ^= c
	}
	const hex = "0123456789ABCDEF"
	return append(dst, '*', hex[sum>>4], hex[sum&15], '\r', '\n')
}

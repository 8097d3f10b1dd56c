package regmap

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
)

// TestEncodeGolden checks each type and word order against hand-computed
// registers.
func TestEncodeGolden(t *testing.T) {
	doc := `template: golden
class: generic
points:
  - {signal: f_abcd, table: holding, address: 0,  type: float32, order: ABCD}
  - {signal: f_cdab, table: holding, address: 2,  type: float32, order: CDAB}
  - {signal: f_dcba, table: holding, address: 4,  type: float32, order: DCBA}
  - {signal: f_badc, table: holding, address: 6,  type: float32, order: BADC}
  - {signal: u32,    table: holding, address: 8,  type: uint32,  order: CDAB}
  - {signal: i16,    table: input,   address: 0,  type: int16,   scale: 0.1}
  - {signal: u16off, table: input,   address: 1,  type: uint16,  offset: -40}
  - {signal: i32,    table: input,   address: 2,  type: int32,   order: DCBA}
  - {signal: u64,    table: input,   address: 4,  type: uint64,  order: GHEFCDAB}
  - {signal: f64,    table: input,   address: 8,  type: float64, order: HGFEDCBA}
  - {signal: b3,     table: holding, address: 10, type: bit, bit: 3}
  - {signal: b15,    table: holding, address: 10, type: bit, bit: 15}
  - {signal: sat,    table: holding, address: 11, type: int16}
  - {signal: on,     table: coil,    address: 2,  type: bool}
`
	tp, err := ParseTemplate("golden.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	sigs := []string{"f_abcd", "f_cdab", "f_dcba", "f_badc", "u32", "i16", "u16off", "i32", "u64", "f64", "b3", "b15", "sat", "on"}
	m, err := Compile(tp, "golden.yaml", catalog.Default(), sigs)
	if err != nil {
		t.Fatal(err)
	}
	img := m.NewImage()
	// 1.5 as float32 = 0x3FC00000; 0x01020304; 1.0 as float64 = 0x3FF0000000000000
	m.Encode([]float64{1.5, 1.5, 1.5, 1.5, 0x01020304, -12.34, 60, -2, 0x0102030405060000, 1, 1, 1, 1e9, 1}, img)
	wantH := []uint16{0x3FC0, 0x0000, 0x0000, 0x3FC0, 0x0000, 0xC03F, 0xC03F, 0x0000, 0x0304, 0x0102, 0x8008, 0x7FFF}
	if !slices.Equal(img.Holding, wantH) {
		t.Errorf("holding % 04X\n   want % 04X", img.Holding, wantH)
	}
	wantI := []uint16{uint16(0xFF85), 100, 0xFEFF, 0xFFFF, 0x0000, 0x0506, 0x0304, 0x0102, 0x0000, 0x0000, 0x0000, 0xF03F}
	if !slices.Equal(img.Input, wantI) {
		t.Errorf("input % 04X\n   want % 04X", img.Input, wantI)
	}
	if !img.Coils[2] || len(img.Coils) != 3 {
		t.Errorf("coils %v", img.Coils)
	}
}

func TestCompileRejects(t *testing.T) {
	motor := []string{"power", "frequency", "voltage_a"}
	for _, tc := range []struct{ points, want string }{
		{"  - {signal: speed, table: holding, address: 0, type: uint16}", `class motor has no signal "speed"`},
		{"  - {signal: power, table: holding, address: 0, type: float32, order: ABCC}", `order: "ABCC" is not a permutation`},
		{"  - {signal: power, table: holding, address: 0, type: float32, order: ABCDEFGH}", `is not a 4-byte order`},
		{"  - {signal: power, table: holding, address: 0, type: string}", `type: "string" not supported`},
		{"  - {signal: power, table: coil, address: 0, type: uint16}", "uint16 does not fit table coil"},
		{"  - {signal: power, table: register, address: 0, type: uint16}", `table: "register" is not one of`},
		{"  - {signal: power, table: holding, address: 65535, type: float32}", "address: 65535 outside"},
		{"  - {signal: power, table: holding, address: 0, type: uint16, scale: 0}", "scale: must be non-zero"},
		{"  - {signal: power, table: holding, address: 0, type: uint16, unit: V}", `cannot convert`},
		{"  - {signal: voltage_a, table: holding, address: 0, type: uint16}\n  - {signal: frequency, table: holding, address: 0, type: uint16}", "overlaps the point at line 4"},
	} {
		tp, err := ParseTemplate("t.yaml", []byte("template: t\nclass: motor\npoints:\n"+tc.points+"\n"))
		if err == nil {
			_, err = Compile(tp, "t.yaml", catalog.Default(), motor)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.points, err, tc.want)
		}
	}
	if _, err := ParseTemplate("t.yaml", []byte("template: t\nclass: motor\npoints:\n  - {signal: power, register: 3}\n")); err == nil || !strings.Contains(err.Error(), "t.yaml:4: points[0].register: unknown field") {
		t.Errorf("typo: %v", err)
	}
}

// TestParseTemplateRejects pins the whole message of each decoding and
// shape error: file, line, field and reason, in the confload form the
// gateway's configuration errors use too.
func TestParseTemplateRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"", "t.yaml: file is empty"},
		{"class: [\n", "t.yaml:1: did not find expected node content"},
		{"template: t\npoints:\n  - {signal: power}\n", "t.yaml:1: class: required"},
		{"template: t\nclass: motor\npoints: []\n", "t.yaml:3: points: at least one point required"},
		{"class: motor\npoints:\n  - {signal: power, address: x}\n", `t.yaml:3: points[0].address: want a whole number, got "x"`},
		{"class: motor\n\npoints:\n  - {signal: power, table: holding}\n  - {signal: power, typ: uint16}\n", "t.yaml:5: points[1].typ: unknown field (did you mean type?)"},
	} {
		if _, err := ParseTemplate("t.yaml", []byte(tc.doc)); err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.doc, err, tc.want)
		}
	}
	if _, err := LoadTemplate(filepath.Join(t.TempDir(), "nope.yaml")); err == nil || !strings.HasSuffix(err.Error(), "nope.yaml: open: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}

// TestCompileErrorsNameLineAndField checks that Compile reports every bad
// point (not just the first) with the line of the point in the file.
func TestCompileErrorsNameLineAndField(t *testing.T) {
	tp, err := ParseTemplate("t.yaml", []byte("class: motor\npoints:\n  - {signal: power, table: holding, address: 0, type: uint16, unit: V}\n\n  - {signal: speed, table: holding, address: 1, type: uint16}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile(tp, "t.yaml", catalog.Default(), []string{"power"})
	es := confload.AsErrors(err)
	if len(es) != 2 {
		t.Fatalf("want 2 field errors, got %v", err)
	}
	for i, want := range []struct {
		line  int
		field string
	}{{3, "points[0].unit"}, {5, "points[1].signal"}} {
		if es[i].File != "t.yaml" || es[i].Line != want.line || es[i].Field != want.field {
			t.Errorf("error %d: %s:%d %s, want t.yaml:%d %s", i, es[i].File, es[i].Line, es[i].Field, want.line, want.field)
		}
	}
	if !strings.HasPrefix(err.Error(), `t.yaml:3: points[0].unit: cannot convert "kW" (power) to "V"`) {
		t.Errorf("message: %v", err)
	}
}

func FuzzParseTemplate(f *testing.F) {
	f.Add([]byte("template: t\nclass: motor\npoints:\n  - {signal: power, table: holding, address: 0, type: float32, order: CDAB, unit: W}\n"))
	f.Add([]byte("template: t\nclass: air_compressor\npoints:\n  - {signal: load_state, table: input, address: 3, type: uint16, enum: {0: off, 1: loaded, 2: unloaded}}\n"))
	f.Add([]byte("class: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tp, err := ParseTemplate("fuzz.yaml", data)
		if err != nil {
			return
		}
		cl, ok := catalog.Default().Class(tp.Class)
		if !ok {
			return
		}
		m, err := Compile(tp, "fuzz.yaml", catalog.Default(), cl.SignalNames())
		if err != nil {
			return
		}
		img := m.NewImage()
		m.Encode(make([]float64, len(cl.SignalNames())), img) // must not panic
	})
}

// TestDecodeInvertsEncode: a write of a writable point's registers decodes
// to the value Encode wrote, through word order, scale, offset and unit;
// points without a write block, and partial writes, do not decode.
func TestDecodeInvertsEncode(t *testing.T) {
	doc := `template: writable
class: air_compressor
points:
  - {signal: unload_pressure_setpoint, table: holding, address: 0, type: float32, order: CDAB, unit: bar, write: {min: 0.5, max: 0.9}}
  - {signal: discharge_temp, table: holding, address: 2, type: int16, scale: 0.1, unit: degF, write: {min: 0, max: 100}}
  - {signal: input_power, table: holding, address: 3, type: uint32, order: DCBA, unit: W, write: {min: 0, max: 500}}
  - {signal: dew_point, table: holding, address: 5, type: int16}
`
	tp, err := ParseTemplate("w.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	sigs := []string{"unload_pressure_setpoint", "discharge_temp", "input_power", "dew_point"}
	m, err := Compile(tp, "w.yaml", catalog.Default(), sigs)
	if err != nil {
		t.Fatal(err)
	}
	vals := []float64{0.65, 80, 75, 3}
	img := m.NewImage()
	m.Encode(vals, img)
	for i, p := range m.Points {
		idx, v, ok := m.Decode(p.Table, p.Address, img.Holding[p.Address:int(p.Address)+p.Regs])
		if p.Signal == "dew_point" {
			if ok {
				t.Errorf("dew_point has no write block but decoded")
			}
			continue
		}
		if !ok || idx != i || math.Abs(v-vals[i]) > 1e-3*math.Abs(vals[i]) {
			t.Errorf("%s: Decode = %d %v %v, want %v", p.Signal, idx, v, ok, vals[i])
		}
	}
	if _, _, ok := m.Decode(Holding, 0, img.Holding[0:1]); ok {
		t.Error("half a float32 decoded")
	}
}

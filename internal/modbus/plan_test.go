package modbus

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func regs(t Type, addrs ...uint16) []Point {
	var ps []Point
	for _, a := range addrs {
		ps = append(ps, Point{Table: HoldingRegisters, Type: t, Address: a})
	}
	return ps
}

func seq(from, n, step int) []uint16 {
	var out []uint16
	for i := 0; i < n; i++ {
		out = append(out, uint16(from+i*step))
	}
	return out
}

func TestPlanMerge(t *testing.T) {
	def := Config{MaxRegisters: 125, MaxBits: 2000, MaxGap: 16}
	withCfg := func(mr, gap int) Config { return Config{MaxRegisters: mr, MaxBits: 2000, MaxGap: gap} }
	cases := []struct {
		name   string
		points []Point
		cfg    Config
		want   []Span
	}{
		{"adjacent merge", append(regs(Float32, 0), regs(Int16, 2, 3)...), def,
			[]Span{{HoldingRegisters, 0, 4, 3}}},
		{"gap of 16 bridged", regs(Int16, 0, 17), def,
			[]Span{{HoldingRegisters, 0, 18, 2}}},
		{"gap of 17 not bridged", regs(Int16, 0, 18), def,
			[]Span{{HoldingRegisters, 0, 1, 1}, {HoldingRegisters, 18, 1, 1}}},
		{"max_gap 0 merges only adjacent", regs(Int16, 0, 1, 3), withCfg(125, 0),
			[]Span{{HoldingRegisters, 0, 2, 2}, {HoldingRegisters, 3, 1, 1}}},
		{"cap 125 splits 200 registers", regs(Int16, seq(0, 200, 1)...), def,
			[]Span{{HoldingRegisters, 0, 125, 125}, {HoldingRegisters, 125, 75, 75}}},
		{"quirk max_registers 16", regs(Int16, seq(0, 40, 1)...), withCfg(16, 16),
			[]Span{{HoldingRegisters, 0, 16, 16}, {HoldingRegisters, 16, 16, 16}, {HoldingRegisters, 32, 8, 8}}},
		{"multi-register point never split", regs(Float32, 0, 2, 4, 6, 8), withCfg(9, 16),
			[]Span{{HoldingRegisters, 0, 8, 4}, {HoldingRegisters, 8, 2, 1}}},
		{"float64 at the cap edge", regs(Float64, 0, 4, 8), withCfg(10, 16),
			[]Span{{HoldingRegisters, 0, 8, 2}, {HoldingRegisters, 8, 4, 1}}},
		{"tables apart, any input order", []Point{
			{Table: InputRegisters, Type: Int16, Address: 5},
			{Table: Coils, Type: Bool, Address: 3},
			{Table: HoldingRegisters, Type: Int16, Address: 5},
			{Table: Coils, Type: Bool, Address: 0},
			{Table: DiscreteInputs, Type: Bool, Address: 9},
		}, def, []Span{{Coils, 0, 4, 2}, {DiscreteInputs, 9, 1, 1}, {HoldingRegisters, 5, 1, 1}, {InputRegisters, 5, 1, 1}}},
		{"bit gap counts 16 bits per register", []Point{
			{Table: Coils, Type: Bool, Address: 0}, {Table: Coils, Type: Bool, Address: 257},
			{Table: Coils, Type: Bool, Address: 600},
		}, def, []Span{{Coils, 0, 258, 2}, {Coils, 600, 1, 1}}},
		{"bit cap", []Point{{Table: Coils, Type: Bool, Address: 0}, {Table: Coils, Type: Bool, Address: 10}},
			Config{MaxRegisters: 125, MaxBits: 8, MaxGap: 16}, []Span{{Coils, 0, 1, 1}, {Coils, 10, 1, 1}}},
		{"overlapping bits of one register", []Point{
			{Table: HoldingRegisters, Type: Bit, Address: 7, Bit: 0},
			{Table: HoldingRegisters, Type: Bit, Address: 7, Bit: 9},
			{Table: HoldingRegisters, Type: Uint16, Address: 7},
		}, def, []Span{{HoldingRegisters, 7, 1, 3}}},
		{"string spans its length", []Point{
			{Table: HoldingRegisters, Type: String, Address: 10, Length: 8},
			{Table: HoldingRegisters, Type: Int16, Address: 18},
		}, def, []Span{{HoldingRegisters, 10, 9, 2}}},
		{"zero caps mean protocol limits", regs(Int16, 0, 124, 125), Config{MaxGap: 200},
			[]Span{{HoldingRegisters, 0, 125, 2}, {HoldingRegisters, 125, 1, 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := NewPlan(c.points, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Spans(); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("spans\n got %v\nwant %v", got, c.want)
			}
			covered := make([]int, len(c.points))
			for _, r := range p.reqs {
				for _, i := range r.points {
					covered[i]++
					pt := c.points[i]
					if int(pt.Address) < int(r.start) || int(pt.Address)+pt.Registers() > int(r.start)+int(r.count) {
						t.Errorf("point %d (%d+%d) outside request %d+%d", i, pt.Address, pt.Registers(), r.start, r.count)
					}
				}
			}
			for i, n := range covered {
				if n != 1 {
					t.Errorf("point %d in %d requests", i, n)
				}
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	cases := []struct {
		name   string
		points []Point
		cfg    Config
		err    string
	}{
		{"string above quirk cap", []Point{{Table: HoldingRegisters, Type: String, Length: 20}}, Config{MaxRegisters: 16},
			"points[0]: string of 20 registers above max_registers 16"},
		{"bad point", []Point{{Table: HoldingRegisters, Type: Int16}, {Table: Coils, Type: Int32}}, Config{},
			"points[1]: type: int32 needs a register table, not coil"},
		{"cap above protocol", nil, Config{MaxRegisters: 200}, "max_registers: 200 above the protocol limit 125"},
		{"bits above protocol", nil, Config{MaxBits: 2001}, "max_bits: 2001 above the protocol limit 2000"},
		{"negative gap", nil, Config{MaxGap: -1}, "max_gap: -1 must not be negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewPlan(c.points, c.cfg)
			if err == nil || err.Error() != c.err {
				t.Fatalf("NewPlan error = %v, want %q", err, c.err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	base := func(mod func(*Config)) Config {
		c := Config{Address: "127.0.0.1:502", UnitID: 1}
		c.SetDefaults()
		mod(&c)
		return c
	}
	cases := []struct {
		name string
		cfg  Config
		err  string
	}{
		{"max_registers above", base(func(c *Config) { c.MaxRegisters = 200 }), "max_registers: 200 above the protocol limit 125"},
		{"max_bits above", base(func(c *Config) { c.MaxBits = 4000 }), "max_bits: 4000 above the protocol limit 2000"},
		{"transport", base(func(c *Config) { c.Transport = "udp" }), `transport: "udp" is not tcp, rtu, rtu_over_tcp, ascii or ascii_over_tcp`},
		{"address", base(func(c *Config) { c.Address = "plc1" }), `address: "plc1" is not host:port`},
		{"rtu unit 0", base(func(c *Config) { c.Transport = RTU; c.Address = "/dev/ttyS0"; c.UnitID = 0 }), "unit_id: 0 out of range 1..247 for rtu"},
		{"parity", base(func(c *Config) { c.Transport = RTU; c.Address = "/dev/ttyS0"; c.Serial.Parity = "X" }), `serial.parity: "X" must be N, E or O`},
		{"baud", base(func(c *Config) { c.Transport = ASCII; c.Address = "/dev/ttyS0"; c.Serial.Baud = 1234 }), "serial.baud: 1234 is not a standard rate"},
		{"gap", base(func(c *Config) { c.MaxGap = 300 }), "max_gap: 300 out of range 0..125"},
		{"timeout", base(func(c *Config) { c.Timeout = -1 }), "timeout: -1ns must be positive"},
		{"backoff", base(func(c *Config) { c.BackoffMax = c.BackoffMin / 2 }), "backoff_max: 250ms below backoff_min 500ms"},
		{"silence negative", base(func(c *Config) { c.Silence = -time.Second }), "silence: -1s must not be negative"},
		{"silence above", base(func(c *Config) { c.Silence = 2 * time.Minute }), "silence: 2m0s above the limit 1m"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Fatalf("Validate = %v, want prefix %q", err, c.err)
			}
		})
	}
	ok := base(func(*Config) {})
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Transport != TCP || ok.Timeout.String() != "1s" || ok.MaxRegisters != 125 || ok.MaxBits != 2000 ||
		ok.MaxGap != 16 || ok.Serial != (SerialConfig{19200, 8, "E", 1}) {
		t.Fatalf("defaults = %+v", ok)
	}
	// defaults first, then YAML on top: an explicit max_gap: 0 survives
	c := Config{}
	c.SetDefaults()
	doc := "transport: rtu_over_tcp\naddress: 10.0.0.5:4001\nunit_id: 7\nmax_gap: 0\ntimeout: 250ms\nserial: {baud: 9600}\n"
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxGap != 0 || c.Timeout != 250*time.Millisecond || c.Serial != (SerialConfig{9600, 8, "E", 1}) || c.UnitID != 7 || c.Transport != RTUOverTCP {
		t.Fatalf("decoded = %+v", c)
	}
	// silence 0 derives: timeout + 256 characters of 11 bits at 9600 baud
	if got, want := c.silence(), 250*time.Millisecond+293333333*time.Nanosecond; got != want {
		t.Fatalf("derived silence = %v, want %v", got, want)
	}
	c.Silence = 3 * time.Second
	if c.silence() != 3*time.Second {
		t.Fatalf("explicit silence = %v", c.silence())
	}
}

func BenchmarkPlanBuild(b *testing.B) {
	var points []Point
	for i := 0; i < 200; i++ {
		points = append(points, Point{Table: HoldingRegisters, Type: Float32, Address: uint16(i * 3)})
		points = append(points, Point{Table: Coils, Type: Bool, Address: uint16(i * 5)})
	}
	cfg := Config{MaxRegisters: 125, MaxBits: 2000, MaxGap: 16}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewPlan(points, cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConfigValidateEveryProblem: every problem of a modbus block at once
// (review finding 4).
func TestConfigValidateEveryProblem(t *testing.T) {
	c := Config{Address: "127.0.0.1:502", UnitID: 1}
	c.SetDefaults()
	c.Timeout = -time.Second
	c.MaxGap = -3
	c.BackoffMin, c.BackoffMax = 2*time.Second, time.Second
	c.Quarantine = -5 * time.Second
	c.Silence = 2 * time.Minute
	c.MaxRegisters = 200
	err := c.Validate()
	for _, want := range []string{"timeout: -1s", "max_gap: -3", "backoff_max: 1s below backoff_min 2s", "quarantine: -5s",
		"silence: 2m0s", "max_registers: 200"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

package modbus

import (
	"errors"
	"net"
	"time"

	"github.com/smelterio/smelter/internal/confload"
)

// Protocol limits of one read request.
const (
	maxRegisters = 125
	maxBits      = 2000
)

// Transport is how requests reach the device.
type Transport string

// Transports.
const (
	TCP          Transport = "tcp"            // Modbus TCP (MBAP header)
	RTU          Transport = "rtu"            // RTU framing on a serial line
	RTUOverTCP   Transport = "rtu_over_tcp"   // RTU framing with CRC on a TCP socket (serial device servers)
	ASCII        Transport = "ascii"          // ASCII framing on a serial line
	ASCIIOverTCP Transport = "ascii_over_tcp" // ASCII framing with LRC on a TCP socket
)

// Serial reports whether t runs on a serial line.
func (t Transport) Serial() bool { return t == RTU || t == ASCII }

func (t Transport) valid() bool {
	switch t {
	case TCP, RTU, RTUOverTCP, ASCII, ASCIIOverTCP:
		return true
	}
	return false
}

// SerialConfig is the line setting of an rtu or ascii transport.
type SerialConfig struct {
	Baud     int    `yaml:"baud"`
	DataBits int    `yaml:"data_bits"`
	Parity   string `yaml:"parity"` // N, E or O
	StopBits int    `yaml:"stop_bits"`
}

// Config is one device's Modbus settings (the `modbus:` block of a device).
//
// Call SetDefaults on the zero Config before decoding YAML into it (defaults
// first, then the file): it fills zero fields, so calling it after decoding
// would turn an explicit `max_gap: 0` (never bridge gaps) into the default.
type Config struct {
	Transport    Transport     `yaml:"transport"`
	Address      string        `yaml:"address"` // host:port, or a serial device path for rtu / ascii
	UnitID       uint8         `yaml:"unit_id"`
	Timeout      time.Duration `yaml:"timeout"`
	MaxRegisters int           `yaml:"max_registers"`
	MaxBits      int           `yaml:"max_bits"`
	MaxGap       int           `yaml:"max_gap"`
	Serial       SerialConfig  `yaml:"serial"`
	BackoffMin   time.Duration `yaml:"backoff_min"` // reconnect backoff, doubled per failure with jitter
	BackoffMax   time.Duration `yaml:"backoff_max"`
	Quarantine   time.Duration `yaml:"quarantine"` // first retry of an address that raised an exception; doubles up to 16x
	// Silence is how long an RTU or ASCII line (serial or over TCP) must
	// have carried nothing before a request is sent after a timeout, a
	// broken or foreign reply, a reconnect, or bytes that arrived while no
	// request was outstanding: a late reply must have come and gone. 0 means
	// the default, timeout + the time of a maximum frame (256 characters of
	// 11 bits) at serial.baud. A reply is trusted only if every late reply
	// arrives within timeout + silence after its own request; a later one
	// may be taken for the next request's answer (README, "Transports
	// and the never guess a reply rule"). Ignored on tcp, whose transaction ids tie replies to requests.
	Silence time.Duration `yaml:"silence"`
	// WriteMultiple makes writes of one coil or one register use FC15 or
	// FC16 instead of FC5 or FC6, for devices that implement only the
	// multiple forms. Only points with a write block are ever written
	// (docs/commands.md).
	WriteMultiple bool `yaml:"write_multiple"`
}

// Defaults.
const (
	DefaultTimeout      = time.Second
	DefaultMaxRegisters = maxRegisters
	DefaultMaxBits      = maxBits
	DefaultMaxGap       = 16
	DefaultBaud         = 19200
	DefaultBackoffMin   = 500 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultQuarantine   = time.Minute
)

// SetDefaults fills every zero field with its default: tcp, timeout 1s,
// max_registers 125, max_bits 2000, max_gap 16, serial 19200 8E1, backoff
// 500ms..30s, quarantine 1m.
func (c *Config) SetDefaults() {
	if c.MaxRegisters == 0 {
		c.MaxRegisters = DefaultMaxRegisters
	}
	if c.MaxBits == 0 {
		c.MaxBits = DefaultMaxBits
	}
	if c.MaxGap == 0 {
		c.MaxGap = DefaultMaxGap
	}
	c.runtimeDefaults()
}

// runtimeDefaults fills the zero fields a Device needs at run time.
func (c *Config) runtimeDefaults() {
	if c.Transport == "" {
		c.Transport = TCP
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Serial.Baud == 0 {
		c.Serial.Baud = DefaultBaud
	}
	if c.Serial.DataBits == 0 {
		c.Serial.DataBits = 8
	}
	if c.Serial.Parity == "" {
		c.Serial.Parity = "E"
	}
	if c.Serial.StopBits == 0 {
		c.Serial.StopBits = 1
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.Quarantine == 0 {
		c.Quarantine = DefaultQuarantine
	}
}

var serialBauds = map[int]bool{1200: true, 2400: true, 4800: true, 9600: true, 19200: true, 38400: true,
	57600: true, 115200: true, 230400: true, 460800: true, 921600: true}

// Validate checks c after SetDefaults; each error names the YAML field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, confload.Problemf(field, format, args...))
	}
	if !c.Transport.valid() {
		bad("transport", "%q is not tcp, rtu, rtu_over_tcp, ascii or ascii_over_tcp", c.Transport)
	}
	if c.Address == "" {
		bad("address", "missing (host:port, or a serial device path for %s)", c.Transport)
	} else if !c.Transport.Serial() {
		if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
			bad("address", "%q is not host:port", c.Address)
		}
	}
	if c.Transport != TCP && (c.UnitID == 0 || c.UnitID > 247) {
		bad("unit_id", "%d out of range 1..247 for %s (0 is broadcast, which never answers)", c.UnitID, c.Transport)
	}
	if c.Timeout <= 0 {
		bad("timeout", "%v must be positive", c.Timeout)
	} else if c.Timeout > time.Minute {
		bad("timeout", "%v above the limit 1m", c.Timeout)
	}
	limit(bad, "max_registers", c.MaxRegisters, maxRegisters)
	limit(bad, "max_bits", c.MaxBits, maxBits)
	if c.MaxGap < 0 || c.MaxGap > maxRegisters {
		bad("max_gap", "%d out of range 0..%d", c.MaxGap, maxRegisters)
	}
	if c.Transport.Serial() {
		s := c.Serial
		if !serialBauds[s.Baud] {
			bad("serial.baud", "%d is not a standard rate (1200 .. 921600)", s.Baud)
		}
		if s.DataBits != 7 && s.DataBits != 8 {
			bad("serial.data_bits", "%d must be 7 or 8", s.DataBits)
		}
		if s.Parity != "N" && s.Parity != "E" && s.Parity != "O" {
			bad("serial.parity", "%q must be N, E or O", s.Parity)
		}
		if s.StopBits != 1 && s.StopBits != 2 {
			bad("serial.stop_bits", "%d must be 1 or 2", s.StopBits)
		}
	}
	if c.BackoffMin <= 0 {
		bad("backoff_min", "%v must be positive", c.BackoffMin)
	}
	if c.BackoffMax < c.BackoffMin && c.BackoffMin > 0 {
		bad("backoff_max", "%v below backoff_min %v", c.BackoffMax, c.BackoffMin)
	}
	if c.Quarantine <= 0 {
		bad("quarantine", "%v must be positive", c.Quarantine)
	}
	if c.Silence < 0 {
		bad("silence", "%v must not be negative (0 derives it from timeout and baud)", c.Silence)
	}
	if c.Silence > time.Minute {
		bad("silence", "%v above the limit 1m", c.Silence)
	}
	if c.Transport == TCP && c.Silence != 0 {
		// Modbus TCP ties replies by transaction id and reopens the
		// socket after a reply in doubt: a silence would be ignored
		bad("silence", "transport tcp has no inter-frame silence (its transaction ids tie replies to requests): silence is for rtu, ascii, rtu_over_tcp and ascii_over_tcp")
	}
	return errors.Join(errs...)
}

func limit(bad func(field, format string, args ...any), field string, n, max int) {
	if n < 1 {
		bad(field, "%d must be at least 1", n)
	}
	if n > max {
		bad(field, "%d above the protocol limit %d", n, max)
	}
}

// silence returns Silence, or its default derived from the timeout and the
// line speed (see Config.Silence).
func (c *Config) silence() time.Duration {
	if c.Silence > 0 {
		return c.Silence
	}
	baud := c.Serial.Baud
	if baud <= 0 {
		baud = DefaultBaud
	}
	return c.Timeout + time.Duration(256*11*float64(time.Second)/float64(baud))
}

// linkKey identifies a shared connection.
func (c *Config) linkKey() string { return string(c.Transport) + "|" + c.Address }

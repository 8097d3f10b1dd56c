package modbus

import (
	"fmt"
	"net"
	"time"
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
	// 11 bits) at serial.baud: a reply up to twice the timeout late is
	// caught. Ignored on tcp, whose transaction ids tie replies to requests.
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
	if !c.Transport.valid() {
		return fmt.Errorf("transport: %q is not tcp, rtu, rtu_over_tcp, ascii or ascii_over_tcp", c.Transport)
	}
	if c.Address == "" {
		return fmt.Errorf("address: missing (host:port, or a serial device path for %s)", c.Transport)
	}
	if !c.Transport.Serial() {
		if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
			return fmt.Errorf("address: %q is not host:port", c.Address)
		}
	}
	if c.Transport != TCP && (c.UnitID == 0 || c.UnitID > 247) {
		return fmt.Errorf("unit_id: %d out of range 1..247 for %s (0 is broadcast, which never answers)", c.UnitID, c.Transport)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout: %v must be positive", c.Timeout)
	}
	if c.Timeout > time.Minute {
		return fmt.Errorf("timeout: %v above the limit 1m", c.Timeout)
	}
	if err := limit("max_registers", c.MaxRegisters, maxRegisters); err != nil {
		return err
	}
	if err := limit("max_bits", c.MaxBits, maxBits); err != nil {
		return err
	}
	if c.MaxGap < 0 || c.MaxGap > maxRegisters {
		return fmt.Errorf("max_gap: %d out of range 0..%d", c.MaxGap, maxRegisters)
	}
	if c.Transport.Serial() {
		s := c.Serial
		if !serialBauds[s.Baud] {
			return fmt.Errorf("serial.baud: %d is not a standard rate (1200 .. 921600)", s.Baud)
		}
		if s.DataBits != 7 && s.DataBits != 8 {
			return fmt.Errorf("serial.data_bits: %d must be 7 or 8", s.DataBits)
		}
		if s.Parity != "N" && s.Parity != "E" && s.Parity != "O" {
			return fmt.Errorf("serial.parity: %q must be N, E or O", s.Parity)
		}
		if s.StopBits != 1 && s.StopBits != 2 {
			return fmt.Errorf("serial.stop_bits: %d must be 1 or 2", s.StopBits)
		}
	}
	if c.BackoffMin <= 0 {
		return fmt.Errorf("backoff_min: %v must be positive", c.BackoffMin)
	}
	if c.BackoffMax < c.BackoffMin {
		return fmt.Errorf("backoff_max: %v below backoff_min %v", c.BackoffMax, c.BackoffMin)
	}
	if c.Quarantine <= 0 {
		return fmt.Errorf("quarantine: %v must be positive", c.Quarantine)
	}
	if c.Silence < 0 {
		return fmt.Errorf("silence: %v must not be negative (0 derives it from timeout and baud)", c.Silence)
	}
	if c.Silence > time.Minute {
		return fmt.Errorf("silence: %v above the limit 1m", c.Silence)
	}
	return nil
}

func limit(field string, n, max int) error {
	if n < 1 {
		return fmt.Errorf("%s: %d must be at least 1", field, n)
	}
	if n > max {
		return fmt.Errorf("%s: %d above the protocol limit %d", field, n, max)
	}
	return nil
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

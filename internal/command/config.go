package command

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/streams"
)

// Config is the gateway's commands block (docs/commands.md).
type Config struct {
	// TrustedKeys are the public NATS user nkeys ("U...") whose signatures
	// the gateway accepts. None: the gateway accepts no command.
	TrustedKeys []string `yaml:"trusted_keys"`
	// MaxLifetime caps expires_at - issued_at (default 5m): a command valid
	// for longer is refused, so a captured command cannot be held back and
	// played later.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// MaxSkew is how far issued_at may lie in the gateway's future (clock
	// skew, default 30s, at most 5m). Ids are also remembered this long
	// past their expires_at.
	MaxSkew time.Duration `yaml:"max_skew"`
	// Remember caps the command ids the gateway keeps with their outcome
	// (default 4096; 0 means the default), in <data_dir>/commands/ids.jsonl.
	// An id is kept until its command expires (+ max_skew) whatever this
	// cap; when that many ids are all unexpired, new commands are refused.
	Remember int `yaml:"remember"`
	// Timeout bounds one command's device I/O: read, write, read-back
	// (default 10s; 0 means the default).
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults.
const (
	DefaultMaxLifetime = 5 * time.Minute
	DefaultMaxSkew     = 30 * time.Second
	DefaultRemember    = 4096
	DefaultTimeout     = 10 * time.Second
	// MaxMaxSkew bounds max_skew.
	MaxMaxSkew = streams.MaxCommandSkew
	// MaxMaxLifetime bounds max_lifetime: the audit stream's duplicate
	// window (streams.AuditDuplicateWindow) covers a command this long,
	// so a second gateway with the same asset cannot write it again.
	MaxMaxLifetime = streams.MaxCommandLifetime
)

// SetDefaults fills zero fields.
func (c *Config) SetDefaults() {
	if c.MaxLifetime == 0 {
		c.MaxLifetime = DefaultMaxLifetime
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = DefaultMaxSkew
	}
	if c.Remember == 0 {
		c.Remember = DefaultRemember
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Validate checks the keys and limits; errors name the field
// (confload.Problem).
func (c *Config) Validate() error {
	for i, k := range c.TrustedKeys {
		if strings.HasPrefix(k, "S") {
			// never echo what may be a secret
			return confload.Problemf(fmt.Sprintf("trusted_keys[%d]", i), "looks like a seed (S..., a secret): remove it from this file and give its public key (U...)")
		}
		if !nkeys.IsValidPublicUserKey(k) {
			return confload.Problemf(fmt.Sprintf("trusted_keys[%d]", i), "%q is not a public user nkey (U..., as `nk -gen user -pubout` prints)", k)
		}
	}
	switch {
	case c.MaxLifetime < time.Second:
		return confload.Problemf("max_lifetime", "%v below 1s", c.MaxLifetime)
	case c.MaxLifetime > MaxMaxLifetime:
		return confload.Problemf("max_lifetime", "%v above %v: a command valid that long could be held back and played later, and outlives the audit stream's duplicate window that keeps it to one gateway", c.MaxLifetime, MaxMaxLifetime)
	case c.MaxSkew < 0:
		return confload.Problemf("max_skew", "%v is negative", c.MaxSkew)
	case c.MaxSkew > MaxMaxSkew:
		return confload.Problemf("max_skew", "%v above %v: a command issued that far in the future could be held back and played later", c.MaxSkew, MaxMaxSkew)
	case c.Remember < 1:
		return confload.Problemf("remember", "%d: want at least 1", c.Remember)
	case c.Timeout <= 0:
		return confload.Problemf("timeout", "%v must be positive", c.Timeout)
	}
	return nil
}

// Keys returns the trusted keys as verifiers (Validate passed).
func (c *Config) Keys() ([]nkeys.KeyPair, error) {
	out := make([]nkeys.KeyPair, 0, len(c.TrustedKeys))
	for _, k := range c.TrustedKeys {
		kp, err := nkeys.FromPublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", k, err)
		}
		out = append(out, kp)
	}
	return out, nil
}

package spool

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Fsync policies.
const (
	FsyncAlways   = "always"   // fsync before Append (and Commit) returns
	FsyncInterval = "interval" // background fsync every fsync_interval (default)
	FsyncNever    = "never"    // fsync only on Close; the OS flushes when it likes
)

// Full policies.
const (
	WhenFullDiscardOldest = "discard_oldest" // delete the oldest segment(s) and count what was lost (default)
	WhenFullBlock         = "block"          // Append waits until readers commit enough to free space
)

// Backlog policies: how an uplink's forwarder orders a backlog and live
// data (the spool provides the readers; the gateway applies the policy).
const (
	BacklogOldestFirst = "oldest_first" // one lane, strict seq order; live data waits behind the backlog (default)
	BacklogLiveFirst   = "live_first"   // live lane at the tail plus a backfill lane marked historical
)

// Defaults.
const (
	DefaultMaxBytes      int64 = 1 << 30
	DefaultMaxAge              = 7 * 24 * time.Hour
	DefaultSegmentBytes  int64 = 16 << 20
	DefaultFsyncInterval       = time.Second
	DefaultCacheBytes    int64 = 1 << 20

	minSegmentBytes int64 = 64 << 10
	maxSegmentBytes int64 = 1 << 30
)

// Config is the spool section of the gateway configuration.
type Config struct {
	Dir           string        `yaml:"dir"`            // directory of segments and cursors (created if missing)
	MaxBytes      int64         `yaml:"max_bytes"`      // disk budget (default 1 GiB)
	MaxAge        time.Duration `yaml:"max_age"`        // records older than this are discarded (default 7 days)
	SegmentBytes  int64         `yaml:"segment_bytes"`  // a segment is rolled at this size (default 16 MiB)
	Fsync         string        `yaml:"fsync"`          // always | interval (default) | never
	FsyncInterval time.Duration `yaml:"fsync_interval"` // default 1s
	WhenFull      string        `yaml:"when_full"`      // discard_oldest (default) | block
	ReplayRate    float64       `yaml:"replay_rate"`    // max records/s per reader while it reads a backlog from disk; 0 = unlimited
	CacheBytes    int64         `yaml:"cache_bytes"`    // in-memory tail cache for live readers (default 1 MiB)
	Backlog       string        `yaml:"backlog"`        // oldest_first (default) | live_first; see docs/reliability.md

	// For this package's tests: zeroSeqFloor starts a new spool at seq 1
	// instead of above SeqFloor (tests that count seqs from 1); seqClock
	// replaces time.Now for SeqFloor.
	zeroSeqFloor bool
	seqClock     func() time.Time
}

// ConfigError is a configuration problem; Field is the yaml name of the
// offending field, so the loader can point at its line.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Reason }

// SetDefaults fills every zero field with its default.
func (c *Config) SetDefaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.Fsync == "" {
		c.Fsync = FsyncInterval
	}
	if c.FsyncInterval == 0 {
		c.FsyncInterval = DefaultFsyncInterval
	}
	if c.WhenFull == "" {
		c.WhenFull = WhenFullDiscardOldest
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.Backlog == "" {
		c.Backlog = BacklogOldestFirst
	}
}

// Validate checks a defaulted Config and returns every problem: one
// *ConfigError per field (naming its yaml field), joined with errors.Join.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if c.Dir == "" {
		bad("dir", "is required")
	}
	segOK := c.SegmentBytes >= minSegmentBytes && c.SegmentBytes <= maxSegmentBytes
	if !segOK {
		bad("segment_bytes", "%d is outside [%d, %d]", c.SegmentBytes, minSegmentBytes, maxSegmentBytes)
	}
	switch {
	case c.MaxBytes <= 0:
		bad("max_bytes", "%d must be positive", c.MaxBytes)
	case segOK && c.MaxBytes < 2*c.SegmentBytes:
		bad("max_bytes", "%d must be at least twice segment_bytes (%d)", c.MaxBytes, c.SegmentBytes)
	}
	if c.MaxAge < 0 {
		bad("max_age", "%v must be positive", c.MaxAge)
	}
	if c.Fsync != FsyncAlways && c.Fsync != FsyncInterval && c.Fsync != FsyncNever {
		bad("fsync", "%q is not one of always, interval, never", c.Fsync)
	}
	if c.FsyncInterval < time.Millisecond {
		bad("fsync_interval", "%v must be at least 1ms", c.FsyncInterval)
	}
	if c.WhenFull != WhenFullDiscardOldest && c.WhenFull != WhenFullBlock {
		bad("when_full", "%q is not one of discard_oldest, block", c.WhenFull)
	}
	if c.ReplayRate < 0 || math.IsNaN(c.ReplayRate) || math.IsInf(c.ReplayRate, 0) {
		bad("replay_rate", "%v must be a finite number >= 0", c.ReplayRate)
	}
	if c.CacheBytes < 0 {
		bad("cache_bytes", "%d must not be negative", c.CacheBytes)
	}
	if c.Backlog != BacklogOldestFirst && c.Backlog != BacklogLiveFirst {
		bad("backlog", "%q is not one of oldest_first, live_first", c.Backlog)
	}
	return errors.Join(errs...)
}

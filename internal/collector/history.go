package collector

import (
	"fmt"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/history"
	"github.com/smelterio/smelter/internal/secret"
)

// HistoryConfig keeps telemetry, alerts, KPI windows, births and the
// command audit in PostgreSQL (docs/history.md). Absent: the collector
// works from memory only.
type HistoryConfig struct {
	// DSNEnv / DSNFile name where the PostgreSQL connection string or URL
	// is read from (exactly one; never logged).
	DSNEnv  string `yaml:"dsn_env"`
	DSNFile string `yaml:"dsn_file"`
	// Schema holds every table (default "smelter").
	Schema string `yaml:"schema"`
	// PoolSize: connections to the database (default 4).
	PoolSize int `yaml:"pool_size"`
	// BatchSize: messages written in one transaction (default 1000);
	// FlushInterval: how long a fetch waits to fill it (default 1s).
	BatchSize     int      `yaml:"batch_size"`
	FlushInterval Duration `yaml:"flush_interval"`
	// AckWait of the history consumer (default 30s).
	AckWait Duration `yaml:"ack_wait"`
	// Consumer: the durable consumer every replica of the group shares
	// (default "<group>_history").
	Consumer string `yaml:"consumer"`
	// TimescaleDB: auto (default: hypertables when the extension is
	// installed at the first start) or off.
	TimescaleDB string `yaml:"timescaledb"`
	// Retention per table; unset: the default, 0s: keep for ever.
	Retention struct {
		Readings *Duration `yaml:"readings"`  // default 720h (30 days)
		Rollup1m *Duration `yaml:"rollup_1m"` // default 8760h (1 year)
		Rollup1h *Duration `yaml:"rollup_1h"` // default 87600h (10 years)
		Alerts   *Duration `yaml:"alerts"`    // default 0s (for ever)
		KPIs     *Duration `yaml:"kpis"`
		Births   *Duration `yaml:"births"`
		Commands *Duration `yaml:"commands"`
		Interval *Duration `yaml:"interval"` // how often retention runs, default 1h
	} `yaml:"retention"`
}

// options returns the store options without the DSN.
func (h *HistoryConfig) options() history.Options {
	r := history.DefaultRetention()
	set := func(d *time.Duration, v *Duration) {
		if v != nil {
			*d = time.Duration(*v)
		}
	}
	hr := h.Retention
	set(&r.Readings, hr.Readings)
	set(&r.Rollup1m, hr.Rollup1m)
	set(&r.Rollup1h, hr.Rollup1h)
	set(&r.Alerts, hr.Alerts)
	set(&r.KPIs, hr.KPIs)
	set(&r.Births, hr.Births)
	set(&r.Commands, hr.Commands)
	set(&r.Interval, hr.Interval)
	return history.Options{Schema: h.Schema, PoolSize: h.PoolSize, Timescale: h.TimescaleDB, Retention: r}
}

// sinkOptions returns the sink options of group.
func (h *HistoryConfig) sinkOptions(group, stream string) history.SinkOptions {
	name := h.Consumer
	if name == "" {
		name = group + "_history"
	}
	return history.SinkOptions{Stream: stream, Consumer: name, Batch: h.BatchSize, Flush: time.Duration(h.FlushInterval), AckWait: time.Duration(h.AckWait)}
}

// historyProblems checks the history block.
func (c *Config) historyProblems(ps []problem) []problem {
	h := c.History
	if h == nil {
		return ps
	}
	bad := func(field, format string, args ...any) {
		ps = append(ps, problem{"history." + field, fmt.Sprintf(format, args...)})
	}
	switch {
	case h.DSNEnv == "" && h.DSNFile == "":
		bad("dsn_env", "set dsn_env or dsn_file (the PostgreSQL connection string is a secret: never in the config)")
	case h.DSNEnv != "" && h.DSNFile != "":
		bad("dsn_env", "exclusive with history.dsn_file")
	}
	if h.BatchSize < 0 || h.BatchSize > 10000 {
		bad("batch_size", "%d out of range 1-10000", h.BatchSize)
	}
	if h.FlushInterval < 0 {
		bad("flush_interval", "%v must not be negative", time.Duration(h.FlushInterval))
	}
	if h.AckWait != 0 && h.AckWait < Duration(time.Second) {
		bad("ack_wait", "%v shorter than 1s", time.Duration(h.AckWait))
	}
	if h.Consumer != "" && !tokenRe.MatchString(h.Consumer) {
		bad("consumer", "%q must be 1-64 of A-Z a-z 0-9 _ -", h.Consumer)
	}
	o := h.options()
	// the ledger of stored batches follows the readings: a batch the
	// stream may still redeliver must still be in it, or it is stored twice
	if r, age := o.Retention.Readings, time.Duration(c.NATS.MaxAge); r >= 24*time.Hour && (age == 0 || r <= age) {
		stream := "nats.max_age " + age.String()
		if age == 0 {
			stream = "nats.max_age 0s (the stream keeps messages for ever; set a max_age or keep readings for ever, 0s)"
		}
		bad("retention.readings", "%v not longer than %s: a batch the stream redelivers after its ledger row expired would be stored twice", r, stream)
	}
	if err := o.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if f, r, ok := strings.Cut(line, ": "); ok {
				bad(f, "%s", r)
			}
		}
	}
	return ps
}

// historyDSN reads the DSN from its variable or file.
func (c *Config) historyDSN() (secret.Secret, error) {
	h := c.History
	var dsn secret.Secret
	var err error
	src := ""
	if h.DSNEnv != "" {
		dsn, err = secret.FromEnv("history.dsn_env", h.DSNEnv)
		src = "history.dsn_env: environment variable " + h.DSNEnv
	} else {
		dsn, err = secret.FromFile("history.dsn_file", c.Path(h.DSNFile))
		src = "history.dsn_file: file " + c.Path(h.DSNFile)
	}
	if err != nil {
		return dsn, err
	}
	if strings.TrimSpace(dsn.Reveal()) == "" {
		return dsn, fmt.Errorf("%s is blank: %w", src, secret.ErrMissing)
	}
	dsn = secret.New(strings.TrimSpace(dsn.Reveal()))
	if err := history.CheckDSN(dsn); err != nil {
		return dsn, fmt.Errorf("%s: %s", src, strings.TrimPrefix(err.Error(), "history: dsn: "))
	}
	return dsn, nil
}

// openHistory builds the history store (no I/O but reading the DSN; the
// sink connects and retries while the database is down).
func (c *Collector) openHistory() error {
	dsn, err := c.cfg.historyDSN()
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	o := c.cfg.History.options()
	o.DSN, o.Log, o.Group, o.MaxFuture = dsn, c.log.With("component", "history"), c.cfg.Group, time.Duration(c.cfg.MaxFuture)
	h, err := history.New(o)
	if err != nil {
		return fmt.Errorf("collector: history: %w", err)
	}
	c.hist.Store(h)
	return nil
}

func (c *Collector) sinkOptions() history.SinkOptions {
	o := c.cfg.History.sinkOptions(c.cfg.Group, c.cfg.NATS.Stream)
	o.Log, o.Metrics = c.log.With("component", "history"), c.histM
	return o
}

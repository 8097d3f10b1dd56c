// Package history keeps Smelter's telemetry, alerts, KPI windows, births and
// the command audit in PostgreSQL (docs/history.md): readings partitioned by
// time with 1-minute and 1-hour rollups, written in batches that are
// idempotent on (gateway, seq), and queried at a resolution picked from the
// requested range. With the TimescaleDB extension present the time-series
// tables are hypertables with compression; otherwise they are plain
// declarative range partitions that retention drops whole.
//
// Store is the database side (New, Open, Write, the queries); Sink feeds it
// from a JetStream durable consumer and acknowledges only what committed.
package history

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smelterio/smelter/internal/secret"
)

// ErrNotOpen is returned by queries before Open succeeded (the database was
// unreachable at start; the sink keeps trying).
var ErrNotOpen = errors.New("history: database not connected yet")

// Unavailable reports whether err means the database cannot be reached now
// rather than that a query is wrong: ErrNotOpen, a failed connect, a lost
// connection (network error, EOF), a timeout, or a server refusing work
// (SQLSTATE class 08 connection exception, 57P01-57P03 shutting down or
// starting up, 53300 too many connections).
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, ErrNotOpen), errors.As(err, &ce), errors.As(err, &ne), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &pe):
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "53300"
	}
	return false
}

// Retention is how long each table keeps rows; 0 keeps them for ever.
// Readings and rollups are dropped a whole partition (day, month, year) at a
// time once the partition's end is older than the retention.
type Retention struct {
	Readings time.Duration // raw readings and the batch ledger (default 30 days)
	Rollup1m time.Duration // default 365 days
	Rollup1h time.Duration // default 10 years
	Alerts   time.Duration // alerts cleared longer ago than this, with their events
	KPIs     time.Duration // KPI windows
	Births   time.Duration
	Commands time.Duration // the command audit
	Interval time.Duration // how often retention runs (default 1h)
}

// Options configure a Store. DSN is a libpq connection string or URL; it is
// a secret (it may hold a password) and never logged.
type Options struct {
	DSN    secret.Secret
	Schema string // PostgreSQL schema of every table (default "smelter")
	// PoolSize is the most connections the store opens (default 4).
	PoolSize int
	// Timescale: "auto" (default) uses TimescaleDB when the extension is
	// installed in the database at the first migration, "off" never.
	Timescale string
	Retention Retention
	Log       *slog.Logger
	// Now is the clock for retention (default time.Now).
	Now func() time.Time
	// Group, when set, is the collector group whose alerts and KPI windows
	// the store keeps: events of another group on the same stream (their
	// payload's group) are counted in Result.Foreign and not stored; events
	// without a group (collectors before the field) are stored.
	Group string
	// MaxFuture is the collector's max_future: a batch or birth dated ahead
	// of the store's clock is bounded by it as the collector bounds what
	// it evaluates (ingest.BoundBatch, ingest.BoundTSGW: a batch ahead by
	// d inside MaxFuture moves back by d with its readings, beyond it
	// takes the clock's time), so history holds the times the rules,
	// KPIs and API used (review6). 0: times are stored as sent (up to
	// the store's own MaxFuture of a day).
	MaxFuture time.Duration
}

// DefaultRetention returns the default retention.
func DefaultRetention() Retention {
	return Retention{Readings: 30 * 24 * time.Hour, Rollup1m: 365 * 24 * time.Hour, Rollup1h: 10 * 365 * 24 * time.Hour,
		Interval: time.Hour}
}

var schemaRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate checks the options; each line reads "field: reason" with the
// field named as in the collector's history: block.
func (o *Options) Validate() error {
	var errs []error
	if o.Schema != "" && !schemaRe.MatchString(o.Schema) {
		errs = append(errs, fmt.Errorf("schema: %q must be 1-63 of a-z 0-9 _ (not starting with a digit)", o.Schema))
	}
	if o.PoolSize < 0 || o.PoolSize > 100 {
		errs = append(errs, fmt.Errorf("pool_size: %d out of range 1-100", o.PoolSize))
	}
	switch o.Timescale {
	case "", "auto", "off":
	default:
		errs = append(errs, fmt.Errorf("timescaledb: %q is not auto or off", o.Timescale))
	}
	r := o.Retention
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"readings", r.Readings}, {"rollup_1m", r.Rollup1m}, {"rollup_1h", r.Rollup1h}, {"alerts", r.Alerts},
		{"kpis", r.KPIs}, {"births", r.Births}, {"commands", r.Commands}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("retention.%s: %v must not be negative (0 keeps for ever)", f.name, f.d))
		} else if f.d > 0 && f.d < 24*time.Hour {
			errs = append(errs, fmt.Errorf("retention.%s: %v shorter than 24h", f.name, f.d))
		}
	}
	if r.Interval < 0 {
		errs = append(errs, fmt.Errorf("retention.interval: %v must not be negative", r.Interval))
	}
	// coarser tables are kept at least as long as finer ones (0: for ever)
	for _, p := range []struct {
		name, finer string
		d, f        time.Duration
	}{{"rollup_1m", "readings", r.Rollup1m, r.Readings}, {"rollup_1h", "rollup_1m", r.Rollup1h, r.Rollup1m}} {
		if p.d >= 24*time.Hour && p.f >= 0 && (p.f == 0 || p.d < p.f) {
			errs = append(errs, fmt.Errorf("retention.%s: %v shorter than retention.%s (%s): a coarser table is kept at least as long as a finer one", p.name, p.d, p.finer, keepText(p.f)))
		}
	}
	return errors.Join(errs...)
}

// keepText is a retention as text: "for ever" for 0.
func keepText(d time.Duration) string {
	if d == 0 {
		return "0s, for ever"
	}
	return d.String()
}

// passwordRe finds the password of a key=value connection string.
var passwordRe = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// CheckDSN parses a PostgreSQL connection string or URL (as Open will,
// without connecting). The error never holds the DSN: it reads
// "not a valid PostgreSQL connection string or URL: <reason>" with the
// parser's reason (bad port, unknown sslmode, ...), and without the reason
// when that would contain the DSN's user info or password.
func CheckDSN(dsn secret.Secret) error {
	d := dsn.Reveal()
	_, err := pgxpool.ParseConfig(d)
	if err == nil {
		return nil
	}
	const what = "not a valid PostgreSQL connection string or URL"
	reason := err.Error()
	if _, r, ok := strings.Cut(reason, "`: "); ok {
		reason = r // pgconn prefixes the DSN, password masked: not echoed at all
	}
	var secrets []string
	if _, rest, ok := strings.Cut(d, "://"); ok {
		if i := strings.LastIndex(rest, "@"); i > 0 {
			_, pw, _ := strings.Cut(rest[:i], ":")
			secrets = append(secrets, rest[:i], pw)
		}
	}
	for _, m := range passwordRe.FindAllStringSubmatch(d, -1) {
		secrets = append(secrets, strings.Trim(m[1], "'"))
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(reason, s) {
			return errors.New("history: dsn: " + what)
		}
	}
	return errors.New("history: dsn: " + what + ": " + reason)
}

// Mode is how time-series tables are stored.
type Mode string

// Storage modes.
const (
	ModePartitions Mode = "partitions" // declarative range partitions, created ahead of writes
	ModeTimescale  Mode = "timescaledb"
)

// Store writes and reads the history. It is safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger

	mu   sync.RWMutex
	pool *pgxpool.Pool // nil until Open succeeded
	mode Mode

	parts sync.Map // partition name -> struct{}: created (or found) by this store
}

// New returns a Store; it does no I/O (Open connects).
func New(opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := CheckDSN(opts.DSN); err != nil {
		return nil, err
	}
	if opts.Schema == "" {
		opts.Schema = "smelter"
	}
	if opts.PoolSize == 0 {
		opts.PoolSize = 4
	}
	if opts.Timescale == "" {
		opts.Timescale = "auto"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Retention.Interval == 0 {
		opts.Retention.Interval = time.Hour
	}
	return &Store{opts: opts, log: opts.Log}, nil
}

// Schema returns the PostgreSQL schema the store works in.
func (s *Store) Schema() string { return s.opts.Schema }

// Mode returns the storage mode, known after Open.
func (s *Store) Mode() Mode {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mode
}

// Ready reports whether Open succeeded.
func (s *Store) Ready() bool { return s.db() != nil }

func (s *Store) db() *pgxpool.Pool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pool
}

// Open connects, creates the schema and applies the pending migrations. It
// may be called again after an error. The error never contains the DSN.
func (s *Store) Open(ctx context.Context) error {
	if s.Ready() {
		return nil
	}
	cfg, err := pgxpool.ParseConfig(s.opts.DSN.Reveal())
	if err != nil {
		return CheckDSN(s.opts.DSN) // no echo: it may hold a password
	}
	cfg.MaxConns = int32(s.opts.PoolSize)
	cfg.ConnConfig.RuntimeParams["search_path"] = s.opts.Schema
	cfg.ConnConfig.RuntimeParams["application_name"] = "smelter-collector"
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("history: connect: %w", err)
	}
	mode, err := migrate(ctx, pool, s.opts.Schema, s.opts.Timescale != "off", s.log)
	if err != nil {
		pool.Close()
		return err
	}
	s.mu.Lock()
	s.pool, s.mode = pool, mode
	s.mu.Unlock()
	s.log.Info("history database ready", "schema", s.opts.Schema, "mode", mode, "host", cfg.ConnConfig.Host, "database", cfg.ConnConfig.Database)
	return nil
}

// Close closes the connections.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pool != nil {
		s.pool.Close()
		s.pool = nil
	}
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one numbered SQL file.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded files in version order, their
// {{partition "col"}} placeholders expanded for mode.
func migrations(mode Mode) ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("history: migration %s: name must start with a number and _", base)
		}
		text, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		t, err := template.New(base).Funcs(template.FuncMap{"partition": func(col string) string {
			if mode == ModeTimescale {
				return ""
			}
			return "PARTITION BY RANGE (" + col + ")"
		}}).Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("history: migration %s: %w", base, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, nil); err != nil {
			return nil, fmt.Errorf("history: migration %s: %w", base, err)
		}
		out = append(out, migration{version: v, name: base, sql: b.String()})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	return out, nil
}

// Advisory locks, keyed by (hashtext(schema), kind): migrateLock
// serializes migrations and partition DDL of every replica writing one
// schema, retentionLock makes one of them at a time run retention.
const (
	migrateLock   = 1
	retentionLock = 2
)

// migrate applies the pending migrations in one transaction each, under an
// advisory lock so replicas starting together apply them once. The storage
// mode is chosen at the first migration and kept in history_settings.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string, timescale bool, log *slog.Logger) (Mode, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("history: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1), $2)", schema, migrateLock); err != nil {
		return "", fmt.Errorf("history: migration lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext($1), $2)", schema, migrateLock)
	}()
	q := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
		return "", fmt.Errorf("history: create schema %s: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE IF NOT EXISTS history_settings (key text PRIMARY KEY, value text NOT NULL)`); err != nil {
		return "", fmt.Errorf("history: version table: %w", err)
	}
	var mode Mode
	err = conn.QueryRow(ctx, "SELECT value FROM history_settings WHERE key = 'mode'").Scan(&mode)
	if errors.Is(err, pgx.ErrNoRows) {
		mode = ModePartitions
		if timescale {
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").Scan(&n); err != nil {
				return "", fmt.Errorf("history: detect timescaledb: %w", err)
			}
			if n > 0 {
				mode = ModeTimescale
			}
		}
		if _, err := conn.Exec(ctx, "INSERT INTO history_settings (key, value) VALUES ('mode', $1)", string(mode)); err != nil {
			return "", fmt.Errorf("history: settings: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("history: settings: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&have); err != nil {
		return "", fmt.Errorf("history: schema version: %w", err)
	}
	ms, err := migrations(mode)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.version <= have {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			if m.version == 1 && mode == ModeTimescale {
				if err := hypertables(ctx, tx); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("history: migration %s: %w", m.name, err)
		}
		log.Info("history migration applied", "version", m.version, "name", m.name, "mode", mode)
	}
	return mode, nil
}

// series describes a time-series table: its time column, the span of one
// partition (or TimescaleDB chunk) and when TimescaleDB compresses it.
type series struct {
	table, col string
	span       func(t time.Time) (from, to time.Time, suffix string)
	compress   string // interval after which chunks are compressed
	chunk      string
}

func day(t time.Time) (time.Time, time.Time, string) {
	f := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return f, f.AddDate(0, 0, 1), f.Format("20060102")
}

func month(t time.Time) (time.Time, time.Time, string) {
	f := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return f, f.AddDate(0, 1, 0), f.Format("200601")
}

func year(t time.Time) (time.Time, time.Time, string) {
	f := time.Date(t.Year(), 1, 1, 0, 0, 0, 0, time.UTC)
	return f, f.AddDate(1, 0, 0), f.Format("2006")
}

var timeSeries = []series{
	{table: "readings", col: "ts", span: day, compress: "7 days", chunk: "1 day"},
	{table: "rollup_1m", col: "bucket", span: month, compress: "35 days", chunk: "30 days"},
	{table: "rollup_1h", col: "bucket", span: year, compress: "400 days", chunk: "365 days"},
}

// hypertables turns the time-series tables into TimescaleDB hypertables
// with compression segmented by signal. Not exercised by the tests (no
// TimescaleDB on the CI machine); see docs/history.md.
func hypertables(ctx context.Context, tx pgx.Tx) error {
	for _, t := range timeSeries {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SELECT create_hypertable('%s', '%s', chunk_time_interval => INTERVAL '%s', if_not_exists => TRUE)",
			t.table, t.col, t.chunk)); err != nil {
			return fmt.Errorf("hypertable %s: %w", t.table, err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = 'site, asset, signal', timescaledb.compress_orderby = '%s')",
			t.table, t.col)); err != nil {
			return fmt.Errorf("compression %s: %w", t.table, err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("SELECT add_compression_policy('%s', INTERVAL '%s', if_not_exists => TRUE)", t.table, t.compress)); err != nil {
			return fmt.Errorf("compression policy %s: %w", t.table, err)
		}
	}
	return nil
}

// ensurePartitions creates the partitions of table t that hold the times ts
// (plain mode only), under the migration lock so replicas do not race.
func (s *Store) ensurePartitions(ctx context.Context, db *pgxpool.Pool, t series, ts []time.Time) error {
	if s.Mode() == ModeTimescale {
		return nil
	}
	var todo []time.Time
	seen := map[string]bool{}
	for _, x := range ts {
		_, _, suf := t.span(x)
		name := t.table + "_" + suf
		if seen[name] {
			continue
		}
		seen[name] = true
		if _, ok := s.parts.Load(name); !ok {
			todo = append(todo, x)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1), $2)", s.opts.Schema, migrateLock); err != nil {
			return err
		}
		for _, x := range todo {
			from, to, suf := t.span(x)
			name := t.table + "_" + suf
			if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
				name, t.table, from.Format(time.RFC3339), to.Format(time.RFC3339))); err != nil {
				return fmt.Errorf("history: partition %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, x := range todo {
		_, _, suf := t.span(x)
		s.parts.Store(t.table+"_"+suf, struct{}{})
	}
	return nil
}

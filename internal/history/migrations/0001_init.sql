-- 0001: the history schema (docs/history.md). The partition placeholder
-- (a Go template call, internal/history/history.go migrations) becomes a
-- range partitioning clause in plain mode and nothing with TimescaleDB,
-- where the tables become hypertables after this file.

-- ledger of stored data batches: a redelivered (gateway, seq, part) is
-- skipped with everything it carries
CREATE TABLE batches (
	gateway   text        NOT NULL,
	seq       bigint      NOT NULL,
	part      integer     NOT NULL, -- 0: a whole batch, else part of a split batch
	site      text        NOT NULL,
	asset     text        NOT NULL,
	ts_gw     timestamptz NOT NULL,
	readings  integer     NOT NULL,
	stored_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (gateway, seq, part)
);
CREATE INDEX batches_stored_at ON batches (stored_at);

CREATE TABLE readings (
	site    text             NOT NULL,
	asset   text             NOT NULL,
	signal  text             NOT NULL,
	ts      timestamptz      NOT NULL, -- source time (ms)
	value   double precision,          -- NULL: bad, stale or text-only
	txt     text,                      -- enum label or string value
	quality smallint         NOT NULL, -- 0 good, 1 uncertain, 2 bad, 3 stale
	status  bigint           NOT NULL, -- raw protocol code
	gateway text             NOT NULL,
	seq     bigint           NOT NULL
) {{partition "ts"}};
CREATE INDEX readings_signal_ts ON readings (site, asset, signal, ts);

-- rollups: mean = sum / count; good share = good / n
CREATE TABLE rollup_1m (
	site   text             NOT NULL,
	asset  text             NOT NULL,
	signal text             NOT NULL,
	bucket timestamptz      NOT NULL,
	min    double precision,
	max    double precision,
	sum    double precision NOT NULL,
	count  bigint           NOT NULL, -- readings with a value
	good   bigint           NOT NULL, -- readings of quality good
	n      bigint           NOT NULL, -- every reading
	PRIMARY KEY (site, asset, signal, bucket)
) {{partition "bucket"}};

CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
	PRIMARY KEY (site, asset, signal, bucket)) {{partition "bucket"}};

-- one row per alert occurrence: its latest state
CREATE TABLE alerts (
	id           text        PRIMARY KEY,
	key          text        NOT NULL,
	site         text        NOT NULL,
	class        text        NOT NULL,
	asset        text        NOT NULL,
	rule         text        NOT NULL,
	kind         text        NOT NULL,
	signal       text        NOT NULL,
	state        text        NOT NULL, -- raised, updated, cleared
	severity     smallint    NOT NULL, -- 1 info, 2 warn, 3 alarm, 4 trip
	max_severity smallint    NOT NULL,
	message      text        NOT NULL,
	vals         jsonb,
	raised_at    timestamptz NOT NULL,
	updated_at   timestamptz NOT NULL,
	cleared_at   timestamptz
);
CREATE INDEX alerts_asset_raised ON alerts (site, asset, raised_at);
CREATE INDEX alerts_raised ON alerts (raised_at);

-- every lifecycle event of every occurrence
CREATE TABLE alert_events (
	id       text        NOT NULL,
	state    text        NOT NULL,
	ts       timestamptz NOT NULL, -- updated_at of the event
	severity smallint    NOT NULL,
	message  text        NOT NULL,
	vals     jsonb,
	PRIMARY KEY (id, state, ts)
);
CREATE INDEX alert_events_ts ON alert_events (ts);

-- one row per KPI per window
CREATE TABLE kpi_windows (
	site     text             NOT NULL,
	class    text             NOT NULL,
	asset    text             NOT NULL,
	start    timestamptz      NOT NULL,
	stop     timestamptz      NOT NULL,
	coverage double precision NOT NULL,
	name     text             NOT NULL,
	value    double precision NOT NULL,
	unit     text             NOT NULL,
	ref      double precision,
	lim      double precision,
	status   text             NOT NULL,
	message  text             NOT NULL,
	PRIMARY KEY (site, asset, start, name)
);
CREATE INDEX kpi_windows_start ON kpi_windows (start, name);

CREATE TABLE births (
	site      text        NOT NULL,
	class     text        NOT NULL,
	asset     text        NOT NULL,
	gateway   text        NOT NULL,
	seq       bigint      NOT NULL,
	ts_gw     timestamptz NOT NULL,
	part      integer     NOT NULL, -- 0: a whole birth, else part of a split birth
	protocol  text        NOT NULL,
	nameplate jsonb,
	signals   jsonb       NOT NULL, -- [{signal, unit, min, max, interval_ms, src, enum}]
	PRIMARY KEY (site, asset, gateway, ts_gw, part)
);

-- the command audit (docs/commands.md): every stage of every command
CREATE TABLE command_audit (
	id        text        NOT NULL,
	verdict   text        NOT NULL,
	site      text        NOT NULL,
	class     text        NOT NULL,
	asset     text        NOT NULL,
	gateway   text        NOT NULL,
	signal    text        NOT NULL,
	requester text        NOT NULL,
	reason    text        NOT NULL,
	at        timestamptz NOT NULL,
	record    jsonb       NOT NULL, -- the whole command.Result
	PRIMARY KEY (id, verdict, at)
);
CREATE INDEX command_audit_asset_at ON command_audit (site, asset, at);

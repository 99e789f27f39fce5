-- History and operational records. Times are timestamptz (UTC); readings carry the
-- sensor's integer key, not its text id (4 bytes per row instead of ~20).

CREATE TABLE assets (
    asset_id    text PRIMARY KEY,
    name        text,
    type        text NOT NULL,
    kind        text NOT NULL,
    site_id     text NOT NULL,
    line_id     text NOT NULL,
    critical    boolean NOT NULL DEFAULT false,
    spec        jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sensors (
    sensor_key      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id       text NOT NULL UNIQUE,
    asset_id        text NOT NULL REFERENCES assets ON DELETE CASCADE,
    name            text NOT NULL,
    kind            text NOT NULL,
    unit            text NOT NULL,
    sample_period_s double precision NOT NULL
);

-- Raw readings: one native partition per UTC day, made on demand by the writer.
-- quality: 0 good, 1 uncertain, 2 bad. The writer sorts each flush by (sensor, ts), so
-- the BRIN summaries of both columns stay narrow; there is no btree (it cut ingest ~3x).
-- New page ranges are summarised by the writer every few seconds
-- (brin_summarize_new_values), and by autovacuum as a backstop.
CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    sensor_key  integer NOT NULL,
    value       real NOT NULL,
    quality     smallint NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX readings_brin ON readings USING brin (sensor_key, ts) WITH (pages_per_range = 8, autosummarize = on);

-- Raw readings older than the compaction age, one row per sensor and hour (see
-- store/blocks.py for the encoding, about 2-3 bytes per reading). Monthly partitions.
CREATE TABLE reading_blocks (
    sensor_key  integer NOT NULL,
    hour        timestamptz NOT NULL,
    n           integer NOT NULL,
    first_ts    timestamptz NOT NULL,
    last_ts     timestamptz NOT NULL,
    vmin        real NOT NULL,
    vmax        real NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (sensor_key, hour)
) PARTITION BY RANGE (hour);

-- Rollups. mean and m2 (sum of squared deviations) merge exactly (Chan et al.), so late
-- readings fold into an existing bucket. count excludes bad-quality values (they are in
-- n_bad); source 0 = computed here from raw readings, 1 = a gateway's own aggregate
-- (covers every value of its window, so raw readings never merge into it).
CREATE TABLE rollup_1m (
    sensor_key  integer NOT NULL,
    bucket      timestamptz NOT NULL,
    count       integer NOT NULL,
    mean        double precision,
    m2          double precision,
    vmin        real,
    vmax        real,
    n_uncertain integer NOT NULL DEFAULT 0,
    n_bad       integer NOT NULL DEFAULT 0,
    source      smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (sensor_key, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE rollup_1h (
    sensor_key  integer NOT NULL,
    bucket      timestamptz NOT NULL,
    count       integer NOT NULL,
    mean        double precision,
    m2          double precision,
    vmin        real,
    vmax        real,
    n_uncertain integer NOT NULL DEFAULT 0,
    n_bad       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (sensor_key, bucket)
) PARTITION BY RANGE (bucket);

-- Hours whose 1-minute rollups changed since their 1-hour rollup was computed.
CREATE TABLE rollup_dirty (hour timestamptz PRIMARY KEY);

-- JetStream messages already stored (idempotent redelivery): the stream sequence,
-- written in the same transaction as the rows.
CREATE TABLE stored_messages (
    stream      text NOT NULL,
    seq         bigint NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, seq)
);

-- Rows and messages the writer refused, with the reason (also on tf.dlq.store).
CREATE TABLE rejected (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    seq         bigint NOT NULL,
    reason      text NOT NULL,
    rows        integer NOT NULL,
    sample      text,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE anomalies (
    anomaly_id      text PRIMARY KEY,
    asset_id        text NOT NULL,
    sensor_id       text,
    ts              timestamptz NOT NULL,
    type            text NOT NULL,
    severity        text NOT NULL,
    score           double precision NOT NULL,
    value           double precision,
    expected_value  double precision,
    reason          text NOT NULL,
    detector        text NOT NULL,
    source          text NOT NULL DEFAULT 'twin',
    record          jsonb NOT NULL
);
CREATE INDEX anomalies_asset_ts ON anomalies (asset_id, ts);
CREATE INDEX anomalies_sensor_ts ON anomalies (sensor_id, ts) WHERE sensor_id IS NOT NULL;

CREATE TABLE rul_predictions (
    asset_id        text NOT NULL,
    predicted_at    timestamptz NOT NULL,
    component       text NOT NULL,
    failure_mode    text,
    median_hours    double precision NOT NULL,
    lower_hours     double precision NOT NULL,
    upper_hours     double precision NOT NULL,
    p_fail_7d       double precision,
    model_version   text NOT NULL,
    record          jsonb NOT NULL,
    PRIMARY KEY (asset_id, predicted_at, component)
);

CREATE TABLE twin_snapshots (
    asset_id        text NOT NULL,
    ts              timestamptz NOT NULL,
    version         bigint NOT NULL,
    status          text NOT NULL,
    health_score    double precision NOT NULL,
    active_anomalies integer NOT NULL,
    state           jsonb NOT NULL,
    PRIMARY KEY (asset_id, ts)
);

CREATE TABLE technicians (
    technician_id   text PRIMARY KEY,
    name            text NOT NULL,
    skills          text[] NOT NULL DEFAULT '{}',
    site_id         text,
    record          jsonb NOT NULL
);

CREATE TABLE work_orders (
    workorder_id    text PRIMARY KEY,
    asset_id        text NOT NULL,
    type            text NOT NULL,
    priority        text NOT NULL,
    status          text NOT NULL,
    title           text NOT NULL,
    scheduled_date  timestamptz,
    technician_id   text,
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    record          jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_orders_asset ON work_orders (asset_id, created_at);

-- Changes made through the API (schemas/audit.py), stored once under their id.
CREATE TABLE audit_log (
    audit_id    text PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    role        text NOT NULL,
    action      text NOT NULL,
    target      text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Retention per tier, editable (twinfleet's defaults: 90 days raw, 1 year of 1-minute,
-- 5 years of 1-hour). Partitions wholly older are dropped; rows older in the newest
-- expired partition are deleted.
CREATE TABLE retention (
    tier        text PRIMARY KEY CHECK (tier IN ('raw', '1m', '1h')),
    keep        interval NOT NULL CHECK (keep > interval '0')
);
INSERT INTO retention VALUES ('raw', '90 days'), ('1m', '1 year'), ('1h', '5 years');

-- callrec: no transaction
-- The console, continued (issue 13).  Run statement by statement outside a transaction (store/migrate.py);
-- every statement may run again after an interruption.

-- Each key's own time, beside keys_pressed: keys_at[i] is when keys_pressed's i-th key came (Asterisk's event
-- time on the ARI door; on FastAGI the moment its command answered with the key).  Up to 64, as the keys.
-- A constant default: no table rewrite.  Rows from before keep '{}' (the timeline then puts their keys at
-- consent_at, as it did).
ALTER TABLE calls ADD COLUMN IF NOT EXISTS keys_at timestamptz[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN calls.keys_at IS 'the time of each key of keys_pressed, in order (empty on rows from before 022)';

-- The dashboard's figures over long ranges (store/dashboard.py): running counts of calls per UTC hour and
-- outcome, and per UTC day and agent, kept by the database itself in the statement that changes ``calls``
-- (statement-level triggers over the changed rows), so they always equal the aggregates over ``calls``.
-- confidential is kept apart: a supervisor's dashboard leaves those calls out.  A range's whole hours (days)
-- are read from here, its ragged ends from ``calls``; an agent's dashboard reads ``calls`` (their own calls
-- and those they were a party to are not countable in advance).  Counts may reach 0 and stay as rows.
CREATE TABLE IF NOT EXISTS dashboard_hours (
    hour             timestamptz NOT NULL,
    confidential     boolean NOT NULL,
    consent          text NOT NULL,  -- '' for a call whose consent is not settled
    recording_status text NOT NULL,
    calls            integer NOT NULL,
    PRIMARY KEY (hour, confidential, consent, recording_status)
);
COMMENT ON TABLE dashboard_hours IS
    'calls per UTC hour, confidentiality, consent and recording status (triggers on calls)';

CREATE TABLE IF NOT EXISTS dashboard_agent_days (
    day          date NOT NULL,  -- the UTC day
    confidential boolean NOT NULL,
    agent        text NOT NULL,
    calls        integer NOT NULL,
    declined     integer NOT NULL,
    PRIMARY KEY (day, confidential, agent)
);
COMMENT ON TABLE dashboard_agent_days IS
    'calls and declined calls per UTC day, confidentiality and agent (triggers on calls)';

CREATE TABLE IF NOT EXISTS dashboard_alert_hours (
    hour         timestamptz NOT NULL,  -- the UTC hour the alert's call started in
    confidential boolean NOT NULL,      -- the call's
    rule         text NOT NULL,
    alerts       integer NOT NULL,      -- = calls: a rule alerts a call once (alerts' UNIQUE (rule, call_id))
    PRIMARY KEY (hour, confidential, rule)
);
COMMENT ON TABLE dashboard_alert_hours IS 'alerts per rule and UTC hour and confidentiality of their calls (triggers)';

CREATE OR REPLACE FUNCTION dashboard_alerts_add(started timestamptz, confidential boolean, rule text, n integer)
    RETURNS void LANGUAGE sql AS $$
    INSERT INTO dashboard_alert_hours AS s (hour, confidential, rule, alerts)
        VALUES (date_trunc('hour', started, 'UTC'), confidential, rule, n)
    ON CONFLICT (hour, confidential, rule) DO UPDATE SET alerts = s.alerts + EXCLUDED.alerts;
$$;

-- Alerts counted by their call's hour and confidentiality.  An alert whose call is gone (deleted with it,
-- by the foreign key's cascade) was already taken off by the call's own deletion (dashboard_call_deleted).
CREATE OR REPLACE FUNCTION dashboard_alert_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM dashboard_alerts_add(c.started_at, c.confidential, o.rule, -1)
           FROM old_rows o JOIN calls c ON c.id = o.call_id ORDER BY c.started_at, o.rule;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM dashboard_alerts_add(c.started_at, c.confidential, w.rule, 1)
           FROM new_rows w JOIN calls c ON c.id = w.call_id ORDER BY c.started_at, w.rule;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION dashboard_call_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dashboard_alerts_add(OLD.started_at, OLD.confidential, a.rule, -1) FROM alerts a WHERE a.call_id = OLD.id;
    RETURN OLD;
END;
$$;

-- A function per kind of change (static SQL: its plans are cached; a dynamic statement was planned at every
-- write); old_rows / new_rows are the statement's transition tables.  A change is a
-- set of signed counts per key (-1 for a row as it was, +1 as it is), summed and applied in key order (two
-- writers lock the rows they share in the same order).  An update that moves no call from one key to
-- another (most: a state, a time) writes nothing.
CREATE OR REPLACE FUNCTION dashboard_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS (SELECT started_at, confidential, coalesce(consent, '') AS consent, recording_status, agent, 1 AS n
               FROM new_rows),
    h AS (INSERT INTO dashboard_hours AS s (hour, confidential, consent, recording_status, calls)
          SELECT date_trunc('hour', d.started_at, 'UTC'), d.confidential, d.consent, d.recording_status, sum(d.n)
            FROM d GROUP BY 1, 2, 3, 4 HAVING sum(d.n) <> 0 ORDER BY 1, 2, 3, 4
          ON CONFLICT (hour, confidential, consent, recording_status) DO UPDATE SET calls = s.calls + EXCLUDED.calls)
    INSERT INTO dashboard_agent_days AS s (day, confidential, agent, calls, declined)
        SELECT (d.started_at AT TIME ZONE 'UTC')::date, d.confidential, d.agent, sum(d.n),
               coalesce(sum(d.n) FILTER (WHERE d.consent = 'declined'), 0)
          FROM d WHERE d.agent IS NOT NULL GROUP BY 1, 2, 3
        HAVING sum(d.n) <> 0 OR sum(d.n) FILTER (WHERE d.consent = 'declined') <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (day, confidential, agent)
    DO UPDATE SET calls = s.calls + EXCLUDED.calls, declined = s.declined + EXCLUDED.declined;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION dashboard_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS (SELECT started_at, confidential, coalesce(consent, '') AS consent, recording_status, agent, -1 AS n
               FROM old_rows),
    h AS (INSERT INTO dashboard_hours AS s (hour, confidential, consent, recording_status, calls)
          SELECT date_trunc('hour', d.started_at, 'UTC'), d.confidential, d.consent, d.recording_status, sum(d.n)
            FROM d GROUP BY 1, 2, 3, 4 HAVING sum(d.n) <> 0 ORDER BY 1, 2, 3, 4
          ON CONFLICT (hour, confidential, consent, recording_status) DO UPDATE SET calls = s.calls + EXCLUDED.calls)
    INSERT INTO dashboard_agent_days AS s (day, confidential, agent, calls, declined)
        SELECT (d.started_at AT TIME ZONE 'UTC')::date, d.confidential, d.agent, sum(d.n),
               coalesce(sum(d.n) FILTER (WHERE d.consent = 'declined'), 0)
          FROM d WHERE d.agent IS NOT NULL GROUP BY 1, 2, 3
        HAVING sum(d.n) <> 0 OR sum(d.n) FILTER (WHERE d.consent = 'declined') <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (day, confidential, agent)
    DO UPDATE SET calls = s.calls + EXCLUDED.calls, declined = s.declined + EXCLUDED.declined;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION dashboard_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS (SELECT started_at, confidential, coalesce(consent, '') AS consent, recording_status, agent, -1 AS n
               FROM old_rows
               UNION ALL SELECT started_at, confidential, coalesce(consent, '') AS consent, recording_status, agent, 1
               FROM new_rows),
    h AS (INSERT INTO dashboard_hours AS s (hour, confidential, consent, recording_status, calls)
          SELECT date_trunc('hour', d.started_at, 'UTC'), d.confidential, d.consent, d.recording_status, sum(d.n)
            FROM d GROUP BY 1, 2, 3, 4 HAVING sum(d.n) <> 0 ORDER BY 1, 2, 3, 4
          ON CONFLICT (hour, confidential, consent, recording_status) DO UPDATE SET calls = s.calls + EXCLUDED.calls)
    INSERT INTO dashboard_agent_days AS s (day, confidential, agent, calls, declined)
        SELECT (d.started_at AT TIME ZONE 'UTC')::date, d.confidential, d.agent, sum(d.n),
               coalesce(sum(d.n) FILTER (WHERE d.consent = 'declined'), 0)
          FROM d WHERE d.agent IS NOT NULL GROUP BY 1, 2, 3
        HAVING sum(d.n) <> 0 OR sum(d.n) FILTER (WHERE d.consent = 'declined') <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (day, confidential, agent)
    DO UPDATE SET calls = s.calls + EXCLUDED.calls, declined = s.declined + EXCLUDED.declined;
    -- A call's alerts follow it to another hour or confidentiality: the calls whose (hour, confidential)
    -- changed are those whose -1 and +1 do not cancel out (not a join of the two transition tables: planned
    -- as a nested loop, that took seconds a batch).
    WITH k AS (SELECT id, date_trunc('hour', started_at, 'UTC') AS hour, confidential, -1 AS n FROM old_rows
               UNION ALL SELECT id, date_trunc('hour', started_at, 'UTC'), confidential, 1 FROM new_rows),
    m AS (SELECT id, hour, confidential, sum(n) AS n FROM k GROUP BY 1, 2, 3 HAVING sum(n) <> 0)
    INSERT INTO dashboard_alert_hours AS s (hour, confidential, rule, alerts)
        SELECT m.hour, m.confidential, a.rule, sum(m.n) FROM m JOIN alerts a ON a.call_id = m.id
         GROUP BY 1, 2, 3 HAVING sum(m.n) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (hour, confidential, rule) DO UPDATE SET alerts = s.alerts + EXCLUDED.alerts;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION dashboard_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE dashboard_hours, dashboard_agent_days, dashboard_alert_hours;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION dashboard_alert_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE dashboard_alert_hours;
    RETURN NULL;
END;
$$;

-- The triggers and the counts of the calls already logged, in one transaction that holds writes to calls
-- back meanwhile (a few seconds for a million calls: the call-log writer waits, nothing is lost), so no
-- change falls between the counting and the first trigger.  Runs again from scratch after an interruption.
DO $$
BEGIN
    LOCK TABLE calls, alerts IN SHARE ROW EXCLUSIVE MODE;
    DROP TRIGGER IF EXISTS dashboard_counts_insert ON calls;
    DROP TRIGGER IF EXISTS dashboard_counts_update ON calls;
    DROP TRIGGER IF EXISTS dashboard_counts_delete ON calls;
    DROP TRIGGER IF EXISTS dashboard_counts_truncate ON calls;
    DROP TRIGGER IF EXISTS dashboard_call_deleted ON calls;
    DROP TRIGGER IF EXISTS dashboard_alert_counts_insert ON alerts;
    DROP TRIGGER IF EXISTS dashboard_alert_counts_update ON alerts;
    DROP TRIGGER IF EXISTS dashboard_alert_counts_delete ON alerts;
    DROP TRIGGER IF EXISTS dashboard_alert_counts_truncate ON alerts;
    CREATE TRIGGER dashboard_counts_insert AFTER INSERT ON calls REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_counts_insert();
    CREATE TRIGGER dashboard_counts_update AFTER UPDATE ON calls
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_counts_update();
    CREATE TRIGGER dashboard_counts_delete AFTER DELETE ON calls REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_counts_delete();
    CREATE TRIGGER dashboard_counts_truncate AFTER TRUNCATE ON calls
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_counts_truncate();
    CREATE TRIGGER dashboard_alert_counts_truncate AFTER TRUNCATE ON alerts
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_alert_counts_truncate();
    CREATE TRIGGER dashboard_call_deleted BEFORE DELETE ON calls
        FOR EACH ROW EXECUTE FUNCTION dashboard_call_deleted();
    CREATE TRIGGER dashboard_alert_counts_insert AFTER INSERT ON alerts REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_alert_counts();
    CREATE TRIGGER dashboard_alert_counts_update AFTER UPDATE ON alerts
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_alert_counts();
    CREATE TRIGGER dashboard_alert_counts_delete AFTER DELETE ON alerts REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dashboard_alert_counts();
    TRUNCATE dashboard_hours, dashboard_agent_days, dashboard_alert_hours;
    INSERT INTO dashboard_alert_hours (hour, confidential, rule, alerts)
        SELECT date_trunc('hour', c.started_at, 'UTC'), c.confidential, a.rule, count(*)
          FROM alerts a JOIN calls c ON c.id = a.call_id GROUP BY 1, 2, 3;
    INSERT INTO dashboard_hours (hour, confidential, consent, recording_status, calls)
        SELECT date_trunc('hour', started_at, 'UTC'), confidential, coalesce(consent, ''), recording_status, count(*)
          FROM calls GROUP BY 1, 2, 3, 4;
    INSERT INTO dashboard_agent_days (day, confidential, agent, calls, declined)
        SELECT (started_at AT TIME ZONE 'UTC')::date, confidential, agent, count(*),
               count(*) FILTER (WHERE consent = 'declined')
          FROM calls WHERE agent IS NOT NULL GROUP BY 1, 2, 3;
END;
$$;

-- An agent's dashboard reads their own calls of the range from this index alone.
CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_agent_dashboard_idx ON calls (agent, started_at)
    INCLUDE (id, consent, recording_status, confidential);

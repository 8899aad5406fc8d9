-- callrec: no transaction
-- The console (docs/console.md).  Run statement by statement outside a transaction (store/migrate.py), so
-- the index on calls is built CONCURRENTLY on a live database; every statement may run again after an
-- interruption.

-- Saved searches, one list per user.  A saved search is the calls list's query string (the filter keys of
-- GET /api/v1/calls), checked by the API before it is stored.  owner is the principal's audit name (a console
-- user, or token:<name>), so a token's searches are its own.
CREATE TABLE IF NOT EXISTS saved_searches (
    id          bigserial PRIMARY KEY,
    owner       text NOT NULL,
    name        text NOT NULL CHECK (name ~ '^[^[:cntrl:]]{1,80}$' AND name = btrim(name)),
    query       text NOT NULL CHECK (length(query) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);
COMMENT ON TABLE saved_searches IS 'per-user saved call searches: a name and the calls list''s query string';

-- Agent names beside extensions (the calls list, the dashboard): the users of an extension, looked up per row.
DROP INDEX CONCURRENTLY IF EXISTS users_extension_idx;
CREATE INDEX CONCURRENTLY users_extension_idx ON users (extension) WHERE extension IS NOT NULL;

-- The dashboard's figures (store/dashboard.py) for a range of days, read from this index alone (an
-- index-only scan): a month of a million-call year is ~80,000 index entries instead of as many table rows.
DROP INDEX CONCURRENTLY IF EXISTS calls_dashboard_idx;
CREATE INDEX CONCURRENTLY calls_dashboard_idx ON calls (started_at)
    INCLUDE (id, consent, recording_status, agent, confidential);

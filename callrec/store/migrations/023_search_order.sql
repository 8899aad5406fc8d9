-- callrec: no transaction
-- Call search newest first at 10 million calls (docs/benchmarks.md#call-search-at-scale): a tag's calls and
-- the calls whose names hold a `q=` text, each readable in the list's order from an index, so that a page
-- reads about its own rows instead of every match (a trigram index cannot give its matches in any order).
--
-- call_tags.started_at: the call's start beside each tag (kept by triggers), for (tag, started_at, call_id).
-- call_search: one row per call, its start and the names `q=` searches (caller name, agent, parties' names,
-- one per line, in lower case), kept by triggers on calls and call_parties; read newest first by
-- call_search_started_idx when a text is common, by its trigram index when rare (callquery.py).
--
-- Runs statement by statement outside a transaction (store/migrate.py): the triggers first, so that rows
-- written meanwhile are kept; then the backfill in committed batches; then the indexes CONCURRENTLY.
-- Every statement can run again after an interruption.
ALTER TABLE call_tags ADD COLUMN IF NOT EXISTS started_at timestamptz;

COMMENT ON COLUMN call_tags.started_at IS 'calls.started_at of the call (trigger-kept), for the tag search in order';

CREATE TABLE IF NOT EXISTS call_search (
    call_id    uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    names      text NOT NULL
);

COMMENT ON TABLE call_search IS 'per call: calls.started_at and the names q= searches, a line each, lower case (trigger-kept)';

-- The names q= searches, in one text: the caller's name, the agent, each party's name, a line each (a text
-- without a line break matches the whole exactly when it matches one of them), in lower case: `names LIKE
-- lower(pattern)` is what ILIKE does in a UTF-8 database (lower both, then LIKE), without lowering every
-- row it reads again.
CREATE OR REPLACE FUNCTION callrec_call_search_refresh(cid uuid) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_search (call_id, started_at, names)
    SELECT c.id, c.started_at,
           lower(concat_ws(E'\n', c.caller_name, c.agent,
                           (SELECT string_agg(p.name, E'\n' ORDER BY p.seq) FROM call_parties p
                             WHERE p.call_id = c.id)))
      FROM calls c WHERE c.id = cid
    ON CONFLICT (call_id) DO UPDATE SET started_at = EXCLUDED.started_at, names = EXCLUDED.names
     WHERE (call_search.started_at, call_search.names) IS DISTINCT FROM (EXCLUDED.started_at, EXCLUDED.names);
END $$;

CREATE OR REPLACE FUNCTION calls_search_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.started_at IS DISTINCT FROM OLD.started_at THEN
        UPDATE call_tags SET started_at = NEW.started_at WHERE call_id = NEW.id;
    END IF;
    PERFORM callrec_call_search_refresh(NEW.id);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS calls_search_names ON calls;

CREATE TRIGGER calls_search_names AFTER INSERT ON calls FOR EACH ROW EXECUTE FUNCTION calls_search_names();

DROP TRIGGER IF EXISTS calls_search_names_update ON calls;

-- Only when a searched field changed (the call log's writer sets every column of a call it updates).
CREATE TRIGGER calls_search_names_update AFTER UPDATE OF caller_name, agent, started_at ON calls
    FOR EACH ROW WHEN (NEW.caller_name IS DISTINCT FROM OLD.caller_name OR NEW.agent IS DISTINCT FROM OLD.agent
                       OR NEW.started_at IS DISTINCT FROM OLD.started_at)
    EXECUTE FUNCTION calls_search_names();

CREATE OR REPLACE FUNCTION call_parties_search_names() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cid uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.call_id ELSE NEW.call_id END;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name AND NEW.call_id = OLD.call_id THEN
        RETURN NULL;
    END IF;
    -- Two transactions changing one call's parties at once would each write the names they see: the
    -- call's row lock makes the second wait and then read the first's parties.
    PERFORM 1 FROM calls WHERE id = cid FOR NO KEY UPDATE;
    PERFORM callrec_call_search_refresh(cid);
    IF TG_OP = 'UPDATE' AND NEW.call_id <> OLD.call_id THEN
        PERFORM callrec_call_search_refresh(OLD.call_id);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS call_parties_search_names ON call_parties;

CREATE TRIGGER call_parties_search_names AFTER INSERT OR UPDATE OR DELETE ON call_parties
    FOR EACH ROW EXECUTE FUNCTION call_parties_search_names();

CREATE OR REPLACE FUNCTION call_tags_started_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.started_at := (SELECT c.started_at FROM calls c WHERE c.id = NEW.call_id);
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS call_tags_started_at ON call_tags;

CREATE TRIGGER call_tags_started_at BEFORE INSERT OR UPDATE OF call_id, started_at ON call_tags
    FOR EACH ROW EXECUTE FUNCTION call_tags_started_at();

-- The rows written before this migration, 20,000 calls at a time in the order they started, each batch
-- committed: call_search's rows then lie on disk in time order, as the triggers write them from now on, so
-- that reading the newest calls in order reads few pages.
DO $$
DECLARE
    last_at timestamptz := '-infinity';
    last_id uuid := '00000000-0000-0000-0000-000000000000';
    upto_at timestamptz;
    upto_id uuid;
BEGIN
    LOOP
        SELECT started_at, id INTO upto_at, upto_id
          FROM (SELECT started_at, id FROM calls WHERE (started_at, id) > (last_at, last_id)
                 ORDER BY started_at, id LIMIT 20000) AS batch
         ORDER BY started_at DESC, id DESC LIMIT 1;
        EXIT WHEN NOT FOUND;
        INSERT INTO call_search (call_id, started_at, names)
        SELECT c.id, c.started_at,
               lower(concat_ws(E'\n', c.caller_name, c.agent,
                               (SELECT string_agg(p.name, E'\n' ORDER BY p.seq) FROM call_parties p
                                 WHERE p.call_id = c.id)))
          FROM calls c WHERE (c.started_at, c.id) > (last_at, last_id) AND (c.started_at, c.id) <= (upto_at, upto_id)
         ORDER BY c.started_at, c.id
        ON CONFLICT (call_id) DO NOTHING;  -- a row there already was written by the trigger: current
        last_at := upto_at;
        last_id := upto_id;
        COMMIT;
    END LOOP;
END $$;

-- The start beside each tag written before, 10,000 tags at a time in key order, each batch committed.
DO $$
DECLARE
    last_id uuid := '00000000-0000-0000-0000-000000000000';
    last_tag text := '';
    upto_id uuid;
    upto_tag text;
BEGIN
    LOOP
        SELECT call_id, tag INTO upto_id, upto_tag
          FROM (SELECT call_id, tag FROM call_tags WHERE (call_id, tag) > (last_id, last_tag)
                 ORDER BY call_id, tag LIMIT 10000) AS batch
         ORDER BY call_id DESC, tag DESC LIMIT 1;
        EXIT WHEN NOT FOUND;
        UPDATE call_tags t SET started_at = c.started_at FROM calls c
         WHERE c.id = t.call_id AND (t.call_id, t.tag) > (last_id, last_tag) AND (t.call_id, t.tag) <= (upto_id, upto_tag)
           AND t.started_at IS NULL;
        last_id := upto_id;
        last_tag := upto_tag;
        COMMIT;
    END LOOP;
END $$;

ANALYZE call_search;

CREATE INDEX CONCURRENTLY IF NOT EXISTS call_tags_tag_started_idx ON call_tags (tag, started_at DESC, call_id DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS call_search_started_idx ON call_search (started_at DESC, call_id DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS call_search_names_trgm_idx ON call_search USING gin (names gin_trgm_ops);

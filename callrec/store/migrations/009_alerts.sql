-- Keyword alerts (docs/speech.md#keyword-alerts): rules kept through the API, the alerts raised, and
-- hook jobs that are not about a finished recording.

-- Rules added through the API (POST /api/v1/alert-rules).  Rules of the config file ([[alerts.rules]]) are
-- not stored: the file stays their one source, and a name used there cannot be added here.
CREATE TABLE alert_rules (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    phrases     text[] NOT NULL CHECK (cardinality(phrases) BETWEEN 1 AND 100),
    speaker     text NOT NULL DEFAULT 'any' CHECK (speaker IN ('any', 'caller', 'agent')),
    kind        text NOT NULL DEFAULT 'said' CHECK (kind IN ('said', 'not_said')),
    within_s    integer CHECK (within_s IS NULL OR within_s BETWEEN 1 AND 86400),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_rules IS 'keyword alert rules added through the API; config rules are not stored';
COMMENT ON COLUMN alert_rules.within_s IS 'said / not said in the first N seconds of the recording; NULL: anywhere';

-- One alert per rule and call: a transcript saved again (a job run twice, a new model) raises no second
-- alert for a rule that already fired, and withdraws none.  rule is the name as it was (no foreign key:
-- deleting a rule keeps its alerts).
CREATE TABLE alerts (
    id          bigserial PRIMARY KEY,
    rule        text NOT NULL,
    call_id     uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('said', 'not_said')),
    phrase      text NOT NULL,
    speaker     text CHECK (speaker IN ('caller', 'agent', 'mixed', 'any')),
    offset_ms   integer CHECK (offset_ms IS NULL OR offset_ms >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule, call_id)
);
CREATE INDEX alerts_newest_idx ON alerts (created_at DESC, id DESC);
CREATE INDEX alerts_call_idx ON alerts (call_id);
COMMENT ON TABLE alerts IS 'keyword alerts: one per (rule, call), raised when the call''s transcript is saved';
COMMENT ON COLUMN alerts.phrase IS 'said: the rule''s phrase that was found; not_said: the phrase(s) missing';
COMMENT ON COLUMN alerts.speaker IS 'said: who said it (mixed: a mono recording); not_said: the rule''s speaker';
COMMENT ON COLUMN alerts.offset_ms IS 'said: the first matched word''s start; not_said: when it was said too late, or NULL';

-- Hook jobs for more than one event: the recording's own (key '') and one per alert (key 'alert:<id>').
ALTER TABLE hook_jobs ADD COLUMN event text NOT NULL DEFAULT 'recording.finalized'
    CHECK (event IN ('recording.finalized', 'alert.matched'));
ALTER TABLE hook_jobs ADD COLUMN key text NOT NULL DEFAULT '';
ALTER TABLE hook_jobs DROP CONSTRAINT hook_jobs_call_id_hook_key;
ALTER TABLE hook_jobs ADD CONSTRAINT hook_jobs_call_hook_key UNIQUE (call_id, hook, key);
COMMENT ON COLUMN hook_jobs.event IS 'recording.finalized | alert.matched: the payload''s event';
COMMENT ON COLUMN hook_jobs.key IS '''''; for an alert, alert:<alerts.id>: one job per hook and alert';

-- Listing alerts is audited like call search: pages counted per principal, window and what is listed.
ALTER TABLE audit_search_windows ADD COLUMN action text NOT NULL DEFAULT 'search';
ALTER TABLE audit_search_windows DROP CONSTRAINT audit_search_windows_pkey;
ALTER TABLE audit_search_windows ADD PRIMARY KEY (actor, action);
COMMENT ON COLUMN audit_search_windows.action IS 'the audit action of the pages: search (calls), alerts_list';

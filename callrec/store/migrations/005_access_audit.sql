-- Access control and the audit trail (issue 4): users, API tokens, console sessions, call tags,
-- the confidential flag, audio-deletion facts, and an append-only audit log.
--
-- Privileges: run migrations as the owner role; run the daemon as a role that does NOT own these
-- tables (an owner can disable triggers).  The app role needs on audit_log only INSERT and SELECT
-- (plus USAGE on its sequence): see docs/ops-api.md "Database roles".

CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    password_hash   text,            -- scrypt$N$r$p$salt$hash (NULL: no console log-in)
    role            text NOT NULL CHECK (role IN ('admin', 'supervisor', 'agent', 'security', 'auditor')),
    extension       text CHECK (extension ~ '^[A-Za-z0-9_.+*#-]{1,40}$'),
    disabled        boolean NOT NULL DEFAULT false,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'agent' OR extension IS NOT NULL)
);
COMMENT ON TABLE users IS 'console/API users; the agent role sees the calls of its extension only';

CREATE TABLE api_tokens (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    token_sha256    text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    role            text NOT NULL CHECK (role IN ('admin', 'supervisor', 'agent', 'security', 'auditor')),
    user_id         bigint REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    CHECK (role <> 'agent' OR user_id IS NOT NULL)
);
COMMENT ON TABLE api_tokens IS 'bearer tokens, stored as sha256 of a 256-bit random secret (shown once)';

CREATE TABLE web_sessions (
    id_sha256       text PRIMARY KEY CHECK (id_sha256 ~ '^[0-9a-f]{64}$'),
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_sha256     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    remote          text
);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);
COMMENT ON TABLE web_sessions IS 'console sessions; the cookie and CSRF secrets are stored hashed';

CREATE TABLE call_tags (
    call_id         uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    tag             text NOT NULL CHECK (tag ~ '^[^[:cntrl:]]{1,64}$' AND tag = btrim(tag)),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    PRIMARY KEY (call_id, tag)
);
CREATE INDEX call_tags_tag_idx ON call_tags (tag);

ALTER TABLE calls ADD COLUMN confidential boolean NOT NULL DEFAULT false;
ALTER TABLE calls ADD COLUMN confidential_at timestamptz;
ALTER TABLE calls ADD COLUMN confidential_by text;
ALTER TABLE calls ADD COLUMN audio_deleted_at timestamptz;
ALTER TABLE calls ADD COLUMN audio_deleted_by text;
COMMENT ON COLUMN calls.confidential IS 'only admin and security see the call (search, counts, export, detail, audio)';
COMMENT ON COLUMN calls.audio_deleted_at IS 'the recording file was deleted (by hand or retention); the row stays';
COMMENT ON COLUMN calls.audio_deleted_by IS 'who deleted it: user name, token:<name>, retention, ...';
CREATE INDEX call_parties_call_number_idx ON call_parties (number, call_id);

-- The audit trail.  call_id has no foreign key on purpose: the entries outlive a call row that
-- retention or an erase request removes.
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor           text NOT NULL,
    role            text,
    action          text NOT NULL,
    call_id         uuid,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    remote          text
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_call_idx ON audit_log (call_id, id DESC) WHERE call_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id DESC);
CREATE INDEX audit_log_action_idx ON audit_log (action, id DESC);
COMMENT ON TABLE audit_log IS 'append-only: UPDATE, DELETE and TRUNCATE raise (triggers)';

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;

-- Confidential by policy rule: the daemon keeps this table equal to the [[policy.rules]] that have
-- confidential = true; a call whose rule is listed is confidential from its first row on.
CREATE TABLE confidential_policy_rules (
    rule            text PRIMARY KEY
);
CREATE FUNCTION calls_confidential_by_rule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.policy_rule IS NOT NULL AND NOT NEW.confidential
       AND EXISTS (SELECT 1 FROM confidential_policy_rules r WHERE r.rule = NEW.policy_rule) THEN
        NEW.confidential := true;
        NEW.confidential_at := now();
        NEW.confidential_by := 'policy:' || NEW.policy_rule;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER calls_confidential_on_insert BEFORE INSERT ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_confidential_by_rule();
CREATE TRIGGER calls_confidential_on_rule BEFORE UPDATE OF policy_rule ON calls
    FOR EACH ROW WHEN (OLD.policy_rule IS DISTINCT FROM NEW.policy_rule)
    EXECUTE FUNCTION calls_confidential_by_rule();

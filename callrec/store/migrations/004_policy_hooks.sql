-- Recording policies: why a call was or was not recorded, and QA sampling.
ALTER TABLE calls DROP CONSTRAINT calls_consent_check;
ALTER TABLE calls ADD CONSTRAINT calls_consent_check
    CHECK (consent IN ('implied', 'granted', 'declined', 'not_given', 'abandoned', 'notice_failed', 'unavailable',
                       'not_asked'));
ALTER TABLE calls ADD COLUMN record_policy text CHECK (record_policy IN ('force', 'yes', 'no', 'never'));
ALTER TABLE calls ADD COLUMN policy_reason text;
ALTER TABLE calls ADD COLUMN sampled boolean;
COMMENT ON COLUMN calls.record_policy IS 'the policy word that decided: force | yes | no | never';
COMMENT ON COLUMN calls.policy_reason IS 'why, e.g. "never: rule no-rec-legal (callee side) over yes"';
COMMENT ON COLUMN calls.sampled IS 'QA sampling: true kept, false sampled out (not recorded), NULL not sampled';

-- The post-recording hook outbox: one row per (call, hook), written once the recording is
-- finalized, worked off in the background with retries.  Rows survive a daemon restart.
CREATE TABLE hook_jobs (
    id              bigserial PRIMARY KEY,
    call_id         uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    hook            text NOT NULL CHECK (hook IN ('command', 'webhook')),
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    UNIQUE (call_id, hook)
);
CREATE INDEX hook_jobs_due_idx ON hook_jobs (next_attempt_at) WHERE state = 'pending';
COMMENT ON TABLE hook_jobs IS 'post-recording hooks (outbox): pending until run, done, or failed after hooks.max_attempts';
COMMENT ON COLUMN hook_jobs.next_attempt_at IS 'pending: when the next attempt is due; while running, the lease end';

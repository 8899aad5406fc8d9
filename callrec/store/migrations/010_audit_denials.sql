-- Denied requests audited per principal and window (issue 10, item 4): the open window of each
-- (actor, kind, target), counted here (audit_log is append-only), written to audit_log as
-- `access_denied` entries: one at the window's first denial, one with the others' count when the
-- window ends (the row is deleted).  kind: `forbidden` (403: the role lacks the permission) or
-- `hidden_call` (404 for a call that exists but is not visible to the principal); target: the
-- request's method and route pattern, e.g. `GET /api/v1/calls/{id}`.
CREATE TABLE audit_denial_windows (
    actor       text NOT NULL,
    kind        text NOT NULL,
    target      text NOT NULL,
    role        text,
    remote      text,
    opened_at   timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    count       integer NOT NULL DEFAULT 0,        -- the denials after the window's first
    call_ids    text[] NOT NULL DEFAULT '{}',      -- distinct hidden calls probed in the window (the first 20)
    PRIMARY KEY (actor, kind, target)
);
COMMENT ON TABLE audit_denial_windows IS 'open denial-audit windows: denials counted until the window''s audit entry';

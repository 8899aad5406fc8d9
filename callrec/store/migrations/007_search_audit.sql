-- Search pages audited per principal and window (issue 10, item 3): the open window of each actor,
-- counted here (audit_log is append-only), written to audit_log as `search` entries: one at the
-- window's first page, one with the other pages' counts when the window ends (the row is deleted).
CREATE TABLE audit_search_windows (
    actor       text PRIMARY KEY,
    role        text,
    remote      text,
    opened_at   timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    pages       integer NOT NULL DEFAULT 0,  -- the pages after the window's first
    rows        bigint NOT NULL DEFAULT 0    -- their rows
);
COMMENT ON TABLE audit_search_windows IS 'open search-audit windows: pages and rows counted until the window''s audit entry';

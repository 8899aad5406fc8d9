-- Several Asterisk nodes on one call log (issue 12, item 1).
-- calls.node: the node whose daemon took the call (`[node] name`), written with the call's first row.
-- Start-up recovery, the hang-up sweep and stereo merges touch only their node's rows.  Rows from
-- before this migration have NULL: the first node to start adopts the open ones.  A nullable
-- column without a default is added without rewriting the table (no index: the open rows are
-- found through calls_open_idx).
ALTER TABLE calls ADD COLUMN node text;
COMMENT ON COLUMN calls.node IS 'the node (callrec serve, [node] name) that took the call; NULL: before migration 016';

-- One row per node: its heartbeat (`last_seen`, written every [node] heartbeat_interval, never on a
-- call's path), version and kind (`pbx`: calls and API; `api`: serve --api-only).  `retired_at`:
-- closed out by `callrec nodes retire` (a node that starts again clears it).
CREATE TABLE nodes (
    name        text PRIMARY KEY,
    kind        text NOT NULL DEFAULT 'pbx' CHECK (kind IN ('pbx', 'api')),
    version     text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
COMMENT ON TABLE nodes IS 'callrec processes sharing this database: last heartbeat, version; see callrec nodes list';

-- Failed log-ins, shared by every process that serves the API (the throttle holds behind a load
-- balancer).  key: `user:<name>@<address>` or `remote:<address>`; old rows are deleted as they age out.
CREATE TABLE login_failures (
    key         text NOT NULL,
    failed_at   timestamptz NOT NULL
);
CREATE INDEX login_failures_key_idx ON login_failures (key, failed_at);
CREATE INDEX login_failures_at_idx ON login_failures (failed_at);
COMMENT ON TABLE login_failures IS 'failed log-ins per throttle key, shared by all API processes';

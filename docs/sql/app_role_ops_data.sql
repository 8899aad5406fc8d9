-- Grants the daemon's role needs for retention, legal hold and data-subject requests (migration 006),
-- on top of docs/sql/app_role.sql.  Run as the owner after `callrec migrate`:
--   psql -v app=callrec_app -f docs/sql/app_role.sql -f docs/sql/app_role_ops_data.sql
-- Deletion never removes a calls row (tombstones), so no DELETE on calls is needed or granted.
GRANT SELECT, INSERT, UPDATE ON retention_runs TO :"app";
GRANT USAGE ON SEQUENCE retention_runs_id_seq TO :"app";

-- The daemon's database role: least privilege, and NOT the owner of the tables.
-- Run as the owner (the role that runs `callrec migrate`) after each migration; :"app" is the
-- daemon's role name, e.g.  psql -v app=callrec_app -f docs/sql/app_role.sql
-- An owner could ALTER TABLE audit_log DISABLE TRIGGER; a role with only these grants cannot, and
-- UPDATE / DELETE / TRUNCATE on audit_log fail for it twice over (no privilege, and the triggers).
GRANT SELECT ON schema_migrations TO :"app";
GRANT SELECT, INSERT, UPDATE ON calls, call_parties TO :"app";
GRANT SELECT, INSERT, DELETE ON call_tags, web_sessions TO :"app";
-- Search in order (migration 023): call_search and call_tags.started_at are written by triggers on calls,
-- call_parties and call_tags, which run with the rights of whoever writes a call, a party or a tag.
GRANT SELECT, INSERT, UPDATE ON call_search TO :"app";
GRANT UPDATE (started_at) ON call_tags TO :"app";
-- The console's /console/session replaces a session's CSRF token.
GRANT UPDATE (csrf_sha256) ON web_sessions TO :"app";
GRANT SELECT ON users TO :"app";
-- A password hash made with older scrypt parameters is replaced at the user's next log-in.
GRANT UPDATE (password_hash) ON users TO :"app";
GRANT SELECT, UPDATE (last_used_at) ON api_tokens TO :"app";
GRANT SELECT, INSERT ON audit_log TO :"app";
GRANT USAGE ON SEQUENCE audit_log_id_seq TO :"app";
-- Search pages counted per principal and window until their audit entry is written.
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_search_windows TO :"app";
-- Denied requests (403, hidden calls) counted per principal, kind, target and window likewise.
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_denial_windows TO :"app";
GRANT SELECT, INSERT, DELETE ON confidential_policy_rules TO :"app";
-- Recording controls (pause/resume), post-recording hooks (outbox), retention runs.
GRANT SELECT, INSERT, UPDATE ON recording_pauses TO :"app";
GRANT SELECT, INSERT, UPDATE ON hook_jobs TO :"app";
GRANT USAGE ON SEQUENCE hook_jobs_id_seq TO :"app";
GRANT SELECT, INSERT, UPDATE ON retention_runs TO :"app";
GRANT USAGE ON SEQUENCE retention_runs_id_seq TO :"app";
-- Speech analytics: the transcription queue, transcripts and their segments (migration 008).
GRANT SELECT, INSERT, UPDATE, DELETE ON speech_jobs, transcripts, transcript_segments TO :"app";
-- Keyword alerts (migration 009): rules added through the API, the alerts raised.
GRANT SELECT, INSERT, DELETE ON alert_rules TO :"app";
GRANT SELECT, INSERT, DELETE ON alerts TO :"app";
GRANT USAGE ON SEQUENCE alerts_id_seq TO :"app";
-- Search: the words of the transcripts, kept by triggers on transcript_segments (migration 013), which run
-- with the rights of whoever saves or deletes a transcript.
GRANT SELECT, INSERT, UPDATE, DELETE ON transcript_lexicon TO :"app";
-- Several nodes (migration 016): each daemon's heartbeat; the log-in throttle shared by every API process.
GRANT SELECT, INSERT, UPDATE ON nodes TO :"app";
GRANT SELECT, INSERT, DELETE ON login_failures TO :"app";
-- The storage outbox (migration 017): recordings to encrypt and upload, until verified.
GRANT SELECT, INSERT, UPDATE ON storage_outbox TO :"app";
-- The console (migrations 018, 019): saved searches per user; a recording's waveform peaks, kept until the audio
-- is deleted (a trigger that runs with the rights of whoever marks the audio deleted).
GRANT SELECT, INSERT, UPDATE, DELETE ON saved_searches TO :"app";
GRANT USAGE ON SEQUENCE saved_searches_id_seq TO :"app";
GRANT SELECT, INSERT, UPDATE, DELETE ON call_waveforms TO :"app";
-- The dashboard's counts (migration 022), kept by triggers on calls and alerts that run with the rights of
-- whoever writes a call or raises or deletes an alert.
GRANT SELECT, INSERT, UPDATE ON dashboard_hours, dashboard_agent_days, dashboard_alert_hours TO :"app";

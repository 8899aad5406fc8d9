-- Retention, legal hold, data-subject erasure (issue 4, ops-data).
--
-- Audio deletion keeps the row: audio_deleted_at/_by say when and by whom (the same columns the
-- HTTP API's manual delete uses; migration 005 adds them, IF NOT EXISTS keeps this one standalone), and
-- audio_deleted_reason says why (manual, retention, subject_erase; 'manual' when the deleter does not say).
-- Metadata deletion never removes a row: personal fields are erased and the row stays as an
-- anonymized tombstone (anonymized_at/_reason), so counts, statistics and audit rows that name
-- the call stay coherent.
ALTER TABLE calls ADD COLUMN IF NOT EXISTS audio_deleted_at timestamptz;
ALTER TABLE calls ADD COLUMN IF NOT EXISTS audio_deleted_by text;
ALTER TABLE calls ADD COLUMN audio_deleted_reason text;
ALTER TABLE calls ADD COLUMN anonymized_at timestamptz;
ALTER TABLE calls ADD COLUMN anonymized_reason text;

ALTER TABLE calls ADD COLUMN legal_hold boolean NOT NULL DEFAULT false;
ALTER TABLE calls ADD COLUMN legal_hold_by text;
ALTER TABLE calls ADD COLUMN legal_hold_at timestamptz;
ALTER TABLE calls ADD COLUMN legal_hold_reason text;

COMMENT ON COLUMN calls.audio_deleted_reason IS 'why the audio was deleted: manual, retention or subject_erase';
COMMENT ON COLUMN calls.anonymized_at IS 'personal fields erased (retention or data-subject request); the row is a tombstone';
COMMENT ON COLUMN calls.legal_hold IS 'true: no deletion of any kind (retention, subject erase, manual audio delete)';
COMMENT ON COLUMN calls.legal_hold_by IS 'who last set or released the hold';
COMMENT ON COLUMN calls.legal_hold_at IS 'when the hold was last set or released';
COMMENT ON COLUMN calls.legal_hold_reason IS 'why (case number, request reference)';

-- The retention job's candidates: finalized calls not yet handled, oldest first.
CREATE INDEX calls_retention_audio_idx ON calls (started_at)
    WHERE audio_deleted_at IS NULL AND recording_path IS NOT NULL AND finalized_at IS NOT NULL;
CREATE INDEX calls_retention_meta_idx ON calls (started_at)
    WHERE anonymized_at IS NULL AND finalized_at IS NOT NULL;
CREATE INDEX calls_legal_hold_idx ON calls (legal_hold_at) WHERE legal_hold;
-- `callrec verify` looks up the files it finds on disk by path (orphans).
CREATE INDEX calls_recording_path_idx ON calls (recording_path) WHERE recording_path IS NOT NULL;

-- Legal hold wins over every deletion path, including code that does not know about it: marking
-- the audio deleted, anonymizing, or deleting a held row is refused by the database itself.
CREATE FUNCTION calls_legal_hold_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.legal_hold THEN
            RAISE EXCEPTION 'call % is under legal hold', OLD.id USING ERRCODE = 'check_violation',
                HINT = 'release the legal hold first';
        END IF;
        RETURN OLD;
    END IF;
    -- A deletion that does not say why (the API's manual delete) is a manual one.
    IF OLD.audio_deleted_at IS NULL AND NEW.audio_deleted_at IS NOT NULL AND NEW.audio_deleted_reason IS NULL THEN
        NEW.audio_deleted_reason := 'manual';
    END IF;
    IF OLD.legal_hold AND (
           (OLD.audio_deleted_at IS NULL AND NEW.audio_deleted_at IS NOT NULL)
        OR (OLD.anonymized_at IS NULL AND NEW.anonymized_at IS NOT NULL)) THEN
        RAISE EXCEPTION 'call % is under legal hold', OLD.id USING ERRCODE = 'check_violation',
            HINT = 'release the legal hold first';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER calls_legal_hold_guard BEFORE UPDATE OR DELETE ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_legal_hold_guard();

-- One row per retention run (daemon job or `callrec retention run`): what it did, for the status view.
CREATE TABLE retention_runs (
    id              bigserial PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    actor           text NOT NULL,
    dry_run         boolean NOT NULL DEFAULT false,
    audio_deleted   integer NOT NULL DEFAULT 0,
    anonymized      integer NOT NULL DEFAULT 0,
    held_skipped    integer NOT NULL DEFAULT 0,
    errors          integer NOT NULL DEFAULT 0,
    error           text
);
COMMENT ON TABLE retention_runs IS 'retention runs: counts of deleted audio, anonymized rows, calls kept by a legal hold';

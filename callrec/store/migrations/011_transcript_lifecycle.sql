-- Transcripts across the data lifecycle (docs/ops-data.md): a transcript is personal data made from the
-- recording, so it lives and dies with the audio.  The deletion gate (dataops/deletion.py) removes it in the
-- transaction that deletes the audio; the database backs that up, as migration 006 does for calls:
--   * a held call's transcript cannot be deleted (legal hold keeps what was said, as it keeps the audio);
--   * no transcript may be stored for a call whose audio is deleted (a worker that was still transcribing
--     when the audio went cannot bring the words back).
CREATE FUNCTION transcripts_lifecycle_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    held boolean;
    deleted timestamptz;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT legal_hold INTO held FROM calls WHERE id = OLD.call_id;
        IF held THEN
            RAISE EXCEPTION 'call % is under legal hold', OLD.call_id USING ERRCODE = 'check_violation',
                HINT = 'release the legal hold first';
        END IF;
        RETURN OLD;
    END IF;
    SELECT audio_deleted_at INTO deleted FROM calls WHERE id = NEW.call_id;
    IF deleted IS NOT NULL THEN
        RAISE EXCEPTION 'the audio of call % was deleted: its transcript is not kept', NEW.call_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER transcripts_lifecycle_guard BEFORE INSERT OR UPDATE OR DELETE ON transcripts
    FOR EACH ROW EXECUTE FUNCTION transcripts_lifecycle_guard();

-- Transcripts made before this migration of calls whose audio is already gone.
DELETE FROM transcripts t USING calls c WHERE c.id = t.call_id AND c.audio_deleted_at IS NOT NULL AND NOT c.legal_hold;

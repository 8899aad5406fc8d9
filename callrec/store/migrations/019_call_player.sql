-- The console's player (issue 13): a call's waveform peaks, computed once from the recording and kept.
--
-- Peaks are derived from the audio (they show when each party talked, not what was said), so they live
-- and die with it: keyed on the recording's sha256 (a re-measured or replaced file is computed again),
-- and removed by the database itself when the audio is marked deleted, whatever code deletes it.
CREATE TABLE call_waveforms (
    call_id          uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    recording_sha256 text NOT NULL,
    computed_at      timestamptz NOT NULL DEFAULT now(),
    peaks            jsonb NOT NULL
);
COMMENT ON TABLE call_waveforms IS 'waveform peaks per channel for the console player; gone with the audio';
COMMENT ON COLUMN call_waveforms.peaks IS '{"channels", "buckets", "bucket_ms", "duration_ms", "peaks": [[0..255, ...] per channel]}';

CREATE FUNCTION call_waveforms_follow_audio() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM call_waveforms WHERE call_id = NEW.id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER call_waveforms_follow_audio AFTER UPDATE OF audio_deleted_at ON calls
    FOR EACH ROW WHEN (NEW.audio_deleted_at IS NOT NULL AND OLD.audio_deleted_at IS NULL)
    EXECUTE FUNCTION call_waveforms_follow_audio();

-- Speech analytics (docs/speech.md): the transcription queue, transcripts with word times, talk statistics.
--
-- Text search uses the 'russian' configuration for every call: it stems Russian and, with the English
-- stemmer, Latin words too (договора -> договор, refunds -> refund), so ru, en and mixed calls share one
-- index.  pg_trgm (a trusted extension since PostgreSQL 13, in the contrib package) is the fallback for
-- words the recogniser got slightly wrong.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- One job per call: queued when its recording is finalized (or by `callrec speech requeue`), claimed by a
-- worker with FOR UPDATE SKIP LOCKED, kept alive by heartbeats, taken up again when its lease runs out.
CREATE TABLE speech_jobs (
    call_id          uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
    priority         integer NOT NULL DEFAULT 0,
    audio_ms         integer NOT NULL DEFAULT 0 CHECK (audio_ms >= 0),
    language         text,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    worker           text,
    heartbeat_at     timestamptz,
    lease_until      timestamptz,
    progress         real CHECK (progress IS NULL OR progress BETWEEN 0 AND 1),
    reason           text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    done_at          timestamptz
);
CREATE INDEX speech_jobs_due_idx ON speech_jobs (priority DESC, created_at DESC) WHERE state = 'pending';
CREATE INDEX speech_jobs_lease_idx ON speech_jobs (lease_until) WHERE state = 'running';
COMMENT ON TABLE speech_jobs IS 'transcription queue: one job per call';
COMMENT ON COLUMN speech_jobs.priority IS 'higher first; among equals the newest call first';
COMMENT ON COLUMN speech_jobs.audio_ms IS 'the recording''s length: hours waiting, the ETA, the backlog cap';
COMMENT ON COLUMN speech_jobs.language IS 'ru | en | NULL (detect), from the call row or [speech] language';
COMMENT ON COLUMN speech_jobs.worker IS 'host:pid of the worker that holds (or last held) the job';
COMMENT ON COLUMN speech_jobs.lease_until IS 'running: another worker may take the job after this (heartbeats move it)';
COMMENT ON COLUMN speech_jobs.progress IS 'running: the share transcribed, 0..1';
COMMENT ON COLUMN speech_jobs.reason IS 'why queued, skipped or requeued (policy, backlog sampling, requeue by whom)';

-- A call's transcript: the recording it was made from (sha256), the model, the language, talk statistics.
-- Segments and their words are replaced as a whole, in one transaction, when a call is transcribed again.
CREATE TABLE transcripts (
    call_id             uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    recording_sha256    text NOT NULL,
    model               text NOT NULL,
    model_sha256        text,
    language            text,
    language_detected   boolean NOT NULL DEFAULT false,
    duration_ms         integer NOT NULL CHECK (duration_ms >= 0),
    stereo              boolean NOT NULL,
    words               integer NOT NULL DEFAULT 0,
    redacted            integer NOT NULL DEFAULT 0,
    talk_ms             integer NOT NULL DEFAULT 0,
    caller_talk_ms      integer,
    agent_talk_ms       integer,
    agent_talk_ratio    real,
    overtalk_ms         integer NOT NULL DEFAULT 0,
    silence_ms          integer NOT NULL DEFAULT 0,
    silence_share       real NOT NULL DEFAULT 0,
    longest_silence_ms  integer NOT NULL DEFAULT 0,
    decode_s            real,
    transcribed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transcripts_silence_idx ON transcripts (silence_share);
COMMENT ON COLUMN transcripts.recording_sha256 IS 'the recording the transcript was made from; verify compares it with the file';
COMMENT ON COLUMN transcripts.model IS 'the model''s id (its folder and sha256 prefix)';
COMMENT ON COLUMN transcripts.stereo IS 'true: caller and agent tracks; false: one mixed track';
COMMENT ON COLUMN transcripts.redacted IS 'card numbers and configured patterns masked before storing';
COMMENT ON COLUMN transcripts.talk_ms IS 'time with anybody''s voice, overtalk counted once';
COMMENT ON COLUMN transcripts.caller_talk_ms IS 'stereo only: the caller''s voice time';
COMMENT ON COLUMN transcripts.agent_talk_ms IS 'stereo only: the agent''s voice time';
COMMENT ON COLUMN transcripts.agent_talk_ratio IS 'stereo only: the agent''s share of all talk, 0..1';
COMMENT ON COLUMN transcripts.silence_share IS 'silence_ms / duration_ms, 0..1';

-- What was said: a segment is a stretch of one speaker's speech (a sentence or so) with its words.
CREATE TABLE transcript_segments (
    call_id   uuid NOT NULL REFERENCES transcripts (call_id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    speaker   text NOT NULL CHECK (speaker IN ('caller', 'agent', 'mixed')),
    start_ms  integer NOT NULL,
    end_ms    integer NOT NULL,
    text      text NOT NULL,
    words     jsonb NOT NULL,
    tsv       tsvector GENERATED ALWAYS AS (to_tsvector('russian', text)) STORED,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX transcript_segments_tsv_idx ON transcript_segments USING gin (tsv);
CREATE INDEX transcript_segments_trgm_idx ON transcript_segments USING gin (text gin_trgm_ops);
COMMENT ON COLUMN transcript_segments.seq IS 'dialogue order: by start time, the caller first on a tie';
COMMENT ON COLUMN transcript_segments.words IS '[[text, start_ms, end_ms, probability], ...] in time order';
COMMENT ON COLUMN transcript_segments.tsv IS 'to_tsvector(''russian'', text): stems Russian and Latin words';

-- Recording mechanics: pause/resume intervals (PCI DSS), stereo facts, and when the recorded
-- channel was first bridged (a call that never was has no recording, and the row says why).

-- One row per pause.  The paused stretch is silence in the file (MixMonitorMute, both
-- directions): the file keeps the call's timeline.  paused_at is taken once Asterisk confirmed
-- the mute, resumed_at just before the unmute was sent, so [paused_at, resumed_at] lies inside
-- the silent stretch.
CREATE TABLE recording_pauses (
    call_id        uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq            integer NOT NULL CHECK (seq >= 1),
    paused_at      timestamptz NOT NULL,
    paused_by      text NOT NULL,
    pause_source   text NOT NULL CHECK (pause_source IN ('api', 'cli', 'dtmf')),
    resumed_at     timestamptz,
    resumed_by     text,
    resume_source  text CHECK (resume_source IN ('api', 'cli', 'dtmf', 'hangup')),
    PRIMARY KEY (call_id, seq),
    CHECK (resumed_at IS NULL OR resumed_at >= paused_at),
    CHECK ((resumed_at IS NULL) = (resume_source IS NULL))
);
-- At most one open pause per call.
CREATE UNIQUE INDEX recording_pauses_open_idx ON recording_pauses (call_id) WHERE resumed_at IS NULL;
COMMENT ON TABLE recording_pauses IS 'recording pauses (silence in the file), one row per interval; open while resumed_at IS NULL';
COMMENT ON COLUMN recording_pauses.paused_by IS 'who: the API user, the CLI user, or the agent channel that pressed the key';

ALTER TABLE calls ADD COLUMN recording_channels smallint CHECK (recording_channels IN (1, 2));
ALTER TABLE calls ADD COLUMN recording_left_rms_dbfs double precision;
ALTER TABLE calls ADD COLUMN recording_left_peak_dbfs double precision;
ALTER TABLE calls ADD COLUMN recording_right_rms_dbfs double precision;
ALTER TABLE calls ADD COLUMN recording_right_peak_dbfs double precision;
ALTER TABLE calls ADD COLUMN bridged_at timestamptz;
COMMENT ON COLUMN calls.recording_channels IS '1: mono mix; 2: stereo, left = the recorded channel''s own voice (the caller, inbound), right = what it heard (the agent)';
COMMENT ON COLUMN calls.bridged_at IS 'when the recorded channel was first bridged to another party; NULL: never (or not seen)';

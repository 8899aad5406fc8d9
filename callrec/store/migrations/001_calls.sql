-- The call log: one row per call that reached callrec, with the consent evidence and the
-- recording facts.  Text columns hold caller-supplied data verbatim; never trust them.
CREATE TABLE calls (
    id                      uuid PRIMARY KEY,
    door                    text NOT NULL CHECK (door IN ('ari', 'agi')),
    uniqueid                text NOT NULL,
    linkedid                text,
    channel                 text NOT NULL DEFAULT '',
    caller_number           text,
    caller_name             text,
    called_number           text,
    context                 text,
    direction               text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound', 'internal')),
    channel_language        text,
    language                text,
    policy_rule             text,
    consent_mode            text NOT NULL CHECK (consent_mode IN ('notice', 'opt-out', 'opt-in')),
    state                   text NOT NULL,
    consent                 text CHECK (consent IN ('implied', 'granted', 'declined', 'not_given', 'abandoned',
                                                    'notice_failed', 'unavailable')),
    consent_key             text,
    keys_pressed            text NOT NULL DEFAULT '',
    notice_prompt           text,
    notice_prompt_sha256    text,
    notice_prompt_duration  double precision,
    notice_completed        boolean,
    started_at              timestamptz NOT NULL,
    notice_started_at       timestamptz,
    notice_finished_at      timestamptz,
    consent_at              timestamptz,
    recording_started_at    timestamptz,
    handed_back_at          timestamptz,
    ended_at                timestamptz,
    finalized_at            timestamptz,
    hangup_cause            integer,
    hangup_cause_text       text,
    recording_status        text NOT NULL DEFAULT 'none'
                            CHECK (recording_status IN ('none', 'starting', 'recording', 'finalizing', 'ready',
                                                        'empty', 'unclosed', 'missing', 'failed')),
    recording_path          text,
    recording_error         text,
    recording_duration      double precision,
    recording_bytes         bigint,
    recording_rms_dbfs      double precision,
    recording_peak_dbfs     double precision,
    recording_sha256        text,
    warnings                text[] NOT NULL DEFAULT '{}',
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX calls_started_at_idx ON calls (started_at DESC, id DESC);
CREATE INDEX calls_uniqueid_idx ON calls (uniqueid);
CREATE INDEX calls_caller_number_idx ON calls (caller_number);
CREATE INDEX calls_called_number_idx ON calls (called_number);
CREATE INDEX calls_open_idx ON calls (started_at) WHERE finalized_at IS NULL;

COMMENT ON TABLE calls IS 'callrec call log: one row per call, with consent evidence and recording facts';
COMMENT ON COLUMN calls.recording_path IS 'relative to recordings.dir: YYYY/MM/DD/<id>.wav';
COMMENT ON COLUMN calls.notice_prompt IS 'the prompt file Asterisk played, as Asterisk sees it';
COMMENT ON COLUMN calls.notice_completed IS 'true: played to its end; false: interrupted (key or hang-up)';

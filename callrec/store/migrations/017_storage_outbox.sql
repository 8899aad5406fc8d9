-- The storage outbox (callrec/storage/outbox.py, docs/storage.md#the-outbox): each finalized recording that must
-- be encrypted at rest or uploaded to the bucket gets one row, taken up by the daemon until its object is verified
-- and its local copy removed after [storage] local_grace.  A row outlives restarts and storage outages: nothing is
-- removed locally before the object reads back with the call log's sha256.
--
-- No foreign key to calls: the row is queued as the recording is finalized, possibly before the call log's
-- writer has stored the call (the uploader waits for it).
CREATE TABLE storage_outbox (
    path             text PRIMARY KEY,              -- calls.recording_path: the file under the recordings folder
    call_id          uuid NOT NULL,
    sha256           text NOT NULL,                 -- the plain audio's, as finalized
    bytes            bigint,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'verified', 'done', 'gone')),
    -- pending: to encrypt and/or upload; verified: the object reads back right, the local copy waits out the
    -- grace; done: nothing left to do; gone: the audio was deleted meanwhile (nothing more is uploaded)
    attempts         integer NOT NULL DEFAULT 0,
    next_at          timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    queued_at        timestamptz NOT NULL DEFAULT now(),
    uploaded_at      timestamptz,
    verified_at      timestamptz,
    local_removed_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_outbox_due_idx ON storage_outbox (next_at) WHERE state IN ('pending', 'verified');
CREATE INDEX storage_outbox_call_idx ON storage_outbox (call_id);
COMMENT ON TABLE storage_outbox IS 'recordings to encrypt at rest and/or upload to the bucket, until verified and the local copy is removed';

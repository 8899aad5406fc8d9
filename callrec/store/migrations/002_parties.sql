-- Who was on the call: the agent's extension (searchable, and what the `agent` role sees) and
-- every party the call passed through (transfers, outbound legs), in order.
ALTER TABLE calls ADD COLUMN agent text;
COMMENT ON COLUMN calls.agent IS 'extension of the agent on the call: the dialing agent (outbound) or the last answering agent (inbound)';
CREATE INDEX calls_agent_idx ON calls (agent);

CREATE TABLE call_parties (
    call_id     uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    number      text,
    name        text,
    channel     text NOT NULL DEFAULT '',
    role        text NOT NULL CHECK (role IN ('caller', 'agent', 'callee', 'transfer_target', 'transferer')),
    joined_at   timestamptz NOT NULL,
    left_at     timestamptz,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX call_parties_number_idx ON call_parties (number);
COMMENT ON TABLE call_parties IS 'the parties a call passed through, in order (seq); caller-supplied text verbatim';

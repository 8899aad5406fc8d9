-- callrec: no transaction
-- Indexes for the call search at 10 million calls (docs/benchmarks.md#call-search), built CONCURRENTLY on a
-- live database (store/migrate.py runs this file statement by statement, outside a transaction).
--
-- Free text (`q=`): the caller's name, the agent and the parties' names, by trigram (ILIKE '%...%' of 3 or
-- more characters); callquery.py asks for them as one set of ids.
CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_caller_name_trgm_idx ON calls USING gin (caller_name gin_trgm_ops);

CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_agent_trgm_idx ON calls USING gin (agent gin_trgm_ops);

CREATE INDEX CONCURRENTLY IF NOT EXISTS call_parties_name_trgm_idx ON call_parties USING gin (name gin_trgm_ops);

-- One agent's calls newest first (the agent filter, and what an agent sees): read in order, no sort.
CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_agent_started_idx ON calls (agent, started_at DESC, id DESC);

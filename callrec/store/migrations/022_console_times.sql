-- callrec: no transaction
-- The console, continued (issue 13).  Run statement by statement outside a transaction (store/migrate.py);
-- every statement may run again after an interruption.

-- Each key's own time, beside keys_pressed: keys_at[i] is when keys_pressed's i-th key came (Asterisk's event
-- time on the ARI door; on FastAGI the moment its command answered with the key).  Up to 64, as the keys.
-- A constant default: no table rewrite.  Rows from before keep '{}' (the timeline then puts their keys at
-- consent_at, as it did).
ALTER TABLE calls ADD COLUMN IF NOT EXISTS keys_at timestamptz[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN calls.keys_at IS 'the time of each key of keys_pressed, in order (empty on rows from before 022)';

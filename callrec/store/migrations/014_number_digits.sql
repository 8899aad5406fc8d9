-- callrec: no transaction
-- Phone numbers in one form for search (callrec/phone.py): E.164 digits without "+" beside each number as
-- written, with indexes for the whole number and its start (text_pattern_ops answers = and LIKE 'x%') and
-- for its end (the reversed digits, so a tail is a prefix too).
--
-- Runs statement by statement outside a transaction (store/migrate.py): the indexes build CONCURRENTLY and
-- the backfill commits in batches, so a live call log keeps being written meanwhile.  Every statement can
-- run again after an interruption.
ALTER TABLE calls ADD COLUMN IF NOT EXISTS caller_digits text, ADD COLUMN IF NOT EXISTS called_digits text;

COMMENT ON COLUMN calls.caller_digits IS 'caller_number as E.164 digits without + (callrec/phone.py), for search';
COMMENT ON COLUMN calls.called_digits IS 'called_number as E.164 digits without + (callrec/phone.py), for search';

-- The approximation for rows not written by callrec's call-log writer (which parses with libphonenumber and
-- [search] default_country): the number's digits as written.  An international number written with + comes
-- out the same; a national one (8 916 ...) keeps its 8 and is found by its tail.
CREATE OR REPLACE FUNCTION callrec_number_digits(number text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN NULLIF(left(regexp_replace(number, '[^0-9]', '', 'g'), 40), '');

CREATE OR REPLACE FUNCTION calls_number_digits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.caller_digits IS NULL THEN NEW.caller_digits := callrec_number_digits(NEW.caller_number); END IF;
        IF NEW.called_digits IS NULL THEN NEW.called_digits := callrec_number_digits(NEW.called_number); END IF;
    ELSE
        IF NEW.caller_number IS DISTINCT FROM OLD.caller_number
           AND NEW.caller_digits IS NOT DISTINCT FROM OLD.caller_digits THEN
            NEW.caller_digits := callrec_number_digits(NEW.caller_number);
        END IF;
        IF NEW.called_number IS DISTINCT FROM OLD.called_number
           AND NEW.called_digits IS NOT DISTINCT FROM OLD.called_digits THEN
            NEW.called_digits := callrec_number_digits(NEW.called_number);
        END IF;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS calls_number_digits ON calls;

CREATE TRIGGER calls_number_digits BEFORE INSERT OR UPDATE OF caller_number, called_number ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_number_digits();

-- The rows written before this migration, 10,000 at a time in key order, each batch committed.
DO $$
DECLARE
    last uuid := '00000000-0000-0000-0000-000000000000';
    upto uuid;
BEGIN
    LOOP
        upto := NULL;
        SELECT id INTO upto FROM (SELECT id FROM calls WHERE id > last ORDER BY id LIMIT 10000) AS batch
         ORDER BY id DESC LIMIT 1;
        EXIT WHEN upto IS NULL;
        UPDATE calls SET caller_digits = callrec_number_digits(caller_number),
                         called_digits = callrec_number_digits(called_number)
         WHERE id > last AND id <= upto
           AND ((caller_digits IS NULL AND caller_number IS NOT NULL)
                OR (called_digits IS NULL AND called_number IS NOT NULL));
        last := upto;
        COMMIT;
    END LOOP;
END $$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_caller_digits_idx ON calls (caller_digits text_pattern_ops);

CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_called_digits_idx ON calls (called_digits text_pattern_ops);

CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_caller_digits_tail_idx ON calls (reverse(caller_digits) text_pattern_ops);

CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_called_digits_tail_idx ON calls (reverse(called_digits) text_pattern_ops);

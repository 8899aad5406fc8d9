-- Search by what was said (docs/speech.md): the words of every stored transcript, for the similar-word
-- fallback.  A trigram search over a million segments' text takes seconds; over the few tens of thousands
-- of distinct words it takes milliseconds, and the similar words found are then searched by full text.
--
-- Kept by triggers on transcript_segments, so every way a transcript is saved, replaced or deleted
-- (a new transcript, retention, subject erase, a cascade from calls) keeps it exact.  A word stays only
-- while some segment holds it: erasing a transcript also takes out the words only it had (a name).
CREATE TABLE transcript_lexicon (
    word      text PRIMARY KEY,
    segments  integer NOT NULL
) WITH (fillfactor = 70);  -- room on each page for the counts' updates (HOT: no index entries)
-- GiST, not GIN: the fallback asks for the nearest words (ORDER BY lower(word) <-> $1 LIMIT n), which GiST
-- answers by walking the tree (a few ms over 20,000 words); GIN would read the long lists of common trigrams.
-- On lower(word) (the words are lowercase already), so that the triggers' lookups by word take the primary key:
-- on the column itself PostgreSQL chose this index for word = ..., 0.1 ms a word instead of microseconds.
CREATE INDEX transcript_lexicon_trgm_idx ON transcript_lexicon USING gist (lower(word) gist_trgm_ops);
COMMENT ON TABLE transcript_lexicon IS 'distinct words of transcript_segments (lowercase, ''simple'' parser) and in how many segments each is';

-- Rows are locked in word order on both paths, so saves and deletions running at once cannot deadlock.
CREATE FUNCTION transcript_lexicon_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO transcript_lexicon AS l (word, segments)
    SELECT w, count(*) FROM new_rows, unnest(tsvector_to_array(to_tsvector('simple', new_rows.text))) AS w
     GROUP BY w ORDER BY w
    ON CONFLICT (word) DO UPDATE SET segments = l.segments + EXCLUDED.segments;
    RETURN NULL;
END $$;

CREATE FUNCTION transcript_lexicon_remove() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone text[];
    n integer[];
BEGIN
    -- The deleted rows' words and counts, once, as arrays: every lookup below is then by the primary key.
    SELECT array_agg(g.w ORDER BY g.w), array_agg(g.c ORDER BY g.w) INTO gone, n
      FROM (SELECT w, count(*)::integer AS c
              FROM old_rows, unnest(tsvector_to_array(to_tsvector('simple', old_rows.text))) AS w GROUP BY w) AS g;
    IF gone IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM transcript_lexicon WHERE word = ANY (gone) ORDER BY word FOR UPDATE;
    UPDATE transcript_lexicon l SET segments = l.segments - d.c FROM unnest(gone, n) AS d(w, c) WHERE l.word = d.w;
    DELETE FROM transcript_lexicon WHERE word = ANY (gone) AND segments <= 0;
    RETURN NULL;
END $$;

CREATE TRIGGER transcript_lexicon_add AFTER INSERT ON transcript_segments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION transcript_lexicon_add();
CREATE TRIGGER transcript_lexicon_remove AFTER DELETE ON transcript_segments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION transcript_lexicon_remove();

CREATE FUNCTION transcript_lexicon_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM transcript_lexicon;
    RETURN NULL;
END $$;
CREATE TRIGGER transcript_lexicon_clear AFTER TRUNCATE ON transcript_segments
    FOR EACH STATEMENT EXECUTE FUNCTION transcript_lexicon_clear();

INSERT INTO transcript_lexicon (word, segments)
SELECT w, count(*) FROM transcript_segments, unnest(tsvector_to_array(to_tsvector('simple', text))) AS w GROUP BY w;

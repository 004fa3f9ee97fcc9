-- The PostgreSQL index, schema 1: recordings and their output lines (docs/recorder.md,
-- "Fleet"). Every line's words (recorder/search.py, words()) are a tsvector of the 'simple'
-- configuration: no stemming, no stop words, as SQLite's FTS5 table compares them.
CREATE TABLE recordings (
    rkey bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    storage_key text NOT NULL,
    node_id text NOT NULL,
    node_name text NOT NULL,
    node_user text,
    src_user text,
    ssh_user text,
    local_user text,
    status text NOT NULL,
    start double precision NOT NULL,
    recorder text NOT NULL,
    document text NOT NULL,
    text_lines integer NOT NULL DEFAULT 0,  -- output lines indexed: numbers 1..text_lines
    text_partial boolean NOT NULL DEFAULT false  -- the last of them is the partial line
);
CREATE INDEX recordings_start ON recordings (start DESC, id DESC);
CREATE INDEX recordings_status ON recordings (status, recorder);

-- line 0 is the recording's metadata line (no time), 1... its output lines in order
CREATE TABLE text_lines (
    rkey bigint NOT NULL REFERENCES recordings (rkey) ON DELETE CASCADE,
    n integer NOT NULL,
    time double precision,
    text text NOT NULL,
    words tsvector NOT NULL,
    PRIMARY KEY (rkey, n)
);
CREATE INDEX text_lines_words ON text_lines USING gin (words);

-- Schema 2: a recording's legal hold (docs/recorder.md, "Retention") as JSON, a copy of its
-- hold document in storage that the API shows; a put of the recording leaves it alone.
ALTER TABLE recordings ADD COLUMN hold text;

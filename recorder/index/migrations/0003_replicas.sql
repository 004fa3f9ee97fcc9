-- Schema 2 (docs/recorder.md, "Fleet"): replica heartbeats, so that any replica can finish
-- the live recordings of one that died; and each recording's connection id, so that the
-- recordings of one SSH connection (a failover's two halves) are found together.
CREATE TABLE replicas (
    recorder text PRIMARY KEY,  -- the replica's public key, as in recordings.recorder
    last_seen timestamptz NOT NULL  -- the database's clock: replicas' clocks may differ
);

ALTER TABLE recordings ADD COLUMN connection_id text;
UPDATE recordings SET connection_id = (document::json -> 'header' ->> 'connectionID');
CREATE INDEX recordings_connection ON recordings (connection_id, start DESC);

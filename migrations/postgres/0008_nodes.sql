-- Several nodes on one database (see migrations/sqlite/0008_nodes.sql for what each part is).
CREATE TABLE nodes (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    address      TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    start_time   TEXT    NOT NULL,
    heartbeat    TEXT    NOT NULL,
    lease_until  TEXT    NOT NULL
);

ALTER TABLE jobs ADD COLUMN node_id TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
CREATE INDEX jobs_leases ON jobs (state, lease_until);

CREATE TABLE leases (
    name         TEXT    NOT NULL PRIMARY KEY,
    holder       TEXT    NOT NULL,
    token        BIGINT  NOT NULL,
    lease_until  TEXT    NOT NULL
);

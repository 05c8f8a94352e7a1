-- Several nodes on one database. `nodes`: one row per node, its heartbeat renewed every third of
-- the lease; a node whose `lease_until` has passed is gone. `jobs.node_id`/`jobs.lease_until`: the
-- node that claimed a job (QUEUED → PREPARING) and until when its claim holds; the node renews it
-- while it works on the job, and another node ends the job when it lapses. `leases`: singleton
-- duties (the sweep of lapsed jobs) held by one node at a time, `token` counting the holders
-- (a fencing token). Times are RFC 3339 UTC text with milliseconds, so they order as text.
CREATE TABLE nodes (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    address      TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    start_time   TEXT    NOT NULL,
    heartbeat    TEXT    NOT NULL,
    lease_until  TEXT    NOT NULL
) STRICT;

ALTER TABLE jobs ADD COLUMN node_id TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
CREATE INDEX jobs_leases ON jobs (state, lease_until);

CREATE TABLE leases (
    name         TEXT    NOT NULL PRIMARY KEY,
    holder       TEXT    NOT NULL,
    token        INTEGER NOT NULL,
    lease_until  TEXT    NOT NULL
) STRICT;

-- The sandbox identity of each project, one for the whole cluster (see
-- migrations/sqlite/0009_project_uids.sql).
CREATE TABLE project_uids (
    project_id   TEXT    NOT NULL PRIMARY KEY,
    n            BIGINT  NOT NULL UNIQUE CHECK (n > 0)
);

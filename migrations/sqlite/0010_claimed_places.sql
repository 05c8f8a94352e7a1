-- Places outside a project's own storage folders that a project's job named as where it writes
-- (a training job's `jobDir`, a batch job's `outputPath`): local canonical paths or `s3://`
-- URIs, without a trailing slash. No other project may name such a place, a place inside it or a
-- place holding it, in any URI field; a refusal reads as for a place outside the storage roots,
-- so it does not tell whether the place exists.
CREATE TABLE claimed_places (
    place        TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL,
    create_time  TEXT    NOT NULL
) STRICT;

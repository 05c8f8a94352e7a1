-- Places a project's jobs write outside its own storage folders (see
-- migrations/sqlite/0010_claimed_places.sql).
CREATE TABLE claimed_places (
    place        TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL,
    create_time  TEXT    NOT NULL
);

-- Projects are registered the first time a request names them. The project number is the
-- int64 that the API reports as `projectNumber` / `serviceAccountProject`.
CREATE TABLE projects (
    project_number INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id     TEXT    NOT NULL UNIQUE,
    create_time    TEXT    NOT NULL
) STRICT;

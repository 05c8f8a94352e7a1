-- Projects are registered the first time a request names them. The project number is the
-- int64 that the API reports as `projectNumber` / `serviceAccountProject`.
-- (PostgreSQL twin of migrations/sqlite/0001: ids and times compare bytewise (COLLATE "C"), as
-- in SQLite, whatever the database's locale.)
CREATE TABLE projects (
    project_number BIGSERIAL PRIMARY KEY,
    project_id     TEXT      COLLATE "C" NOT NULL UNIQUE,
    create_time    TEXT      COLLATE "C" NOT NULL
);

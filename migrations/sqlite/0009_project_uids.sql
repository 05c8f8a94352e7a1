-- The sandbox identity of each project, one for the whole cluster: as root, a project's user code
-- runs as uid `replica_uid_base + n`. `n` is allocated once (the first time the project's code
-- runs, on whichever node) and never changes; UNIQUE keeps two projects from sharing a uid even
-- when two nodes allocate at the same moment (the loser reads the winner's row, or takes the next
-- number). Before this table, each node kept the numbers in a file of the shared storage folder,
-- `replica-ids`; a node imports that file's lines at start.
CREATE TABLE project_uids (
    project_id   TEXT    NOT NULL PRIMARY KEY,
    n            INTEGER NOT NULL UNIQUE CHECK (n > 0)
) STRICT;

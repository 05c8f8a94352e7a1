-- Training jobs. `training_input` is the job's TrainingInput as the API returns it (JSON);
-- `work_dir` holds the replicas' working directories and logs.
CREATE TABLE jobs (
    project_id     TEXT    NOT NULL REFERENCES projects (project_id),
    job_id         TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('QUEUED', 'PREPARING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLING', 'CANCELLED')),
    labels         TEXT    NOT NULL DEFAULT '{}',
    training_input TEXT    NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    replicas       INTEGER NOT NULL,
    error_message  TEXT,
    create_time    TEXT    NOT NULL,
    start_time     TEXT,
    end_time       TEXT,
    revision       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (project_id, job_id)
) STRICT;

CREATE INDEX jobs_queue ON jobs (state, priority DESC, create_time);

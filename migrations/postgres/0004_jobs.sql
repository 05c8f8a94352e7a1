-- Training jobs. `training_input` is the job's TrainingInput as the API returns it (JSON);
-- `work_dir` holds the replicas' working directories and logs.
-- (PostgreSQL twin of migrations/sqlite/0004.)
CREATE TABLE jobs (
    project_id     TEXT    COLLATE "C" NOT NULL REFERENCES projects (project_id),
    job_id         TEXT    COLLATE "C" NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('QUEUED', 'PREPARING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLING', 'CANCELLED')),
    labels         TEXT    NOT NULL DEFAULT '{}',
    training_input TEXT    NOT NULL,
    priority       BIGINT  NOT NULL DEFAULT 0,
    replicas       BIGINT  NOT NULL,
    error_message  TEXT,
    create_time    TEXT    COLLATE "C" NOT NULL,
    start_time     TEXT,
    end_time       TEXT,
    revision       BIGINT  NOT NULL DEFAULT 1,
    PRIMARY KEY (project_id, job_id)
);

CREATE INDEX jobs_queue ON jobs (state, priority DESC, create_time);

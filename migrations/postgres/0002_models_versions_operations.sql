-- Models, their versions, and the long-running operations that create and delete them.
-- Labels and regions are JSON text. `revision` counts changes; the API's etag encodes it.
-- (PostgreSQL twin of migrations/sqlite/0002; flags are 0/1 BIGINTs as there.)

CREATE TABLE models (
    project_id         TEXT    COLLATE "C" NOT NULL REFERENCES projects (project_id),
    model_id           TEXT    COLLATE "C" NOT NULL,
    description        TEXT    NOT NULL DEFAULT '',
    labels             TEXT    NOT NULL DEFAULT '{}',
    regions            TEXT    NOT NULL DEFAULT '[]',
    prediction_logging BIGINT  NOT NULL DEFAULT 0,
    console_logging    BIGINT  NOT NULL DEFAULT 0,
    default_version_id TEXT    COLLATE "C",
    create_time        TEXT    COLLATE "C" NOT NULL,
    revision           BIGINT  NOT NULL DEFAULT 1,
    PRIMARY KEY (project_id, model_id)
);

CREATE TABLE versions (
    project_id      TEXT    COLLATE "C" NOT NULL,
    model_id        TEXT    COLLATE "C" NOT NULL,
    version_id      TEXT    COLLATE "C" NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('CREATING', 'READY', 'FAILED', 'DELETING')),
    error_message   TEXT,
    description     TEXT    NOT NULL DEFAULT '',
    labels          TEXT    NOT NULL DEFAULT '{}',
    deployment_uri  TEXT    NOT NULL,
    framework       TEXT    NOT NULL,
    runtime_version TEXT    NOT NULL DEFAULT '',
    python_version  TEXT    NOT NULL DEFAULT '',
    machine_type    TEXT    NOT NULL DEFAULT '',
    artifact_dir    TEXT,
    create_time     TEXT    COLLATE "C" NOT NULL,
    revision        BIGINT  NOT NULL DEFAULT 1,
    PRIMARY KEY (project_id, model_id, version_id),
    FOREIGN KEY (project_id, model_id) REFERENCES models (project_id, model_id)
);

CREATE TABLE operations (
    project_id       TEXT    COLLATE "C" NOT NULL REFERENCES projects (project_id),
    operation_id     TEXT    COLLATE "C" NOT NULL,
    operation_type   TEXT    NOT NULL,
    model_name       TEXT    NOT NULL,
    version_snapshot TEXT,
    labels           TEXT    NOT NULL DEFAULT '{}',
    create_time      TEXT    COLLATE "C" NOT NULL,
    start_time       TEXT,
    end_time         TEXT,
    done             BIGINT  NOT NULL DEFAULT 0,
    cancel_requested BIGINT  NOT NULL DEFAULT 0,
    error_code       BIGINT,
    error_message    TEXT,
    response         TEXT,
    PRIMARY KEY (project_id, operation_id)
);

CREATE INDEX operations_by_time ON operations (project_id, create_time DESC);

-- Identity and audit: API tokens (stored as SHA-256 hashes of their secrets), console sessions
-- bound to a token, the audit log of every mutation, and IAM policies kept per resource.
-- (PostgreSQL twin of migrations/sqlite/0006.)
CREATE TABLE api_tokens (
    token_id     TEXT    COLLATE "C" PRIMARY KEY,
    name         TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL CHECK (role IN ('admin', 'developer', 'viewer', 'predictor')),
    -- A JSON array of project ids, or NULL for every project.
    projects     TEXT,
    created_by   TEXT,
    create_time  TEXT    COLLATE "C" NOT NULL,
    revoke_time  TEXT
);

CREATE TABLE console_sessions (
    session_hash TEXT    PRIMARY KEY,
    token_id     TEXT    COLLATE "C" NOT NULL REFERENCES api_tokens (token_id) ON DELETE CASCADE,
    create_time  TEXT    NOT NULL,
    expire_time  TEXT    COLLATE "C" NOT NULL
);

CREATE TABLE audit_log (
    seq          BIGSERIAL PRIMARY KEY,
    time         TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    project      TEXT    COLLATE "C",
    status       BIGINT  NOT NULL,
    outcome      TEXT    NOT NULL
);

CREATE INDEX audit_log_project ON audit_log (project, seq);

CREATE TABLE iam_policies (
    resource     TEXT    PRIMARY KEY,
    policy       TEXT    NOT NULL,
    etag         TEXT    NOT NULL
);

-- syncd cache schema, version 5: data-quality warnings (internal; `syncd status` shows them),
-- and the request counts of cycles and resync requests.
-- A record that was mirrored, but not as well as it could be (say a company whose requisite is
-- of a preset the mapping does not map): one row per record and message. The message says what
-- is wrong, never a value of the record.
CREATE TABLE data_quality (
    entity TEXT NOT NULL,
    crm_id TEXT NOT NULL,
    message TEXT NOT NULL,
    first_seen TEXT NOT NULL,            -- UTC, when the record first carried the message
    last_seen TEXT NOT NULL,             -- UTC, the last cycle that met it
    PRIMARY KEY (entity, crm_id, message)
) WITHOUT ROWID;

-- What a cycle cost upstream: the requests it sent (a batch of commands counts once), for
-- `syncd status` ("requests per cycle"); NULL for runs written before version 5.
ALTER TABLE sync_runs ADD COLUMN requests INTEGER;

-- A running resync request's request count and estimated seconds left, for `syncd --resync`
-- following the daemon.
ALTER TABLE control_requests ADD COLUMN progress_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE control_requests ADD COLUMN progress_eta_seconds REAL;

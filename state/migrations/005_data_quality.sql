-- syncd cache schema, version 5: data-quality warnings (internal; `syncd status` shows them).
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

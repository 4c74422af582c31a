-- syncd cache schema, version 2: the outbox of service requests (docs/portal-contract.md).
-- The portal inserts a request and its files in one transaction; syncd delivers them.

CREATE TABLE outbox_requests (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    request_type TEXT NOT NULL,
    message TEXT,
    contact_phone TEXT,
    contact_email TEXT,
    contact_address TEXT,
    device_crm_id TEXT,
    contact_crm_id TEXT,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'done', 'retry_wait', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    lease_owner TEXT,
    lease_until TEXT,
    last_error TEXT,
    crm_id TEXT,
    delivered_at TEXT,
    message_dropped_at TEXT,
    updated_at TEXT
);
CREATE INDEX outbox_requests_due ON outbox_requests(status, next_attempt_at);
CREATE INDEX outbox_requests_contact ON outbox_requests(contact_crm_id, created_at, id);

CREATE TABLE outbox_files (
    id INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES outbox_requests(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    path TEXT NOT NULL,
    original_name TEXT NOT NULL,
    declared_type TEXT,
    size INTEGER,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'uploaded', 'rejected', 'deleted')),
    crm_file_id TEXT,
    detected_type TEXT,
    error TEXT,
    UNIQUE (request_id, position)
);

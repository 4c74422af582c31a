-- syncd cache schema, version 1. The portal's contract is docs/portal-contract.md.

CREATE TABLE companies (
    crm_id TEXT NOT NULL PRIMARY KEY,
    name TEXT,
    legal_name TEXT,
    registration_number TEXT,
    vat_number TEXT,
    country TEXT,
    addresses TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(addresses)),
    phones TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(phones)),
    emails TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(emails)),
    crm_updated_at TEXT,
    content_hash TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    sync_run_id INTEGER
);
CREATE INDEX companies_vat_number ON companies(vat_number);
CREATE INDEX companies_registration_number ON companies(registration_number);

CREATE TABLE contacts (
    crm_id TEXT NOT NULL PRIMARY KEY,
    first_name TEXT,
    last_name TEXT,
    birth_date TEXT,
    emails TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(emails)),
    phones TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(phones)),
    languages TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(languages)),
    addresses TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(addresses)),
    newsletters TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(newsletters)),
    company_id TEXT REFERENCES companies(crm_id) ON DELETE SET NULL,
    crm_updated_at TEXT,
    content_hash TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    sync_run_id INTEGER
);
CREATE INDEX contacts_company_id ON contacts(company_id);

CREATE TABLE devices (
    crm_id TEXT NOT NULL PRIMARY KEY,
    name TEXT,
    brand TEXT,
    model TEXT,
    serial_number TEXT,
    warranty_start TEXT,
    ownership TEXT CHECK (ownership IN ('owned', 'rental')),
    handpieces TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(handpieces)),
    location TEXT,
    producer TEXT,
    company_id TEXT REFERENCES companies(crm_id) ON DELETE SET NULL,
    contact_id TEXT REFERENCES contacts(crm_id) ON DELETE SET NULL,
    crm_updated_at TEXT,
    content_hash TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    sync_run_id INTEGER
);
CREATE INDEX devices_company_id ON devices(company_id);
CREATE INDEX devices_contact_id ON devices(contact_id);
CREATE INDEX devices_serial_number ON devices(serial_number);
CREATE INDEX devices_producer ON devices(producer);

-- Staging for full resyncs: pages land here (resumable), then one transaction swaps them in.
CREATE TABLE stage_companies AS SELECT * FROM companies WHERE 0;
CREATE UNIQUE INDEX stage_companies_pk ON stage_companies(crm_id);
CREATE TABLE stage_contacts AS SELECT * FROM contacts WHERE 0;
CREATE UNIQUE INDEX stage_contacts_pk ON stage_contacts(crm_id);
CREATE TABLE stage_devices AS SELECT * FROM devices WHERE 0;
CREATE UNIQUE INDEX stage_devices_pk ON stage_devices(crm_id);

-- One row per committed cycle: what the portal shows as "data as of".
CREATE TABLE sync_runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('incremental', 'full', 'sweep', 'record', 'held_deletes')),
    entities TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    data_as_of TEXT,
    upserted INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    quarantined INTEGER NOT NULL DEFAULT 0,
    held_deletes INTEGER NOT NULL DEFAULT 0,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);

-- Change cursors: moved in the same transaction as the rows they cover.
CREATE TABLE cursors (
    entity TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Progress of an interrupted full resync, per entity (committed with each staged page).
CREATE TABLE resync_progress (
    entity TEXT PRIMARY KEY,
    resume_after TEXT,
    server_time TEXT,
    pages INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL
);

-- Records that failed mapping. Holds the reason only, never the record's data.
CREATE TABLE quarantine (
    entity TEXT NOT NULL,
    crm_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    occurrences INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (entity, crm_id)
);

-- Deletions the delete guard refused to apply; applied or discarded by an operator.
CREATE TABLE held_deletes (
    entity TEXT NOT NULL,
    crm_id TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (entity, crm_id)
);

-- Requests from the CLI to the running daemon (resyncs), with their progress.
CREATE TABLE control_requests (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    record_id TEXT,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    started_at TEXT,
    finished_at TEXT,
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER,
    message TEXT
);

-- Audit log of privileged (admin) actions; kept two years.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX audit_log_at ON audit_log(at);

-- Per-job health, written by the daemon, read by `syncd status`.
CREATE TABLE job_health (
    job TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('ok', 'failing', 'stopped', 'idle')),
    last_success_at TEXT,
    last_error_at TEXT,
    last_error TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_run_at TEXT,
    updated_at TEXT NOT NULL
);

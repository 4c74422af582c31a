-- syncd cache schema, version 3: VIES answers (24-hour cache), the VIES circuit breaker, lookup
-- counters, and Omniva's parcel-machine list (docs/portal-contract.md).

-- Definite VIES answers (valid or invalid). Faults are never stored here.
CREATE TABLE vies_answers (
    country_code TEXT NOT NULL,          -- VIES member-state code: EL for Greece, XI for N. Ireland
    vat_number TEXT NOT NULL,            -- cleaned, without the country prefix
    valid INTEGER NOT NULL CHECK (valid IN (0, 1)),
    name TEXT,                           -- NULL when VIES shares none ("---")
    address TEXT,                        -- NULL when VIES shares none ("---")
    request_date TEXT NOT NULL,          -- VIES's requestDate, YYYY-MM-DD
    consultation_number TEXT,            -- checkVatApprox's requestIdentifier, when one was asked
    fetched_at TEXT NOT NULL,            -- UTC, when syncd received the answer
    PRIMARY KEY (country_code, vat_number)
) WITHOUT ROWID;
CREATE INDEX vies_answers_fetched ON vies_answers(fetched_at);

-- Open circuits: VIES blocked us (IP_BLOCKED, VAT_BLOCKED); no call goes out until open_until.
CREATE TABLE vies_circuits (
    scope TEXT PRIMARY KEY,              -- 'global' or a member-state code
    reason TEXT NOT NULL,                -- the VIES fault code that opened it
    opened_at TEXT NOT NULL,
    open_until TEXT NOT NULL
) WITHOUT ROWID;

-- Lookup outcomes per UTC day, for the hit ratio in `syncd status`.
CREATE TABLE vies_lookup_counts (
    day TEXT NOT NULL,                   -- UTC YYYY-MM-DD
    outcome TEXT NOT NULL,               -- cache, live, stale, local_invalid, rejected, unavailable
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, outcome)
) WITHOUT ROWID;

-- Omniva's locations, replaced whole in one transaction when a new list passes validation.
CREATE TABLE parcel_machines (
    location_id TEXT PRIMARY KEY,        -- Omniva's ZIP (the location's id)
    country TEXT NOT NULL,               -- A0_NAME: EE, LV, LT, FI
    kind TEXT NOT NULL CHECK (kind IN ('parcel_machine', 'post_office')),  -- TYPE "0" / "1"
    name TEXT NOT NULL,
    county TEXT NOT NULL DEFAULT '',     -- A1_NAME
    town TEXT NOT NULL DEFAULT '',       -- A2_NAME
    village TEXT NOT NULL DEFAULT '',    -- A3_NAME
    small_place TEXT NOT NULL DEFAULT '', -- A4_NAME
    street TEXT NOT NULL DEFAULT '',     -- A5_NAME
    area TEXT NOT NULL DEFAULT '',       -- A6_NAME
    house_number TEXT NOT NULL DEFAULT '', -- A7_NAME
    apartment TEXT NOT NULL DEFAULT '',  -- A8_NAME
    longitude REAL NOT NULL,             -- X_COORDINATE
    latitude REAL NOT NULL,              -- Y_COORDINATE
    service_hours TEXT NOT NULL DEFAULT '',
    temp_service_hours TEXT NOT NULL DEFAULT '',
    temp_service_hours_until TEXT NOT NULL DEFAULT '',
    temp_service_hours_2 TEXT NOT NULL DEFAULT '',
    temp_service_hours_2_until TEXT NOT NULL DEFAULT '',
    comment_et TEXT NOT NULL DEFAULT '', -- directions, may contain HTML such as <br>
    comment_en TEXT NOT NULL DEFAULT '',
    comment_ru TEXT NOT NULL DEFAULT '',
    comment_lv TEXT NOT NULL DEFAULT '',
    comment_lt TEXT NOT NULL DEFAULT '',
    modified_at TEXT NOT NULL DEFAULT '' -- MODIFIED, as Omniva sends it
) WITHOUT ROWID;
CREATE INDEX parcel_machines_country ON parcel_machines(country, kind, name);

-- One row: where the current list came from, and the last list that was refused.
CREATE TABLE omniva_list (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    etag TEXT,                           -- validators for the next conditional request
    last_modified TEXT,
    record_count INTEGER NOT NULL DEFAULT 0,
    skipped_count INTEGER NOT NULL DEFAULT 0, -- records of the current list that failed validation
    updated_at TEXT,                     -- UTC, when the stored list last changed
    checked_at TEXT,                     -- UTC, last successful check (a 304 counts)
    refused_at TEXT,                     -- UTC, last time a downloaded list was refused
    refused_reason TEXT
);
INSERT INTO omniva_list (id) VALUES (1);

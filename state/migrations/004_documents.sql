-- SharePoint documentation libraries mirrored through Microsoft Graph: metadata only, never
-- file contents. One row per library configured in [[sharepoint.libraries]].
CREATE TABLE document_libraries (
    name TEXT PRIMARY KEY,               -- the library's name in syncd's configuration
    site TEXT NOT NULL,                  -- "contoso.sharepoint.com:/sites/Manufacturers"
    library TEXT NOT NULL,               -- the document library's name in that site
    folder TEXT NOT NULL DEFAULT '',     -- folder scope ("/Manuals"); '' = the whole library
    permission TEXT NOT NULL,            -- the permission key the portal matches its users to
    producers TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(producers)), -- as configured
    site_id TEXT,                        -- Graph site ID, resolved once and kept
    drive_id TEXT,                       -- Graph drive ID, resolved once and kept
    delta_link TEXT,                     -- cursor: the deltaLink covering the rows in documents
    enumeration_kind TEXT CHECK (enumeration_kind IN ('full', 'incremental')),
    enumeration_link TEXT,               -- nextLink of the enumeration being staged, if any
    enumeration_pages INTEGER NOT NULL DEFAULT 0,
    enumeration_started_at TEXT,         -- UTC
    last_delta_at TEXT,                  -- UTC, when the last complete delta was applied
    last_full_at TEXT,                   -- UTC, when the last full enumeration was swapped in
    item_count INTEGER NOT NULL DEFAULT 0, -- files in scope, as the portal sees them
    health TEXT NOT NULL DEFAULT 'pending' CHECK (health IN ('pending', 'ok', 'failing', 'stopped')),
    last_error TEXT,                     -- human-readable, no secrets, no personal data
    health_updated_at TEXT
);

-- Every item of every library (the root, folders and files), by Graph item ID. Folders are kept
-- so that a file's folder path can be rebuilt from the parent chain (delta never sends
-- parentReference.path); the portal reads files through the device_documents view or with
-- kind = 'file'.
CREATE TABLE documents (
    id TEXT PRIMARY KEY,                 -- Graph driveItem ID
    library TEXT NOT NULL REFERENCES document_libraries(name) ON DELETE CASCADE,
    parent_id TEXT,                      -- Graph ID of the containing folder; NULL for the root
    kind TEXT NOT NULL CHECK (kind IN ('root', 'folder', 'file')),
    name TEXT NOT NULL,
    folder_path TEXT NOT NULL DEFAULT '', -- "/Candela/GentleMax" of the containing folder; "/" at the top
    in_scope INTEGER NOT NULL DEFAULT 1 CHECK (in_scope IN (0, 1)), -- under the library's folder scope
    size INTEGER,                        -- bytes, files only (NULL for folders)
    mime_type TEXT,
    quick_xor_hash TEXT,                 -- file.hashes.quickXorHash (base64)
    etag TEXT,
    ctag TEXT,
    created_at TEXT,                     -- UTC, as Graph sends it
    modified_at TEXT,
    web_url TEXT
) WITHOUT ROWID;
CREATE INDEX documents_library ON documents(library, kind, in_scope);
CREATE INDEX documents_parent ON documents(parent_id);

-- Pages of an enumeration in progress (a first or full one, or a multi-page incremental delta),
-- committed each with the nextLink that follows it; applied in one transaction when the last
-- page (with the deltaLink) arrives. An item seen twice keeps the last.
CREATE TABLE documents_staging (
    library TEXT NOT NULL REFERENCES document_libraries(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    parent_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('root', 'folder', 'file')),
    name TEXT NOT NULL DEFAULT '',
    size INTEGER,
    mime_type TEXT,
    quick_xor_hash TEXT,
    etag TEXT,
    ctag TEXT,
    created_at TEXT,
    modified_at TEXT,
    web_url TEXT,
    PRIMARY KEY (library, id)
) WITHOUT ROWID;

-- The producer keys each library serves, normalised (see producer_key in the contract).
CREATE TABLE library_producers (
    library TEXT NOT NULL REFERENCES document_libraries(name) ON DELETE CASCADE,
    producer_key TEXT NOT NULL,
    PRIMARY KEY (producer_key, library)
) WITHOUT ROWID;

-- Other spellings of a producer as people type them in the CRM ("Candela Corp."), both sides
-- normalised: alias_key -> producer_key.
CREATE TABLE producer_aliases (
    alias_key TEXT PRIMARY KEY,
    producer_key TEXT NOT NULL
) WITHOUT ROWID;

-- A device's producer, normalised as the library keys are: ASCII letters lowered, tabs, line
-- breaks and no-break spaces made spaces, runs of spaces collapsed (up to 32), trimmed; then
-- resolved through producer_aliases.
CREATE VIEW device_producer_keys AS
SELECT device_id, COALESCE(a.producer_key, k.key) AS producer_key
FROM (
    SELECT crm_id AS device_id,
        trim(replace(replace(replace(replace(replace(
            replace(replace(replace(replace(lower(producer),
                char(9), ' '), char(10), ' '), char(13), ' '), char(160), ' '),
            '  ', ' '), '  ', ' '), '  ', ' '), '  ', ' '), '  ', ' ')) AS key
    FROM devices
    WHERE producer IS NOT NULL
) AS k
LEFT JOIN producer_aliases AS a ON a.alias_key = k.key
WHERE k.key <> '';

-- "The documents for this device": every file in scope of every library serving the device's
-- producer. The portal filters on device_id and then on permission with its own flags.
CREATE VIEW device_documents AS
SELECT
    p.device_id,
    d.id AS document_id,
    d.library,
    l.permission,
    d.name,
    d.folder_path,
    d.size,
    d.mime_type,
    d.quick_xor_hash,
    d.created_at,
    d.modified_at,
    d.web_url
FROM device_producer_keys AS p
JOIN library_producers AS lp ON lp.producer_key = p.producer_key
JOIN document_libraries AS l ON l.name = lp.library
JOIN documents AS d ON d.library = lp.library AND d.kind = 'file' AND d.in_scope = 1;

-- syncd cache schema, version 6: the privacy policy's rights (restriction, erasure that the mirror
-- respects) and parcel machines' state markers (docs/privacy.md, docs/portal-contract.md).

-- Contacts whose processing is restricted (`syncd subject restrict`): the portal shows them as
-- restricted and syncd files no new service request for them. Kept apart from `contacts` so
-- that a restriction outlives resyncs and applies to a contact mirrored after it was set.
CREATE TABLE subject_restrictions (
    contact_id TEXT PRIMARY KEY,         -- the contact's CRM ID (present in contacts or not)
    restricted_at TEXT NOT NULL          -- UTC
) WITHOUT ROWID;

-- The portal reads the flag on the contact's own row; triggers keep it equal to the table above
-- whichever way a row is written (an incremental upsert, a resync's merge, a restriction).
ALTER TABLE contacts ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0
    CHECK (restricted IN (0, 1));

CREATE TRIGGER contacts_restricted_on_insert AFTER INSERT ON contacts
WHEN NEW.restricted = 0
    AND EXISTS (SELECT 1 FROM subject_restrictions r WHERE r.contact_id = NEW.crm_id)
BEGIN
    UPDATE contacts SET restricted = 1 WHERE crm_id = NEW.crm_id;
END;

CREATE TRIGGER subject_restrictions_on_insert AFTER INSERT ON subject_restrictions
BEGIN
    UPDATE contacts SET restricted = 1 WHERE crm_id = NEW.contact_id;
END;

CREATE TRIGGER subject_restrictions_on_delete AFTER DELETE ON subject_restrictions
BEGIN
    UPDATE contacts SET restricted = 0 WHERE crm_id = OLD.contact_id;
END;

-- Erased subjects the mirror must not bring back while the CRM still holds them
-- (`syncd subject erase`). Never an identifier: a keyed hash (HMAC-SHA256) of the CRM ID or of
-- a normalised e-mail address, phone number or VAT number.
CREATE TABLE subject_suppressions (
    entity TEXT NOT NULL,                -- contacts, companies or devices: which mirror skips it
    digest TEXT NOT NULL,                -- hex HMAC-SHA256 of "<kind>:<normalised value>"
    kind TEXT NOT NULL CHECK (kind IN ('crm_id', 'email', 'phone', 'vat')),
    created_at TEXT NOT NULL,            -- UTC
    PRIMARY KEY (entity, digest)
) WITHOUT ROWID;

-- Omniva marks some machines in their name ("... pakomāts (ILGĀKA PIEGĀDE)"): the name is kept
-- clean and the marker becomes a state the portal can hide or label.
ALTER TABLE parcel_machines ADD COLUMN state TEXT NOT NULL DEFAULT 'normal'
    CHECK (state IN ('normal', 'overfilled', 'longer_delivery', 'prepaid_pickup_only'));
ALTER TABLE parcel_machines ADD COLUMN state_note TEXT NOT NULL DEFAULT '';

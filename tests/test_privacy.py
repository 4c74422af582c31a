"""A full demo run at DEBUG level writes none of the seeded personal data into its log."""

from __future__ import annotations

from pathlib import Path

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.vies.fake.companies import COMPANIES
from syncd.demo.story import DEMO_REQUEST_CONTACTS, DEMO_SEED, run_demo


def personal_values(contacts: int) -> set[str]:
    companies, devices = max(10, contacts // 6), max(10, contacts // 2)
    values: set[str] = set()
    with FakeBitrix24(seed=DEMO_SEED, companies=companies, contacts=contacts,
                      devices=devices) as fake:
        for record in fake.records("contacts").values():
            values.update(str(record.get(k) or "") for k in ("NAME", "LAST_NAME"))
            for field in ("EMAIL", "PHONE"):
                values.update(entry["VALUE"] for entry in record.get(field) or [])
        for company_id in fake.records("companies"):
            for requisite in fake.requisites_of("companies", company_id):
                values.add(str(requisite.get("RQ_VAT_ID") or ""))
                values.add(str(requisite.get("RQ_COMPANY_FULL_NAME") or ""))
    for company in COMPANIES:  # the traders the demo looks up at the fake VIES
        values.update((company.vat_id, company.vat_number, company.name or ""))
        values.update((company.address or "").split("\n"))
    for contact in DEMO_REQUEST_CONTACTS:  # typed into the portal's service-request form
        values.update(contact.values())
        values.update(contact.get("contact_address", "").split(", "))
    return {v for v in values if len(v) >= 4}


# Loggers of every chapter of the demo: the mirror (1-5), service requests (6), Omniva and VIES
# (7-8), the local API (6-9), SharePoint (10) and a person's rights (11: the erasure's
# suppression is lifted by the mirror's sweep).
CHAPTER_LOGGERS = (
    "syncd.engines.mirror:", "syncd.engines.push:", "syncd.engines.vat:", "syncd.api.app:",
    "syncd.engines.documents:",
)


def test_demo_log_holds_no_personal_data(tmp_path: Path) -> None:
    assert run_demo(tmp_path, contacts=300) == 0  # every chapter behaved as documented
    log = (tmp_path / "syncd.log").read_text(encoding="utf-8")
    assert "DEBUG" in log and len(log.splitlines()) > 5  # the log really is at DEBUG level
    silent = [name for name in CHAPTER_LOGGERS if name not in log]
    assert silent == [], f"chapters that wrote nothing to the log: {silent}"
    assert "suppression" in log  # chapter 11: the sweep lifted the erased contact's
    seeded = personal_values(300)
    assert len(seeded) > 500
    leaked = sorted(value for value in seeded if value in log)
    assert leaked == [], f"{len(leaked)} seeded personal values appear in the log"

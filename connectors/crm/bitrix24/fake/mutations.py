"""Random but meaningful edits for ``FakeBitrix24.mutate_random``.

Every random update changes at least one field the mirror maps (names, phones, e-mails, UF
lists, device location/handpieces/rental flag), so a test can count it as a real change; some
also touch unmapped extras (``POST``, ``COMMENTS``, ``assignedById``) like real users do.
"""

from __future__ import annotations

from .dataset import UF, Dice, RecordFactory
from .names import BRANDS, COMMENT_SNIPPETS, COUNTRIES, DEVICE_ROOMS, NEWSLETTERS, Country
from .store import Row, Store

_PHONE_PREFIXES = {"+372": "EE", "+371": "LV", "+370": "LT"}
_SUFFIXES = ("Clinic", "Studio", "Plus", "Center", "II")
_LANGUAGES = ("et", "lv", "lt", "en", "ru", "fi", "de", "pl")


def random_update(factory: RecordFactory, store: Store, entity: str, key: int) -> Row:
    """A plausible change to record ``key`` of ``entity`` (never a no-op on mapped fields)."""
    row = store.table(entity).rows[key]
    if entity == "devices":
        return device_change(factory, row)
    country = country_of(factory, row)
    if entity == "companies":
        return company_change(factory, row, country)
    return contact_change(factory, row, country, store.companies.keys)


def country_of(factory: RecordFactory, row: Row) -> Country:
    """The country a record's phone number points to (a random one without a phone)."""
    for entry in row.get("PHONE") or []:
        code = _PHONE_PREFIXES.get(str(entry.get("VALUE", ""))[:4])
        if code is not None:
            return next(country for country in COUNTRIES if country.code == code)
    return factory.country()


def company_change(factory: RecordFactory, row: Row, country: Country) -> Row:
    """Rename, re-number or re-mail a company."""
    dice = factory.dice
    choice = dice.below(3)
    if choice == 0:
        return {"TITLE": f"{row['TITLE']} {dice.pick(_SUFFIXES)}",
                "ASSIGNED_BY_ID": str(dice.between(1, 12))}
    if choice == 1:
        return {"PHONE": [factory.multifield("PHONE", "WORK", factory.phone(country))]}
    domain = f"{dice.pick(('office', 'kontakt', 'hello', 'booking'))}{dice.between(2, 99)}"
    old = (row.get("EMAIL") or [{"VALUE": "info@example.ee"}])[0]["VALUE"]
    return {"EMAIL": [factory.multifield("EMAIL", "WORK", f"{domain}@{old.split('@')[-1]}")]}


def contact_change(
    factory: RecordFactory, row: Row, country: Country, company_keys: list[int]
) -> Row:
    """A new surname, phone, e-mail, newsletter choice, language or employer."""
    dice = factory.dice
    choice = dice.below(6)
    changes: Row = {}
    if dice.chance(0.3):
        changes["COMMENTS"] = dice.pick(COMMENT_SNIPPETS)  # unmapped noise
    if choice == 0:
        changes["LAST_NAME"] = _different(dice, row["LAST_NAME"], factory.person(country)[1])
    elif choice == 1:
        changes["PHONE"] = [factory.multifield("PHONE", "MOBILE", factory.phone(country))]
    elif choice == 2:
        local = factory.email_local(row["NAME"] or "info", row["LAST_NAME"] or "")
        address = f"{local}.{dice.below(100)}@{dice.pick(country.home_domains)}"
        changes["EMAIL"] = [factory.multifield("EMAIL", "HOME", address)]
    elif choice == 3:
        toggled = dice.pick(NEWSLETTERS)
        current = list(row.get("UF_CRM_NEWSLETTERS") or [])
        changes["UF_CRM_NEWSLETTERS"] = (
            [code for code in current if code != toggled] if toggled in current
            else [code for code in NEWSLETTERS if code in current or code == toggled]
        )
    elif choice == 4 or not company_keys:
        current = list(row.get("UF_CRM_LANGUAGES") or [])
        extra = [code for code in _LANGUAGES if code not in current]
        changes["UF_CRM_LANGUAGES"] = [*current, dice.pick(extra)] if extra else current[:1]
    else:
        company = str(dice.pick(company_keys))
        changes["COMPANY_ID"] = company if company != row["COMPANY_ID"] else None
    return changes


def device_change(factory: RecordFactory, row: Row) -> Row:
    """A device moved, re-equipped, or switched between rental and sale."""
    dice = factory.dice
    choice = dice.below(3)
    if choice == 0:
        city = dice.pick(factory.country().cities)[0]
        location = f"{city}, {dice.pick(DEVICE_ROOMS) or 'Room 3'}"
        return {f"{UF}Location": _different(dice, row[f"{UF}Location"], location),
                "assignedById": dice.between(1, 12)}
    if choice == 1:
        brand = next((b for b in BRANDS if b.name == row[f"{UF}Brand"]), BRANDS[0])
        current = list(row[f"{UF}Handpieces"] or [])
        options = [h for h in brand.handpieces if h not in current]
        return {f"{UF}Handpieces": [*current, dice.pick(options)] if options else current[1:]}
    return {f"{UF}IsRental": "N" if row[f"{UF}IsRental"] == "Y" else "Y"}


def _different(dice: Dice, current: str, proposal: str) -> str:
    return proposal if proposal != current else f"{proposal}-{dice.between(2, 9)}"

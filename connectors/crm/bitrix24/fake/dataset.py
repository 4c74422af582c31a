"""Seedable generator of a realistic Baltic aesthetic-laser CRM, and the store it fills.

Everything random comes from one ``random.Random(seed)``, so a seed always yields the same
records (the fake clock only affects records created or modified later). The initial records
are created between 2019 and 2026, with IDs increasing with creation time and small gaps where
records were "deleted" long ago.
"""

from __future__ import annotations

import calendar
import gc
import random
import re
import unicodedata
from collections.abc import Sequence
from typing import TypeVar

from .clock import FakeClock, format_date, format_ts
from .names import (
    BRANDS,
    COMMENT_SNIPPETS,
    COMPANY_TYPES,
    COUNTRIES,
    COUNTRY_WEIGHTS,
    DEVICE_ROOMS,
    NEWSLETTERS,
    SALON_SUFFIX_WORDS,
    SOURCES,
    Country,
)
from .schema import SPA_ID
from .store import OWNER_TYPE_IDS, REQUISITE_TYPE_ID, Requisites, Row, Store

SEED_START = calendar.timegm((2019, 1, 1, 0, 0, 0, 0, 0, 0))
SEED_END = calendar.timegm((2026, 1, 1, 0, 0, 0, 0, 0, 0))
UF = f"ufCrm{SPA_ID}"
T = TypeVar("T")

_ascii_cache: dict[tuple[str, str], str] = {}


def ascii_slug(text: str, sep: str = "") -> str:
    """Lower-case ASCII form of a name for e-mail addresses and domains (``Jüri`` → ``juri``)."""
    cached = _ascii_cache.get((text, sep))
    if cached is None:
        folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
        cached = sep.join(re.findall(r"[a-z0-9]+", folded))
        _ascii_cache[(text, sep)] = cached
    return cached


class Dice:
    """Fast draws from one ``random.Random(seed)``.

    ``random.choice``/``randrange`` cost ~0.5 µs each through ``getrandbits``; scaling
    ``random()`` is several times cheaper and just as deterministic, which keeps building a
    170,000-record dataset within a few seconds.
    """

    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.random = self.rng.random

    def chance(self, probability: float) -> bool:
        """True with the given probability."""
        return self.random() < probability

    def below(self, n: int) -> int:
        """An integer in ``[0, n)``."""
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        return low + int(self.random() * (high - low + 1))

    def pick(self, seq: Sequence[T]) -> T:
        """A uniformly chosen element of a non-empty sequence."""
        return seq[int(self.random() * len(seq))]

    def weighted(self, seq: Sequence[T], weights: Sequence[int]) -> T:
        """An element chosen with integer weights."""
        point = self.random() * sum(weights)
        for item, weight in zip(seq, weights, strict=True):
            point -= weight
            if point < 0:
                return item
        return seq[-1]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """``k`` distinct elements in random order."""
        return self.rng.sample(list(seq), k)


# --- identifiers with real check digits -------------------------------------------------------


def estonian_vat(dice: Dice) -> str:
    """``EE`` + 9 digits whose weighted sum (3,7,1,…) is divisible by 10 (KMKR check)."""
    body = "10" + f"{dice.below(10**6):06d}"
    total = sum(w * int(d) for w, d in zip((3, 7, 1, 3, 7, 1, 3, 7), body, strict=True))
    return f"EE{body}{-total % 10}"


def estonian_registry_code(dice: Dice) -> str:
    """8-digit registrikood starting with 1 (companies) or 8 (non-profits), mod-11 check."""
    body = ("1" if dice.chance(0.93) else "8") + f"{dice.below(10**6):06d}"
    check = sum((i % 9 + 1) * int(d) for i, d in enumerate(body)) % 11
    if check == 10:
        check = sum(((i + 2) % 9 + 1) * int(d) for i, d in enumerate(body)) % 11 % 10
    return f"{body}{check}"


def latvian_registration(dice: Dice) -> str:
    """11-digit Latvian legal-person code (40003…/5…) with a valid VAT check digit."""
    weights = (9, 1, 4, 8, 3, 10, 2, 5, 7, 6)
    while True:
        body = ("4000" + f"{dice.below(10**6):06d}") if dice.chance(0.85) else (
            "5" + f"{dice.below(10**9):09d}"
        )
        check = (3 - sum(w * int(d) for w, d in zip(weights, body, strict=True))) % 11
        if check < 10:
            return f"{body}{check}"


def lithuanian_code(dice: Dice) -> str:
    """9-digit Lithuanian company code (juridinio asmens kodas)."""
    return ("30" + f"{dice.below(10**7):07d}") if dice.chance(0.7) else (
        "1" + f"{dice.below(10**8):08d}"
    )


def lithuanian_vat(dice: Dice) -> str:
    """``LT`` + 9 or 12 digits, the second-to-last digit 1, with the mod-11 check digit."""
    length = 9 if dice.chance(0.8) else 12
    body = f"{dice.below(10 ** (length - 2)):0{length - 2}d}1"
    check = sum((1 + i % 9) * int(d) for i, d in enumerate(body)) % 11
    if check == 10:
        check = sum((1 + (i + 2) % 9) * int(d) for i, d in enumerate(body)) % 11
    return f"LT{body}{check % 10}"


# --- the generator ---------------------------------------------------------------------------


class RecordFactory:
    """Builds records, requisites and addresses in Bitrix24's wire format.

    The factory allocates IDs from the store but does not insert anything itself.
    """

    def __init__(self, dice: Dice, store: Store) -> None:
        self.dice = dice
        self.store = store
        self.company_country: dict[int, Country] = {}
        self.company_domain: dict[int, str] = {}
        self.company_city: dict[int, str] = {}

    # small value generators (also used for random updates)

    def country(self) -> Country:
        """A Baltic country, Estonia most often."""
        return self.dice.weighted(COUNTRIES, COUNTRY_WEIGHTS)

    def phone(self, country: Country) -> str:
        """A mobile number in the country's usual format."""
        dice = self.dice
        if country.code == "EE":
            return f"+372 5{dice.below(1000):03d} {dice.below(10000):04d}"
        if country.code == "LV":
            return f"+371 2{dice.below(1000):03d} {dice.below(10000):04d}"
        return f"+370 6{dice.below(100):02d} {dice.below(100000):05d}"

    def multifield(self, type_id: str, value_type: str, value: str) -> Row:
        """One PHONE/EMAIL entry."""
        return {
            "ID": self.store.next_multifield_id(),
            "VALUE_TYPE": value_type,
            "VALUE": value,
            "TYPE_ID": type_id,
        }

    def person(self, country: Country) -> tuple[str, str]:
        """(first name, last name); mostly women, as in the beauty trade."""
        dice = self.dice
        female = dice.chance(0.8)
        first = dice.pick(country.female_first if female else country.male_first)
        surname = dice.pick(country.surnames)[1 if female else 0]
        return first, surname

    def email_local(self, first: str, last: str) -> str:
        """An e-mail local part derived from a name."""
        dice = self.dice
        pattern = dice.below(4)
        if pattern == 0:
            return f"{ascii_slug(first)}.{ascii_slug(last)}"
        if pattern == 1:
            return f"{ascii_slug(first)[0]}.{ascii_slug(last)}"
        if pattern == 2:
            return f"{ascii_slug(first)}{ascii_slug(last)}"
        return f"{ascii_slug(first)}{dice.between(1, 98)}"

    def timestamps(self, created: float | None) -> tuple[str, str]:
        """(DATE_CREATE, DATE_MODIFY): the seed window for initial records, else "now"."""
        if created is None:
            now = self.store.clock.now_iso()
            return now, now
        modified = created + (SEED_END - created) * self.dice.random() ** 2
        return format_ts(created), format_ts(modified)

    # companies

    def company(self, created: float | None) -> tuple[int, Row, Requisites]:
        """A salon or clinic with its requisite and 1–2 addresses."""
        dice = self.dice
        store = self.store
        key = store.companies.allocate(gap=1 if dice.chance(0.03) else 0)
        country = self.country()
        word = dice.pick(country.salon_words)
        name = dice.pick(SALON_SUFFIX_WORDS if dice.chance(0.5) else country.female_first)
        title = f"{word} {name}"
        domain = f"{ascii_slug(name, '-')}-{ascii_slug(word, '-').split('-')[0]}.{country.tld}"
        self.company_country[key] = country
        self.company_domain[key] = domain
        date_create, date_modify = self.timestamps(created)
        row: Row = {
            "ID": str(key),
            "TITLE": title,
            "COMPANY_TYPE": dice.pick(COMPANY_TYPES),
            "ASSIGNED_BY_ID": str(dice.between(1, 12)),
            "DATE_CREATE": date_create,
            "DATE_MODIFY": date_modify,
        }
        if dice.chance(0.95):
            row["PHONE"] = [self.multifield("PHONE", "WORK", self.phone(country))]
        if dice.chance(0.92):
            row["EMAIL"] = [self.multifield("EMAIL", "WORK", f"info@{domain}")]
        legal_form = dice.pick(country.legal_forms)
        full_name = f"{title} {legal_form}" if country.code == "EE" else f'{legal_form} "{title}"'
        requisite = self.company_requisite(key, country, title, full_name, date_create)
        place = dice.pick(country.cities)
        addresses = [self.address(requisite, country, "6", place)]
        if dice.chance(0.5):
            second_type = dice.pick(("1", "8", "11"))
            addresses.append(self.address(requisite, country, second_type, place))
        self.company_city[key] = addresses[-1]["CITY"]
        return key, row, [(requisite, addresses)]

    def company_requisite(
        self, key: int, country: Country, title: str, full_name: str, created: str
    ) -> Row:
        """The company's "Organization" requisite with registration and VAT numbers."""
        dice = self.dice
        if country.code == "EE":
            reg, vat = estonian_registry_code(dice), estonian_vat(dice)
        elif country.code == "LV":
            reg = latvian_registration(dice)
            vat = f"LV{reg}"
        else:
            reg, vat = lithuanian_code(dice), lithuanian_vat(dice)
        if dice.chance(0.15):
            vat = ""
        return self._requisite(key, "companies", "1", "Organization", created, {
            "RQ_COMPANY_NAME": title,
            "RQ_COMPANY_FULL_NAME": full_name,
            "RQ_COMPANY_ID": reg,
            "RQ_VAT_ID": vat,
            "RQ_RESIDENCE_COUNTRY": country.code,
        })

    def _requisite(
        self, owner: int, entity: str, preset: str, name: str, created: str, rq: Row
    ) -> Row:
        key = self.store.requisites.allocate()
        return {
            "ID": str(key),
            "ENTITY_TYPE_ID": OWNER_TYPE_IDS[entity],
            "ENTITY_ID": str(owner),
            "PRESET_ID": preset,
            "NAME": name,
            "DATE_CREATE": created,
            "DATE_MODIFY": created,
            "ACTIVE": "Y",
            **rq,
        }

    def address(
        self,
        requisite: Row,
        country: Country,
        type_id: str,
        place: tuple[str, str, str] | None = None,
    ) -> Row:
        """An address of a requisite (anchored to the requisite's owner), in ``place``
        (city, region, postal prefix) or a random city of the country."""
        dice = self.dice
        city, region, postal_prefix = place or dice.pick(country.cities)
        if country.code == "EE":
            postal = f"{postal_prefix}{dice.below(1000):03d}"
        elif country.code == "LV":
            postal = f"{postal_prefix}{dice.below(100):02d}"
        else:
            postal = f"{postal_prefix}{dice.below(1000):03d}"
        house = dice.between(1, 160)
        return {
            "TYPE_ID": type_id,
            "ENTITY_TYPE_ID": REQUISITE_TYPE_ID,
            "ENTITY_ID": requisite["ID"],
            "ADDRESS_1": f"{dice.pick(country.streets)} {house}",
            "ADDRESS_2": "" if dice.chance(0.6) else str(dice.between(1, 120)),
            "CITY": city,
            "POSTAL_CODE": postal,
            "REGION": region,
            "PROVINCE": "",
            "COUNTRY": country.name,
            "COUNTRY_CODE": None,
            "LOC_ADDR_ID": self.store.next_location_id(),
            "ANCHOR_TYPE_ID": requisite["ENTITY_TYPE_ID"],
            "ANCHOR_ID": requisite["ENTITY_ID"],
        }

    # contacts

    def contact(
        self, created: float | None, company_keys: list[int]
    ) -> tuple[int, Row, Requisites]:
        """A person, usually working at one of ``company_keys``."""
        dice = self.dice
        rand = dice.random  # hot path: ~100,000 calls per dataset
        key = self.store.contacts.allocate(gap=1 if rand() < 0.03 else 0)
        company = dice.pick(company_keys) if company_keys and rand() < 0.75 else None
        country = self.company_country.get(company) if company is not None else None
        if country is None or rand() < 0.1:
            country = self.country()
        first, last = self.person(country)
        date_create, date_modify = self.timestamps(created)
        row: Row = {
            "ID": str(key),
            "NAME": first,
            "SECOND_NAME": "",
            "LAST_NAME": last,
            "BIRTHDATE": self.birthdate() if rand() < 0.6 else "",
            "POST": dice.pick(country.posts) if rand() < 0.8 else "",
            "SOURCE_ID": dice.pick(SOURCES),
            "ASSIGNED_BY_ID": str(dice.between(1, 12)),
            "COMMENTS": dice.pick(COMMENT_SNIPPETS),
            "COMPANY_ID": str(company) if company is not None else None,
            "DATE_CREATE": date_create,
            "DATE_MODIFY": date_modify,
        }
        emails = self.contact_emails(first, last, country, company)
        if emails:
            row["EMAIL"] = emails
        if rand() < 0.9:
            value_type = dice.pick(("MOBILE", "MOBILE", "WORK", "HOME"))
            row["PHONE"] = [self.multifield("PHONE", value_type, self.phone(country))]
        row["UF_CRM_LANGUAGES"] = list(dice.pick(country.languages))
        row["UF_CRM_NEWSLETTERS"] = [code for code in NEWSLETTERS if rand() < 0.4]
        requisites: Requisites = []
        if rand() < 0.5:
            requisite = self._requisite(key, "contacts", "3", "Person", date_create, {
                "RQ_COMPANY_NAME": "",
                "RQ_COMPANY_FULL_NAME": "",
                "RQ_COMPANY_ID": "",
                "RQ_VAT_ID": "",
                "RQ_RESIDENCE_COUNTRY": country.code,
            })
            requisites.append((requisite, [self.address(requisite, country, "1")]))
        return key, row, requisites

    def birthdate(self) -> str:
        """A date of birth of an adult."""
        dice = self.dice
        return format_date(dice.between(1960, 2003), dice.between(1, 12), dice.between(1, 28))

    def contact_emails(
        self, first: str, last: str, country: Country, company: int | None
    ) -> list[Row]:
        """Work e-mail at the company's domain and/or a private one."""
        dice = self.dice
        emails: list[Row] = []
        if company is not None and dice.chance(0.7):
            local = self.email_local(first, last)
            address = f"{local}@{self.company_domain[company]}"
            emails.append(self.multifield("EMAIL", "WORK", address))
        if (not emails or dice.chance(0.3)) and dice.chance(0.85):
            local = self.email_local(first, last)
            domain = dice.pick(country.home_domains)
            value_type = "HOME" if dice.chance(0.9) else dice.pick(("MAILING", "OTHER"))
            emails.append(self.multifield("EMAIL", value_type, f"{local}@{domain}"))
        return emails

    # devices

    def device(
        self,
        created: float | None,
        company_keys: list[int],
        contact_keys: list[int],
        contacts_of_company: dict[int, list[int]],
    ) -> tuple[int, Row]:
        """A laser installed at a salon (and/or assigned to a person)."""
        dice = self.dice
        key = self.store.devices.allocate(gap=1 if dice.chance(0.03) else 0)
        brand = dice.pick(BRANDS)
        model = dice.pick(brand.models)
        company = dice.pick(company_keys) if company_keys and dice.chance(0.8) else None
        contact = None
        if contact_keys and dice.chance(0.7):
            colleagues = contacts_of_company.get(company, []) if company is not None else []
            contact = dice.pick(colleagues) if colleagues and dice.chance(0.8) else (
                dice.pick(contact_keys)
            )
        created_iso, updated_iso = self.timestamps(created)
        year = dice.between(2015, 2025)
        warranty = None
        if dice.chance(0.75):
            warranty = format_date(year, dice.between(1, 12), dice.between(1, 28))
        city = self.company_city.get(company) if company is not None else None
        if city is None:
            city = dice.pick(self.country().cities)[0]
        room = dice.pick(DEVICE_ROOMS)
        etid = self.store.devices_entity_type_id
        return key, {
            "id": key,
            "title": f"{brand.name} {model}",
            "xmlId": None,
            "createdTime": created_iso,
            "updatedTime": updated_iso,
            "assignedById": dice.between(1, 12),
            "stageId": f"DT{etid}_{SPA_ID}:NEW",
            "companyId": company,
            "contactId": contact,
            f"{UF}Brand": brand.name,
            f"{UF}Model": model,
            f"{UF}SerialNumber": f"{brand.serial_prefix}-{year}-{dice.below(100000):05d}",
            f"{UF}WarrantyStart": warranty,
            f"{UF}IsRental": "Y" if dice.chance(0.12) else "N",
            f"{UF}Handpieces": dice.sample(brand.handpieces, dice.between(0, 3)),
            f"{UF}Location": f"{city}, {room}" if room else city,
            f"{UF}Producer": brand.producer,
            "entityTypeId": etid,
        }


def _creation_times(dice: Dice, count: int) -> list[float]:
    span = SEED_END - SEED_START
    rand = dice.random
    return sorted(SEED_START + span * rand() for _ in range(count))


def build_store(
    seed: int,
    companies: int,
    contacts: int,
    devices: int,
    clock: FakeClock,
    devices_entity_type_id: int = 1040,
    service_requests_entity_type_id: int = 1044,
    disk_folder_id: int = 1,
) -> tuple[Store, RecordFactory]:
    """Generate a deterministic dataset; returns the store and its factory (whose lookups of
    company country/domain/city later mutations reuse)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of new dicts would trigger pointless GC passes
    try:
        store = Store(
            clock, devices_entity_type_id, service_requests_entity_type_id, disk_folder_id
        )
        return _build(Dice(seed), store, companies, contacts, devices)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build(
    dice: Dice, store: Store, companies: int, contacts: int, devices: int
) -> tuple[Store, RecordFactory]:
    factory = RecordFactory(dice, store)
    companies_built = [factory.company(created) for created in _creation_times(dice, companies)]
    store.bulk_insert("companies", companies_built)
    company_keys = [key for key, _, _ in companies_built]
    contacts_built = [
        factory.contact(created, company_keys) for created in _creation_times(dice, contacts)
    ]
    store.bulk_insert("contacts", contacts_built)
    contact_keys = [key for key, _, _ in contacts_built]
    contacts_of_company: dict[int, list[int]] = {}
    for key, row, _ in contacts_built:
        if row["COMPANY_ID"] is not None:
            contacts_of_company.setdefault(int(row["COMPANY_ID"]), []).append(key)
    devices_built: list[tuple[int, Row, Requisites]] = [
        (*factory.device(created, company_keys, contact_keys, contacts_of_company), [])
        for created in _creation_times(dice, devices)
    ]
    store.bulk_insert("devices", devices_built)
    return store, factory

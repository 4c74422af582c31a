"""``FakeOmniva``: a real HTTP server on 127.0.0.1 serving ``/locations.json`` like omniva.ee.

The list is served as Omniva serialises it (a compact array, ``\\uXXXX`` and ``\\/`` escapes)
with a strong ``ETag`` and a ``Last-Modified``, and conditional GETs (``If-None-Match`` first,
else ``If-Modified-Since``) get 304. ``/_fake/...`` is a token-less control API; the same things
are available from Python.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import cached_property
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any, Final

from syncd.connectors.fakehttp import LoopbackFake, QuietHandler, TrackingHTTPServer

SAMPLE_FILE: Final = "locations_sample_ee_lv.json"
LOCATIONS_PATH: Final = "/locations.json"
MAINTENANCE_PATH: Final = "/maintenance.html"
MODES: Final[tuple[str, ...]] = (
    "ok",  # the current list
    "empty",  # 200 "[]"
    "html",  # 200 text/html maintenance page
    "truncated",  # 200, a complete HTTP answer whose JSON body is cut in the middle
    "dropped",  # full Content-Length, half the body, then the connection closes
    "shrunk",  # the list keeping every n-th record (``share``, default 0.1)
    "not_json",  # 200 application/json holding a PHP warning
    "bad_records",  # the list with three broken records (see BAD_RECORDS_SKIPS)
    "slow",  # the current list after ``delay`` seconds
    "redirect",  # 302 to an HTML maintenance page
)
# ``http_<status>`` (e.g. http_500, http_503, http_429, http_404) answers that status with an
# nginx error page, with ``Retry-After`` when ``retry_after`` is given.
BAD_RECORDS_SKIPS: Final[dict[str, int]] = {
    "bad_longitude": 1,
    "bad_type": 1,
    "missing_zip": 1,
}
JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"
_MAINTENANCE_PAGE = (
    b'<!DOCTYPE html>\n<html lang="et"><head><meta charset="utf-8">'
    b"<title>Omniva - hooldust\xc3\xb6\xc3\xb6d</title></head>\n<body><h1>Lehek\xc3\xbclg on "
    b"ajutiselt hoolduses</h1><p>Site under maintenance. Please try again later.</p></body>"
    b"</html>\n"
)
_PHP_WARNING = (
    b"Warning: file_get_contents(/var/www/omniva/cache/locations.json): failed to open stream: "
    b"No such file or directory in /var/www/omniva/export.php on line 27\n"
)


# --- the list and its serialisation --------------------------------------------------------


def sample_bytes() -> bytes:
    """The bundled reference sample (261 real EE/LV records, December 2021), byte for byte."""
    return resources.files(__package__).joinpath(SAMPLE_FILE).read_bytes()


def sample_locations() -> list[dict[str, str]]:
    """The bundled sample, decoded."""
    records: list[dict[str, str]] = json.loads(sample_bytes())
    return records


def encode_locations(records: list[dict[str, Any]]) -> bytes:
    """Serialise like Omniva: compact, ASCII with ``\\uXXXX`` escapes, ``/`` as ``\\/``."""
    return (
        json.dumps(records, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()
    )


_TOWNS: Final[dict[str, list[tuple[str, str, float, float]]]] = {
    # country: (county, town, longitude, latitude)
    "EE": [
        ("Harju maakond", "Tallinn", 24.7536, 59.4370),
        ("Tartu maakond", "Tartu linn", 26.7290, 58.3780),
        ("Pärnu maakond", "Pärnu linn", 24.4971, 58.3859),
        ("Ida-Viru maakond", "Narva linn", 28.1903, 59.3797),
        ("Lääne-Viru maakond", "Rakvere linn", 26.3558, 59.3464),
        ("Viljandi maakond", "Viljandi linn", 25.5900, 58.3639),
    ],
    "LV": [
        ("Rīgas pilsēta", "Rīga", 24.1052, 56.9496),
        ("Daugavpils pilsēta", "Daugavpils", 26.5362, 55.8747),
        ("Liepājas pilsēta", "Liepāja", 21.0113, 56.5047),
        ("Jelgavas pilsēta", "Jelgava", 23.7221, 56.6511),
        ("Valmieras novads", "Valmiera", 25.4275, 57.5385),
    ],
    "LT": [
        ("Vilniaus apskr.", "Vilnius", 25.2797, 54.6872),
        ("Kauno apskr.", "Kaunas", 23.9036, 54.8985),
        ("Klaipėdos apskr.", "Klaipėda", 21.1443, 55.7033),
        ("Šiaulių apskr.", "Šiauliai", 23.3141, 55.9349),
        ("Panevėžio apskr.", "Panevėžys", 24.3575, 55.7348),
    ],
    "FI": [
        ("Uusimaa", "Helsinki", 24.9384, 60.1699),
        ("Uusimaa", "Espoo", 24.6559, 60.2055),
        ("Pirkanmaa", "Tampere", 23.7610, 61.4978),
        ("Varsinais-Suomi", "Turku", 22.2666, 60.4518),
        ("Pohjois-Pohjanmaa", "Oulu", 25.4651, 65.0121),
    ],
}
_SHOPS: Final[dict[str, tuple[str, ...]]] = {
    "EE": ("Prisma", "Selver", "Rimi", "Maxima", "Coop Konsum", "Lidl"),
    "LV": ("Rimi", "Maxima", "ELVI", "Mego", "Top", "Lidl"),
    "LT": ("Maxima", "Iki", "Norfa", "Rimi", "Lidl", "Aibė"),
    "FI": ("K-Market", "S-Market", "Prisma", "Lidl", "Sale", "Alepa"),
}
_STREETS: Final[dict[str, tuple[str, ...]]] = {
    "EE": ("Pärnu mnt", "Narva mnt", "Sõpruse pst", "Tartu mnt", "Rüütli tn", "Kaubamaja tn"),
    "LV": ("Brīvības iela", "Rīgas iela", "Lāčplēša iela", "Skolas iela", "Dzirnavu iela"),
    "LT": ("Gedimino pr.", "Savanorių pr.", "Laisvės al.", "Taikos pr.", "Vilniaus g."),
    "FI": ("Mannerheimintie", "Hämeenkatu", "Aleksanterinkatu", "Kauppakatu", "Rantatie"),
}
_KIND_WORDS: Final[dict[str, tuple[str, str]]] = {  # (parcel machine, post office)
    "EE": ("pakiautomaat", "postkontor"),
    "LV": ("pakomāts", "pasta nodaļa"),
    "LT": ("paštomatas", "paštas"),
    "FI": ("pakettiautomaatti", "posti"),
}
# Name markers of synthetic parcel machines (one in MARKER_EVERY by ZIP), as Omniva writes them.
_MARKERS: Final[dict[str, str]] = {
    "EE": "Pikem ooteaeg kuni 2 päeva",
    "LV": "ILGĀKA PIEGĀDE",
    "LT": "PERPILDYTAS",
}
MARKER_EVERY: Final = 40
_COMMENTS: Final[dict[str, str]] = {
    "comment_est": "Kaupluse peasissekäigu juures.</br>Avatud poe lahtiolekuaegadel.",
    "comment_eng": "Next to the main entrance of the shop.</br>Open during shop hours.",
    "comment_rus": "У главного входа в магазин.</br>Открыт в часы работы магазина.",
    "comment_lav": "Pie veikala galvenās ieejas.",
    "comment_lit": "Prie pagrindinio parduotuvės įėjimo.",
}


def synthetic(
    n: int, countries: tuple[str, ...] | list[str] = ("EE", "LV", "LT"), *, seed: int = 1
) -> list[dict[str, str]]:
    """``n`` realistic records in Omniva's format (25 string keys), spread over ``countries``
    (EE, LV, LT, FI), about 80 % parcel machines, with unique 5-digit ZIPs; deterministic for
    a given ``seed``. Parcel machines whose ZIP is a multiple of :data:`MARKER_EVERY` carry
    their country's name marker (EE, LV, LT). Meant for benchmarks with a full
    2,000–10,000-record list."""
    unknown = [c for c in countries if c not in _TOWNS]
    if unknown or not countries:
        raise ValueError(f"countries must be among {sorted(_TOWNS)}")
    if not 0 <= n <= 89_999:
        raise ValueError("n must be between 0 and 89999")
    rng = random.Random(seed)
    zips = rng.sample(range(10_000, 100_000), n)
    records = []
    for index, zip_code in enumerate(zips):
        country = countries[index % len(countries)]
        county, town, lon, lat = rng.choice(_TOWNS[country])
        parcel_machine = rng.random() < 0.8
        machine_word, office_word = _KIND_WORDS[country]
        street = rng.choice(_STREETS[country])
        shop = rng.choice(_SHOPS[country])
        if parcel_machine:
            name = f"{town} {street.split()[0]} {shop} {machine_word}"
            if zip_code % MARKER_EVERY == 0 and country in _MARKERS:
                name += f" ({_MARKERS[country]})"
            hours = ""
        else:
            name = f"{town} {street.split()[0]} {office_word}"
            hours = "E-R 09:00-18:00, L 10:00-15:00"
        commented = rng.random() < 0.3
        offset = rng.choice(("+02:00", "+03:00"))
        modified = datetime(2024, 1, 1) + timedelta(milliseconds=rng.randrange(365 * 86_400_000))
        record = {
            "ZIP": str(zip_code),
            "NAME": name,
            "TYPE": "0" if parcel_machine else "1",
            "A0_NAME": country,
            "A1_NAME": county,
            "A2_NAME": town,
            "A3_NAME": "",
            "A4_NAME": "",
            "A5_NAME": street,
            "A6_NAME": "",
            "A7_NAME": f"{rng.randint(1, 140)}{rng.choice(('', '', '', 'A', 'B'))}",
            "A8_NAME": "",
            "X_COORDINATE": f"{lon + rng.uniform(-0.06, 0.06):.6f}",
            "Y_COORDINATE": f"{lat + rng.uniform(-0.03, 0.03):.6f}",
            "SERVICE_HOURS": hours,
            "TEMP_SERVICE_HOURS": "",
            "TEMP_SERVICE_HOURS_UNTIL": "",
            "TEMP_SERVICE_HOURS_2": "",
            "TEMP_SERVICE_HOURS_2_UNTIL": "",
            **{key: (text if commented else "") for key, text in _COMMENTS.items()},
            "MODIFIED": f"{modified.isoformat(timespec='milliseconds')}{offset}",
        }
        records.append(record)
    return records


def _bad_records(records: list[dict[str, str]]) -> list[dict[str, str]]:
    """A copy with one record missing ZIP, one of TYPE "7" and one with X "abc"."""
    if len(records) < 4:
        raise ValueError("bad_records needs a list of at least 4 records")
    broken = [dict(record) for record in records]
    del broken[0]["ZIP"]
    broken[1]["TYPE"] = "7"
    broken[2]["X_COORDINATE"] = "abc"
    return broken


# --- the served document ------------------------------------------------------------------


@dataclass(frozen=True)
class _Document:
    body: bytes
    etag: str
    last_modified: datetime  # whole seconds, UTC

    @classmethod
    def of(cls, body: bytes, last_modified: datetime) -> _Document:
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        return cls(body, etag, last_modified.astimezone(UTC).replace(microsecond=0))

    @property
    def http_date(self) -> str:
        return format_datetime(self.last_modified, usegmt=True)

    @cached_property
    def gzipped(self) -> bytes:
        return gzip.compress(self.body, mtime=0)

    @property
    def gzip_etag(self) -> str:
        """The gzip variant's own strong tag (Apache style: ``"<tag>-gzip"``)."""
        return self.etag[:-1] + '-gzip"'


@dataclass(frozen=True)
class RequestRecord:
    """One request to the site (control requests under ``/_fake/`` are not logged)."""

    method: str
    path: str
    if_none_match: str | None
    if_modified_since: str | None
    status: int

    def to_json(self) -> dict[str, Any]:
        """The ``/_fake/requests`` form."""
        return {
            "method": self.method,
            "path": self.path,
            "if_none_match": self.if_none_match,
            "if_modified_since": self.if_modified_since,
            "status": self.status,
        }


@dataclass
class Reply:
    """What the handler writes; ``transport="drop_mid"`` sends half the body, then closes."""

    status: int = 200
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    transport: str = "send"
    content_length: int | None = None  # None: len(body); a 304 declares the 200's length


@dataclass
class _Mode:
    name: str = "ok"
    delay: float = 1.0
    share: float = 0.1
    retry_after: float | None = None
    remaining: int | None = None  # answers left before falling back to ok; None: forever
    since: datetime = field(default_factory=lambda: datetime.now(UTC))


class FakeOmniva(LoopbackFake):
    """A fake omniva.ee serving a locations list over real HTTP on 127.0.0.1.

    ``locations`` defaults to the bundled sample (served byte for byte). With ``compress`` the
    list is gzipped for clients that accept it (its own strong ETag ``"<tag>-gzip"``, either tag
    matches a conditional request). Use as a context manager or ``start()``/``stop()``;
    ``locations_url`` is what a client fetches. Thread-safe.
    """

    _name = "omniva"

    def __init__(
        self,
        locations: list[dict[str, str]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        compress: bool = True,
    ) -> None:
        super().__init__(host, port)
        self.compress = compress  # gzip the list when the client accepts it (as omniva.ee's CDN)
        self._lock = threading.Lock()
        self._records: list[dict[str, str]] = []
        self._document = _Document.of(b"", datetime.now(UTC))
        self._mode = _Mode()
        self._requests: list[RequestRecord] = []
        self._first_load = True
        self._load(locations)

    # --- lifecycle (start/stop/port/control_url: LoopbackFake) ------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def locations_url(self) -> str:
        """``http://127.0.0.1:PORT/locations.json``."""
        return self.base_url + LOCATIONS_PATH

    # --- Python API -------------------------------------------------------------------------

    @property
    def locations(self) -> list[dict[str, str]]:
        """A copy of the list served in mode ``ok``."""
        with self._lock:
            return [dict(record) for record in self._records]

    @property
    def etag(self) -> str:
        """The ``ETag`` of the list served in mode ``ok``."""
        return self._document.etag

    @property
    def last_modified(self) -> str:
        """The ``Last-Modified`` (HTTP date) of the list served in mode ``ok``."""
        return self._document.http_date

    @property
    def mode(self) -> str:
        """The current mode."""
        return self._mode.name

    @property
    def requests(self) -> list[RequestRecord]:
        """The requests so far (``/_fake/`` excluded), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests the site has had (``/_fake/`` excluded)."""
        with self._lock:
            return len(self._requests)

    def set_locations(self, records: list[dict[str, str]]) -> None:
        """Serve ``records`` from now on (a new ETag; Last-Modified moves forward)."""
        with self._lock:
            self._replace(records, encode_locations(records))

    def set_mode(
        self,
        mode: str,
        *,
        delay: float | None = None,
        share: float | None = None,
        retry_after: float | None = None,
        times: int | None = None,
    ) -> None:
        """Switch to ``mode`` (see ``MODES`` and ``http_<status>``), for ``times`` answers
        (then back to ``ok``) or until changed. ``delay`` is for ``slow`` (seconds), ``share``
        for ``shrunk`` (the share of records kept), ``retry_after`` for ``http_<status>``."""
        _check_mode(mode)
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if share is not None and not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        with self._lock:
            # A changed file is newer than the good one, so If-Modified-Since cannot hide it.
            since = max(
                datetime.now(UTC).replace(microsecond=0),
                self._document.last_modified + timedelta(seconds=1),
            )
            self._mode = _Mode(
                mode,
                delay=1.0 if delay is None else float(delay),
                share=0.1 if share is None else float(share),
                retry_after=retry_after,
                remaining=times,
                since=since,
            )

    def reset(self) -> None:
        """Back to the bundled sample in mode ``ok`` with an empty request log."""
        with self._lock:
            self._mode = _Mode()
            self._requests.clear()
        self._load(None)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._requests.clear()

    # --- request handling -------------------------------------------------------------------

    def handle(self, verb: str, path: str, headers: Any, body: bytes) -> Reply:
        """Answer one request (called by the handler threads); all but ``/_fake/`` are logged."""
        route = path.partition("?")[0]
        if route.startswith("/_fake/"):
            status, payload = self._control(verb, route[len("/_fake/") :].strip("/"), body)
            return Reply(status, json.dumps(payload).encode())
        reply = self._site_reply(verb, route, headers)
        with self._lock:
            self._requests.append(
                RequestRecord(
                    verb,
                    path,
                    headers.get("If-None-Match"),
                    headers.get("If-Modified-Since"),
                    reply.status,
                )
            )
        return reply

    def _site_reply(self, verb: str, route: str, headers: Any) -> Reply:
        if route == MAINTENANCE_PATH and verb in ("GET", "HEAD"):
            return Reply(200, _MAINTENANCE_PAGE, HTML_TYPE)
        if route != LOCATIONS_PATH:
            return _error_page(404)
        if verb not in ("GET", "HEAD"):
            return Reply(405, _nginx_page(405), HTML_TYPE, {"Allow": "GET, HEAD"})
        with self._lock:
            mode = self._mode
            records = self._records
            document = self._document
            if mode.remaining is not None:
                mode.remaining -= 1
                if mode.remaining <= 0:
                    self._mode = _Mode()
        if mode.name == "slow":
            self._stopping.wait(mode.delay)
        return self._list_reply(mode, records, document, headers)

    def _list_reply(
        self, mode: _Mode, records: list[dict[str, str]], document: _Document, headers: Any
    ) -> Reply:
        name = mode.name
        if name.startswith("http_"):
            status = int(name[len("http_") :])
            extra = {} if mode.retry_after is None else {"Retry-After": f"{mode.retry_after:g}"}
            return Reply(status, _nginx_page(status), HTML_TYPE, extra)
        if name == "html":
            return Reply(200, _MAINTENANCE_PAGE, HTML_TYPE)
        if name == "redirect":
            return Reply(302, _nginx_page(302), HTML_TYPE, {"Location": MAINTENANCE_PATH})
        if name in ("ok", "slow", "dropped"):
            served = document
        else:
            served = _Document.of(_mode_body(mode, records, document.body), mode.since)
        compressed = self.compress and _accepts_gzip(headers)
        body = served.gzipped if compressed else served.body
        validators = {
            "ETag": served.gzip_etag if compressed else served.etag,
            "Last-Modified": served.http_date,
            "Vary": "Accept-Encoding",
        }
        if compressed:
            validators["Content-Encoding"] = "gzip"
        if _not_modified(headers, served):
            return Reply(304, b"", JSON_TYPE, validators, content_length=len(body))
        transport = "drop_mid" if name == "dropped" else "send"
        return Reply(200, body, JSON_TYPE, validators, transport)

    def _control(self, verb: str, route: str, body: bytes) -> tuple[int, Any]:
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("a JSON object is expected")
            return 200, self._route(verb, route, payload)
        except LookupError as exc:
            return 404, {"error": str(exc)}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}

    def _route(self, verb: str, route: str, payload: dict[str, Any]) -> Any:
        if (verb, route) == ("GET", "requests"):
            requests = self.requests
            return {"count": len(requests), "requests": [r.to_json() for r in requests]}
        if (verb, route) == ("GET", "state"):
            return {
                "mode": self.mode,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "count": len(self.locations),
            }
        if (verb, route) == ("POST", "mode"):
            options = {
                k: payload[k] for k in ("delay", "share", "retry_after", "times") if k in payload
            }
            self.set_mode(str(payload.get("mode", "")), **options)
            return {"mode": self.mode}
        if (verb, route) == ("POST", "locations"):
            if "synthetic" in payload:
                countries = tuple(payload.get("countries") or ("EE", "LV", "LT"))
                records = synthetic(
                    int(payload["synthetic"]), countries, seed=int(payload.get("seed", 1))
                )
            elif isinstance(payload.get("locations"), list):
                records = payload["locations"]
            else:
                raise ValueError("give 'locations' (a list) or 'synthetic' (a count)")
            self.set_locations(records)
            return {"count": len(records), "etag": self.etag}
        if (verb, route) == ("POST", "reset"):
            self.reset()
            return {"ok": True}
        raise LookupError(f"no control route {verb} /_fake/{route}")

    def _load(self, locations: list[dict[str, str]] | None) -> None:
        if locations is None:
            body = sample_bytes()
            records: list[dict[str, str]] = json.loads(body)
        else:
            records, body = locations, encode_locations(locations)
        with self._lock:
            self._replace(records, body)

    def _replace(self, records: list[dict[str, str]], body: bytes) -> None:
        """Install a new list (the caller holds the lock)."""
        now = datetime.now(UTC).replace(microsecond=0)
        if self._first_load:  # a fresh fake: the file is as old as its newest record
            moment = locations_modified(records) or now
            self._first_load = False
        else:  # a changed file is always newer, so If-Modified-Since cannot hide it
            moment = max(now, self._document.last_modified + timedelta(seconds=1))
        self._records = [dict(record) for record in records]
        self._document = _Document.of(body, moment)


def locations_modified(records: list[dict[str, str]]) -> datetime | None:
    """The latest ``MODIFIED`` of ``records`` (as Omniva's file would be dated), or None."""
    latest: datetime | None = None
    for record in records:
        try:
            moment = datetime.fromisoformat(str(record.get("MODIFIED", "")))
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        latest = moment if latest is None or moment > latest else latest
    return latest


def _check_mode(mode: str) -> None:
    if mode in MODES:
        return
    if mode.startswith("http_") and mode[5:].isdigit() and 300 <= int(mode[5:]) <= 599:
        return
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES} or http_<status>")


def _mode_body(mode: _Mode, records: list[dict[str, str]], good: bytes) -> bytes:
    if mode.name == "empty":
        return b"[]"
    if mode.name == "truncated":
        return good[: len(good) // 2]
    if mode.name == "not_json":
        return _PHP_WARNING + good
    if mode.name == "shrunk":
        step = max(1, round(1 / mode.share))
        return encode_locations(records[::step])
    if mode.name == "bad_records":
        return encode_locations(_bad_records(records))
    raise AssertionError(f"mode {mode.name} has no body of its own")


def _not_modified(headers: Any, document: _Document) -> bool:
    """RFC 9110 §13.2.2: If-None-Match (weak comparison) wins; else If-Modified-Since."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return document.etag in tags or document.gzip_etag in tags
    if_modified_since = headers.get("If-Modified-Since")
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False  # an invalid date is ignored (RFC 9110 §13.1.3)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return document.last_modified <= since


def _accepts_gzip(headers: Any) -> bool:
    for item in str(headers.get("Accept-Encoding") or "").split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _nginx_page(status: int) -> bytes:
    with contextlib.suppress(ValueError):
        phrase = HTTPStatus(status).phrase
        return (
            f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode()
    return f"<html><body><h1>{status}</h1></body></html>\r\n".encode()


def _error_page(status: int) -> Reply:
    return Reply(status, _nginx_page(status), HTML_TYPE)


# --- HTTP plumbing --------------------------------------------------------------------------


class _Handler(QuietHandler):
    """HTTP/1.1 keep-alive handler; every answer carries a Content-Length."""

    server_version = "nginx"
    server: TrackingHTTPServer[FakeOmniva]

    verbs = frozenset({"GET", "HEAD", "POST"})  # HEAD: the GET answer without its body

    def serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            reply = self.server.fake.handle(verb, self.path, self.headers, body)
        except Exception as exc:  # a bug in the fake must not hang the client
            reply = Reply(500, json.dumps({"error": f"fake server bug: {exc!r}"}).encode())
        self._write(reply, head=verb == "HEAD")

    def _write(self, reply: Reply, *, head: bool) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        length = len(reply.body) if reply.content_length is None else reply.content_length
        self.send_header("Content-Length", str(length))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if head or reply.status == 304:
            return
        if reply.transport == "drop_mid":
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(reply.body)

"""A fake omniva.ee (real HTTP on 127.0.0.1) serving ``/locations.json`` for tests, the demo and
benchmarks.

``FakeOmniva()`` serves the bundled reference sample (261 real Estonian and Latvian records,
byte for byte) with a strong ``ETag``, ``Last-Modified`` and 304 answers to conditional GETs.
``fake.set_mode(mode, delay=, share=, retry_after=, times=)`` switches what ``/locations.json``
answers: ``ok``, ``empty``, ``html``, ``truncated``, ``dropped``, ``shrunk``, ``not_json``,
``bad_records``, ``slow``, ``redirect`` or ``http_<status>`` (see ``MODES``).
``fake.set_locations(records)`` serves any list; ``synthetic(n, countries=...)`` builds a
realistic one of any size (a few parcel machines with Omniva's name markers, such as
``(PERPILDYTAS)``). ``fake.requests`` logs each request with its validators.

Control API (token-less): ``POST /_fake/mode {mode, delay?, share?, retry_after?, times?}``,
``POST /_fake/locations {locations: [...]}`` or ``{synthetic: n, countries?, seed?}``,
``GET /_fake/requests``, ``GET /_fake/state``, ``POST /_fake/reset``.
"""

from .server import (
    BAD_RECORDS_SKIPS,
    MARKER_EVERY,
    MODES,
    FakeOmniva,
    RequestRecord,
    encode_locations,
    sample_bytes,
    sample_locations,
    synthetic,
)

__all__ = [
    "BAD_RECORDS_SKIPS",
    "MARKER_EVERY",
    "MODES",
    "FakeOmniva",
    "RequestRecord",
    "encode_locations",
    "sample_bytes",
    "sample_locations",
    "synthetic",
]

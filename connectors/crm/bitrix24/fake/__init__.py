"""A fake Bitrix24 REST server (real HTTP on 127.0.0.1) for tests, the demo and benchmarks.

``FakeBitrix24(seed=1, companies=50, contacts=200, devices=100)`` generates a deterministic
Baltic aesthetic-laser CRM (contacts, companies with requisites and addresses, and smart-process
devices) and serves it in Bitrix24's wire format: old-style ``crm.contact/company/requisite/
address.list`` with string scalars, ``crm.item.*`` with integers, ``batch``, ``event.offline.*``,
``server.time``, the two error families, the leaky-bucket limit and injectable faults.

Fault kinds for ``fake.faults.add(kind, times=1, method=None, after=0, retry_after=None,
delay=None)``: ``query_limit`` (503), ``operation_time_limit`` (429), ``internal_error`` (500),
``auth_error`` (401), ``html_error`` (502 nginx page), ``slow`` (sleep ``delay`` then answer),
``drop`` (close without answering), ``drop_after_processing`` (run the method, then close),
``malformed_json`` (200 with a PHP warning before the JSON) and ``truncated_json`` (200, full
Content-Length, half the body). ``method`` is an exact name or an fnmatch glob; a fault naming
a method also hits that command inside a ``batch``.
"""

from .faults import FAULT_KINDS, Fault
from .server import FakeBitrix24

__all__ = ["FAULT_KINDS", "FakeBitrix24", "Fault"]

"""A fake VIES checkVat SOAP service (real HTTP on 127.0.0.1) for tests, the demo and benchmarks.

``FakeVies(seed=1, companies=COMPANIES)`` serves the bundled WSDL (``GET …?wsdl``) and answers
checkVat/checkVatApprox in VIES's envelope shape: VIES's test-service numbering for any member
state (``100`` valid, ``200`` invalid, ``201`` INVALID_INPUT … ``601`` MS_MAX_CONCURRENT_REQ_TIME,
see :data:`TEST_FAULTS`), the register :data:`COMPANIES` (numbers pass python-stdnum), and
valid=false with ``---`` for any other well-formed number.

Injected faults (``fake.inject(kind, country=, number=, times=, delay=)`` or
``POST /_fake/faults``): any VIES fault string, ``slow`` (``delay`` seconds, then the answer),
``http_500``, ``invalid_xml``, ``html``, ``redirect`` (302 to an HTML page), ``truncated`` (half
the body, full Content-Length), ``drop`` (close without answering), ``raw`` (exact
``status``/``body``/``content_type``; ``fake.inject_raw(body)``), and wrong answers:
``echo_country`` / ``echo_number`` (the true verdict, echoing another member state or another
number) and ``no_consultation`` (checkVatApprox with an empty ``requestIdentifier``).
``fake.requests`` logs (operation, country_code, vat_number); ``fake.hold()`` /
``fake.release()`` / ``fake.wait_for_waiting(n, timeout)`` gate answers for concurrency tests.
"""

from .companies import COMPANIES, MEMBER_STATES, TEST_FAULTS, TEST_INVALID, TEST_VALID, Company
from .faults import FAULT_KINDS, InjectedFault
from .server import SERVICE_PATH, FakeVies, LoggedRequest

__all__ = [
    "COMPANIES",
    "FAULT_KINDS",
    "MEMBER_STATES",
    "SERVICE_PATH",
    "TEST_FAULTS",
    "TEST_INVALID",
    "TEST_VALID",
    "Company",
    "FakeVies",
    "InjectedFault",
    "LoggedRequest",
]

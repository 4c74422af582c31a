"""A fake Microsoft Graph (SharePoint document libraries) and Entra ID login endpoint on
loopback, for tests, the demo and benchmarks.

``FakeGraph()`` serves Graph over plain HTTP (``fake.graph_url`` = ``http://127.0.0.1:PORT/v1.0``)
and the login endpoint over HTTPS (``fake.login_authority`` = ``127.0.0.1:TLSPORT``, trusted
through the CA in ``fake.ca_file``); it accepts ``fake.tenant_id`` / ``fake.client_id`` with
``fake.client_secret`` or the certificate ``fake.certificate_pem``. Build data with
``add_site``/``add_library``/``add_folder``/``add_file``/``seed_library``, change it with
``rename``/``move``/``modify``/``delete``/``change_files``, read it back with ``snapshot`` and
``content``/``iter_content``.

Served: sites by address and id, a site's drives, drive items (``$select``, a pre-authenticated
``@microsoft.graph.downloadUrl`` valid one hour), ``/content`` redirects, the delta enumeration
of a drive's root in Graph's wire format (``@odata.nextLink``/``@odata.deltaLink``, tombstones,
410 ``resyncRequired`` after ``expire_delta_tokens``), and downloads with ``Range``. Every Graph
call needs a bearer token from the login endpoint (``invalidate_access_tokens`` revokes them).

Fault kinds for ``fake.add_fault(kind, times=1, after=0, path=None, drive_id=None,
retry_after=None, delay=None)``: ``throttle`` (429 TooManyRequests + Retry-After, default 1 s),
``unavailable`` (503 serviceNotAvailable + Retry-After), ``gateway_timeout`` (504
gatewayTimeout), ``token_expired`` (401 InvalidAuthenticationToken, revoking every token issued),
``forbidden`` (403 accessDenied), ``not_found`` (404 itemNotFound), ``resync`` (410
resyncRequired), ``drop`` (close without answering), ``truncate`` (half the body, then close),
``html`` (500 with an IIS HTML page), ``repeat_item`` (the next delta page that follows another
also repeats an item an earlier page sent) and ``slow`` (answer after ``delay`` seconds).
``path`` is an fnmatch glob on the URL path; ``drive_id`` limits a fault to one library's calls
(``times=None``: forever).

Control API (``/_fake/``, no token): see :mod:`.control`. Standalone:
``python -m syncd.connectors.sharepoint.fake --libraries 5 --items 10000 --seed 1``.
"""

from .faults import FAULT_KINDS, Fault
from .server import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, FakeGraph

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_TENANT_ID", "FAULT_KINDS", "FakeGraph", "Fault"]

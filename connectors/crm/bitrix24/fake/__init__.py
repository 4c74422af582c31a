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

Bitrix24's real limits, each off unless asked for: the leaky bucket (``rate_limit=(50, 2)``:
503 ``QUERY_LIMIT_EXCEEDED`` above the burst), the per-method operating-time budget
(``operating_limit=OperatingBudget(480)``: every call, and every ``batch`` command, charged to its
own method over ten one-minute buckets; 429 ``OPERATION_TIME_LIMIT`` over it, per command inside
a batch) and, always, the 50-command cap (400 ``ERROR_BATCH_LENGTH_EXCEEDED``). A ``batch``
reference ``$result[k][49][ID]`` that does not resolve becomes an empty string, and an empty
comparison value is no condition, so such a command lists from the start, as on a portal.
``fake.between_commands = hook(index, method)`` runs between the commands of a batch (to change
data mid-batch). Standalone: ``--rate-limit 50 2 --operating-limit 480``; at runtime:
``POST /_fake/limits``.

The push side (service requests going up to the CRM): a second smart process
(``service_requests_entity_type_id=1044``, internal id 9, ``ufCrm9*`` fields, ``parentId1040``
linking a device) served by the same ``crm.item.*`` methods, with a multiple file UF
(``ufCrm9Files``: ``[["name", "<base64>"], {"id": N}]`` replaces the whole field, omitted files
are deleted) and Bitrix Disk (``disk.folder.uploadfile`` with base64 ``fileContent`` or a
one-time ``uploadUrl`` for a streamed multipart POST, ``disk.folder.getchildren``,
``disk.folder.get``, ``disk.file.get``) on a folder ``disk_folder_id=1``. The multipart endpoint
is named ``disk.upload`` for faults and ``request_log``. ``fake.service_requests()``,
``fake.disk_files()`` and ``fake.file_bytes(id)`` expose what was pushed.
"""

from .faults import FAULT_KINDS, Fault
from .server import FakeBitrix24

__all__ = ["FAULT_KINDS", "FakeBitrix24", "Fault"]

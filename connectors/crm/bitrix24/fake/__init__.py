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

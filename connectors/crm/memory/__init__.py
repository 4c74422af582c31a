"""An in-memory CRM for engine tests that need no HTTP: companies, contacts and devices
(:class:`MemoryRecords`, mirrored by :class:`MemoryAdapter` through ``mappings/memory/``) and
service requests with their files (:class:`MemoryCRM`, pushed to by :class:`MemoryPusher`), kept
in Python dicts behind the same protocols as a real vendor, with the fault hooks engine tests
need. It passes the adapter and pusher contract suites (``tests/test_crm_contract.py``,
``tests/test_pusher_contract.py``) like Bitrix24 does.
"""

from .adapter import MemoryAdapter, MemoryRecords
from .pusher import MemoryCRM, MemoryPusher

__all__ = ["MemoryAdapter", "MemoryCRM", "MemoryPusher", "MemoryRecords"]

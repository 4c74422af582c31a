"""An in-memory CRM: service requests and files kept in Python dicts, behind the same
:class:`~connectors.crm.base.ServiceRequestPusher` protocol as a real vendor, with the fault
hooks engine tests need (a write whose answer is lost, an upstream that is down or rate-limits).
It passes the pusher contract suite (``tests/test_pusher_contract.py``) like Bitrix24 does.
"""

from .pusher import MemoryCRM, MemoryPusher

__all__ = ["MemoryCRM", "MemoryPusher"]

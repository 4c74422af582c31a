"""Bitrix24, the CRM vendor syncd was built for: the REST client (``client.py``), the mirror
adapter (``adapter.py``), the service-request pusher (``push.py``), the wire encoding, the
``[crm.bitrix24]`` settings and the vendor plug-in (``vendor.py``), and a fake Bitrix24
(``fake/``) for tests, the demo and the benchmarks."""

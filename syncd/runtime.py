"""Building the working parts from settings: the cache connection, the configured CRM vendor's
adapter and pusher (looked up by name in the registry), the engines and the service clients."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from syncd.config import Settings
from syncd.connectors.budget import Priority, RequestBudget
from syncd.connectors.crm import registry
from syncd.connectors.crm.base import CRMAdapter, ServiceRequestPusher
from syncd.connectors.crm.vendor import Connection, CrmVendor
from syncd.connectors.vies.answer import ViesAnswer
from syncd.core.errors import ConfigError
from syncd.engines.intake import IntakeOptions, ServiceRequestIntake, UploadBudget
from syncd.engines.mirror import MirrorEngine, MirrorOptions, ProgressCallback
from syncd.engines.push import PushOptions
from syncd.engines.retention import RetentionOptions
from syncd.engines.spool import MIB, FileLimits
from syncd.engines.vat import VatOptions, VatService, ViesClientLike
from syncd.mappings.loader import MappingSet, load_mapping_set
from syncd.state.db import connect

if TYPE_CHECKING:
    from syncd.connectors.omniva.client import OmnivaClient
    from syncd.engines.documents import DocumentSource


def open_cache(settings: Settings) -> sqlite3.Connection:
    """Open the cache (creating and migrating it when needed)."""
    try:
        return connect(settings.state.cache_path)
    except OSError as error:
        raise ConfigError(
            f"state.directory: cannot open {settings.state.cache_path}: {error.strerror}"
        ) from None
    except sqlite3.DatabaseError as error:
        raise ConfigError(f"state.directory: {settings.state.cache_path}: {error}") from None


def crm_vendor(settings: Settings) -> CrmVendor:
    """The configured CRM vendor, looked up by name in the registry."""
    return registry.get(settings.crm.vendor)


def load_mappings(settings: Settings) -> MappingSet:
    """The configured vendor's mapping files (``mappings/<vendor>/``)."""
    return load_mapping_set(crm_vendor(settings).mappings)


def build_budget(settings: Settings) -> RequestBudget | None:
    """The CRM request budget from ``[crm]``: one per process, shared by every lane's client
    (None when ``crm.requests_per_second`` is 0)."""
    crm = settings.crm
    if crm.requests_per_second <= 0:
        return None
    return RequestBudget(crm.requests_per_second, crm.request_burst, crm.push_reserve)


def crm_connection(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    budget: RequestBudget | None = None,
    priority: Priority = "mirror",
    on_request: Callable[[], None] | None = None,
) -> Connection:
    """What the vendor's builders get: its table, its secrets and the shared ``[crm]`` tuning."""
    crm = settings.crm
    return Connection(
        settings=crm.vendor_settings,
        secret=settings.crm_secret,
        connect_timeout=crm.connect_timeout_seconds,
        timeout=crm.timeout_seconds,
        max_attempts=crm.max_attempts,
        deletion_events=crm.deletion_events == "auto",
        stop=stop,
        budget=budget,
        priority=priority,
        on_request=on_request,
    )


def build_adapter(
    settings: Settings,
    mappings: MappingSet,
    *,
    stop: threading.Event | None = None,
    budget: RequestBudget | None = None,
    on_request: Callable[[], None] | None = None,
) -> CRMAdapter:
    """The configured CRM adapter; a missing URL or credential is a ConfigError. Its client
    draws from ``budget`` (when given) at mirror priority and calls ``on_request`` before each
    request."""
    connection = crm_connection(
        settings, stop=stop, budget=budget, priority="mirror", on_request=on_request
    )
    return crm_vendor(settings).build_adapter(connection, mappings)


def build_pusher(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    budget: RequestBudget | None = None,
    on_request: Callable[[], None] | None = None,
) -> ServiceRequestPusher:
    """The configured CRM's service-request pusher (its own client: the push lane never
    waits on the mirror's connections; it draws from ``budget`` at push priority)."""
    connection = crm_connection(
        settings, stop=stop, budget=budget, priority="push", on_request=on_request
    )
    return crm_vendor(settings).build_pusher(connection)


def push_options(settings: Settings) -> PushOptions:
    return PushOptions(
        spool=settings.spool_directory,
        max_attempts=settings.outbox.max_attempts,
        lease_seconds=settings.outbox.lease_seconds,
        limits=FileLimits(
            image=settings.outbox.max_image_mb * MIB,
            video=settings.outbox.max_video_mb * MIB,
            document=settings.outbox.max_document_mb * MIB,
            max_files_per_request=settings.outbox.max_files_per_request,
        ),
        skip_bad_files=settings.outbox.on_bad_file == "skip",
        request_types=frozenset(settings.outbox.request_types),
    )


def build_intake(
    settings: Settings, connection: Callable[[], sqlite3.Connection], *, api: bool = False
) -> ServiceRequestIntake:
    """The outbox's door with the configured checks; ``api`` adds the per-hour upload budget
    the local API enforces (an admin's ``outbox enqueue`` has none)."""
    options = push_options(settings)
    budget = None
    if api:
        budget = UploadBudget(
            settings.api.max_service_requests_per_hour,
            settings.api.max_upload_mb_per_hour * MIB,
        )
    return ServiceRequestIntake(
        connection,
        IntakeOptions(
            spool=options.spool,
            request_types=frozenset(settings.outbox.request_types),
            limits=options.limits,
            min_free_bytes=settings.outbox.min_free_mb * MIB,
        ),
        budget=budget,
    )


def mirror_options(settings: Settings) -> MirrorOptions:
    return MirrorOptions(
        overlap_seconds=float(settings.crm.overlap_seconds),
        delete_guard_share=settings.mirror.delete_guard_share,
        delete_guard_min=settings.mirror.delete_guard_min,
    )


def build_engine(
    settings: Settings,
    conn: sqlite3.Connection,
    *,
    stop: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    budget: RequestBudget | None = None,
    on_request: Callable[[], None] | None = None,
) -> MirrorEngine:
    mappings = load_mappings(settings)
    adapter = build_adapter(settings, mappings, stop=stop, budget=budget, on_request=on_request)
    return MirrorEngine(
        conn, adapter, mappings, mirror_options(settings), stop=stop, progress=progress
    )


def retention_options(settings: Settings) -> RetentionOptions:
    """The retention job's options from ``[retention]``."""
    retention = settings.retention
    return RetentionOptions(
        windows=retention.windows(),
        purge_interval=timedelta(minutes=retention.purge_interval_minutes),
        spool=settings.spool_directory,
    )


def vat_options(settings: Settings) -> VatOptions:
    """The VAT service's options from ``[vies]`` (and how long answers are kept, from
    ``[retention]``)."""
    vies = settings.vies
    return VatOptions(
        cache_hours=vies.cache_hours,
        keep_hours=settings.retention.vies_answers_hours,
        max_attempts=vies.max_attempts,
        max_concurrent_calls=vies.max_concurrent_calls,
        max_calls_per_member_state=vies.max_calls_per_member_state,
        lookup_wait_seconds=vies.lookup_wait_seconds,
        circuit_open_minutes=vies.circuit_open_minutes,
    )


def build_vat_service(settings: Settings, *, stop: threading.Event | None = None) -> VatService:
    """VAT lookups through VIES with the cache; each thread gets its own cache connection.

    The SOAP client (zeep, a few hundred milliseconds to import) is made on the first lookup
    that needs VIES, so the daemon is READY without it.
    """
    vies = settings.vies
    requester = (vies.requester_vat[:2], vies.requester_vat[2:]) if vies.requester_vat else None

    def make_client() -> ViesClientLike:
        from syncd.connectors.vies.client import ViesClient

        return ViesClient(
            vies.endpoint,
            connect_timeout=vies.connect_timeout_seconds,
            timeout=vies.timeout_seconds,
            requester=requester,
        )

    return VatService(
        lambda: open_cache(settings), _LazyClient(make_client), vat_options(settings), stop=stop
    )


class _LazyClient:
    """A VIES client made on first use."""

    def __init__(self, make: Callable[[], ViesClientLike]) -> None:
        self._make = make
        self._client: ViesClientLike | None = None
        self._lock = threading.Lock()

    def check(self, country_code: str, vat_number: str) -> ViesAnswer:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            client = self._client
        return client.check(country_code, vat_number)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def build_omniva_client(settings: Settings) -> OmnivaClient:
    """The client that downloads Omniva's location list."""
    from syncd.connectors.omniva.client import OmnivaClient

    omniva = settings.omniva
    return OmnivaClient(
        omniva.url,
        connect_timeout=omniva.connect_timeout_seconds,
        timeout=omniva.timeout_seconds,
        max_body_bytes=omniva.max_body_mb * MIB,
    )


def build_document_budget(settings: Settings) -> RequestBudget | None:
    """The per-tenant Graph request budget the SharePoint lane and the API's downloads share."""
    sharepoint = settings.sharepoint
    if sharepoint.requests_per_second <= 0:
        return None
    return RequestBudget(sharepoint.requests_per_second, sharepoint.request_burst, reserve=0)


def build_document_source(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    budget: RequestBudget | None = None,
    priority: Priority = "mirror",
    on_request: Callable[[], None] | None = None,
    name: str = "graph",
) -> DocumentSource:
    """The Graph connector for the configured tenant. Importing it loads msgraph-sdk and
    azure-identity (seconds, tens of MB): call it only when SharePoint is configured."""
    if not settings.sharepoint.configured:
        raise ConfigError("sharepoint: not configured; there are no document libraries")
    credential = settings.sharepoint_credential()
    try:
        from syncd.connectors.sharepoint.graph import GraphLibraries
    except ImportError as error:
        raise ConfigError(
            f"sharepoint: the SharePoint extra is not installed ({error.name}); install "
            "syncd[sharepoint]"
        ) from None
    return GraphLibraries(
        settings.sharepoint,
        credential,
        stop=stop,
        budget=budget,
        priority=priority,
        on_request=on_request,
        name=name,
    )

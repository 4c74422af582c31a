"""The SharePoint connector: Microsoft Graph through msgraph-sdk, app-only tokens from
azure-identity, bridged to syncd's synchronous engine.

**The bridge.** msgraph-sdk is async (kiota over ``httpx.AsyncClient``). Each
:class:`GraphLibraries` owns one event loop running in its own thread and submits every call to
it (``asyncio.run_coroutine_threadsafe``). One long-lived loop per connector, rather than
``asyncio.run`` per job, because the async HTTP client's connection pool and the credential's
token cache belong to a loop: a loop per job would reconnect and fetch a new token every cycle.
The SharePoint lane and the API's downloads each have their own connector, hence their own loop
and connections.

**The calls.** Every request goes through the SDK's request adapter, with its auth provider and
middleware: a site's libraries from its request builders, the rest as Graph's documented paths
(``root/delta``, an item with ``@microsoft.graph.downloadUrl``) or the links Graph hands out;
the answer is taken as bytes and read by :mod:`syncd.connectors.sharepoint.items` (the SDK's
PageIterator drops the delta link, and its model parse is slow). kiota's own retry handler is
switched off: retries, ``Retry-After`` and the per-tenant request budget are syncd's
(:class:`RetryPolicy`, :class:`RequestBudget`), so a throttled library backs off like every
other job.

Importing this module imports msgraph and azure: only the daemon with ``[sharepoint]`` configured,
``check-config --online`` and the document tests do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import orjson
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import CertificateCredential, ClientSecretCredential
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from syncd.connectors.budget import Priority, RequestBudget
from syncd.connectors.http import USER_AGENT, RetryPolicy, retry_after_seconds, transport_error
from syncd.connectors.sharepoint.items import parse_delta_page
from syncd.connectors.sharepoint.settings import SharepointSettings
from syncd.core.documents import DeltaPage
from syncd.core.errors import (
    AuthError,
    DeltaExpiredError,
    MalformedResponseError,
    RateLimitedError,
    RetriableError,
    UpstreamNotFoundError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# The SDK's generated request builders deprecate their own configuration classes as they load
# (lazily, on first use); that is Microsoft's to fix, not an operator's to read in the journal.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"msgraph\.generated\.")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"kiota_abstractions\.")

DEFAULT_THROTTLE_SECONDS = 10.0  # when Graph throttles without saying for how long


@dataclass(frozen=True)
class ResolvedLibrary:
    """A library's Graph IDs."""

    site_id: str
    drive_id: str
    web_url: str | None = None


class _RenewableCredential:
    """An azure-identity credential that can be replaced by a fresh one (with an empty token
    cache) when Graph rejects a token before its expiry; kiota asks it for every request."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._inner = make()
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            inner = self._inner
        token: AccessToken = inner.get_token(*scopes, **kwargs)
        return token

    def renew(self) -> None:
        fresh = self._make()
        with self._lock:
            old, self._inner = self._inner, fresh
        old.close()

    def close(self) -> None:
        with self._lock:
            self._inner.close()


def make_credential(
    settings: SharepointSettings, kind: str, secret: str
) -> CertificateCredential | ClientSecretCredential:
    """The azure-identity credential for the configured app (certificate or client secret),
    talking to ``login_url`` with instance discovery off (so a sovereign cloud or a loopback
    fake is used as given) and trusting ``ca_file`` when set."""
    login = urlsplit(settings.login_url)
    options: dict[str, Any] = {
        "authority": login.netloc,
        "disable_instance_discovery": True,
    }
    if settings.ca_file is not None:
        options["connection_verify"] = str(settings.ca_file)
    assert settings.tenant_id is not None and settings.client_id is not None
    if kind == "certificate":
        return CertificateCredential(
            settings.tenant_id,
            settings.client_id,
            certificate_data=secret.encode("utf-8"),
            **options,
        )
    return ClientSecretCredential(settings.tenant_id, settings.client_id, secret, **options)


def graph_scope(graph_url: str) -> str:
    """The ``.default`` scope of the Graph endpoint (``https://graph.microsoft.com/.default``)."""
    parts = urlsplit(graph_url)
    return f"https://{parts.hostname}/.default" if parts.scheme == "https" else (
        f"{parts.scheme}://{parts.netloc}/.default"
    )


class _LoopThread:
    """An asyncio event loop running in a daemon thread; :meth:`run` waits for a coroutine."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise UpstreamUnavailableError(f"{what}: no answer within {timeout:.0f}s") from None

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class GraphLibraries:
    """Document libraries in SharePoint Online, through Microsoft Graph.

    ``priority`` is the request budget's class for this connector's calls: the lane's
    enumerations are ``"mirror"``, the API's download lookups ``"push"`` (a person waits).
    ``on_request`` is called before every request (the lane's heartbeat).
    """

    def __init__(
        self,
        settings: SharepointSettings,
        credential: tuple[str, str],
        *,
        stop: threading.Event | None = None,
        budget: RequestBudget | None = None,
        priority: Priority = "mirror",
        on_request: Callable[[], None] | None = None,
        name: str = "graph",
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.budget = budget
        self.priority: Priority = priority
        self.on_request = on_request
        self.requests = 0  # sent, retries included (benchmarks and tests read it)
        kind, secret = credential
        self._credential = _RenewableCredential(lambda: make_credential(settings, kind, secret))
        self._policy = RetryPolicy(
            max_attempts=settings.max_attempts, base_delay=1.0, max_delay=60.0, stop=self.stop
        )
        self._loop = _LoopThread(f"{name}-loop")
        self._timeout = settings.timeout_seconds
        self._graph_url = settings.graph_url
        self._client = self._loop.run(self._build(), self._timeout, "Graph client")

    async def _build(self) -> GraphServiceClient:
        # The httpx client is made inside the loop that will use it.
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file is not None:
            verify = ssl.create_default_context()
            verify.load_verify_locations(cafile=str(self.settings.ca_file))
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                self.settings.timeout_seconds, connect=self.settings.connect_timeout_seconds
            ),
            verify=verify,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )
        self._http = http
        http = GraphClientFactory.create_with_default_middleware(
            client=http,
            options={RetryHandlerOption.get_key(): RetryHandlerOption(0, 0, False)},
        )
        host = urlsplit(self._graph_url).hostname or ""
        auth = AzureIdentityAuthenticationProvider(
            self._credential,
            scopes=[graph_scope(self._graph_url)],
            allowed_hosts=[host],
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = self._graph_url
        return GraphServiceClient(request_adapter=adapter)

    # -- the calls ----------------------------------------------------------------------------

    def resolve(self, site: str, library: str) -> ResolvedLibrary:
        """The site and drive IDs of ``library`` in ``site`` (``host:/sites/Name``).

        :class:`UpstreamNotFoundError` when the site or the library does not exist."""
        hostname, path = site.split(":", 1)
        site_url = f"{self._graph_url}/sites/{hostname}:{quote(path)}"
        site_info = self._info(f"{site_url}?$select=id,webUrl")
        site_json = self._json(site_info, f"site {site}")
        site_id = site_json.get("id")
        if not isinstance(site_id, str) or not site_id:
            raise MalformedResponseError(f"site {site}: Graph's answer has no id")
        drives_info = self._client.sites.by_site_id(site_id).drives.to_get_request_information()
        drives = self._json(drives_info, f"libraries of {site}").get("value")
        if not isinstance(drives, list):
            raise MalformedResponseError(f"libraries of {site}: Graph's answer has no list")
        wanted = library.casefold()
        for drive in drives:
            if isinstance(drive, dict) and str(drive.get("name", "")).casefold() == wanted:
                drive_id = drive.get("id")
                if isinstance(drive_id, str) and drive_id:
                    url = drive.get("webUrl")
                    return ResolvedLibrary(site_id, drive_id, url if isinstance(url, str) else None)
        raise UpstreamNotFoundError(f"site {site} has no document library called {library!r}")

    def delta(self, drive_id: str, link: str | None) -> DeltaPage:
        """One page of the drive's changes: the first page of a full enumeration when ``link``
        is None, otherwise the page at ``link`` (a nextLink or a deltaLink Graph gave).

        :class:`DeltaExpiredError` when Graph says the link can no longer be used (410)."""
        # The documented form of the first request; every later one is a link Graph gave.
        info = self._info(
            link or f"{self._graph_url}/drives/{quote(drive_id, safe='!')}/root/delta"
        )
        body = self._call(info, "library changes")
        return parse_delta_page(body)

    def download_url(self, drive_id: str, item_id: str) -> str:
        """The item's short-lived pre-authenticated download URL (never store or log it)."""
        # A plain URL: the SDK's $select cannot name the instance annotation.
        info = self._info(
            f"{self._graph_url}/drives/{quote(drive_id, safe='!')}/items/"
            f"{quote(item_id, safe='')}?$select=id,size,file,@microsoft.graph.downloadUrl"
        )
        item = self._json(info, "document")
        url = item.get("@microsoft.graph.downloadUrl")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            if not isinstance(item.get("file"), dict):
                raise UpstreamNotFoundError("the item is not a file")
            raise MalformedResponseError("document: Graph gave no download URL")
        return url

    def close(self) -> None:
        """Close the HTTP client, the credential and the loop."""
        try:
            self._loop.run(self._http.aclose(), 5, "closing Graph")
        except (RetriableError, RuntimeError):
            log.debug("closing the Graph client did not finish")
        self._credential.close()
        self._loop.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _info(self, url: str) -> RequestInformation:
        info = RequestInformation()
        info.http_method = Method.GET
        info.url = url
        return info

    def _json(self, info: RequestInformation, what: str) -> dict[str, Any]:
        body = self._call(info, what)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedResponseError(f"{what}: Graph's answer is not valid JSON") from None
        if not isinstance(data, dict):
            raise MalformedResponseError(f"{what}: Graph's answer is not a JSON object")
        return data

    def _call(self, info: RequestInformation, what: str) -> bytes:
        """Send ``info`` with syncd's retry policy; one token renewal on a rejected token."""
        renewed = False

        def attempt() -> bytes:
            nonlocal renewed
            try:
                return self._send(info, what)
            except AuthError:
                raise
            except DeltaExpiredError as error:  # the same link stays expired: not retried
                raise _NotRetried(error) from None
            except _TokenRejected:
                if renewed:
                    raise AuthError(
                        f"{what}: Graph rejected a freshly issued token "
                        "(InvalidAuthenticationToken); check the app registration"
                    ) from None
                renewed = True
                log.info("Graph rejected the access token; fetching a new one")
                self._credential.renew()
                try:
                    return self._send(info, what)
                except DeltaExpiredError as error:
                    raise _NotRetried(error) from None

        try:
            return self._policy.call(attempt, what=what)
        except _NotRetried as wrapper:
            raise wrapper.error from None

    def _send(self, info: RequestInformation, what: str) -> bytes:
        if self.budget is not None:
            self.budget.acquire(self.priority, self.stop)
        if self.on_request is not None:
            self.on_request()
        self.requests += 1
        # kiota adds the bearer token only to a request without one: a retried request must not
        # carry the token of its first attempt (it may be the one Graph just rejected).
        info.headers.remove("Authorization")
        adapter = self._client.request_adapter
        try:
            body = self._loop.run(
                adapter.send_primitive_async(info, "bytes", {}), self._timeout + 5, what
            )
        except APIError as error:
            raise _classify(error, what, self.settings.max_retry_after_seconds) from None
        except httpx.TransportError as error:
            raise transport_error(error, f"Graph ({what})") from None
        except ClientAuthenticationError as error:
            raise AuthError(f"{what}: the login endpoint refused the app's credential "
                            f"({_aad_code(error)})") from None
        except ServiceRequestError:
            raise UpstreamUnavailableError(f"{what}: the login endpoint could not be reached") \
                from None
        if body is None:
            return b""
        if not isinstance(body, bytes):
            raise MalformedResponseError(f"{what}: unexpected answer from Graph")
        return body


class _TokenRejected(RetriableError):
    """Graph answered 401: the token is expired or revoked."""


class _NotRetried(Exception):
    """Carries a RetriableError the retry policy must not retry (a 410: the link stays expired
    however often it is asked; the engine enumerates again instead) past the policy."""

    def __init__(self, error: RetriableError) -> None:
        super().__init__(str(error))
        self.error = error


def _classify(error: APIError, what: str, max_retry_after: float) -> Exception:
    status = error.response_status_code or 0
    headers = httpx.Headers(dict(error.response_headers or {}))
    hint = retry_after_seconds(headers)
    if hint is not None:
        hint = min(hint, max_retry_after)
    if status == 401:
        return _TokenRejected(f"{what}: token rejected")
    if status == 429:
        return RateLimitedError(
            f"{what}: Graph is throttling (429)",
            retry_after=hint if hint is not None else DEFAULT_THROTTLE_SECONDS,
        )
    if status in (503, 504):
        return UpstreamUnavailableError(f"{what}: Graph unavailable ({status})", retry_after=hint)
    if status == 410:
        return DeltaExpiredError(f"{what}: the change cursor expired (410 resyncRequired)")
    if status == 403:
        return AuthError(f"{what}: access denied (403); grant the app access to the site")
    if status == 404:
        return UpstreamNotFoundError(f"{what}: not found (404)")
    if status >= 500 or status == 0:
        return UpstreamUnavailableError(f"{what}: Graph answered {status or 'nothing'}")
    return UpstreamRejectedError(f"{what}: Graph refused the request ({status})")


def _aad_code(error: ClientAuthenticationError) -> str:
    """The AADSTS code of a login failure ("AADSTS7000215"), never the message's details."""
    text = str(getattr(error, "message", "") or error)
    for word in text.replace(":", " ").split():
        if word.startswith("AADSTS") and word[6:].isdigit():
            return word
    return "no error code"

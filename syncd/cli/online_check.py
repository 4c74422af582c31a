"""``syncd check-config --online``: one cheap call to each configured upstream, to tell whether
it is reachable and accepts syncd's credentials, before the daemon finds out the hard way.

* the CRM: the vendor's own cheapest call (Bitrix24: one ``crm.contact.list`` of a single ID,
  proving reachability, the webhook token and its ``crm`` scope);
* VIES: one ``checkVat`` of syncd's own VAT number (``vies.requester_vat``), else of a
  well-formed test number; any answer from VIES, valid, invalid or "invalid input", proves it
  reachable;
* Omniva: a ``HEAD`` of the location list;
* SharePoint: an app-only token from the login endpoint, then each configured library resolved
  to its site and drive (one result per library, ``sharepoint:<name>``).

Nothing is written to the cache. Each check is a :class:`CheckResult` whose ``detail`` holds no
secret (the webhook URL with its token is never shown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from syncd.config import Settings
from syncd.core.errors import AuthError, ConfigError, RetriableError, SkippableError, SyncdError

__all__ = ["CheckResult", "check_upstreams"]

# A well-formed Estonian VAT number (python-stdnum accepts it) for when no requester is set.
_PROBE_VAT = ("EE", "100931558")


@dataclass(frozen=True)
class CheckResult:
    """One upstream's answer: ``ok`` and what was found, in plain words."""

    upstream: str
    ok: bool
    detail: str


def check_upstreams(settings: Settings) -> list[CheckResult]:
    """Check every configured upstream once (not configured ones are reported as skipped)."""
    checks: list[tuple[str, Callable[[Settings], str] | None, str]] = [
        ("crm", _check_crm if settings.crm_configured else None,
         f"not configured ([crm.{settings.crm.vendor}])"),
        ("vies", _check_vies if settings.api.enabled else None, "off (api.enabled = false)"),
        ("omniva", _check_omniva if settings.omniva.enabled else None, "off (omniva.enabled)"),
    ]
    results = []
    for name, check, skipped in checks:
        if check is None:
            results.append(CheckResult(name, True, f"skipped: {skipped}"))
            continue
        try:
            results.append(CheckResult(name, True, check(settings)))
        except AuthError as error:
            results.append(CheckResult(name, False, f"credentials refused: {error}"))
        except RetriableError as error:
            results.append(CheckResult(name, False, f"unreachable: {error}"))
        except (ConfigError, SyncdError) as error:
            results.append(CheckResult(name, False, str(error)))
    if settings.sharepoint.configured:
        results.extend(_check_sharepoint(settings))
    else:
        results.append(CheckResult("sharepoint", True, "skipped: not configured ([sharepoint])"))
    return results


def _check_sharepoint(settings: Settings) -> list[CheckResult]:
    """One result per library: resolving it needs a token (so the credential is proven by the
    first) and read access to its site."""
    from syncd.runtime import build_document_source

    try:
        source = build_document_source(settings, name="check-graph")
    except SyncdError as error:
        return [CheckResult("sharepoint", False, str(error))]
    results = []
    try:
        for library in settings.sharepoint.libraries:
            name = f"sharepoint:{library.name}"
            try:
                resolved = source.resolve(library.site, library.library)
            except AuthError as error:
                results.append(CheckResult(name, False, f"credentials refused: {error}"))
            except RetriableError as error:
                results.append(CheckResult(name, False, f"unreachable: {error}"))
            except SyncdError as error:
                results.append(CheckResult(name, False, str(error)))
            else:
                results.append(CheckResult(
                    name, True, f"reachable (library {library.library!r} is drive "
                    f"{resolved.drive_id[:12]}...)"
                ))
    finally:
        source.close()
    return results


def _check_crm(settings: Settings) -> str:
    from syncd.runtime import crm_connection, crm_vendor

    return crm_vendor(settings).check_online(crm_connection(settings))


def _check_vies(settings: Settings) -> str:
    from syncd.connectors.vies.client import ViesClient

    vies = settings.vies
    country, number = (
        (vies.requester_vat[:2], vies.requester_vat[2:]) if vies.requester_vat else _PROBE_VAT
    )
    client = ViesClient(
        vies.endpoint,
        connect_timeout=vies.connect_timeout_seconds,
        timeout=vies.timeout_seconds,
    )
    try:
        answer = client.check(country, number)
    except SkippableError:  # INVALID_INPUT: VIES answered
        return "reachable (it answered a probe lookup)"
    finally:
        client.close()
    return f"reachable (a probe lookup answered {'valid' if answer.valid else 'invalid'})"


def _check_omniva(settings: Settings) -> str:
    import httpx

    from syncd.connectors.http import make_client, transport_error

    omniva = settings.omniva
    with make_client(
        connect_timeout=omniva.connect_timeout_seconds, timeout=omniva.timeout_seconds
    ) as http:
        try:
            response = http.head(omniva.url)
        except httpx.TransportError as error:
            raise transport_error(error, "HEAD of the location list") from None
    if response.status_code != 200:
        raise RetriableError(f"the location list answered HTTP {response.status_code}")
    return "reachable (the location list answered 200)"
